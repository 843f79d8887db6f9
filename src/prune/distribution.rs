//! Per-layer densities of a sparse network trained from scratch (`kind = "sparse"` arms):
//! how a total count of kept weights spreads over the pruned tensors.
//!
//! - `uniform`: every tensor the same density.
//! - `er` (Erdős-Rényi, Mocanu et al. 2018): density proportional to
//!   (n_in + n_out) / (n_in * n_out), for a convolution `[out, in, kh, kw]` counting channels.
//! - `erk` (Erdős-Rényi-Kernel, Evci et al. 2020): for convolutions
//!   (in + out + kh + kw) / (in * out * kh * kw); fully connected layers as `er`.
//!
//! The common factor is solved so that the densities times the sizes add up to the total; a
//! tensor whose density would pass 1 is kept dense and the factor solved again over the
//! others. Counts are rounded by largest remainder, so they add up to the total exactly
//! (equal remainders: the earlier tensor first).

use crate::config::Distribution;
use crate::model::Layout;

/// Weights each of `tensors` (layout indices) keeps when together they keep `total`, spread
/// by `dist`. `total` is at most their combined size.
pub fn layer_counts(
    dist: Distribution,
    layout: &Layout,
    tensors: &[usize],
    total: u64,
) -> Vec<u64> {
    let sizes: Vec<f64> = tensors
        .iter()
        .map(|&i| layout.specs()[i].numel() as f64)
        .collect();
    let scales: Vec<f64> = tensors
        .iter()
        .map(|&i| scale(dist, &layout.specs()[i].shape))
        .collect();
    let densities = solve(&sizes, &scales, total as f64);
    round_to_total(&sizes, &densities, total)
}

/// The raw (unnormalised) density of a tensor of `shape` under `dist`.
pub fn scale(dist: Distribution, shape: &[i64]) -> f64 {
    let (out, inp) = (shape[0] as f64, shape.get(1).copied().unwrap_or(1) as f64);
    let kernel: Vec<f64> = shape.iter().skip(2).map(|&k| k as f64).collect();
    match dist {
        Distribution::Uniform => 1.0,
        Distribution::Er => (inp + out) / (inp * out),
        Distribution::Erk => {
            let numel: f64 = inp * out * kernel.iter().product::<f64>();
            (inp + out + kernel.iter().sum::<f64>()) / numel
        }
    }
}

/// Densities `eps * scale`, capped at 1, with `eps` such that the kept weights add up to
/// `total` (tensors at 1 leave the solve, the factor is found again over the rest).
fn solve(sizes: &[f64], scales: &[f64], total: f64) -> Vec<f64> {
    let mut dense = vec![false; sizes.len()];
    loop {
        let fixed: f64 = (0..sizes.len())
            .filter(|&i| dense[i])
            .map(|i| sizes[i])
            .sum();
        let weighted: f64 = (0..sizes.len())
            .filter(|&i| !dense[i])
            .map(|i| scales[i] * sizes[i])
            .sum();
        let eps = if weighted > 0.0 {
            (total - fixed) / weighted
        } else {
            0.0
        };
        let over: Vec<usize> = (0..sizes.len())
            .filter(|&i| !dense[i] && eps * scales[i] > 1.0)
            .collect();
        if over.is_empty() {
            return (0..sizes.len())
                .map(|i| if dense[i] { 1.0 } else { eps * scales[i] })
                .collect();
        }
        for i in over {
            dense[i] = true;
        }
    }
}

/// Counts `density * size` rounded down, then one more for the largest remainders until they
/// add up to `total`.
fn round_to_total(sizes: &[f64], densities: &[f64], total: u64) -> Vec<u64> {
    let exact: Vec<f64> = sizes
        .iter()
        .zip(densities)
        .map(|(s, d)| (s * d).min(*s))
        .collect();
    let mut counts: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    // Largest remainder first; equal remainders in tensor order (a stable sort).
    order.sort_by(|&a, &b| {
        let ra = exact[a] - exact[a].floor();
        let rb = exact[b] - exact[b].floor();
        rb.total_cmp(&ra)
    });
    let mut missing = total.saturating_sub(counts.iter().sum());
    for &i in order.iter().cycle().take(sizes.len() * 2) {
        if missing == 0 {
            break;
        }
        if (counts[i] as f64) < sizes[i] {
            counts[i] += 1;
            missing -= 1;
        }
    }
    counts
}
