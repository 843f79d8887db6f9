//! The trainable state of a population: the flat `[R, P]` parameters plus the buffers
//! (BatchNorm running statistics, `[R, ...]` each), moved, selected, stacked and saved together.

use std::path::Path;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::init::{fresh_replica, init_replica};
use super::layout::Layout;

/// Parameters and buffers of R replicas.
#[derive(Debug)]
pub struct State {
    /// Parameters `[R, P]`.
    pub params: Tensor,
    /// Buffers, one `[R, ...shape]` tensor per buffer of the layout.
    pub buffers: Vec<Tensor>,
}

impl State {
    /// theta_0 of each seed (buffers at their initial values) on `device`.
    pub fn init(layout: &Layout, seeds: &[u64], device: Device) -> Self {
        let rows: Vec<Tensor> = seeds
            .iter()
            .map(|&s| Tensor::from_slice(&init_replica(layout, s)))
            .collect();
        Self {
            params: Tensor::stack(&rows, 0).to_device(device),
            buffers: initial_buffers(layout, seeds.len(), device),
        }
    }

    /// One replica drawn afresh (see [`fresh_replica`]), on the CPU.
    pub fn fresh(layout: &Layout, seed: u64, base: u64) -> Self {
        Self {
            params: Tensor::from_slice(&fresh_replica(layout, seed, base)).unsqueeze(0),
            buffers: initial_buffers(layout, 1, Device::Cpu),
        }
    }

    /// Number of replicas.
    pub fn replicas(&self) -> usize {
        self.params.size()[0] as usize
    }

    /// A detached deep copy.
    pub fn copy(&self) -> Self {
        Self {
            params: self.params.detach().copy(),
            buffers: self.buffers.iter().map(|b| b.detach().copy()).collect(),
        }
    }

    /// The same state on `device`.
    pub fn to_device(&self, device: Device) -> Self {
        Self {
            params: self.params.to_device(device),
            buffers: self.buffers.iter().map(|b| b.to_device(device)).collect(),
        }
    }

    /// The replicas listed in `index` (a `[K]` index tensor).
    pub fn select(&self, index: &Tensor) -> Self {
        Self {
            params: self.params.index_select(0, index),
            buffers: self
                .buffers
                .iter()
                .map(|b| b.index_select(0, index))
                .collect(),
        }
    }

    /// Replica `r` alone (R = 1).
    pub fn row(&self, r: usize) -> Self {
        let r = r as i64;
        Self {
            params: self.params.narrow(0, r, 1),
            buffers: self.buffers.iter().map(|b| b.narrow(0, r, 1)).collect(),
        }
    }

    /// Replicas of several states, stacked in order (all on the same device).
    pub fn stack(states: &[State]) -> Self {
        let params: Vec<&Tensor> = states.iter().map(|s| &s.params).collect();
        let buffers = (0..states.first().map_or(0, |s| s.buffers.len()))
            .map(|i| Tensor::cat(&states.iter().map(|s| &s.buffers[i]).collect::<Vec<_>>(), 0))
            .collect();
        Self {
            params: Tensor::cat(&params, 0),
            buffers,
        }
    }

    /// The parameters multiplied by `masks` (pruned weights exactly zero).
    pub fn masked(&self, masks: &Tensor) -> Self {
        Self {
            params: (&self.params * masks).detach(),
            buffers: self.buffers.iter().map(|b| b.shallow_clone()).collect(),
        }
    }

    /// Replica `r` as named CPU tensors in PyTorch layout: every parameter, then every buffer.
    pub fn named(&self, r: usize, layout: &Layout) -> Vec<(String, Tensor)> {
        let row = self
            .params
            .get(r as i64)
            .to_device(Device::Cpu)
            .unsqueeze(0);
        let mut out: Vec<(String, Tensor)> = (0..layout.specs().len())
            .map(|i| {
                let name = layout.specs()[i].name.clone();
                (name, layout.view(&row, i).squeeze_dim(0).contiguous())
            })
            .collect();
        for (spec, b) in layout.buffers().iter().zip(&self.buffers) {
            out.push((
                spec.name.clone(),
                b.get(r as i64).to_device(Device::Cpu).contiguous(),
            ));
        }
        out
    }

    /// One replica (R = 1, on the CPU) from named tensors; every parameter and buffer must be
    /// there with its shape.
    pub fn from_named(named: &[(String, Tensor)], layout: &Layout, path: &Path) -> Result<Self> {
        let find = |name: &str, shape: &[i64]| -> Result<Tensor> {
            let Some((_, t)) = named.iter().find(|(n, _)| n == name) else {
                bail!("{} lacks `{name}`", path.display());
            };
            if t.size() != shape {
                bail!(
                    "{}: `{name}` has shape {:?}, expected {:?}",
                    path.display(),
                    t.size(),
                    shape
                );
            }
            Ok(t.to_kind(Kind::Float))
        };
        let mut parts = Vec::with_capacity(layout.specs().len());
        for spec in layout.specs() {
            parts.push(find(&spec.name, &spec.shape)?.reshape([-1]));
        }
        let mut buffers = Vec::with_capacity(layout.buffers().len());
        for spec in layout.buffers() {
            buffers.push(find(&spec.name, &spec.shape)?.unsqueeze(0));
        }
        Ok(Self {
            params: Tensor::cat(&parts, 0).unsqueeze(0),
            buffers,
        })
    }
}

/// Buffers of `replicas` replicas at their initial values.
pub fn initial_buffers(layout: &Layout, replicas: usize, device: Device) -> Vec<Tensor> {
    layout
        .buffers()
        .iter()
        .map(|b| {
            let mut shape = vec![replicas as i64];
            shape.extend_from_slice(&b.shape);
            Tensor::full(shape.as_slice(), b.fill, (Kind::Float, device))
        })
        .collect()
}
