//! The trainable state of a population: the flat `[R, P]` parameters plus the buffers
//! (BatchNorm running statistics, `[R, ...]` each), moved, selected and stacked together
//! (`record::tensors` writes and reads them in PyTorch layout).

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
        self.with_params((&self.params * masks).detach())
    }

    /// `params` with this state's buffers (shared, not copied).
    pub fn with_params(&self, params: Tensor) -> Self {
        Self {
            params,
            buffers: self.buffers.iter().map(|b| b.shallow_clone()).collect(),
        }
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
