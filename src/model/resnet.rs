//! CIFAR ResNet (He et al. 2016, section 4.2; OpenLTH's `cifar_resnet`): a 3 x 3 convolution
//! to 16 channels, three stages of n residual blocks with 16, 32 and 64 channels (depth 6n + 2:
//! 20, 32, 44, 56, 110), global average pooling and a fully connected output. Blocks are
//! conv-BN-ReLU-conv-BN plus a shortcut (identity, or a strided 1 x 1 convolution with
//! BatchNorm where the shape changes), then ReLU. Convolutions have no bias; Kaiming-normal
//! weights. Names as OpenLTH: `conv`, `bn`, `blocks.<i>.conv1`, `blocks.<i>.bn1`,
//! `blocks.<i>.conv2`, `blocks.<i>.bn2`, `blocks.<i>.shortcut.0` (conv), `blocks.<i>.shortcut.1`
//! (BatchNorm), `fc`.

use tch::{Device, Tensor};

use super::convnets::{apply_bn, push_bn};
use super::layers::{conv, conv_input, global_avg_pool, linear, Input, Pass};
use super::layout::{Init, LayerKind, Layout, ParamSpec, Views};
use super::Network;

/// One residual block's shape.
#[derive(Debug, Clone, Copy)]
struct Block {
    stride: i64,
    projection: bool,
}

/// A CIFAR ResNet of depth 6n + 2.
#[derive(Debug, Clone)]
pub struct ResNet {
    layout: Layout,
    blocks: Vec<Block>,
}

fn conv_weight(name: &str, out: usize, inp: usize, k: usize) -> ParamSpec {
    ParamSpec::weight(
        format!("{name}.weight"),
        vec![out as i64, inp as i64, k as i64, k as i64],
        Init::KaimingNormal {
            fan_in: inp * k * k,
        },
        LayerKind::Conv,
    )
}

impl ResNet {
    /// ResNet-`depth` on `[C, H, W]` images (`depth` = 6n + 2, checked by `model::build`).
    pub fn new(depth: usize, input: [usize; 3], classes: usize) -> Self {
        let n = (depth - 2) / 6;
        let mut specs = Vec::new();
        let mut buffers = Vec::new();
        specs.push(conv_weight("conv", 16, input[0], 3));
        push_bn(&mut specs, &mut buffers, "bn", 16);
        let mut blocks = Vec::new();
        let mut c = 16;
        for (stage, width) in [16usize, 32, 64].into_iter().enumerate() {
            for j in 0..n {
                let stride = if stage > 0 && j == 0 { 2 } else { 1 };
                let projection = stride != 1 || c != width;
                let name = format!("blocks.{}", blocks.len());
                specs.push(conv_weight(&format!("{name}.conv1"), width, c, 3));
                push_bn(&mut specs, &mut buffers, &format!("{name}.bn1"), width);
                specs.push(conv_weight(&format!("{name}.conv2"), width, width, 3));
                push_bn(&mut specs, &mut buffers, &format!("{name}.bn2"), width);
                if projection {
                    specs.push(conv_weight(&format!("{name}.shortcut.0"), width, c, 1));
                    push_bn(
                        &mut specs,
                        &mut buffers,
                        &format!("{name}.shortcut.1"),
                        width,
                    );
                }
                blocks.push(Block { stride, projection });
                c = width;
            }
        }
        specs.push(ParamSpec::weight(
            "fc.weight".into(),
            vec![classes as i64, c as i64],
            Init::KaimingNormal { fan_in: c },
            LayerKind::Output,
        ));
        specs.push(ParamSpec::dense(
            "fc.bias".into(),
            vec![classes as i64],
            Init::Zeros,
        ));
        Self {
            layout: Layout::new(specs, buffers),
            blocks,
        }
    }

    /// One residual block on grouped activations.
    pub fn block(&self, pass: &Pass<'_>, i: usize, x: &Tensor) -> Tensor {
        self.block_with(&self.layout.views(pass.params), pass, i, x)
    }

    fn block_with(&self, v: &Views<'_>, pass: &Pass<'_>, i: usize, x: &Tensor) -> Tensor {
        let l = &self.layout;
        let b = self.blocks[i];
        let name = format!("blocks.{i}");
        let w = |n: &str| v.get(&format!("{name}.{n}.weight"));
        let mut h = conv(x, w("conv1"), None, b.stride, 1);
        h = apply_bn(l, v, pass, &format!("{name}.bn1"), &h).relu();
        h = conv(&h, w("conv2"), None, 1, 1);
        h = apply_bn(l, v, pass, &format!("{name}.bn2"), &h);
        let shortcut = if b.projection {
            let s = conv(x, w("shortcut.0"), None, b.stride, 0);
            apply_bn(l, v, pass, &format!("{name}.shortcut.1"), &s)
        } else {
            x.shallow_clone()
        };
        (h + shortcut).relu()
    }
}

impl Network for ResNet {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn eval_chunk(&self, device: Device) -> usize {
        super::conv_eval_chunk(device)
    }

    fn forward(&self, pass: &Pass<'_>, x: Input<'_>) -> Tensor {
        let l = &self.layout;
        let v = l.views(pass.params);
        let replicas = pass.params.size()[0];
        let mut h = conv_input(x, v.get("conv.weight"), None, 1, 1);
        h = apply_bn(l, &v, pass, "bn", &h).relu();
        for i in 0..self.blocks.len() {
            h = self.block_with(&v, pass, i, &h);
        }
        let f = global_avg_pool(&h, replicas);
        linear(&f, v.get("fc.weight"), v.get("fc.bias"))
    }
}
