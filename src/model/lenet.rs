//! LeNet-300-100 (LeCun et al. 1998, as in Frankle & Carbin 2019): fully connected layers of
//! 300 and 100 ReLU units and a 10-way output, parameters named as PyTorch would name them
//! (`fc1.weight` `[300, 784]`, `fc1.bias`, ...). Optional dropout after each hidden layer.

use tch::Tensor;

use super::layer_inputs::{linear_stack_inputs, LayerInput};
use super::layers::{dropout, linear, Input, Pass};
use super::layout::{Init, LayerKind, Layout, LayoutBuilder, LinearParams, ParamSpec, Views};
use super::units::{Consumer, UnitLayer};
use super::Network;

/// A fully connected ReLU network (LeNet-300-100 by default).
#[derive(Debug, Clone)]
pub struct Lenet {
    layout: Layout,
    widths: Vec<usize>,
    /// Each layer's weight and bias, input layer first.
    layers: Vec<LinearParams>,
    dropout: f64,
}

impl Lenet {
    /// Hidden widths 300 and 100 for `input_dim` inputs and `classes` outputs.
    pub fn new(input_dim: usize, classes: usize) -> Self {
        Self::with_widths(&[input_dim, 300, 100, classes])
    }

    /// A fully connected ReLU network with the given widths (input first, classes last).
    pub fn with_widths(widths: &[usize]) -> Self {
        let mut builder = LayoutBuilder::default();
        let mut params = Vec::new();
        let layers = widths.len() - 1;
        for (l, pair) in widths.windows(2).enumerate() {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            let kind = if l + 1 == layers {
                LayerKind::Output
            } else {
                LayerKind::Fc
            };
            let weight = builder.param(ParamSpec::weight(
                format!("fc{}.weight", l + 1),
                vec![fan_out as i64, fan_in as i64],
                Init::GlorotNormal { fan_in, fan_out },
                kind,
            ));
            let bias = builder.param(ParamSpec::dense(
                format!("fc{}.bias", l + 1),
                vec![fan_out as i64],
                Init::Zeros,
            ));
            params.push(LinearParams { weight, bias });
        }
        Self {
            layout: builder.build(),
            widths: widths.to_vec(),
            layers: params,
            dropout: 0.0,
        }
    }

    /// The same network with dropout probability `p` after each hidden layer.
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    fn layers(&self) -> usize {
        self.widths.len() - 1
    }

    /// Layer `l`'s weight and bias.
    fn params<'v>(&self, v: &'v Views, l: usize) -> (&'v Tensor, &'v Tensor) {
        v.linear(self.layers[l])
    }
}

impl Network for Lenet {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn fully_connected(&self) -> Option<&[LinearParams]> {
        (self.dropout == 0.0).then_some(self.layers.as_slice())
    }

    fn has_layer_inputs(&self) -> bool {
        true
    }

    fn weight_positions(&self) -> Option<Vec<i64>> {
        Some(vec![1; self.layout.specs().len()])
    }

    fn unit_layers(&self) -> Vec<UnitLayer> {
        // Every hidden layer's neurons, each feeding the next layer's columns.
        self.layers
            .windows(2)
            .map(|pair| UnitLayer {
                weight: pair[0].weight,
                owned: vec![pair[0].bias],
                owned_buffers: Vec::new(),
                consumers: vec![Consumer {
                    weight: pair[1].weight,
                    span: 1,
                }],
            })
            .collect()
    }

    fn layer_inputs(&self, w: &Tensor, x: &Tensor) -> Option<Vec<LayerInput>> {
        let mut out = Vec::with_capacity(self.layers.len());
        let h = x.view([x.size()[0], -1]);
        linear_stack_inputs(&self.layout, &self.layers, w, h, &mut out);
        Some(out)
    }

    fn forward(&self, pass: &Pass<'_>, x: Input<'_>) -> Tensor {
        let params = pass.params;
        let replicas = params.size()[0];
        let v = self.layout.views(params);
        let mut h = match x {
            Input::PerReplica(x) => {
                let s = x.size();
                x.reshape([s[0], s[1], -1])
            }
            Input::Shared(x) => {
                // First layer: one GEMM of the shared input against every replica's weights.
                let m = x.size()[0];
                let (w1, b1) = self.params(&v, 0);
                let w1 = w1.reshape([replicas * self.widths[1] as i64, self.widths[0] as i64]);
                let h = x
                    .reshape([m, -1])
                    .matmul(&w1.transpose(0, 1))
                    .view([m, replicas, self.widths[1] as i64])
                    .permute([1, 0, 2])
                    + b1.unsqueeze(1);
                if self.layers() > 1 {
                    dropout(&h.relu(), self.dropout, pass.dropout, 1)
                } else {
                    h
                }
            }
        };
        let first = usize::from(matches!(x, Input::Shared(_)));
        for l in first..self.layers() {
            let (w, b) = self.params(&v, l);
            h = linear(&h, w, b);
            if l + 1 < self.layers() {
                h = dropout(&h.relu(), self.dropout, pass.dropout, l as i64 + 1);
            }
        }
        h
    }
}
