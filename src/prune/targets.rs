//! How many weights each group keeps under the one-shot and gradual schedules.
//!
//! A target is a fraction `keep` of the prunable weights. Under the global strategy the group
//! keeps `round(keep * size)`. Under the layerwise strategy a layer with its own fraction
//! `f_l` keeps `round(size * keep^(ln(1 - f_l) / ln(1 - f)))`, where `f` is `prune.fraction`:
//! the ratio iterative pruning gives that layer at the round where default layers reach
//! `keep` (so `fc3` at 10% against 20% elsewhere keeps proportionally more, as in the paper).

use super::{prune_count, PruneGroup};
use crate::model::Layout;

/// Weights group `g` keeps when the target is `keep` (fraction of weights remaining).
pub fn keep_for_target(
    group: &PruneGroup,
    layout: &Layout,
    keep: f64,
    default_fraction: f64,
) -> u64 {
    let ratio = if (group.fraction - default_fraction).abs() < 1e-15 {
        keep
    } else {
        keep.powf((1.0 - group.fraction).ln() / (1.0 - default_fraction).ln())
    };
    (group.size(layout) as f64 * ratio).round() as u64
}

/// Weights a group of `size` keeps after `rounds` iterative rounds at `fraction`.
pub fn keep_after_rounds(size: u64, fraction: f64, rounds: u32) -> u64 {
    (0..rounds).fold(size, |n, _| n - prune_count(n, fraction))
}

/// Per group, how many weights replica rows with `remaining` per-group counts must lose to
/// keep `keep[g]` (never negative).
pub fn removals(remaining: &[Vec<u64>], keep: &[u64]) -> Vec<Vec<u64>> {
    keep.iter()
        .enumerate()
        .map(|(g, &k)| {
            remaining
                .iter()
                .map(|row| row[g].saturating_sub(k))
                .collect()
        })
        .collect()
}
