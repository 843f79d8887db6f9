//! How many weights each group keeps, per schedule: iteratively a fraction of what remains,
//! under the one-shot and gradual schedules a target share of the whole.
//!
//! A target is a fraction `keep` of the prunable weights. Under the global strategy the group
//! keeps `round(keep * size)`. Under the layerwise strategy a layer with its own fraction
//! `f_l` keeps `round(size * keep^(ln(1 - f_l) / ln(1 - f)))`, where `f` is `prune.fraction`:
//! the ratio iterative pruning gives that layer at the round where default layers reach
//! `keep` (so `fc3` at 10% against 20% elsewhere keeps proportionally more, as in the paper).

use super::{prune_count, PruneGroup};
use crate::config::PruneConfig;
use crate::model::Layout;

/// Per replica and group, the weights one iterative round keeps of `remaining` (`[R][G]`):
/// each group loses `prune_count(remaining, group.fraction)`.
pub fn keep_iterative(remaining: &[Vec<u64>], groups: &[PruneGroup]) -> Vec<Vec<u64>> {
    remaining
        .iter()
        .map(|row| {
            row.iter()
                .zip(groups)
                .map(|(&n, g)| n - prune_count(n, g.fraction))
                .collect()
        })
        .collect()
}

/// Weights group `g` keeps when the target is `keep` (fraction of weights remaining).
pub fn keep_for_target(
    group: &PruneGroup,
    layout: &Layout,
    keep: f64,
    default_fraction: f64,
) -> u64 {
    let ratio = target_ratio(group.fraction, keep, default_fraction);
    (group.size(layout) as f64 * ratio).round() as u64
}

/// The share of its size a group at `fraction` keeps when groups at `default_fraction` keep
/// `keep` (see the module).
pub fn target_ratio(fraction: f64, keep: f64, default_fraction: f64) -> f64 {
    if (fraction - default_fraction).abs() < 1e-15 {
        keep
    } else {
        keep.powf((1.0 - fraction).ln() / (1.0 - default_fraction).ln())
    }
}

/// Weights each group keeps in one-shot round `round` (from 1): the listed target of
/// `prune.targets`, or the count the iterative schedule reaches after `round` rounds.
pub fn keep_one_shot(
    groups: &[PruneGroup],
    layout: &Layout,
    cfg: &PruneConfig,
    round: u32,
) -> Vec<u64> {
    groups
        .iter()
        .map(|g| match cfg.targets.get(round as usize - 1) {
            Some(pct) => keep_for_target(g, layout, pct / 100.0, cfg.fraction),
            None => keep_after_rounds(g.size(layout), g.fraction, round),
        })
        .collect()
}

/// Weights a group of `size` keeps after `rounds` iterative rounds at `fraction`.
pub fn keep_after_rounds(size: u64, fraction: f64, rounds: u32) -> u64 {
    (0..rounds).fold(size, |n, _| n - prune_count(n, fraction))
}
