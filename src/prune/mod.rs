//! Magnitude pruning with exact counts.
//!
//! Each round removes a fraction of the *remaining* weights of each pruning group: under the
//! global strategy one group holds every prunable, non-excluded tensor of a replica (one |w|
//! threshold per replica); under the layerwise strategy each tensor is its own group with its
//! own fraction. Biases are never prunable.
//!
//! Count rule: a group with `n` remaining weights loses `round(fraction * n)` of them (nearest
//! integer, halves away from zero), see [`prune_count`].
//!
//! Tie rule: within a group, weights are ranked by |w| ascending and, among equal magnitudes,
//! by position: tensors in layout order, then row-major index within a tensor. The first
//! `count` remaining weights of that ranking are pruned. Already pruned weights are never
//! ranked before remaining ones.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use crate::config::{PruneConfig, PruneStrategy};
use crate::model::Layout;

/// Number of weights removed from a group with `remaining` weights.
pub fn prune_count(remaining: u64, fraction: f64) -> u64 {
    ((fraction * remaining as f64).round() as u64).min(remaining)
}

/// Parameters pruned together under one threshold, and the fraction they lose per round.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneGroup {
    /// Parameter indices in the layout, in layout order.
    pub params: Vec<usize>,
    /// Fraction of the group's remaining weights removed per round.
    pub fraction: f64,
}

/// The pruning groups a config defines on a layout. Fails on names the layout lacks.
pub fn groups(layout: &Layout, cfg: &PruneConfig) -> Result<Vec<PruneGroup>> {
    for name in cfg.exclude.iter().chain(cfg.layer_fractions.keys()) {
        match layout.index_of(name) {
            Some(i) if layout.specs()[i].prunable => {}
            Some(_) => bail!("invalid config: prune setting names `{name}`, which is not prunable"),
            None => bail!(
                "invalid config: prune setting names `{name}`, which the model lacks (prunable: {})",
                layout
                    .prunable()
                    .map(|i| layout.specs()[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    if cfg.strategy == PruneStrategy::Global && !cfg.layer_fractions.is_empty() {
        bail!("invalid config: `prune.layer_fractions` needs `prune.strategy = \"layerwise\"`");
    }
    let included: Vec<usize> = layout
        .prunable()
        .filter(|&i| !cfg.exclude.contains(&layout.specs()[i].name))
        .collect();
    Ok(match cfg.strategy {
        PruneStrategy::Global => vec![PruneGroup {
            params: included,
            fraction: cfg.fraction,
        }],
        PruneStrategy::Layerwise => included
            .into_iter()
            .map(|i| PruneGroup {
                params: vec![i],
                fraction: cfg.fraction_for(&layout.specs()[i].name),
            })
            .collect(),
    })
}

/// Masks of all ones `[R, P]` (nothing pruned) of the kind and device of `like`.
pub fn dense_masks(like: &Tensor) -> Tensor {
    like.ones_like().detach()
}

/// New masks `[R, P]` after one round of magnitude pruning of `weights` under `masks`,
/// computed for every replica at once.
pub fn magnitude_prune(
    weights: &Tensor,
    masks: &Tensor,
    layout: &Layout,
    groups: &[PruneGroup],
) -> Tensor {
    tch::no_grad(|| {
        let new_masks = masks.copy();
        for group in groups {
            let w = Tensor::cat(
                &group
                    .params
                    .iter()
                    .map(|&i| layout.segment(weights, i))
                    .collect::<Vec<_>>(),
                1,
            );
            let m = Tensor::cat(
                &group
                    .params
                    .iter()
                    .map(|&i| layout.segment(masks, i))
                    .collect::<Vec<_>>(),
                1,
            );
            let kept = m.gt(0.5);
            let remaining = Vec::<i64>::try_from(&kept.sum_dim_intlist(1, false, Kind::Int64))
                .expect("remaining counts");
            let counts: Vec<i64> = remaining
                .iter()
                .map(|&r| prune_count(r as u64, group.fraction) as i64)
                .collect();
            let keep = keep_after_ranking(&w.abs(), &kept, &counts);
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
    let ranked = scores.masked_fill(&kept.logical_not(), f64::INFINITY);
    let (_, order) = ranked.sort_stable(true, 1, false);
    let positions = Tensor::arange(n, (Kind::Int64, device)).expand([r, n], false);
    let ranks = Tensor::zeros([r, n], (Kind::Int64, device)).scatter(1, &order, &positions);
    let counts = Tensor::from_slice(counts).to_device(device).unsqueeze(1);
    ranks
        .ge_tensor(&counts)
        .logical_and(kept)
        .to_kind(scores.kind())
}

/// Remaining (unpruned) entries of every parameter of every replica: `[R][param]`.
pub fn remaining_counts(masks: &Tensor, layout: &Layout) -> Vec<Vec<u64>> {
    let per_param: Vec<Tensor> = (0..layout.specs().len())
        .map(|i| {
            layout
                .segment(masks, i)
                .gt(0.5)
                .sum_dim_intlist(1, false, Kind::Int64)
        })
        .collect();
    let table =
        Vec::<Vec<i64>>::try_from(&Tensor::stack(&per_param, 1).to_device(tch::Device::Cpu))
            .expect("counts");
    table
        .into_iter()
        .map(|row| row.into_iter().map(|c| c as u64).collect())
        .collect()
}
