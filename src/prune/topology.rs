//! One topology update of a dynamic sparse network (SET, RigL) on one tensor: drop the
//! active weights of smallest |w|, regrow as many among the positions that were inactive, so
//! the tensor's active count stays exactly the same.
//!
//! Dropped: `round(fraction * active)` active weights, smallest |w| first, equal |w| in
//! position order (the pruning tie rule). Grown: as many of the positions inactive before the
//! update (a weight dropped now is not regrown in the same update), at random (SET) or by
//! largest |gradient| (RigL; SNFS by its momentum; equal values in position order). When fewer
//! positions are inactive than would be dropped, only that many are dropped. SNFS may instead
//! split the regrowth between tensors ([`redistribute`]).

use rand_chacha::ChaCha20Rng;

use super::prune_count;
use crate::rng::permutation;

/// Where regrown weights go.
pub enum Grow<'a> {
    /// Uniformly random among the inactive positions (SET), drawn from this stream.
    Random(&'a mut ChaCha20Rng),
    /// The inactive positions of largest |g| (RigL), `g` the tensor's dense gradient.
    Gradient(&'a [f32]),
}

/// What one update did to a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    /// Active weights before the update.
    pub active: u64,
    /// Weights dropped.
    pub dropped: u64,
    /// Weights grown (as many as dropped, unless SNFS redistributes them between tensors).
    pub grown: u64,
}

/// Updates `mask` (0/1 per entry of one tensor, in place) from the tensor's `weights`,
/// moving `round(fraction * active)` weights (see the module).
pub fn drop_and_grow(weights: &[f32], mask: &mut [f32], fraction: f64, grow: Grow<'_>) -> Update {
    let active = mask.iter().filter(|&&m| m > 0.5).count();
    let n = (prune_count(active as u64, fraction) as usize).min(mask.len() - active);
    drop_then_grow(weights, mask, (n, n), grow)
}

/// Updates `mask` in place: drops the `drop` active weights of smallest |w| (equal |w| in
/// position order), then grows `grow_count` of the positions inactive before the update (at
/// most all of them) as `grow` says.
pub fn drop_then_grow(
    weights: &[f32],
    mask: &mut [f32],
    (drop, grow_count): (usize, usize),
    grow: Grow<'_>,
) -> Update {
    let active: Vec<usize> = (0..mask.len()).filter(|&i| mask[i] > 0.5).collect();
    let inactive: Vec<usize> = (0..mask.len()).filter(|&i| mask[i] <= 0.5).collect();
    let drop = drop.min(active.len());
    let grow_count = grow_count.min(inactive.len());
    let mut by_magnitude = active.clone();
    // Stable: equal |w| stay in position order.
    by_magnitude.sort_by(|&a, &b| weights[a].abs().total_cmp(&weights[b].abs()));
    let grown: Vec<usize> = match grow {
        Grow::Random(rng) => permutation(rng, inactive.len())[..grow_count]
            .iter()
            .map(|&k| inactive[k as usize])
            .collect(),
        Grow::Gradient(g) => {
            let mut by_gradient = inactive.clone();
            by_gradient.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
            by_gradient[..grow_count].to_vec()
        }
    };
    for &i in &by_magnitude[..drop] {
        mask[i] = 0.0;
    }
    for &i in &grown {
        mask[i] = 1.0;
    }
    Update {
        active: active.len() as u64,
        dropped: drop as u64,
        grown: grow_count as u64,
    }
}

/// SNFS's redistribution (Dettmers & Zettlemoyer 2019): `total` regrown weights split
/// between tensors in proportion to `weights` (each tensor's mean |momentum| over its active
/// weights), each at most its `caps` (its inactive positions), what a capped tensor cannot
/// take going to the others in the same proportions; counts by largest remainder (ties to the
/// earlier tensor), so they add up to `total` where the caps allow.
pub fn redistribute(total: u64, weights: &[f64], caps: &[u64]) -> Vec<u64> {
    let n = weights.len();
    let mut counts = vec![0u64; n];
    let mut open: Vec<usize> = (0..n).filter(|&i| caps[i] > 0).collect();
    let mut left = total.min(caps.iter().sum());
    while left > 0 && !open.is_empty() {
        let sum: f64 = open.iter().map(|&i| weights[i].max(0.0)).sum();
        let share = |i: usize| match sum > 0.0 {
            true => weights[i].max(0.0) / sum,
            false => 1.0 / open.len() as f64,
        };
        let exact: Vec<f64> = open.iter().map(|&i| left as f64 * share(i)).collect();
        let mut give: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
        let mut order: Vec<usize> = (0..open.len()).collect();
        order.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor()))
        });
        let short = left - give.iter().sum::<u64>();
        for &k in order.iter().take(short as usize) {
            give[k] += 1;
        }
        let mut next = Vec::new();
        for (k, &i) in open.iter().enumerate() {
            let room = caps[i] - counts[i];
            let take = give[k].min(room);
            counts[i] += take;
            left -= take;
            if counts[i] < caps[i] {
                next.push(i);
            }
        }
        open = next;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::redistribute;

    #[test]
    fn redistribution_follows_the_weights_respects_the_caps_and_adds_up() {
        assert_eq!(redistribute(10, &[1.0, 1.0], &[100, 100]), vec![5, 5]);
        assert_eq!(redistribute(10, &[3.0, 1.0], &[100, 100]), vec![8, 2]);
        // A capped tensor's excess goes to the others.
        assert_eq!(
            redistribute(10, &[3.0, 1.0, 0.0], &[4, 100, 100]),
            vec![4, 6, 0]
        );
        // No room anywhere but here.
        assert_eq!(redistribute(10, &[1.0, 1.0], &[0, 3]), vec![0, 3]);
        let counts = redistribute(101, &[0.2, 0.5, 0.3], &[1000, 1000, 1000]);
        assert_eq!(counts.iter().sum::<u64>(), 101);
    }
}
