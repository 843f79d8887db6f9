//! One topology update of a dynamic sparse network (SET, RigL) on one tensor: drop the
//! active weights of smallest |w|, regrow as many among the positions that were inactive, so
//! the tensor's active count stays exactly the same.
//!
//! Dropped: `round(fraction * active)` active weights, smallest |w| first, equal |w| in
//! position order (the pruning tie rule). Grown: as many of the positions inactive before the
//! update (a weight dropped now is not regrown in the same update), at random (SET) or by
//! largest |gradient| (RigL; equal values in position order). When fewer positions are
//! inactive than would be dropped, only that many are dropped.

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
    /// Active weights before (and after) the update.
    pub active: u64,
    /// Weights dropped, and as many grown.
    pub moved: u64,
}

/// Updates `mask` (0/1 per entry of one tensor, in place) from the tensor's `weights`,
/// moving `round(fraction * active)` weights (see the module).
pub fn drop_and_grow(weights: &[f32], mask: &mut [f32], fraction: f64, grow: Grow<'_>) -> Update {
    let active: Vec<usize> = (0..mask.len()).filter(|&i| mask[i] > 0.5).collect();
    let inactive: Vec<usize> = (0..mask.len()).filter(|&i| mask[i] <= 0.5).collect();
    let n = (prune_count(active.len() as u64, fraction) as usize).min(inactive.len());
    let mut by_magnitude = active.clone();
    // Stable: equal |w| stay in position order.
    by_magnitude.sort_by(|&a, &b| weights[a].abs().total_cmp(&weights[b].abs()));
    let grown: Vec<usize> = match grow {
        Grow::Random(rng) => permutation(rng, inactive.len())[..n]
            .iter()
            .map(|&k| inactive[k as usize])
            .collect(),
        Grow::Gradient(g) => {
            let mut by_gradient = inactive.clone();
            by_gradient.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
            by_gradient[..n].to_vec()
        }
    };
    for &i in &by_magnitude[..n] {
        mask[i] = 0.0;
    }
    for &i in &grown {
        mask[i] = 1.0;
    }
    Update {
        active: active.len() as u64,
        moved: n as u64,
    }
}
