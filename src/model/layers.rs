//! Replica-batched layers. Convolutional activations of a population use the *grouped layout*
//! `[B, R * C, H, W]`: replica r's channels sit at `r * C .. (r + 1) * C`, so one grouped
//! convolution (`groups = R`) runs every replica's filters on its own channels, BatchNorm over
//! the `R * C` channels keeps per-replica statistics, and pooling is per channel anyway.
//! Fully connected layers take `[R, B, F]` and run as one `baddbmm` (a single replica as a
//! plain `linear`).

use tch::{Device, Kind, Tensor};

/// Input of a forward pass.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// One batch per replica: `[R, B, C, H, W]`.
    PerReplica(&'a Tensor),
    /// One batch shared by all replicas (evaluation): `[M, C, H, W]`.
    Shared(&'a Tensor),
}

/// Keys of per-replica dropout masks: the mask of replica r at a step is a function of
/// (`seeds[r]`, `iteration`, layer), never of the other replicas.
#[derive(Debug, Clone, Copy)]
pub struct DropoutKeys<'a> {
    /// `[R]` int64 seeds on the device.
    pub seeds: &'a Tensor,
    /// The training iteration.
    pub iteration: u64,
}

/// What a forward pass runs on.
#[derive(Debug, Clone, Copy)]
pub struct Pass<'a> {
    /// Parameters `[R, P]`.
    pub params: &'a Tensor,
    /// Buffers (BatchNorm running statistics), `[R, ...]` each; updated in place in training.
    pub buffers: &'a [Tensor],
    /// Training mode (batch statistics, dropout) or evaluation (running statistics).
    pub train: bool,
    /// Dropout keys (training only).
    pub dropout: Option<DropoutKeys<'a>>,
}

/// `[R, B, C, H, W]` to the grouped layout `[B, R * C, H, W]`.
pub fn to_grouped(x: &Tensor) -> Tensor {
    let s = x.size();
    x.permute([1, 0, 2, 3, 4])
        .reshape([s[1], s[0] * s[2], s[3], s[4]])
}

/// Convolution of every replica's own channels: `x` grouped `[B, R * C, H, W]`, `w`
/// `[R, O, C, k, k]`, `b` `[R, O]`; returns `[B, R * O, H', W']`.
pub fn conv(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: i64, padding: i64) -> Tensor {
    conv_groups(x, w, b, stride, padding, w.size()[0])
}

/// Convolution of one shared input `[M, C, H, W]` with every replica's filters; returns the
/// grouped layout `[M, R * O, H', W']` (one ordinary convolution with R * O filters).
pub fn conv_shared(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: i64,
    padding: i64,
) -> Tensor {
    conv_groups(x, w, b, stride, padding, 1)
}

/// All replicas' filters `[R, O, C, k, k]` as R * O filters, in `groups` groups.
fn conv_groups(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: i64,
    padding: i64,
    groups: i64,
) -> Tensor {
    let s = w.size();
    let (r, o) = (s[0], s[1]);
    let w = w.reshape([r * o, s[2], s[3], s[4]]);
    let b = b.map(|b| b.reshape([r * o]));
    let x = if x.device() == Device::Cpu {
        channels_last(x)
    } else {
        x.shallow_clone()
    };
    x.conv2d(
        &w,
        b.as_ref(),
        [stride, stride],
        [padding, padding],
        [1, 1],
        groups,
    )
}

/// `x` `[N, C, H, W]` with channels-last strides `[H * W * C, 1, W * C, C]` (the same values;
/// a copy unless it has them already). On the CPU, libtorch's oneDNN convolutions run faster
/// on channels-last inputs, and every later layer keeps the layout: a Conv-2 evaluation ran
/// 1.8x as fast, a training step as fast as before (BENCHMARKS.md). The layout is only a
/// memory order: shapes, and what `reshape` and `flatten` return, are unchanged.
fn channels_last(x: &Tensor) -> Tensor {
    let s = x.size();
    let (c, h, w) = (s[1], s[2], s[3]);
    let strides = [h * w * c, 1, w * c, c];
    if x.stride() == strides {
        return x.shallow_clone();
    }
    let mut out = Tensor::empty_strided(s.as_slice(), strides, (x.kind(), x.device()));
    out.copy_(x);
    out
}

/// The first convolution of a network, whatever the input.
pub fn conv_input(
    x: Input<'_>,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: i64,
    padding: i64,
) -> Tensor {
    match x {
        Input::PerReplica(x) => conv(&to_grouped(x), w, b, stride, padding),
        Input::Shared(x) => conv_shared(x, w, b, stride, padding),
    }
}

/// BatchNorm with per-replica scale `gamma` `[R, C]`, shift `beta` `[R, C]` and running
/// statistics `mean`, `var` (contiguous `[R, C]` buffers, updated in place in training) on
/// grouped activations.
pub fn batch_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    train: bool,
) -> Tensor {
    let (g, b) = (gamma.reshape([-1]), beta.reshape([-1]));
    let (m, v) = (mean.view([-1]), var.view([-1]));
    x.batch_norm(
        Some(&g),
        Some(&b),
        Some(&m),
        Some(&v),
        train,
        0.1,
        1e-5,
        true,
    )
}

/// 2 x 2 max pooling with stride 2.
pub fn max_pool(x: &Tensor) -> Tensor {
    x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
}

/// Grouped `[B, R * C, H, W]` to per-replica features `[R, B, C * H * W]` (PyTorch's flatten
/// order within a replica).
pub fn flatten(x: &Tensor, replicas: i64) -> Tensor {
    let b = x.size()[0];
    x.reshape([b, replicas, -1]).permute([1, 0, 2])
}

/// Global average pooling of grouped activations to `[R, B, C]`.
pub fn global_avg_pool(x: &Tensor, replicas: i64) -> Tensor {
    let b = x.size()[0];
    x.mean_dim(&[2i64, 3][..], false, Kind::Float)
        .reshape([b, replicas, -1])
        .permute([1, 0, 2])
}

/// Fully connected layer of every replica: `x` `[R, B, in]`, `w` `[R, out, in]`, `b` `[R, out]`;
/// returns `[R, B, out]`. Either way the backward writes each weight gradient in the weight's
/// own `[out, in]` layout: computed as `x · wᵀ`, `baddbmm`'s backward yields it transposed, and
/// making it contiguous cost a strided copy of every weight per step (LeNet on the CPU ran
/// 7-11% slower; a PyTorch probe of 8 batched LeNet replicas, 1.35x slower).
/// A single replica (every replica on the CPU, see [`super::forward_population`]) runs as
/// libtorch's own `linear`. A population runs feature-major, `w · xᵀ` `[R, out, B]`, and
/// returns its transposed view; the next layer's `xᵀ` is then that contiguous product.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
    if x.size()[0] == 1 {
        return x
            .squeeze_dim(0)
            .linear(&w.squeeze_dim(0), Some(&b.squeeze_dim(0)))
            .unsqueeze(0);
    }
    b.unsqueeze(2)
        .baddbmm(w, &x.transpose(1, 2), 1.0, 1.0)
        .transpose(1, 2)
}

/// Inverted dropout of `x` `[R, B, F]` with drop probability `p`; layer `salt` keeps layers'
/// masks independent. Masks come from a counter-based hash (SplitMix64) of (seed, iteration,
/// salt, position), computed on the device.
pub fn dropout(x: &Tensor, p: f64, keys: Option<DropoutKeys<'_>>, salt: i64) -> Tensor {
    let Some(keys) = keys else {
        return x.shallow_clone();
    };
    if p <= 0.0 {
        return x.shallow_clone();
    }
    let s = x.size();
    let per = s[1] * s[2];
    let device = x.device();
    let position = Tensor::arange(per, (Kind::Int64, device)).view([1, per]);
    let base = (keys.iteration as i64)
        .wrapping_mul(0x2545_f491_4f6c_dd1d)
        .wrapping_add(salt.wrapping_mul(0x1b87_3593));
    let counter = keys.seeds.view([-1, 1]) * 0x9e37_79b9_i64 + base + position;
    let u = uniform(&counter);
    let keep = u.ge(p).to_kind(x.kind()).view([s[0], s[1], s[2]]);
    x * keep / (1.0 - p)
}

/// Uniform floats in [0, 1) from int64 counters (SplitMix64 finaliser, logical shifts
/// emulated with masks).
fn uniform(counter: &Tensor) -> Tensor {
    let shr = |z: &Tensor, k: i64| {
        z.bitwise_right_shift_tensor_scalar(k)
            .bitwise_and((1i64 << (64 - k)) - 1)
    };
    let mut z = counter + 0x9e37_79b9_7f4a_7c15_u64 as i64;
    z = z.bitwise_xor_tensor(&shr(&z, 30)) * (0xbf58_476d_1ce4_e5b9_u64 as i64);
    z = z.bitwise_xor_tensor(&shr(&z, 27)) * (0x94d0_49bb_1331_11eb_u64 as i64);
    z = z.bitwise_xor_tensor(&shr(&z, 31));
    shr(&z, 40).to_kind(Kind::Float) / (1u64 << 24) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output and gradients (weights, biases, input) of `linear` on a population of 3, and of
    /// each replica alone.
    #[test]
    fn a_population_linear_layer_computes_what_each_replica_alone_does() {
        tch::manual_seed(5);
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([3, 7, 5], opts).set_requires_grad(true);
        let w = Tensor::randn([3, 4, 5], opts).set_requires_grad(true);
        let b = Tensor::randn([3, 4], opts).set_requires_grad(true);
        let up = Tensor::randn([3, 7, 4], opts);
        let y = linear(&x, &w, &b);
        assert_eq!(y.size(), [3, 7, 4]);
        let grads =
            Tensor::run_backward(&[(&y * &up).sum(Kind::Float)], &[&x, &w, &b], false, false);
        for r in 0..3 {
            let (xr, wr, br) = (
                x.get(r).detach().unsqueeze(0).set_requires_grad(true),
                w.get(r).detach().unsqueeze(0).set_requires_grad(true),
                b.get(r).detach().unsqueeze(0).set_requires_grad(true),
            );
            let yr = linear(&xr, &wr, &br);
            let alone = Tensor::run_backward(
                &[(&yr * up.get(r).unsqueeze(0)).sum(Kind::Float)],
                &[&xr, &wr, &br],
                false,
                false,
            );
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                let diff = (a - b).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "replica {r} {what}: max difference {diff}");
            };
            close(&y.get(r), &yr.get(0), "output");
            for (i, what) in ["input gradient", "weight gradient", "bias gradient"]
                .iter()
                .enumerate()
            {
                close(&grads[i].get(r), &alone[i].get(0), what);
            }
            assert!(
                grads[1].get(r).is_contiguous(),
                "weight gradient in [out, in] layout"
            );
            assert!(alone[1].is_contiguous(), "alone too");
        }
    }

    #[test]
    fn channels_last_keeps_shape_and_values_and_copies_once() {
        let x = Tensor::arange(2 * 3 * 4 * 5, (Kind::Float, Device::Cpu)).view([2, 3, 4, 5]);
        let y = channels_last(&x);
        assert_eq!(y.size(), x.size());
        assert_eq!(y.stride(), [60, 1, 15, 3]);
        assert!(y.equal(&x));
        let again = channels_last(&y);
        assert_eq!(
            again.data_ptr(),
            y.data_ptr(),
            "already channels-last: no copy"
        );
    }

    #[test]
    fn a_channels_last_convolution_computes_what_the_plain_one_does() {
        tch::manual_seed(3);
        let x = Tensor::randn([6, 2 * 3, 9, 9], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([2, 4, 3, 3, 3], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([2, 4], (Kind::Float, Device::Cpu));
        let got = conv(&x, &w, Some(&b), 1, 1);
        let want = x.conv2d(
            &w.reshape([8, 3, 3, 3]),
            Some(&b.reshape([8])),
            [1, 1],
            [1, 1],
            [1, 1],
            2,
        );
        assert_eq!(got.size(), want.size());
        assert_eq!(
            got.stride(),
            [8 * 81, 1, 8 * 9, 8],
            "computed channels-last"
        );
        // Same values in the same logical order (what `flatten` and `reshape` read).
        let diff = (got.reshape([-1]) - want.reshape([-1])).abs().max();
        assert!(diff.double_value(&[]) < 1e-4, "max difference {diff}");
    }
}
