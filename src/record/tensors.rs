//! Tensors on disk: safetensors files written atomically, and one replica's weights, buffers
//! and masks named and shaped as PyTorch would (`fc1.weight` `[300, 784]`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::atomic::write_with;
use crate::model::{Layout, State};

/// The named tensors of one safetensors file, looked up by name, with the file's path for
/// errors.
#[derive(Debug)]
pub struct NamedTensors {
    path: PathBuf,
    tensors: Vec<(String, Tensor)>,
}

impl NamedTensors {
    /// Reads every named tensor of the file at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        if !path.exists() {
            bail!("missing {}", path.display());
        }
        let tensors = Tensor::read_safetensors(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// The tensor called `name`, if the file has it.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The tensor called `name`; an error naming the file when it lacks it.
    pub fn require(&self, name: &str) -> Result<&Tensor> {
        self.get(name)
            .with_context(|| format!("{} lacks `{name}`", self.path.display()))
    }

    /// The tensor called `name` with the shape `shape`, as float32; an error naming the file
    /// when it lacks it or its shape differs.
    pub fn require_shaped(&self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let t = self.require(name)?;
        if t.size() != shape {
            bail!(
                "{}: `{name}` has shape {:?}, expected {:?}",
                self.path.display(),
                t.size(),
                shape
            );
        }
        Ok(t.to_kind(Kind::Float))
    }

    /// Every tensor with its name, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// The file the tensors come from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes named tensors to `path` atomically.
pub fn save_named(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    write_with(path, |tmp| {
        Tensor::write_safetensors(tensors, tmp).map_err(std::io::Error::other)
    })
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

/// Replica `r` of `state` as named CPU tensors in PyTorch layout: every parameter, then every
/// buffer.
pub fn state_tensors(state: &State, r: usize, layout: &Layout) -> Vec<(String, Tensor)> {
    let mut out = replica_tensors(&state.params, r, layout, 0..layout.specs().len());
    for (spec, b) in layout.buffers().iter().zip(&state.buffers) {
        out.push((
            spec.name.clone(),
            b.get(r as i64).to_device(Device::Cpu).contiguous(),
        ));
    }
    out
}

/// One replica (R = 1, on the CPU) from named tensors; every parameter and buffer must be
/// there with its shape.
pub fn state_from(named: &NamedTensors, layout: &Layout) -> Result<State> {
    let mut parts = Vec::with_capacity(layout.specs().len());
    for spec in layout.specs() {
        parts.push(named.require_shaped(&spec.name, &spec.shape)?.reshape([-1]));
    }
    let mut buffers = Vec::with_capacity(layout.buffers().len());
    for spec in layout.buffers() {
        buffers.push(named.require_shaped(&spec.name, &spec.shape)?.unsqueeze(0));
    }
    Ok(State {
        params: Tensor::cat(&parts, 0).unsqueeze(0),
        buffers,
    })
}

/// One replica's mask row `[P]` from named tensors: parameters absent from the file (the
/// non-prunable ones) are kept (ones); those present must have their shape.
pub fn mask_from(named: &NamedTensors, layout: &Layout) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(layout.specs().len());
    for spec in layout.specs() {
        match named.get(&spec.name) {
            Some(_) => parts.push(named.require_shaped(&spec.name, &spec.shape)?.reshape([-1])),
            None => parts.push(Tensor::ones(
                [spec.numel() as i64],
                (Kind::Float, Device::Cpu),
            )),
        }
    }
    Ok(Tensor::cat(&parts, 0))
}
