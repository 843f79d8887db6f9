//! Pruning criteria: what ranks the remaining weights of a population. A criterion only scores;
//! how many weights go ([`super::targets`]) and which of the scored ones ([`super::rank`]:
//! lowest first, ties by position) are the same for every criterion, so a new criterion
//! changes nothing else.
//!
//! A criterion that needs more than the weights and masks (gradients on a few training
//! batches: [`super::gradient`]; layer inputs: [`super::obs`]) is built with what it needs (the network,
//! the data set, each replica's seed) by the caller that picks it, and scores from that;
//! nothing reaches it through the run.

use rand_chacha::ChaCha20Rng;
use tch::{Device, Kind, Tensor};

use crate::model::{Layout, State};
use crate::rng::permutation;

/// What a criterion scores: one population's weights (with the buffers a criterion that runs
/// the network needs) and masks, and which tensors lose weights this time.
pub struct ScoreContext<'a> {
    /// Parameter layout of the `[R, P]` tensors.
    pub layout: &'a Layout,
    /// The weights being pruned, `[R, P]`, and the buffers that go with them.
    pub state: &'a State,
    /// The masks in force, `[R, P]` (1 = kept).
    pub masks: &'a Tensor,
    /// `losing[r][i]`: whether parameter `i` of replica `r` loses weights now. The scores of
    /// the others are never read, so a criterion may leave them at any value.
    pub losing: &'a [Vec<bool>],
}

/// Scores weights for pruning.
pub trait Criterion {
    /// Scores `[R, P]` of a floating kind, on the masks' device: within a pruning group, the
    /// remaining weights with the lowest scores are removed first (ties by position). A NaN
    /// score counts as `f32::MAX` (after every finite float32 score). Entries of parameters
    /// that are not pruned are ignored.
    fn scores(&mut self, ctx: &ScoreContext<'_>) -> Tensor;

    /// The weights `[R, P]` to go on from once `masks` replaced `ctx.masks` (after
    /// [`Self::scores`]), for a criterion that moves the surviving weights to make up for the
    /// removed ones (`obs`); `None` for one that only ranks.
    fn compensate(&mut self, _ctx: &ScoreContext<'_>, _masks: &Tensor) -> Option<Tensor> {
        None
    }
}

/// Magnitude pruning: the score of a weight is |w|.
#[derive(Debug, Clone, Copy, Default)]
pub struct Magnitude;

impl Criterion for Magnitude {
    fn scores(&mut self, ctx: &ScoreContext<'_>) -> Tensor {
        ctx.state.params.abs()
    }
}

/// Random pruning (the control of Frankle & Carbin 2019): the remaining weights of each
/// losing tensor are ranked by a uniformly random permutation drawn from the replica's own
/// stream, so the draws do not depend on the population. A stream is drawn from only for the
/// tensors that lose weights, in layout order.
pub struct Random {
    rngs: Vec<ChaCha20Rng>,
}

impl Random {
    /// A criterion drawing replica `r`'s ranks from `rngs[r]`.
    pub fn new(rngs: Vec<ChaCha20Rng>) -> Self {
        Self { rngs }
    }
}

impl Criterion for Random {
    fn scores(&mut self, ctx: &ScoreContext<'_>) -> Tensor {
        let layout = ctx.layout;
        let rows =
            Vec::<Vec<f32>>::try_from(&ctx.masks.to_kind(Kind::Float).to_device(Device::Cpu))
                .expect("mask rows");
        let mut out = Vec::with_capacity(rows.len());
        for (r, row) in rows.iter().enumerate() {
            // Ranks below 2^53 are exact in f64, whatever the tensor's size.
            let mut scores = vec![0f64; row.len()];
            for i in layout.prunable().filter(|&i| ctx.losing[r][i]) {
                let off = layout.offset(i);
                let n = layout.specs()[i].numel();
                let kept: Vec<usize> = (off..off + n).filter(|&j| row[j] > 0.5).collect();
                let order = permutation(&mut self.rngs[r], kept.len());
                for (rank, &k) in order.iter().enumerate() {
                    scores[kept[k as usize]] = rank as f64;
                }
            }
            out.push(Tensor::from_slice(&scores));
        }
        Tensor::stack(&out, 0).to_device(ctx.masks.device())
    }
}
