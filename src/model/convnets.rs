//! Plain convolutional networks: Frankle & Carbin's Conv-2/4/6 and CIFAR-style VGG with
//! BatchNorm, run replica-batched in the grouped layout (see `layers`).

use anyhow::{bail, Result};
use tch::{Device, Tensor};

use super::layer_inputs::{linear_stack_inputs, patches, replica_param, LayerInput};
use super::layers::{
    batch_norm, conv, conv_input, dropout, flatten, global_avg_pool, linear, max_pool, Input, Pass,
};
use super::layout::{
    BatchNormParams, BufferSpec, ConvParams, Init, LayerKind, Layout, LayoutBuilder, LinearParams,
    ParamSpec, Views,
};
use super::units::{Consumer, UnitLayer};
use super::Network;

/// Conv-2 / Conv-4 / Conv-6 (Frankle & Carbin 2019, after Simonyan & Zisserman): pairs of
/// 3 x 3 convolutions (padding 1, ReLU) each followed by 2 x 2 max pooling, then fully
/// connected 256, 256 and the output. Glorot-normal weights, zero biases. Names `conv1` ..
/// `convN`, `fc1`, `fc2`, `fc3`.
#[derive(Debug, Clone)]
pub struct ConvNet {
    layout: Layout,
    convs: Vec<ConvParams>,
    /// `fc1`, `fc2` and the output layer `fc3`.
    fcs: [LinearParams; 3],
    dropout: f64,
    /// Height times width of the last feature map (what each of its channels gives `fc1`).
    last_map: i64,
    /// Height times width of each convolution's output.
    conv_maps: Vec<i64>,
}

/// Appends a `k` x `k` convolution weight `[out, inp, k, k]` called `<name>.weight`.
pub fn push_conv_weight(
    builder: &mut LayoutBuilder,
    name: &str,
    (out, inp, k): (usize, usize, usize),
    init: Init,
) -> usize {
    builder.param(ParamSpec::weight(
        format!("{name}.weight"),
        vec![out as i64, inp as i64, k as i64, k as i64],
        init,
        LayerKind::Conv,
    ))
}

/// Appends a fully connected layer `<name>.weight` `[out, inp]` and its zero bias.
pub fn push_linear(
    builder: &mut LayoutBuilder,
    name: &str,
    (out, inp): (usize, usize),
    kind: LayerKind,
    init: Init,
) -> LinearParams {
    let weight = builder.param(ParamSpec::weight(
        format!("{name}.weight"),
        vec![out as i64, inp as i64],
        init,
        kind,
    ));
    let bias = builder.param(ParamSpec::dense(
        format!("{name}.bias"),
        vec![out as i64],
        Init::Zeros,
    ));
    LinearParams { weight, bias }
}

impl ConvNet {
    /// Convolutions of the given widths (a pool after every second one) on `[C, H, W]` images.
    pub fn new(widths: &[usize], input: [usize; 3], classes: usize, dropout: f64) -> Result<Self> {
        let [mut c, mut h, mut w] = input;
        let mut builder = LayoutBuilder::default();
        let mut convs = Vec::new();
        let mut conv_maps = Vec::new();
        for (i, &out) in widths.iter().enumerate() {
            conv_maps.push((h * w) as i64);
            let name = format!("conv{}", i + 1);
            let init = Init::GlorotNormal {
                fan_in: c * 9,
                fan_out: out * 9,
            };
            let weight = push_conv_weight(&mut builder, &name, (out, c, 3), init);
            let bias = builder.param(ParamSpec::dense(
                format!("{name}.bias"),
                vec![out as i64],
                Init::Zeros,
            ));
            convs.push(ConvParams {
                weight,
                bias: Some(bias),
            });
            c = out;
            if i % 2 == 1 {
                if h < 2 || w < 2 {
                    bail!(
                        "invalid config: {}x{} images are too small for Conv-{}",
                        input[1],
                        input[2],
                        widths.len()
                    );
                }
                h /= 2;
                w /= 2;
            }
        }
        let flat = c * h * w;
        let glorot = |i: usize, o: usize| Init::GlorotNormal {
            fan_in: i,
            fan_out: o,
        };
        let b = &mut builder;
        let fcs = [
            push_linear(b, "fc1", (256, flat), LayerKind::Fc, glorot(flat, 256)),
            push_linear(b, "fc2", (256, 256), LayerKind::Fc, glorot(256, 256)),
            push_linear(
                b,
                "fc3",
                (classes, 256),
                LayerKind::Output,
                glorot(256, classes),
            ),
        ];
        Ok(Self {
            layout: builder.build(),
            convs,
            fcs,
            dropout,
            last_map: (h * w) as i64,
            conv_maps,
        })
    }
}

/// ReLU, then 2 x 2 max pooling when `pool`. Pooling runs first: the same values and
/// gradients (both are monotone, so the maximum of the rectified window is the rectified
/// maximum, and the gradient reaches the same element or none), with the ReLU and its
/// backward on a quarter of the activations.
fn relu_then_pool(x: &Tensor, pool: bool) -> Tensor {
    if pool {
        max_pool(x).relu()
    } else {
        x.relu()
    }
}

impl Network for ConvNet {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn weight_positions(&self) -> Option<Vec<i64>> {
        let mut positions = vec![1; self.layout.specs().len()];
        for (c, &map) in self.convs.iter().zip(&self.conv_maps) {
            positions[c.weight] = map;
        }
        Some(positions)
    }

    fn unit_layers(&self) -> Vec<UnitLayer> {
        // Each convolution's filters feed the next one's input channels, the last one's
        // `fc1`'s columns (H * W per channel); `fc1` and `fc2` neurons the next layer's.
        let mut layers = Vec::new();
        for (i, c) in self.convs.iter().enumerate() {
            let consumer = match self.convs.get(i + 1) {
                Some(next) => Consumer {
                    weight: next.weight,
                    span: 1,
                },
                None => Consumer {
                    weight: self.fcs[0].weight,
                    span: self.last_map,
                },
            };
            layers.push(UnitLayer {
                weight: c.weight,
                owned: c.bias.into_iter().collect(),
                owned_buffers: Vec::new(),
                consumers: vec![consumer],
            });
        }
        for pair in self.fcs.windows(2) {
            layers.push(UnitLayer {
                weight: pair[0].weight,
                owned: vec![pair[0].bias],
                owned_buffers: Vec::new(),
                consumers: vec![Consumer {
                    weight: pair[1].weight,
                    span: 1,
                }],
            });
        }
        layers
    }

    fn eval_chunk(&self, device: Device) -> usize {
        super::conv_eval_chunk(device)
    }

    fn forward(&self, pass: &Pass<'_>, x: Input<'_>) -> Tensor {
        let v = self.layout.views(pass.params);
        let replicas = pass.params.size()[0];
        let mut h = Tensor::new();
        for (i, &params) in self.convs.iter().enumerate() {
            let (w, b) = v.conv(params);
            h = if i == 0 {
                conv_input(x, w, b, 1, 1)
            } else {
                conv(&h, w, b, 1, 1)
            };
            h = relu_then_pool(&h, i % 2 == 1);
        }
        let mut f = flatten(&h, replicas);
        for (k, &params) in self.fcs[..2].iter().enumerate() {
            let (w, b) = v.linear(params);
            f = linear(&f, w, b).relu();
            f = dropout(&f, self.dropout, pass.dropout, k as i64 + 1);
        }
        let (w, b) = v.linear(self.fcs[2]);
        linear(&f, w, b)
    }

    fn has_layer_inputs(&self) -> bool {
        true
    }

    fn layer_inputs(&self, w: &Tensor, x: &Tensor) -> Option<Vec<LayerInput>> {
        let param = |i: usize| replica_param(&self.layout, w, i);
        let mut out = Vec::with_capacity(self.convs.len() + self.fcs.len());
        let mut h = x.shallow_clone();
        for (i, conv) in self.convs.iter().enumerate() {
            out.push(LayerInput {
                weight: conv.weight,
                rows: patches(&h, 3, 1),
            });
            let bias = conv.bias.map(param);
            h = h.conv2d(
                &param(conv.weight),
                bias.as_ref(),
                [1, 1],
                [1, 1],
                [1, 1],
                1,
            );
            h = relu_then_pool(&h, i % 2 == 1);
        }
        linear_stack_inputs(&self.layout, &self.fcs, w, h.flatten(1, -1), &mut out);
        Some(out)
    }
}

/// CIFAR-style VGG with BatchNorm (as in OpenLTH's `cifar_vgg`): 3 x 3 convolutions without
/// bias, each followed by BatchNorm and ReLU, max pooling between stages, global average
/// pooling and one fully connected output layer. Kaiming-normal weights, BatchNorm scale 1 and
/// shift 0. Names `layers.<i>.conv.weight`, `layers.<i>.bn.{weight,bias,running_mean,running_var}`,
/// `fc.weight`, `fc.bias`.
#[derive(Debug, Clone)]
pub struct Vgg {
    layout: Layout,
    layers: Vec<VggLayer>,
    fc: LinearParams,
    /// Per parameter, the output positions of one example each entry is used at.
    positions: Vec<i64>,
}

/// One convolution of a VGG, its BatchNorm and whether a pool follows.
#[derive(Debug, Clone, Copy)]
struct VggLayer {
    conv: ConvParams,
    bn: BatchNormParams,
    pool: bool,
}

/// Stage plans: widths, 0 = max pool.
fn vgg_plan(depth: usize) -> &'static [usize] {
    match depth {
        11 => &[64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0],
        _ => &[
            64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
        ],
    }
}

impl Vgg {
    /// VGG-11 or VGG-16 on `[C, H, W]` images (at least 32 x 32: five poolings).
    pub fn new(depth: usize, input: [usize; 3], classes: usize) -> Result<Self> {
        let [mut c, mut h, mut w] = input;
        if h < 32 || w < 32 {
            bail!("invalid config: VGG pools five times and needs images of at least 32x32 (got {h}x{w}); use CIFAR-10");
        }
        let mut builder = LayoutBuilder::default();
        let mut layers: Vec<VggLayer> = Vec::new();
        let mut maps = Vec::new();
        for &width in vgg_plan(depth) {
            if width == 0 {
                layers.last_mut().expect("a pool follows a conv").pool = true;
                (h, w) = (h / 2, w / 2);
                continue;
            }
            maps.push((h * w) as i64);
            let name = format!("layers.{}", layers.len());
            let init = Init::KaimingNormal { fan_in: c * 9 };
            let weight =
                push_conv_weight(&mut builder, &format!("{name}.conv"), (width, c, 3), init);
            let bn = push_bn(&mut builder, &format!("{name}.bn"), width);
            layers.push(VggLayer {
                conv: ConvParams { weight, bias: None },
                bn,
                pool: false,
            });
            c = width;
        }
        let init = Init::KaimingNormal { fan_in: c };
        let fc = push_linear(&mut builder, "fc", (classes, c), LayerKind::Output, init);
        let layout = builder.build();
        let mut positions = vec![1; layout.specs().len()];
        for (layer, map) in layers.iter().zip(maps) {
            positions[layer.conv.weight] = map;
        }
        Ok(Self {
            layout,
            layers,
            fc,
            positions,
        })
    }
}

/// Appends BatchNorm `name`: parameters (scale 1, shift 0) and running statistics of
/// `channels` channels.
pub fn push_bn(builder: &mut LayoutBuilder, name: &str, channels: usize) -> BatchNormParams {
    let shape = vec![channels as i64];
    let param =
        |suffix: &str, init| ParamSpec::dense(format!("{name}.{suffix}"), shape.clone(), init);
    let buffer = |suffix: &str, fill| BufferSpec {
        name: format!("{name}.{suffix}"),
        shape: shape.clone(),
        fill,
    };
    BatchNormParams {
        weight: builder.param(param("weight", Init::Ones)),
        bias: builder.param(param("bias", Init::Zeros)),
        mean: builder.buffer(buffer("running_mean", 0.0)),
        var: builder.buffer(buffer("running_var", 1.0)),
    }
}

/// A BatchNorm of a layout applied to grouped activations.
pub fn apply_bn(v: &Views, pass: &Pass<'_>, bn: BatchNormParams, x: &Tensor) -> Tensor {
    batch_norm(
        x,
        v.at(bn.weight),
        v.at(bn.bias),
        &pass.buffers[bn.mean],
        &pass.buffers[bn.var],
        pass.train,
    )
}

impl Network for Vgg {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn weight_positions(&self) -> Option<Vec<i64>> {
        Some(self.positions.clone())
    }

    fn unit_layers(&self) -> Vec<UnitLayer> {
        // Each convolution's filters, with their BatchNorm entries, feed the next
        // convolution's input channels, the last one's the classifier's (after global pooling).
        self.layers
            .iter()
            .enumerate()
            .map(|(i, layer)| UnitLayer {
                weight: layer.conv.weight,
                owned: vec![layer.bn.weight, layer.bn.bias],
                owned_buffers: vec![layer.bn.mean, layer.bn.var],
                consumers: vec![Consumer {
                    weight: self
                        .layers
                        .get(i + 1)
                        .map_or(self.fc.weight, |n| n.conv.weight),
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
        let mut h = Tensor::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let (w, b) = v.conv(layer.conv);
            h = if i == 0 {
                conv_input(x, w, b, 1, 1)
            } else {
                conv(&h, w, b, 1, 1)
            };
            h = relu_then_pool(&apply_bn(&v, pass, layer.bn, &h), layer.pool);
        }
        let f = global_avg_pool(&h, replicas);
        let (w, b) = v.linear(self.fc);
        linear(&f, w, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Values and input gradients of pooling-then-ReLU equal ReLU-then-pooling bit for bit,
    /// with ties, zeros and all-negative windows among the inputs.
    #[test]
    fn pooling_before_the_relu_changes_no_bit() {
        tch::manual_seed(11);
        let opts = (Kind::Float, Device::Cpu);
        // Rounded to halves: many ties and exact zeros.
        let x = (Tensor::randn([4, 6, 8, 8], opts) * 2.0).round() / 2.0;
        let upstream = Tensor::randn([4, 6, 4, 4], opts);
        let run = |f: &dyn Fn(&Tensor) -> Tensor| {
            let leaf = x.detach().set_requires_grad(true);
            let y = f(&leaf);
            let g =
                Tensor::run_backward(&[(&y * &upstream).sum(Kind::Float)], &[&leaf], false, false);
            (y.detach(), g[0].shallow_clone())
        };
        let (y1, g1) = run(&|t| relu_then_pool(t, true));
        let (y2, g2) = run(&|t| max_pool(&t.relu()));
        assert!(x.eq(0.0).any().int64_value(&[]) == 1, "zeros in the input");
        assert!(y1.equal(&y2), "values");
        assert!(g1.equal(&g2), "gradients");
    }
}
