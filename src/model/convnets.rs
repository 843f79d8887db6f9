//! Plain convolutional networks: Frankle & Carbin's Conv-2/4/6 and CIFAR-style VGG with
//! BatchNorm, run replica-batched in the grouped layout (see `layers`).

use anyhow::{bail, Result};
use tch::{Device, Tensor};

use super::layers::{
    batch_norm, conv, conv_input, dropout, flatten, global_avg_pool, linear, max_pool, Input, Pass,
};
use super::layout::{BufferSpec, Init, LayerKind, Layout, ParamSpec, Views};
use super::Network;

/// Conv-2 / Conv-4 / Conv-6 (Frankle & Carbin 2019, after Simonyan & Zisserman): pairs of
/// 3 x 3 convolutions (padding 1, ReLU) each followed by 2 x 2 max pooling, then fully
/// connected 256, 256 and the output. Glorot-normal weights, zero biases. Names `conv1` ..
/// `convN`, `fc1`, `fc2`, `fc3`.
#[derive(Debug, Clone)]
pub struct ConvNet {
    layout: Layout,
    convs: usize,
    dropout: f64,
}

fn conv_spec(name: &str, out: usize, inp: usize, k: usize, init: Init) -> ParamSpec {
    ParamSpec::weight(
        format!("{name}.weight"),
        vec![out as i64, inp as i64, k as i64, k as i64],
        init,
        LayerKind::Conv,
    )
}

fn fc_specs(name: &str, out: usize, inp: usize, kind: LayerKind, init: Init) -> [ParamSpec; 2] {
    [
        ParamSpec::weight(
            format!("{name}.weight"),
            vec![out as i64, inp as i64],
            init,
            kind,
        ),
        ParamSpec::dense(format!("{name}.bias"), vec![out as i64], Init::Zeros),
    ]
}

impl ConvNet {
    /// Convolutions of the given widths (a pool after every second one) on `[C, H, W]` images.
    pub fn new(widths: &[usize], input: [usize; 3], classes: usize, dropout: f64) -> Result<Self> {
        let [mut c, mut h, mut w] = input;
        let mut specs = Vec::new();
        for (i, &out) in widths.iter().enumerate() {
            let name = format!("conv{}", i + 1);
            specs.push(conv_spec(
                &name,
                out,
                c,
                3,
                Init::GlorotNormal {
                    fan_in: c * 9,
                    fan_out: out * 9,
                },
            ));
            specs.push(ParamSpec::dense(
                format!("{name}.bias"),
                vec![out as i64],
                Init::Zeros,
            ));
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
        specs.extend(fc_specs("fc1", 256, flat, LayerKind::Fc, glorot(flat, 256)));
        specs.extend(fc_specs("fc2", 256, 256, LayerKind::Fc, glorot(256, 256)));
        specs.extend(fc_specs(
            "fc3",
            classes,
            256,
            LayerKind::Output,
            glorot(256, classes),
        ));
        Ok(Self {
            layout: Layout::new(specs, Vec::new()),
            convs: widths.len(),
            dropout,
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

    fn eval_chunk(&self, device: Device) -> usize {
        super::conv_eval_chunk(device)
    }

    fn forward(&self, pass: &Pass<'_>, x: Input<'_>) -> Tensor {
        let v = self.layout.views(pass.params);
        let replicas = pass.params.size()[0];
        let mut h = Tensor::new();
        for i in 0..self.convs {
            let name = format!("conv{}", i + 1);
            let w = v.get(&format!("{name}.weight"));
            let b = v.get(&format!("{name}.bias"));
            h = if i == 0 {
                conv_input(x, w, Some(b), 1, 1)
            } else {
                conv(&h, w, Some(b), 1, 1)
            };
            h = relu_then_pool(&h, i % 2 == 1);
        }
        let mut f = flatten(&h, replicas);
        for (k, name) in ["fc1", "fc2"].iter().enumerate() {
            f = linear(
                &f,
                v.get(&format!("{name}.weight")),
                v.get(&format!("{name}.bias")),
            )
            .relu();
            f = dropout(&f, self.dropout, pass.dropout, k as i64 + 1);
        }
        linear(&f, v.get("fc3.weight"), v.get("fc3.bias"))
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
    /// Per conv layer: whether a pool follows it.
    pools: Vec<bool>,
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
        let [mut c, h, w] = input;
        if h < 32 || w < 32 {
            bail!("invalid config: VGG pools five times and needs images of at least 32x32 (got {h}x{w}); use CIFAR-10");
        }
        let mut specs = Vec::new();
        let mut buffers = Vec::new();
        let mut pools = Vec::new();
        for &width in vgg_plan(depth) {
            if width == 0 {
                *pools.last_mut().expect("a pool follows a conv") = true;
                continue;
            }
            let name = format!("layers.{}", pools.len());
            specs.push(conv_spec(
                &format!("{name}.conv"),
                width,
                c,
                3,
                Init::KaimingNormal { fan_in: c * 9 },
            ));
            push_bn(&mut specs, &mut buffers, &format!("{name}.bn"), width);
            pools.push(false);
            c = width;
        }
        specs.extend(fc_specs(
            "fc",
            classes,
            c,
            LayerKind::Output,
            Init::KaimingNormal { fan_in: c },
        ));
        Ok(Self {
            layout: Layout::new(specs, buffers),
            pools,
        })
    }
}

/// BatchNorm parameters (scale 1, shift 0) and running statistics of `channels` channels.
pub fn push_bn(
    specs: &mut Vec<ParamSpec>,
    buffers: &mut Vec<BufferSpec>,
    name: &str,
    channels: usize,
) {
    let shape = vec![channels as i64];
    specs.push(ParamSpec::dense(
        format!("{name}.weight"),
        shape.clone(),
        Init::Ones,
    ));
    specs.push(ParamSpec::dense(
        format!("{name}.bias"),
        shape.clone(),
        Init::Zeros,
    ));
    buffers.push(BufferSpec {
        name: format!("{name}.running_mean"),
        shape: shape.clone(),
        fill: 0.0,
    });
    buffers.push(BufferSpec {
        name: format!("{name}.running_var"),
        shape,
        fill: 1.0,
    });
}

/// BatchNorm `name` of a layout applied to grouped activations.
pub fn apply_bn(layout: &Layout, v: &Views<'_>, pass: &Pass<'_>, name: &str, x: &Tensor) -> Tensor {
    let buffer = |suffix: &str| {
        let i = layout
            .buffer_index(&format!("{name}.{suffix}"))
            .unwrap_or_else(|| panic!("layout has {name}.{suffix}"));
        &pass.buffers[i]
    };
    batch_norm(
        x,
        v.get(&format!("{name}.weight")),
        v.get(&format!("{name}.bias")),
        buffer("running_mean"),
        buffer("running_var"),
        pass.train,
    )
}

impl Network for Vgg {
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
        let mut h = Tensor::new();
        for (i, &pool) in self.pools.iter().enumerate() {
            let name = format!("layers.{i}");
            let w = v.get(&format!("{name}.conv.weight"));
            h = if i == 0 {
                conv_input(x, w, None, 1, 1)
            } else {
                conv(&h, w, None, 1, 1)
            };
            h = relu_then_pool(&apply_bn(l, &v, pass, &format!("{name}.bn"), &h), pool);
        }
        let f = global_avg_pool(&h, replicas);
        linear(&f, v.get("fc.weight"), v.get("fc.bias"))
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
