//! Per-replica weights and masks as safetensors files, named and shaped as PyTorch would
//! (`fc1.weight` `[300, 784]`), written atomically.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Device, Tensor};

use super::atomic::write_with;
use crate::model::Layout;

/// Writes named tensors to `path` atomically.
pub fn save_named(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    write_with(path, |tmp| {
        Tensor::write_safetensors(tensors, tmp).map_err(std::io::Error::other)
    })
}

/// Reads all named tensors of a safetensors file.
pub fn load_named(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.exists() {
        bail!("missing {}", path.display());
    }
    Tensor::read_safetensors(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Row `r` of a `[R, P]` tensor as named tensors of the parameters `which` (on the CPU).
pub fn replica_tensors(
    flat: &Tensor,
    r: usize,
    layout: &Layout,
    which: impl Iterator<Item = usize>,
) -> Vec<(String, Tensor)> {
    let row = flat.get(r as i64).to_device(Device::Cpu).unsqueeze(0);
    which
        .map(|i| {
            let spec = &layout.specs()[i];
            (
                spec.name.clone(),
                layout.view(&row, i).squeeze_dim(0).contiguous(),
            )
        })
        .collect()
}

/// A flat `[P]` row rebuilt from named tensors; parameters absent from the file (for masks:
/// the non-prunable ones) are filled with `fill`.
pub fn flat_row(
    named: &[(String, Tensor)],
    layout: &Layout,
    fill: f64,
    path: &Path,
) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(layout.specs().len());
    for spec in layout.specs() {
        match named.iter().find(|(n, _)| *n == spec.name) {
            Some((_, t)) => {
                if t.size() != spec.shape {
                    bail!(
                        "{}: `{}` has shape {:?}, expected {:?}",
                        path.display(),
                        spec.name,
                        t.size(),
                        spec.shape
                    );
                }
                parts.push(t.to_kind(tch::Kind::Float).reshape([-1]));
            }
            None => parts.push(Tensor::full(
                [spec.numel() as i64],
                fill,
                (tch::Kind::Float, Device::Cpu),
            )),
        }
    }
    Ok(Tensor::cat(&parts, 0))
}

/// Loads one replica's mask row (non-prunable parameters get ones).
pub fn load_mask(path: &Path, layout: &Layout) -> Result<Tensor> {
    flat_row(&load_named(path)?, layout, 1.0, path)
}
