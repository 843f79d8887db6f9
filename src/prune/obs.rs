//! Layer-wise Optimal Brain Surgeon (Hassibi & Stork 1993, in the layer-wise form of OBC and
//! SparseGPT, Frantar & Alistarh 2022/2023): each pruned layer's weights are judged by how much
//! removing them changes the layer's outputs on calibration examples, and the surviving weights
//! of each row move to make up for the removed ones.
//!
//! For a layer with inputs X (`[M, in]`, the layer's inputs on N training examples through the
//! masked network in evaluation mode: M = N rows for a fully connected layer, and for a
//! convolution the N · H' · W' unfolded k x k patches, `in` = C · k · k, against the weight
//! flattened to `[out, C · k · k]`), H = (2/M) XᵀX + λI, with λ = `damping` x the mean of the
//! diagonal of (2/M) XᵀX. For row j with kept inputs K₀, the
//! score of weight q is w_q² / [H_K₀K₀⁻¹]_qq (the rise in the row's squared output error when q
//! alone is removed and the others are adjusted). Once the round's ranking has removed the set
//! Q from the row, the kept weights K move by H_KK⁻¹ H_KQ w_Q, which minimises
//! (w' - w)ᵀ H (w' - w) with w'_Q = 0: the removal of all of Q at once, equal to OBS removing
//! them one after another.
//!
//! The linear algebra runs in float64, row by row (when scoring, rows with the same kept
//! inputs share one inverse). A row of n kept inputs costs about n³/3 multiply-adds to score
//! and as many to update, so layers with more than [`MAX_INPUTS`] inputs are refused. XᵀX is
//! summed in float64 over chunks of at most [`Obs::chunk_elements`] input values. A replica
//! whose H is not finite (its loss diverged) gets NaN scores, which rank after every finite
//! one, and keeps its weights unmoved.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::criterion::{Criterion, ScoreContext};
use super::gradient::ScoreData;
use super::PruneGroup;
use crate::model::{Layout, Network};

/// Most inputs of a layer `obs` prunes (LeNet-300-100 on 28 x 28 images has 784, Conv-2's
/// second convolution 64 x 3 x 3 = 576).
pub const MAX_INPUTS: i64 = 1024;

/// Most layer-input values (all layers together) held at once while summing XᵀX: 2²⁴, about
/// 40 Conv-2 examples of 28 x 28 (their unfolded patches), every example of LeNet-300-100's
/// default 1,000.
pub const CHUNK_ELEMENTS: i64 = 1 << 24;

/// The layer-wise OBS criterion; scoring keeps each scored layer's H for [`Criterion::compensate`].
pub struct Obs<'a> {
    /// Calibration examples and network.
    pub data: ScoreData<'a>,
    /// Calibration examples N.
    pub examples: usize,
    /// λ as a fraction of the mean diagonal of H (SparseGPT's 0.01).
    pub damping: f64,
    /// Most layer-input values held at once while summing XᵀX ([`CHUNK_ELEMENTS`]).
    pub chunk_elements: i64,
    /// The damped H (float64, `[in, in]`) of each (replica, weight parameter) scored.
    hessians: BTreeMap<(usize, usize), Tensor>,
}

impl<'a> Obs<'a> {
    /// The criterion on `examples` calibration examples with dampening `damping`.
    pub fn new(data: ScoreData<'a>, examples: usize, damping: f64) -> Self {
        Self {
            data,
            examples,
            damping,
            chunk_elements: CHUNK_ELEMENTS,
            hessians: BTreeMap::new(),
        }
    }

    /// Refuses networks and tensors `obs` cannot handle, naming them.
    pub fn check(net: &dyn Network, groups: &[PruneGroup]) -> Result<()> {
        if !net.has_layer_inputs() {
            bail!("invalid config: `prune.criterion = \"obs\"` needs a network whose layer inputs lth can take (`model.arch = \"lenet-300-100\"` or `\"conv-2\"`, `\"conv-4\"`, `\"conv-6\"`): its Hessians come from each layer's inputs, which lth does not take through BatchNorm or residual blocks so far");
        }
        let layout = net.layout();
        for &i in groups.iter().flat_map(|g| &g.params) {
            let spec = &layout.specs()[i];
            let inputs = fan_in(layout, i);
            if inputs > MAX_INPUTS {
                bail!(
                    "invalid config: `prune.criterion = \"obs\"` cannot prune `{0}`: its {inputs} inputs need a {inputs} x {inputs} Hessian solve per row (at most {MAX_INPUTS} inputs); leave it dense with `prune.exclude = [\"{0}\"]` or use another criterion",
                    spec.name
                );
            }
        }
        Ok(())
    }

    /// H of inputs `x` `[M, in]` (float64), damped.
    pub fn hessian(x: &Tensor, damping: f64) -> Tensor {
        let x = x.to_kind(Kind::Double);
        Obs::damped(x.tr().matmul(&x), x.size()[0], damping)
    }

    /// H from XᵀX summed over `rows` input rows (float64), damped.
    fn damped(xtx: Tensor, rows: i64, damping: f64) -> Tensor {
        let h = xtx * (2.0 / rows as f64);
        let mean = h.diagonal(0, 0, 1).mean(Kind::Double).double_value(&[]);
        let lambda = if mean > 0.0 { damping * mean } else { damping };
        let eye = Tensor::eye(h.size()[0], (Kind::Double, h.device()));
        h + eye * lambda
    }

    /// Scores `[out, in]` (float64) of a layer's weights `w` under its mask `m` and H: for
    /// row j, w_q² / [H_K₀K₀⁻¹]_qq over its kept inputs K₀, 0 elsewhere.
    pub fn layer_scores(h: &Tensor, w: &Tensor, m: &Tensor) -> Tensor {
        let w = w.to_kind(Kind::Double);
        let scores = w.zeros_like();
        let mut inverse_diagonals: HashMap<Vec<i64>, Tensor> = HashMap::new();
        for (j, kept) in kept_indices(m).into_iter().enumerate() {
            if kept.is_empty() {
                continue;
            }
            let idx = Tensor::from_slice(&kept).to_device(h.device());
            let diag = inverse_diagonals.entry(kept).or_insert_with(|| {
                let sub = h.index_select(0, &idx).index_select(1, &idx);
                match cholesky(&sub) {
                    Some(l) => l.cholesky_inverse(false).diagonal(0, 0, 1),
                    None => sub.diagonal(0, 0, 1).full_like(f64::NAN),
                }
            });
            let wk = w.get(j as i64).index_select(0, &idx);
            let _ = scores
                .get(j as i64)
                .index_copy_(0, &idx, &(wk.square() / &*diag));
        }
        scores
    }

    /// A layer's weights `w` `[out, in]` after the inputs kept under `before` but not under
    /// `after` were removed from each row, the kept ones moved by H_KK⁻¹ H_KQ w_Q (float64 in,
    /// float64 out; rows that lose nothing are unchanged).
    pub fn update(h: &Tensor, w: &Tensor, before: &Tensor, after: &Tensor) -> Tensor {
        let w = w.to_kind(Kind::Double);
        let out = w.copy();
        let removed = before.gt(0.5).logical_and(&after.lt(0.5));
        let kept_after = kept_indices(after);
        for (j, gone) in kept_indices(&removed).into_iter().enumerate() {
            if gone.is_empty() {
                continue;
            }
            let mut row = out.get(j as i64);
            let q = Tensor::from_slice(&gone).to_device(h.device());
            let _ = row.index_fill_(0, &q, 0.0);
            let keep = &kept_after[j];
            if keep.is_empty() {
                continue;
            }
            let k = Tensor::from_slice(keep).to_device(h.device());
            let h_kk = h.index_select(0, &k).index_select(1, &k);
            let h_kq = h.index_select(0, &k).index_select(1, &q);
            let wq = w.get(j as i64).index_select(0, &q).unsqueeze(1);
            let Some(l) = cholesky(&h_kk) else {
                continue; // not positive definite: the kept weights stay where they were
            };
            let shift = h_kq.matmul(&wq).cholesky_solve(&l, false).squeeze_dim(1);
            let moved = w.get(j as i64).index_select(0, &k) + shift;
            let _ = row.index_copy_(0, &k, &moved);
        }
        out
    }

    /// The damped H of each weight in `wanted` for one replica's masked parameters `w` `[P]`
    /// on the images `x` `[N, ...]`, XᵀX summed over chunks of examples.
    fn hessians(&self, w: &Tensor, x: &Tensor, wanted: &[bool]) -> BTreeMap<usize, Tensor> {
        let net = self.data.net;
        let inputs = |x: &Tensor| {
            net.layer_inputs(w, x)
                .expect("checked: the network gives its layer inputs")
                .into_iter()
                .filter(|input| wanted[input.weight])
        };
        let n = x.size()[0];
        let per_example: i64 = inputs(&x.narrow(0, 0, 1.min(n)))
            .map(|input| input.rows.numel() as i64)
            .sum();
        let chunk = (self.chunk_elements / per_example.max(1)).max(1);
        let mut sums: BTreeMap<usize, (Tensor, i64)> = BTreeMap::new();
        for start in (0..n).step_by(chunk as usize) {
            let part = x.narrow(0, start, chunk.min(n - start));
            for input in inputs(&part) {
                let rows = input.rows.to_kind(Kind::Double);
                let xtx = rows.tr().matmul(&rows);
                let count = rows.size()[0];
                match sums.get_mut(&input.weight) {
                    Some((sum, total)) => {
                        *sum += xtx;
                        *total += count;
                    }
                    None => {
                        sums.insert(input.weight, (xtx, count));
                    }
                }
            }
        }
        sums.into_iter()
            .map(|(i, (xtx, rows))| (i, Obs::damped(xtx, rows, self.damping)))
            .collect()
    }
}

impl Criterion for Obs<'_> {
    fn scores(&mut self, ctx: &ScoreContext<'_>) -> Tensor {
        let params = (&ctx.state.params * ctx.masks).detach();
        let scores = params.zeros_like();
        let layout = ctx.layout;
        self.hessians.clear();
        for r in 0..params.size()[0] as usize {
            if !ctx.losing[r].iter().any(|&l| l) {
                continue;
            }
            let (w, m) = (params.get(r as i64), ctx.masks.get(r as i64));
            let index = Tensor::from_slice(&self.data.examples(r, self.examples))
                .to_device(self.data.train.images.device());
            let x = self.data.train.images.index_select(0, &index);
            for (i, h) in self.hessians(&w, &x, &ctx.losing[r]) {
                if h.isfinite().all().int64_value(&[]) == 0 {
                    // A diverged replica: NaN scores rank after every finite one.
                    let _ = layout.segment(&scores, i).get(r as i64).fill_(f64::NAN);
                    continue;
                }
                let s = Obs::layer_scores(&h, &rows(layout, &w, i), &rows(layout, &m, i));
                layout
                    .segment(&scores, i)
                    .get(r as i64)
                    .copy_(&s.view([-1]));
                self.hessians.insert((r, i), h);
            }
        }
        scores
    }

    fn compensate(&mut self, ctx: &ScoreContext<'_>, masks: &Tensor) -> Option<Tensor> {
        let params = (&ctx.state.params * ctx.masks).detach().copy();
        for (&(r, i), h) in &self.hessians {
            let r64 = r as i64;
            let layer = |t: &Tensor| rows(ctx.layout, &t.get(r64), i);
            let moved = Obs::update(h, &layer(&params), &layer(ctx.masks), &layer(masks));
            ctx.layout
                .segment(&params, i)
                .get(r64)
                .copy_(&moved.to_kind(params.kind()).view([-1]));
        }
        Some(params * masks)
    }
}

/// The lower Cholesky factor of `h`, or `None` where `h` is not positive definite (NaN
/// entries, or too little dampening for its rounding).
fn cholesky(h: &Tensor) -> Option<Tensor> {
    let (l, info) = h.linalg_cholesky_ex(false, false);
    (info.int64_value(&[]) == 0).then_some(l)
}

/// Weight `i` of one replica's flat vector `flat` `[P]` as rows against its fan-in,
/// `[out, fan_in]` (a convolution's `[O, C, k, k]` as `[O, C · k · k]`).
fn rows(layout: &Layout, flat: &Tensor, i: usize) -> Tensor {
    let spec = &layout.specs()[i];
    flat.narrow(0, layout.offset(i) as i64, spec.numel() as i64)
        .view([spec.shape[0], fan_in(layout, i)])
}

/// The inputs each output of weight `i` sums over: all but its first dimension.
fn fan_in(layout: &Layout, i: usize) -> i64 {
    layout.specs()[i].shape[1..].iter().product()
}

/// Per row of a mask `[out, in]`, the indices of its kept entries.
fn kept_indices(mask: &Tensor) -> Vec<Vec<i64>> {
    let rows = Vec::<Vec<f32>>::try_from(&mask.to_kind(Kind::Float).to_device(Device::Cpu))
        .expect("mask rows");
    rows.iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .filter(|(_, &v)| v > 0.5)
                .map(|(k, _)| k as i64)
                .collect()
        })
        .collect()
}
