//! Seeded data augmentation: random crop after padding, and horizontal flip, per example. The
//! offsets and flips of replica r at iteration t come from the stream (seed_r, augment, t), so
//! they depend only on the replica's seed and the iteration (a rewind replays them) and never
//! on the population. They are drawn on the host for a whole chunk of steps and reach the
//! device in one copy ([`draw_chunk`]); the crops themselves run on the device ([`Crops`]).

use rand::Rng;
use tch::{Device, Kind, Tensor};

use super::transfer;
use crate::rng::{stream, Purpose};

/// Per-example draws for one step: (row offset, column offset, flip) of each replica's batch.
pub fn draws(seeds: &[u64], iteration: u64, batch: usize, padding: usize) -> Vec<(i64, i64, bool)> {
    let mut out = Vec::with_capacity(seeds.len() * batch);
    for &seed in seeds {
        let mut rng = stream(seed, Purpose::Augment, iteration);
        for _ in 0..batch {
            let dy = rng.random_range(0..=2 * padding) as i64;
            let dx = rng.random_range(0..=2 * padding) as i64;
            out.push((dy, dx, rng.random::<bool>()));
        }
    }
    out
}

/// Draws as a host tensor `[N, 3]` (row offset, column offset, flip as 0/1).
pub fn draws_tensor(draws: &[(i64, i64, bool)]) -> Tensor {
    let flat: Vec<i64> = draws
        .iter()
        .flat_map(|&(dy, dx, flip)| [dy, dx, i64::from(flip)])
        .collect();
    Tensor::from_slice(&flat).view([draws.len() as i64, 3])
}

/// The draws of iterations `from..from + steps` as `[steps, replicas x batch, 3]` on `device`
/// (one asynchronous copy for the chunk).
pub fn draw_chunk(
    seeds: &[u64],
    from: u64,
    steps: u64,
    batch: usize,
    padding: usize,
    device: Device,
) -> Tensor {
    let all: Vec<(i64, i64, bool)> = (from..from + steps)
        .flat_map(|t| draws(seeds, t, batch, padding))
        .collect();
    let host = draws_tensor(&all).view([steps as i64, -1, 3]);
    transfer::to_device(host, device)
}

/// Random crops and flips on the device, for images with a given padding and fill.
#[derive(Debug)]
pub struct Crops {
    padding: i64,
    /// `[1, C, 1, 1]`: the value of channel c's padding (a black pixel after normalisation).
    fill: Tensor,
}

impl Crops {
    /// Crops of `padding` pixels for images of `channels` channels on `device`; padding of
    /// channel c takes `fill[c]` (0 where `fill` is shorter).
    pub fn new(padding: usize, fill: &[f64], channels: usize, device: Device) -> Self {
        let fill: Vec<f32> = (0..channels)
            .map(|k| fill.get(k).copied().unwrap_or(0.0) as f32)
            .collect();
        Self {
            padding: padding as i64,
            fill: Tensor::from_slice(&fill)
                .view([1, channels as i64, 1, 1])
                .to_device(device),
        }
    }

    /// Crops and flips `x` `[N, C, H, W]` (N = replicas x batch, replica-major) as `draws`
    /// `[N, 3]` (on `x`'s device) say. Pure indexing: every output value is an input value or
    /// the fill.
    pub fn apply(&self, x: &Tensor, draws: &Tensor) -> Tensor {
        let s = x.size();
        let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
        let p = self.padding;
        let device = x.device();
        let padded = self
            .fill
            .expand([n, c, h + 2 * p, w + 2 * p], false)
            .contiguous();
        padded.narrow(2, p, h).narrow(3, p, w).copy_(x);
        let column = |k: i64| draws.select(1, k).view([n, 1]);
        let rows = column(0) + Tensor::arange(h, (Kind::Int64, device)).view([1, h]);
        let j = Tensor::arange(w, (Kind::Int64, device)).view([1, w]);
        // Flipped: column w - 1 - j instead of j.
        let cols = column(1) + &j + column(2) * (&j * -2 + (w - 1));
        let rows = rows.view([n, 1, h, 1]).expand([n, c, h, w + 2 * p], false);
        let cols = cols.view([n, 1, 1, w]).expand([n, c, h, w], false);
        padded.gather(2, &rows, false).gather(3, &cols, false)
    }
}
