//! A fully connected ReLU network run on the surviving weights of its layers: forward, loss
//! and gradient by hand (no autograd, no libtorch operation per layer), one replica at a time.
//! Activations are feature-major (`[features, n]`), as [`super::kernels`] wants them; every
//! sum runs in a fixed order, so the bits depend on neither the thread count nor the other
//! replicas.

use tch::{Device, Kind, Tensor};

use super::csr::SparseWeights;
use super::kernels;
use crate::config::SparseKernels;
use crate::model::{Layout, LinearParams};

/// Examples per block of a sparse evaluation (four kernel tiles): a `[784, 256]` input block
/// (800 KB) and the layer's output block stay in a 2 MB L2 cache while every surviving weight
/// touches them.
const EVAL_BLOCK: i64 = 256;

/// `n` examples rounded up to whole kernel tiles: activations are stored with that many
/// columns, the padding zero at the input and its gradient zero at the output, so the kernels
/// never take their remainder path (the real examples' values are the same either way).
fn padded(n: usize) -> usize {
    n.div_ceil(kernels::TILE) * kernels::TILE
}

/// A shared input as feature-major blocks (examples in the block, `[inputs, padded(examples)]`)
/// and its labels, made once and read at every evaluation.
#[derive(Debug, Clone)]
pub struct EvalBlocks {
    blocks: Vec<(usize, Vec<f32>)>,
    labels: Vec<i64>,
}

/// Where one fully connected layer sits in a replica's flat parameter vector.
#[derive(Debug, Clone)]
struct Fc {
    weight: usize,
    bias: usize,
    inputs: usize,
    outputs: usize,
}

/// Per replica, its layers' surviving weights when it runs sparse; `None` for a replica that
/// takes the ordinary autograd path (so that its bits do not depend on its neighbours).
#[derive(Debug, Clone)]
pub struct SparseMlp {
    layers: Vec<Fc>,
    replicas: Vec<Option<Vec<SparseWeights>>>,
    /// Per sparse replica, the positions of its `[P]` row whose mask is not zero, ascending.
    kept: Vec<Option<Vec<u32>>>,
}

impl SparseMlp {
    /// The plan for masks `[R, P]` (CPU) under `mode`: a replica runs sparse when `mode` says
    /// so at the density of its prunable weights. `None` when no replica does.
    pub fn plan(
        layout: &Layout,
        layers: &[LinearParams],
        masks: &Tensor,
        mode: SparseKernels,
    ) -> Option<Self> {
        if mode.is_off() || masks.device() != Device::Cpu {
            return None;
        }
        let fcs: Vec<Fc> = layers
            .iter()
            .map(|p| {
                let spec = &layout.specs()[p.weight];
                Fc {
                    weight: layout.offset(p.weight),
                    bias: layout.offset(p.bias),
                    inputs: spec.shape[1] as usize,
                    outputs: spec.shape[0] as usize,
                }
            })
            .collect();
        let masks = masks.to_kind(Kind::Float).contiguous();
        let (replicas, kept): (Vec<_>, Vec<_>) = (0..masks.size()[0])
            .map(|r| {
                let row = masks.get(r);
                let row = floats(&row);
                let weights = |fc: &Fc| &row[fc.weight..fc.weight + fc.inputs * fc.outputs];
                let kept: usize = fcs
                    .iter()
                    .map(|fc| weights(fc).iter().filter(|&&m| m != 0.0).count())
                    .sum();
                let total: usize = fcs.iter().map(|fc| fc.inputs * fc.outputs).sum();
                if !mode.sparse_at(kept as f64 / total as f64) {
                    return (None, None);
                }
                let plan: Vec<SparseWeights> = fcs
                    .iter()
                    .map(|fc| SparseWeights::from_mask(weights(fc), fc.outputs, fc.inputs))
                    .collect();
                let positions: Vec<u32> = (0..row.len() as u32)
                    .filter(|&i| row[i as usize] != 0.0)
                    .collect();
                (Some(plan), Some(positions))
            })
            .unzip();
        let any = replicas.iter().any(Option::is_some);
        any.then_some(Self {
            layers: fcs,
            replicas,
            kept,
        })
    }

    /// Whether replica `r` runs here (sparse) rather than through autograd.
    pub fn runs(&self, r: usize) -> bool {
        self.replicas[r].is_some()
    }

    /// Per replica, the positions of its row whose mask is not zero (ascending) when it runs
    /// sparse: all an optimizer step has to visit.
    pub fn kept(&self) -> Vec<Option<&[u32]>> {
        self.kept.iter().map(|k| k.as_deref()).collect()
    }

    /// How many replicas run sparse.
    pub fn replicas(&self) -> usize {
        self.replicas.iter().flatten().count()
    }

    /// Replica `r`'s mean cross-entropy on one batch, its gradient written into `grad`
    /// (`[P]`: every bias and every surviving weight; pruned entries are not touched).
    /// `params` is the replica's `[P]` row, `x` its batch `[B, ...]`, `labels` `[B]` int64.
    pub fn loss_and_grad(
        &self,
        r: usize,
        params: &Tensor,
        x: &Tensor,
        labels: &Tensor,
        grad: &mut Tensor,
    ) -> f32 {
        let plan = self.replicas[r].as_ref().expect("a replica of the plan");
        let n = x.size()[0] as usize;
        let np = padded(n);
        let x = x.reshape([n as i64, -1]).contiguous();
        let labels = Vec::<i64>::try_from(labels).expect("int64 labels");
        let p = floats(params);
        let last = self.layers.len();
        let mut acts = vec![transpose(floats(&x), n, np)];
        for (l, (fc, sw)) in self.layers.iter().zip(plan).enumerate() {
            let mut z = layer_forward(fc, sw, p, acts.last().expect("an input"), np);
            if l + 1 < last {
                z.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            acts.push(z);
        }
        let (loss, mut g) = softmax_cross_entropy(&acts[last], &labels, np);
        let grad = floats_mut(grad);
        for l in (0..last).rev() {
            let (fc, sw, a) = (&self.layers[l], &plan[l], &acts[l]);
            let gw = &mut grad[fc.weight..fc.weight + fc.inputs * fc.outputs];
            kernels::weight_grad(sw, &g, a, np, gw);
            for (o, go) in g.chunks_exact(np).enumerate() {
                grad[fc.bias + o] = sum(&go[..n]);
            }
            if l > 0 {
                let mut back = vec![0.0; fc.inputs * np];
                let w = &p[fc.weight..fc.weight + fc.inputs * fc.outputs];
                kernels::input_grad(sw, w, &g, np, &mut back);
                for (b, &a) in back.iter_mut().zip(a) {
                    if a <= 0.0 {
                        *b = 0.0;
                    }
                }
                g = back;
            }
        }
        loss
    }

    /// A shared input `x` `[M, ...]` as feature-major blocks of [`EVAL_BLOCK`] examples
    /// (`[inputs, len]` each) with its `labels` `[M]` (int64), for [`Self::evaluate`] of
    /// every replica.
    pub fn blocks(x: &Tensor, labels: &Tensor) -> EvalBlocks {
        let m = x.size()[0];
        let x = x.reshape([m, -1]).contiguous();
        let blocks = (0..m)
            .step_by(EVAL_BLOCK as usize)
            .map(|start| {
                let len = EVAL_BLOCK.min(m - start) as usize;
                let block = x.narrow(0, start, len as i64).contiguous();
                (len, transpose(floats(&block), len, padded(len)))
            })
            .collect();
        let labels = Vec::<i64>::try_from(labels).expect("int64 labels");
        EvalBlocks { blocks, labels }
    }

    /// Replica `r`'s summed cross-entropy (f64) and correct predictions on a shared input
    /// given as [`Self::blocks`].
    pub fn evaluate(&self, r: usize, params: &Tensor, input: &EvalBlocks) -> (f64, i64) {
        let plan = self.replicas[r].as_ref().expect("a replica of the plan");
        let p = floats(params);
        let (mut loss, mut correct, mut at) = (0.0f64, 0i64, 0usize);
        let labels = &input.labels;
        for (n, block) in &input.blocks {
            let (n, np) = (*n, padded(*n));
            let mut h = Vec::new();
            for (l, (fc, sw)) in self.layers.iter().zip(plan).enumerate() {
                h = layer_forward(fc, sw, p, if l == 0 { block } else { &h }, np);
                if l + 1 < self.layers.len() {
                    h.iter_mut().for_each(|v| *v = v.max(0.0));
                }
            }
            let classes = h.len() / np;
            for b in 0..n {
                let y = labels[at + b] as usize;
                let column = |c: usize| h[c * np + b];
                let (lse, best) = log_sum_exp_and_argmax(classes, column);
                loss += f64::from(lse - column(y));
                correct += i64::from(best == y);
            }
            at += n;
        }
        (loss, correct)
    }
}

/// A layer's output `[outputs, n]` for its input `a` `[inputs, n]`.
fn layer_forward(fc: &Fc, sw: &SparseWeights, p: &[f32], a: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![0.0; fc.outputs * n];
    let w = &p[fc.weight..fc.weight + fc.inputs * fc.outputs];
    let b = &p[fc.bias..fc.bias + fc.outputs];
    kernels::forward(sw, w, b, a, n, &mut y);
    y
}

/// `[n, f]` row-major values as `[f, np]` (`np >= n`), the columns past n zero. Written row
/// by row of the result (its n reads per row come from n cache lines that serve 16 rows).
fn transpose(x: &[f32], n: usize, np: usize) -> Vec<f32> {
    let f = x.len() / n;
    let mut t = vec![0.0; f * np];
    for (c, row) in t.chunks_exact_mut(np).enumerate() {
        for (b, v) in row[..n].iter_mut().enumerate() {
            *v = x[b * f + c];
        }
    }
    t
}

/// Sum in order.
fn sum(xs: &[f32]) -> f32 {
    xs.iter().fold(0.0, |s, &x| s + x)
}

/// `ln(sum_c exp(z_c))` (shifted by the largest logit) and the first largest class, for
/// `classes` logits read through `z`.
fn log_sum_exp_and_argmax(classes: usize, z: impl Fn(usize) -> f32) -> (f32, usize) {
    let mut best = 0;
    for c in 1..classes {
        if z(c) > z(best) {
            best = c;
        }
    }
    let top = z(best);
    let total = (0..classes).fold(0.0f32, |s, c| s + (z(c) - top).exp());
    (top + total.ln(), best)
}

/// Mean cross-entropy of logits `[classes, np]` against `labels` (the first `labels.len()`
/// columns), and its gradient with respect to the logits, `(softmax - onehot) / n`,
/// `[classes, np]` (zero in the padding columns).
fn softmax_cross_entropy(z: &[f32], labels: &[i64], np: usize) -> (f32, Vec<f32>) {
    let (classes, n) = (z.len() / np, labels.len());
    let mut g = vec![0.0; z.len()];
    let mut loss = 0.0f32;
    for (b, &y) in labels.iter().enumerate() {
        let column = |c: usize| z[c * np + b];
        let (lse, _) = log_sum_exp_and_argmax(classes, column);
        loss += lse - column(y as usize);
        for c in 0..classes {
            let onehot = if c == y as usize { 1.0 } else { 0.0 };
            g[c * np + b] = ((column(c) - lse).exp() - onehot) / n as f32;
        }
    }
    (loss / n as f32, g)
}

fn check_floats(t: &Tensor) {
    assert!(
        t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous(),
        "a contiguous float32 CPU tensor"
    );
}

/// A contiguous float32 CPU tensor's values.
fn floats(t: &Tensor) -> &[f32] {
    check_floats(t);
    // SAFETY: `t` is a contiguous float32 CPU tensor of `numel` values (checked), and the
    // slice lives no longer than the borrow of `t`; callers do not write to it meanwhile.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) }
}

/// A contiguous float32 CPU tensor's values, to write.
fn floats_mut(t: &mut Tensor) -> &mut [f32] {
    check_floats(t);
    // SAFETY: as in `floats`; the mutable borrow of `t` keeps other users of this handle out
    // (the tensors written here are the step's own gradient, seen by nobody else meanwhile).
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel()) }
}
