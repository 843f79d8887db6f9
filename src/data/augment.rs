//! Seeded data augmentation on the device: random crop after zero padding, and horizontal
//! flip, per example. The offsets and flips of replica r at iteration t come from the stream
//! (seed_r, augment, t), so they depend only on the replica's seed and the iteration (a rewind
//! replays them) and never on the population.

use rand::Rng;
use tch::Tensor;

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

/// Crops and flips `x` `[N, C, H, W]` (N = replicas x batch, replica-major) as `draws` say;
/// the padding of channel c has the value `fill[c]` (a black pixel after normalisation).
pub fn crop_flip(x: &Tensor, draws: &[(i64, i64, bool)], padding: usize, fill: &[f64]) -> Tensor {
    let s = x.size();
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let p = padding as i64;
    let device = x.device();
    let mut rows = Vec::with_capacity((n * h) as usize);
    let mut cols = Vec::with_capacity((n * w) as usize);
    for &(dy, dx, flip) in draws {
        rows.extend((0..h).map(|i| dy + i));
        cols.extend((0..w).map(|j| dx + if flip { w - 1 - j } else { j }));
    }
    let to = |v: Vec<i64>, shape: [i64; 4]| Tensor::from_slice(&v).to_device(device).view(shape);
    let fill: Vec<f32> = (0..c as usize)
        .map(|k| fill.get(k).copied().unwrap_or(0.0) as f32)
        .collect();
    let padded = Tensor::from_slice(&fill)
        .to_device(device)
        .view([1, c, 1, 1])
        .expand([n, c, h + 2 * p, w + 2 * p], false)
        .contiguous();
    padded.narrow(2, p, h).narrow(3, p, w).copy_(x);
    let rows = to(rows, [n, 1, h, 1]).expand([n, c, h, w + 2 * p], false);
    let cols = to(cols, [n, 1, 1, w]).expand([n, c, h, w], false);
    padded.gather(2, &rows, false).gather(3, &cols, false)
}
