//! CIFAR ResNet (He et al. 2016, section 4.2; OpenLTH's `cifar_resnet`): a 3 x 3 convolution
//! to 16 channels, three stages of n residual blocks with 16, 32 and 64 channels (depth 6n + 2:
//! 20, 32, 44, 56, 110), global average pooling and a fully connected output. Blocks are
//! conv-BN-ReLU-conv-BN plus a shortcut (identity, or a strided 1 x 1 convolution with
//! BatchNorm where the shape changes), then ReLU. Convolutions have no bias; Kaiming-normal
//! weights. Names as OpenLTH: `conv`, `bn`, `blocks.<i>.conv1`, `blocks.<i>.bn1`,
//! `blocks.<i>.conv2`, `blocks.<i>.bn2`, `blocks.<i>.shortcut.0` (conv), `blocks.<i>.shortcut.1`
//! (BatchNorm), `fc`.

use tch::{Device, Tensor};

use super::convnets::{apply_bn, push_bn, push_conv_weight, push_linear};
use super::layers::{conv, conv_input, global_avg_pool, linear, Input, Pass};
use super::layout::{BatchNormParams, Init, LayerKind, Layout, LayoutBuilder, LinearParams, Views};
use super::units::{Consumer, UnitLayer};
use super::Network;

/// One residual block: its shape and where its parameters sit.
#[derive(Debug, Clone, Copy)]
struct Block {
    stride: i64,
    conv1: usize,
    bn1: BatchNormParams,
    conv2: usize,
    bn2: BatchNormParams,
    /// The projection shortcut's convolution and BatchNorm, where the shape changes.
    shortcut: Option<(usize, BatchNormParams)>,
}

/// A CIFAR ResNet of depth 6n + 2.
#[derive(Debug, Clone)]
pub struct ResNet {
    layout: Layout,
    conv: usize,
    bn: BatchNormParams,
    blocks: Vec<Block>,
    fc: LinearParams,
    /// Per parameter, the output positions (H x W) each entry is used at per example.
    positions: Vec<i64>,
}

/// Appends a Kaiming-normal convolution weight `<name>.weight` `[out, inp, k, k]`.
fn conv_weight(builder: &mut LayoutBuilder, name: &str, out: usize, inp: usize, k: usize) -> usize {
    let init = Init::KaimingNormal {
        fan_in: inp * k * k,
    };
    push_conv_weight(builder, name, (out, inp, k), init)
}

impl ResNet {
    /// ResNet-`depth` on `[C, H, W]` images (`depth` = 6n + 2, checked by `model::build`).
    pub fn new(depth: usize, input: [usize; 3], classes: usize) -> Self {
        let n = (depth - 2) / 6;
        let mut b = LayoutBuilder::default();
        // Output positions of each convolution weight: the map after its stride.
        let (mut h, mut w) = (input[1] as i64, input[2] as i64);
        let mut maps: Vec<(usize, i64)> = Vec::new();
        let conv = conv_weight(&mut b, "conv", 16, input[0], 3);
        maps.push((conv, h * w));
        let bn = push_bn(&mut b, "bn", 16);
        let mut blocks = Vec::new();
        let mut c = 16;
        for (stage, width) in [16usize, 32, 64].into_iter().enumerate() {
            for j in 0..n {
                let stride = if stage > 0 && j == 0 { 2 } else { 1 };
                if stride == 2 {
                    // 3 x 3 with padding 1 (and the 1 x 1 shortcut) at stride 2.
                    (h, w) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
                }
                let projection = stride != 1 || c != width;
                let name = format!("blocks.{}", blocks.len());
                let conv1 = conv_weight(&mut b, &format!("{name}.conv1"), width, c, 3);
                let bn1 = push_bn(&mut b, &format!("{name}.bn1"), width);
                let conv2 = conv_weight(&mut b, &format!("{name}.conv2"), width, width, 3);
                let bn2 = push_bn(&mut b, &format!("{name}.bn2"), width);
                let shortcut = projection.then(|| {
                    let conv = conv_weight(&mut b, &format!("{name}.shortcut.0"), width, c, 1);
                    (conv, push_bn(&mut b, &format!("{name}.shortcut.1"), width))
                });
                maps.push((conv1, h * w));
                maps.push((conv2, h * w));
                if let Some((conv, _)) = shortcut {
                    maps.push((conv, h * w));
                }
                blocks.push(Block {
                    stride,
                    conv1,
                    bn1,
                    conv2,
                    bn2,
                    shortcut,
                });
                c = width;
            }
        }
        let init = Init::KaimingNormal { fan_in: c };
        let fc = push_linear(&mut b, "fc", (classes, c), LayerKind::Output, init);
        let layout = b.build();
        let mut positions = vec![1; layout.specs().len()];
        for (i, map) in maps {
            positions[i] = map;
        }
        Self {
            layout,
            conv,
            bn,
            blocks,
            fc,
            positions,
        }
    }

    /// One residual block on grouped activations.
    pub fn block(&self, pass: &Pass<'_>, i: usize, x: &Tensor) -> Tensor {
        self.block_with(&self.layout.views(pass.params), pass, i, x)
    }

    fn block_with(&self, v: &Views, pass: &Pass<'_>, i: usize, x: &Tensor) -> Tensor {
        let b = self.blocks[i];
        let mut h = conv(x, v.at(b.conv1), None, b.stride, 1);
        h = apply_bn(v, pass, b.bn1, &h).relu();
        h = conv(&h, v.at(b.conv2), None, 1, 1);
        h = apply_bn(v, pass, b.bn2, &h);
        let shortcut = match b.shortcut {
            Some((w, bn)) => {
                let s = conv(x, v.at(w), None, b.stride, 0);
                apply_bn(v, pass, bn, &s)
            }
            None => x.shallow_clone(),
        };
        (h + shortcut).relu()
    }
}

impl Network for ResNet {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn weight_positions(&self) -> Option<Vec<i64>> {
        Some(self.positions.clone())
    }

    fn unit_layers(&self) -> Vec<UnitLayer> {
        // Residual additions tie every other channel to its block's neighbours: only the
        // inner convolution's filters go, with bn1's entries and conv2's input channels.
        self.blocks
            .iter()
            .map(|b| UnitLayer {
                weight: b.conv1,
                owned: vec![b.bn1.weight, b.bn1.bias],
                owned_buffers: vec![b.bn1.mean, b.bn1.var],
                consumers: vec![Consumer {
                    weight: b.conv2,
                    span: 1,
                }],
            })
            .collect()
    }

    fn eval_chunk(&self, device: Device) -> usize {
        super::conv_eval_chunk(device)
    }

    fn forward(&self, pass: &Pass<'_>, x: Input<'_>) -> Tensor {
        let v = self.layout.views(pass.params);
        let replicas = pass.params.size()[0];
        let mut h = conv_input(x, v.at(self.conv), None, 1, 1);
        h = apply_bn(&v, pass, self.bn, &h).relu();
        for i in 0..self.blocks.len() {
            h = self.block_with(&v, pass, i, &h);
        }
        let f = global_avg_pool(&h, replicas);
        let (w, b) = v.linear(self.fc);
        linear(&f, w, b)
    }
}
