//! Magnitude pruning of a whole population at once: per group, one stable sort of |w| per
//! replica on the device.

use tch::{Kind, Tensor};

use super::{prune_count, remaining_counts, PruneGroup};
use crate::model::Layout;

/// New masks `[R, P]` after one iterative round: each group of each replica loses
/// `prune_count(remaining, group.fraction)` weights.
pub fn magnitude_prune(
    weights: &Tensor,
    masks: &Tensor,
    layout: &Layout,
    groups: &[PruneGroup],
) -> Tensor {
    let counts = remaining_counts(masks, layout);
    let remove: Vec<Vec<u64>> = groups
        .iter()
        .map(|g| {
            counts
                .iter()
                .map(|c| prune_count(g.remaining(c), g.fraction))
                .collect()
        })
        .collect();
    prune_to_counts(weights, masks, layout, groups, &remove)
}

/// New masks `[R, P]` where replica `r` loses its `remove[g][r]` lowest-|w| remaining weights
/// of group `g` (ties by position).
pub fn prune_to_counts(
    weights: &Tensor,
    masks: &Tensor,
    layout: &Layout,
    groups: &[PruneGroup],
    remove: &[Vec<u64>],
) -> Tensor {
    tch::no_grad(|| {
        let new_masks = masks.copy();
        for (group, counts) in groups.iter().zip(remove) {
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
            let counts: Vec<i64> = counts.iter().map(|&c| c as i64).collect();
            let keep = keep_after_ranking(&cat(weights).abs(), &kept, &counts);
            let mut offset = 0;
            for &i in &group.params {
                let n = layout.specs()[i].numel() as i64;
                layout
                    .segment(&new_masks, i)
                    .copy_(&keep.narrow(1, offset, n));
                offset += n;
            }
        }
        new_masks
    })
}

/// Boolean-as-float `[R, n]`: 1 where a weight survives after removing, in each row `r`, the
/// `counts[r]` lowest-scored kept entries (ties by position).
fn keep_after_ranking(scores: &Tensor, kept: &Tensor, counts: &[i64]) -> Tensor {
    let (r, n) = (scores.size()[0], scores.size()[1]);
    let device = scores.device();
    // NaN magnitudes (a diverged replica) rank after every finite one but before pruned
    // entries, so the counts still hold.
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
