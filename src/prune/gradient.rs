//! Criteria scored from gradients of the training loss: first order ([`Taylor`], Molchanov et
//! al. 2019) and second order through the Fisher diagonal ([`Obd`], LeCun et al. 1990).
//!
//! Each replica scores on training examples of its own, drawn from its seed's stream for
//! this scoring (the round, or a gradual step's iteration), so its scores do not depend on the
//! population and arms of one seed score on the same examples. The network runs in evaluation
//! mode (BatchNorm's running statistics, no dropout, no augmentation), on the masked weights.
//! On the CPU each replica (and, for per-example gradients, each example) runs through the
//! code of a single replica, as in training.

use tch::{Device, Kind, Tensor};

use super::criterion::{Criterion, ScoreContext};
use crate::data::Split;
use crate::model::{batch_losses, forward_population, Input, Network, Pass, State};
use crate::rng::{permutation, stream, Purpose};

/// Where a gradient criterion's examples come from.
pub struct ScoreData<'a> {
    /// The network the weights belong to.
    pub net: &'a dyn Network,
    /// The training split, on the population's device.
    pub train: &'a Split,
    /// `seeds[r]`: the seed whose stream picks replica r's examples.
    pub seeds: Vec<u64>,
    /// Which scoring of the run this is (the round, or a gradual step's iteration).
    pub index: u64,
}

impl ScoreData<'_> {
    /// The first `n` training examples of a permutation of the training split drawn from
    /// replica `r`'s stream for this scoring.
    pub fn examples(&self, r: usize, n: usize) -> Vec<i64> {
        let mut rng = stream(self.seeds[r], Purpose::Score, self.index);
        permutation(&mut rng, self.train.len())[..n]
            .iter()
            .map(|&i| i64::from(i))
            .collect()
    }

    /// The dense gradient `[R, P]` of each replica's mean training loss on `batch_size` of its
    /// own examples (the first of [`ScoreData::examples`]), at `state`'s weights masked by
    /// `masks`, in evaluation mode: nonzero at masked positions too (what RigL regrows by).
    pub fn dense_gradient(&self, state: &State, masks: &Tensor, batch_size: usize) -> Tensor {
        let replicas = masks.size()[0];
        let index: Vec<i64> = (0..replicas as usize)
            .flat_map(|r| self.examples(r, batch_size))
            .collect();
        let (x, y) = self.batch(&index, replicas);
        let w = (&state.params * masks).detach();
        self.gradient(&w, &state.buffers, &x, &y)
    }

    /// Images `[rows, per_row, C, H, W]` and labels `[rows, per_row]` of training examples
    /// `index` (`rows * per_row` of them, row-major).
    pub(super) fn batch(&self, index: &[i64], rows: i64) -> (Tensor, Tensor) {
        let device = self.train.images.device();
        let index = Tensor::from_slice(index).to_device(device);
        let images = self.train.images.index_select(0, &index);
        let mut shape = vec![rows, -1];
        shape.extend_from_slice(&images.size()[1..]);
        let labels = self.train.labels.index_select(0, &index).view([rows, -1]);
        (images.view(shape.as_slice()), labels)
    }

    /// Gradient `[R', P]` of each row's mean loss on its own batch (`x` `[R', B, ...]`, `y`
    /// `[R', B]`) with respect to `params` `[R', P]`, in evaluation mode.
    pub(super) fn gradient(
        &self,
        params: &Tensor,
        buffers: &[Tensor],
        x: &Tensor,
        y: &Tensor,
    ) -> Tensor {
        tch::with_grad(|| {
            let w = params.detach().set_requires_grad(true);
            let loss = self.loss(&w, buffers, (x, y), 1.0);
            Tensor::run_backward(&[loss], &[&w], false, false)
                .pop()
                .expect("one gradient")
        })
    }

    /// The summed mean losses of the rows of `w` on their batches, their logits divided by
    /// `temperature` (1: the training loss).
    pub(super) fn loss(
        &self,
        w: &Tensor,
        buffers: &[Tensor],
        (x, y): (&Tensor, &Tensor),
        temperature: f64,
    ) -> Tensor {
        let pass = Pass {
            params: w,
            buffers,
            train: false,
            dropout: None,
        };
        let logits = forward_population(self.net, &pass, Input::PerReplica(x));
        let logits = if temperature == 1.0 {
            logits
        } else {
            logits / temperature
        };
        batch_losses(&logits, y).sum(Kind::Float)
    }
}

/// First-order Taylor criterion (Molchanov et al. 2019): the score of a weight is
/// `(w * dL/dw)^2`, averaged over `batches` training batches of `batch_size` examples, where
/// L is the batch's mean cross-entropy: the squared first-order estimate of the change in loss
/// when the weight is removed.
pub struct Taylor<'a> {
    /// Examples and network.
    pub data: ScoreData<'a>,
    /// Batches averaged over.
    pub batches: usize,
    /// Examples per batch.
    pub batch_size: usize,
}

impl Criterion for Taylor<'_> {
    fn scores(&mut self, ctx: &ScoreContext<'_>) -> Tensor {
        let replicas = ctx.state.params.size()[0];
        let w = (&ctx.state.params * ctx.masks).detach();
        let per_replica = self.batches * self.batch_size;
        let examples: Vec<Vec<i64>> = (0..replicas as usize)
            .map(|r| self.data.examples(r, per_replica))
            .collect();
        let mut sum = w.zeros_like();
        for b in 0..self.batches {
            let index: Vec<i64> = examples
                .iter()
                .flat_map(|e| e[b * self.batch_size..(b + 1) * self.batch_size].to_vec())
                .collect();
            let (x, y) = self.data.batch(&index, replicas);
            let g = self.data.gradient(&w, &ctx.state.buffers, &x, &y);
            sum += (&w * g).square();
        }
        sum / self.batches as f64
    }
}

/// Optimal Brain Damage (LeCun et al. 1990) with the empirical Fisher as the Hessian: the
/// score of a weight is `1/2 F_ii w_i^2`, `F_ii = (1/N) sum_n (dl_n/dw_i)^2` over `examples`
/// training examples, each example's own gradient (its loss alone).
pub struct Obd<'a> {
    /// Examples and network.
    pub data: ScoreData<'a>,
    /// Examples N in the Fisher diagonal.
    pub examples: usize,
}

impl Obd<'_> {
    /// Examples whose gradients are computed at once: each is a copy of the replica's
    /// parameters, so the copies are bounded to about 256 MiB (a function of the network and
    /// device only, so that the sums, and the bits, do not depend on the population).
    fn chunk(params: i64, device: Device) -> usize {
        let cap = if device == Device::Cpu { 64 } else { 256 };
        ((1i64 << 26) / params.max(1)).clamp(1, cap) as usize
    }

    /// The Fisher diagonal `[P]` of replica `r` (masked parameters `w` `[P]`).
    fn fisher(&self, r: usize, w: &Tensor, buffers: &[Tensor]) -> Tensor {
        let p = w.size()[0];
        let chunk = Self::chunk(p, w.device());
        let own: Vec<Tensor> = buffers.iter().map(|b| b.get(r as i64)).collect();
        let mut sum = w.zeros_like();
        for index in self.data.examples(r, self.examples).chunks(chunk) {
            let e = index.len() as i64;
            let copies = w.unsqueeze(0).expand([e, p], false).contiguous();
            let bufs: Vec<Tensor> = own
                .iter()
                .map(|b| {
                    let mut shape = vec![e];
                    shape.extend_from_slice(&b.size());
                    b.unsqueeze(0).expand(shape.as_slice(), false).contiguous()
                })
                .collect();
            let (x, y) = self.data.batch(index, e);
            let g = self.data.gradient(&copies, &bufs, &x, &y);
            sum += g.square().sum_dim_intlist(0, false, Kind::Float);
        }
        sum / self.examples as f64
    }
}

impl Criterion for Obd<'_> {
    fn scores(&mut self, ctx: &ScoreContext<'_>) -> Tensor {
        let w = (&ctx.state.params * ctx.masks).detach();
        let rows: Vec<Tensor> = (0..w.size()[0])
            .map(|r| {
                let row = w.get(r);
                if !ctx.losing[r as usize].iter().any(|&l| l) {
                    return row.zeros_like(); // nothing of this replica is ranked
                }
                self.fisher(r as usize, &row, &ctx.state.buffers) * row.square() * 0.5
            })
            .collect();
        Tensor::stack(&rows, 0)
    }
}
