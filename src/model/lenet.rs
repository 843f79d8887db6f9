//! LeNet-300-100 (LeCun et al. 1998, as in Frankle & Carbin 2019): fully connected layers of
//! 300 and 100 ReLU units and a 10-way output, parameters named as PyTorch's
//! `nn.Sequential`-free module would name them (`fc1.weight` `[300, 784]`, `fc1.bias`, ...).

use tch::Tensor;

use super::layout::{Init, Layout, ParamSpec};
use super::Network;

/// LeNet-300-100 for `input_dim` inputs and `classes` outputs.
#[derive(Debug, Clone)]
pub struct Lenet {
    layout: Layout,
    widths: Vec<usize>,
}

impl Lenet {
    /// Hidden widths 300 and 100.
    pub fn new(input_dim: usize, classes: usize) -> Self {
        Self::with_widths(&[input_dim, 300, 100, classes])
    }

    /// A fully connected ReLU network with the given widths (input first, classes last).
    pub fn with_widths(widths: &[usize]) -> Self {
        let mut specs = Vec::new();
        for (l, pair) in widths.windows(2).enumerate() {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            specs.push(ParamSpec {
                name: format!("fc{}.weight", l + 1),
                shape: vec![fan_out as i64, fan_in as i64],
                prunable: true,
                init: Init::GlorotNormal { fan_in, fan_out },
            });
            specs.push(ParamSpec {
                name: format!("fc{}.bias", l + 1),
                shape: vec![fan_out as i64],
                prunable: false,
                init: Init::Zeros,
            });
        }
        Self {
            layout: Layout::new(specs),
            widths: widths.to_vec(),
        }
    }

    fn layers(&self) -> usize {
        self.widths.len() - 1
    }
}

impl Network for Lenet {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn forward(&self, params: &Tensor, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for l in 0..self.layers() {
            let w = self.layout.view(params, 2 * l);
            let b = self.layout.view(params, 2 * l + 1);
            h = b.unsqueeze(1).baddbmm(&h, &w.transpose(1, 2), 1.0, 1.0);
            if l + 1 < self.layers() {
                h = h.relu();
            }
        }
        h
    }

    fn forward_shared(&self, params: &Tensor, x: &Tensor) -> Tensor {
        let replicas = params.size()[0];
        let m = x.size()[0];
        // First layer: one GEMM of the shared input against every replica's weights.
        let w1 = self
            .layout
            .segment(params, 0)
            .reshape([replicas * self.widths[1] as i64, self.widths[0] as i64]);
        let b1 = self.layout.view(params, 1);
        let mut h = x
            .matmul(&w1.transpose(0, 1))
            .view([m, replicas, self.widths[1] as i64])
            .permute([1, 0, 2])
            + b1.unsqueeze(1);
        for l in 1..self.layers() {
            h = h.relu();
            let w = self.layout.view(params, 2 * l);
            let b = self.layout.view(params, 2 * l + 1);
            h = b.unsqueeze(1).baddbmm(&h, &w.transpose(1, 2), 1.0, 1.0);
        }
        h
    }
}
