//! `lth export --compact`: the physically smaller dense network that a structured ticket's
//! removed units leave, in PyTorch layout (`fc1.weight` `[kept, 784]`, `fc2.weight`
//! `[kept2, kept]`, ...), and beside it a JSON file with each unit layer's kept unit indices and
//! every tensor's shape. A unit is removed when its row and its own entries (bias, BatchNorm
//! scale and shift) are masked out entirely; its running statistics go with it. A plainly
//! built smaller model loading the tensors computes the masked network's logits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::{checked, ExportRequest};
use crate::data::Dataset;
use crate::model::{self, Layout, UnitLayer};
use crate::record::tensors::save_named;
use crate::record::write_atomic;

/// What `--compact` wrote.
#[derive(Debug, Clone)]
pub struct CompactExport {
    /// Tensor names, in layout order.
    pub names: Vec<String>,
    /// The JSON description.
    pub json: PathBuf,
    /// Per unit layer: its name, units kept, units it had.
    pub kept: Vec<(String, usize, usize)>,
}

/// The JSON beside the tensors.
#[derive(Serialize)]
struct Description {
    arm: String,
    seed: u64,
    round: u32,
    /// Unit layers in layout order.
    layers: Vec<LayerKept>,
    /// Every tensor's shape.
    shapes: BTreeMap<String, Vec<i64>>,
}

#[derive(Serialize)]
struct LayerKept {
    /// The layer (its weight's name without `.weight`).
    name: String,
    /// Units it had.
    units: i64,
    /// The kept units' indices in the full network, ascending.
    kept: Vec<i64>,
}

/// Writes the compact network of `req` to `out` and its description to `out` with the
/// extension `json`.
pub fn export_compact(run_dir: &Path, req: &ExportRequest, out: &Path) -> Result<CompactExport> {
    let (dir, exp) = checked(run_dir, req)?;
    let data = Dataset::load(&exp.data, Device::Cpu)?;
    let net = model::build(&exp.model, data.input_shape, data.num_classes)?;
    let layout = net.layout();
    let layers = net.unit_layers();
    if layers.is_empty() {
        bail!(
            "--compact needs a network whose neurons or filters lth can remove (LeNet, Conv-2/4/6, VGG, ResNet)"
        );
    }
    let state = dir.load_weights(&req.arm, req.seed, req.round, layout)?;
    let mask = dir
        .load_mask(&req.arm, req.seed, req.round, layout)?
        .unsqueeze(0);
    let weights = &state.params * &mask;
    let kept: Vec<Vec<i64>> = layers
        .iter()
        .map(|l| kept_units(l, layout, &mask))
        .collect();
    if layers
        .iter()
        .zip(&kept)
        .all(|(l, k)| k.len() as i64 == l.units(layout))
    {
        bail!(
            "round {} of arm `{}` removed no whole neuron or filter (an unstructured ticket): its compact network is the dense one; export it without --compact",
            req.round,
            req.arm
        );
    }
    // Which entries of each tensor stay: rows (dim 0) and input columns (dim 1).
    let mut rows: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    let mut buffer_rows: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    let mut columns: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    for (layer, kept) in layers.iter().zip(&kept) {
        rows.insert(layer.weight, kept.clone());
        for &p in &layer.owned {
            rows.insert(p, kept.clone());
        }
        for &b in &layer.owned_buffers {
            buffer_rows.insert(b, kept.clone());
        }
        for c in &layer.consumers {
            let cols = kept
                .iter()
                .flat_map(|&u| u * c.span..(u + 1) * c.span)
                .collect();
            columns.insert(c.weight, cols);
        }
    }
    let mut tensors = Vec::new();
    let mut shapes = BTreeMap::new();
    for (i, spec) in layout.specs().iter().enumerate() {
        let mut t = layout.view(&weights, i).get(0);
        if let Some(r) = rows.get(&i) {
            t = t.index_select(0, &Tensor::from_slice(r));
        }
        if let Some(c) = columns.get(&i) {
            t = t.index_select(1, &Tensor::from_slice(c));
        }
        let t = t.to_kind(Kind::Float).contiguous();
        shapes.insert(spec.name.clone(), t.size());
        tensors.push((spec.name.clone(), t));
    }
    // BatchNorm's running statistics, of the kept channels.
    for (b, spec) in layout.buffers().iter().enumerate() {
        let mut t = state.buffers[b].get(0);
        if let Some(r) = buffer_rows.get(&b) {
            t = t.index_select(0, &Tensor::from_slice(r));
        }
        let t = t.to_kind(Kind::Float).contiguous();
        shapes.insert(spec.name.clone(), t.size());
        tensors.push((spec.name.clone(), t));
    }
    save_named(out, &tensors)?;
    let layer_name = |l: &UnitLayer| {
        let name = &layout.specs()[l.weight].name;
        name.strip_suffix(".weight").unwrap_or(name).to_string()
    };
    let description = Description {
        arm: req.arm.clone(),
        seed: req.seed,
        round: req.round,
        layers: layers
            .iter()
            .zip(&kept)
            .map(|(l, k)| LayerKept {
                name: layer_name(l),
                units: l.units(layout),
                kept: k.clone(),
            })
            .collect(),
        shapes,
    };
    let json = out.with_extension("json");
    write_atomic(
        &json,
        serde_json::to_string_pretty(&description)?.as_bytes(),
    )?;
    Ok(CompactExport {
        names: tensors.into_iter().map(|(n, _)| n).collect(),
        json,
        kept: layers
            .iter()
            .zip(&kept)
            .map(|(l, k)| (layer_name(l), k.len(), l.units(layout) as usize))
            .collect(),
    })
}

/// The units of `layer` that remain under `mask` (`[1, P]`), ascending.
fn kept_units(layer: &UnitLayer, layout: &Layout, mask: &Tensor) -> Vec<i64> {
    let alive = Vec::<bool>::try_from(&layer.alive(layout, mask).get(0)).expect("a [units] vector");
    (0..layer.units(layout))
        .filter(|&u| alive[u as usize])
        .collect()
}
