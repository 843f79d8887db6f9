//! What a `rewind` arm's kept weights start from (Zhou et al. 2019's mask-1 actions, the
//! arm's `mask1`): the weights w_i it rewinds to, permuted within each tensor, replaced by a
//! signed constant, or given fresh magnitudes with w_i's signs. Only prunable tensors change;
//! biases and BatchNorm keep w_i.

use tch::{Kind, Tensor};

use crate::config::Mask1;
use crate::model::{Layout, State};
use crate::rng::{permutation, stream, Purpose};

/// Replica `seed`'s start weights `start` `[1, P]` (w_i, unmasked) under `mask` `[1, P]`
/// after `action`; `index` picks the draws (the arm and round). (`rewind` returns `start`;
/// callers skip it without reading the mask back from the device.)
pub(super) fn kept_start(
    action: Mask1,
    (start, mask): (&Tensor, &Tensor),
    layout: &Layout,
    (seed, index): (u64, u64),
) -> Tensor {
    if action == Mask1::Rewind {
        return start.shallow_clone();
    }
    let w: Vec<f32> = Vec::try_from(&start.get(0).to_kind(Kind::Float)).expect("a [P] row");
    let m: Vec<f32> = Vec::try_from(&mask.get(0).to_kind(Kind::Float)).expect("a [P] row");
    let mut out = w.clone();
    let fresh = (action == Mask1::Sign).then(|| {
        let f = State::fresh(layout, seed, index).params.get(0);
        Vec::<f32>::try_from(&f).expect("a [P] row")
    });
    let mut rng = stream(seed, Purpose::Shuffle, index);
    for i in layout.prunable() {
        let span = layout.offset(i)..layout.offset(i) + layout.specs()[i].numel();
        let kept: Vec<usize> = span.clone().filter(|&j| m[j] > 0.5).collect();
        match action {
            Mask1::Rewind => {}
            Mask1::Reshuffle => {
                for (k, &p) in permutation(&mut rng, kept.len()).iter().enumerate() {
                    out[kept[k]] = w[kept[p as usize]];
                }
            }
            Mask1::Constant => {
                let n = span.len() as f64;
                let mean = span.clone().map(|j| f64::from(w[j])).sum::<f64>() / n;
                let var = span
                    .clone()
                    .map(|j| (f64::from(w[j]) - mean).powi(2))
                    .sum::<f64>()
                    / n;
                let alpha = var.sqrt() as f32;
                for &j in &kept {
                    out[j] = alpha * w[j].signum();
                }
            }
            Mask1::Sign => {
                let f = fresh.as_ref().expect("fresh draws");
                for &j in &kept {
                    out[j] = f[j].abs() * w[j].signum();
                }
            }
        }
    }
    Tensor::from_slice(&out)
        .unsqueeze(0)
        .to_device(start.device())
}
