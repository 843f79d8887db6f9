//! The one exact counting and tie rule every criterion and schedule goes through: per group,
//! the remaining weights are ranked by score (ties by position) and the lowest-ranked are
//! removed until the group keeps its count. One stable sort per group over the whole
//! population, on the device.

use tch::{Kind, Tensor};

use super::criterion::{Criterion, ScoreContext};
use super::{group_remaining, PruneGroup};
use crate::model::{Layout, State};

/// New masks `[R, P]`: in each group `g` of each replica `r`, the remaining weights of
/// `state` that `criterion` scores lowest are removed until `keep[r][g]` remain (ties by position: tensors
/// in layout order, then row-major). `keep` is given the remaining weights of every group of
/// every replica (`[R][G]`, as [`group_remaining`] counts them). A group already at or below
/// its count is left as it is.
pub fn prune_to_keep(
    criterion: &mut dyn Criterion,
    state: &State,
    masks: &Tensor,
    layout: &Layout,
    groups: &[PruneGroup],
    keep: impl FnOnce(&[Vec<u64>]) -> Vec<Vec<u64>>,
) -> Tensor {
    rank(criterion, (state, masks), layout, groups, keep, false).masks
}

/// New masks, and the weights to go on from where the criterion moves them.
#[derive(Debug)]
pub struct Pruned {
    /// Masks `[R, P]`.
    pub masks: Tensor,
    /// Weights `[R, P]` (masked) that make up for the removed ones, when the criterion
    /// compensates (`obs`); `None` when it only ranks.
    pub weights: Option<Tensor>,
}

/// [`prune_to_keep`], then [`Criterion::compensate`] on the new masks.
pub fn prune_and_compensate(
    criterion: &mut dyn Criterion,
    state: &State,
    masks: &Tensor,
    layout: &Layout,
    groups: &[PruneGroup],
    keep: impl FnOnce(&[Vec<u64>]) -> Vec<Vec<u64>>,
) -> Pruned {
    rank(criterion, (state, masks), layout, groups, keep, true)
}

/// Scores, ranks and removes; compensates when `compensate`.
fn rank(
    criterion: &mut dyn Criterion,
    (state, masks): (&State, &Tensor),
    layout: &Layout,
    groups: &[PruneGroup],
    keep: impl FnOnce(&[Vec<u64>]) -> Vec<Vec<u64>>,
    compensate: bool,
) -> Pruned {
    let remaining = group_remaining(masks, layout, groups);
    let keep = keep(&remaining);
    let removals: Vec<Vec<u64>> = remaining
        .iter()
        .zip(&keep)
        .map(|(row, keep)| {
            row.iter()
                .zip(keep)
                .map(|(&n, &k)| n.saturating_sub(k))
                .collect()
        })
        .collect();
    let mut losing = vec![vec![false; layout.specs().len()]; removals.len()];
    for (r, row) in removals.iter().enumerate() {
        for (group, &n) in groups.iter().zip(row) {
            for &i in &group.params {
                losing[r][i] = n > 0;
            }
        }
    }
    tch::no_grad(|| {
        let ctx = ScoreContext {
            layout,
            state,
            masks,
            losing: &losing,
        };
        let scores = criterion.scores(&ctx);
        let new_masks = masks.copy();
        for (g, group) in groups.iter().enumerate() {
            let cat = |t: &Tensor| {
                Tensor::cat(
                    &group
                        .params
                        .iter()
                        .map(|&i| layout.segment(t, i))
                        .collect::<Vec<_>>(),
                    1,
                )
            };
            let kept = cat(masks).gt(0.5);
            let counts: Vec<i64> = removals.iter().map(|row| row[g] as i64).collect();
            let survivors = keep_after_ranking(&cat(&scores), &kept, &counts);
            let mut offset = 0;
            for &i in &group.params {
                let n = layout.specs()[i].numel() as i64;
                layout
                    .segment(&new_masks, i)
                    .copy_(&survivors.narrow(1, offset, n));
                offset += n;
            }
        }
        let weights = if compensate {
            criterion.compensate(&ctx, &new_masks)
        } else {
            None
        };
        Pruned {
            masks: new_masks,
            weights,
        }
    })
}

/// Boolean-as-float `[R, n]`: 1 where a weight survives after removing, in each row `r`, the
/// `counts[r]` lowest-scored kept entries (ties by position).
fn keep_after_ranking(scores: &Tensor, kept: &Tensor, counts: &[i64]) -> Tensor {
    let (r, n) = (scores.size()[0], scores.size()[1]);
    let device = scores.device();
    // NaN scores (a diverged replica's magnitudes) rank after every finite one but before
    // pruned entries, so the counts still hold.
    let ranked = scores
        .masked_fill(&scores.isnan(), f64::from(f32::MAX))
        .masked_fill(&kept.logical_not(), f64::INFINITY);
    let (_, order) = ranked.sort_stable(true, 1, false);
    let positions = Tensor::arange(n, (Kind::Int64, device)).expand([r, n], false);
    let ranks = Tensor::zeros([r, n], (Kind::Int64, device)).scatter(1, &order, &positions);
    let counts = Tensor::from_slice(counts).to_device(device).unsqueeze(1);
    ranks
        .ge_tensor(&counts)
        .logical_and(kept)
        .to_kind(Kind::Float)
}
