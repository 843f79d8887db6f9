//! Initial weights drawn on the host from each replica's own stream, so that a seed gives the
//! same network alone or inside any population.

use rand::Rng;
use rand_distr::StandardNormal;

use super::layout::{Init, Layout};
use crate::rng::{param_index, stream, Purpose};

/// theta_0 of one seed as a flat vector in layout order. Parameter `i` is drawn from the stream
/// (seed, init, i).
pub fn init_replica(layout: &Layout, seed: u64) -> Vec<f32> {
    draw_replica(layout, seed, Purpose::Init, |i| i as u64)
}

/// A fresh draw from the same distribution as theta_0 (for `reinit` and `random-prune`):
/// parameter `i` comes from the stream (seed, reinit, param_index(base, i)).
pub fn fresh_replica(layout: &Layout, seed: u64, base: u64) -> Vec<f32> {
    draw_replica(layout, seed, Purpose::Reinit, |i| param_index(base, i))
}

fn draw_replica(
    layout: &Layout,
    seed: u64,
    purpose: Purpose,
    index: impl Fn(usize) -> u64,
) -> Vec<f32> {
    let mut flat = Vec::with_capacity(layout.total());
    for (i, spec) in layout.specs().iter().enumerate() {
        let normal = |std: f64| {
            let std = std as f32;
            let mut rng = stream(seed, purpose, index(i));
            (0..spec.numel())
                .map(move |_| std * rng.sample::<f32, _>(StandardNormal))
                .collect::<Vec<f32>>()
        };
        match spec.init {
            Init::GlorotNormal { fan_in, fan_out } => {
                flat.extend(normal((2.0 / (fan_in + fan_out) as f64).sqrt()));
            }
            Init::KaimingNormal { fan_in } => flat.extend(normal((2.0 / fan_in as f64).sqrt())),
            Init::Zeros => flat.extend(std::iter::repeat_n(0.0f32, spec.numel())),
            Init::Ones => flat.extend(std::iter::repeat_n(1.0f32, spec.numel())),
        }
    }
    flat
}
