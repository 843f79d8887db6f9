//! Random pruning (the control of Frankle & Carbin 2019): remove uniformly drawn remaining
//! weights so each parameter ends with a given count. Draws come from the replica's own stream,
//! so they do not depend on the population.

use rand_chacha::ChaCha20Rng;
use tch::{Device, Kind, Tensor};

use crate::model::Layout;
use crate::rng::permutation;

/// New masks `[R, P]`: in replica `r`, each prunable parameter `i` keeps `keep[r][i]` of the
/// weights `masks` keeps, chosen by a uniformly random permutation drawn from `rngs[r]`.
/// Parameters whose current count is at or below the target are left as they are.
pub fn random_prune_to_counts(
    masks: &Tensor,
    layout: &Layout,
    keep: &[Vec<u64>],
    rngs: &mut [ChaCha20Rng],
) -> Tensor {
    let device = masks.device();
    let rows = Vec::<Vec<f32>>::try_from(&masks.to_kind(Kind::Float).to_device(Device::Cpu))
        .expect("mask rows");
    let mut out = Vec::with_capacity(rows.len());
    for (r, mut row) in rows.into_iter().enumerate() {
        for i in layout.prunable() {
            let off = layout.offset(i);
            let n = layout.specs()[i].numel();
            let kept: Vec<usize> = (off..off + n).filter(|&j| row[j] > 0.5).collect();
            let target = keep[r][i] as usize;
            if kept.len() <= target {
                continue;
            }
            let order = permutation(&mut rngs[r], kept.len());
            for &k in &order[..kept.len() - target] {
                row[kept[k as usize]] = 0.0;
            }
        }
        out.push(Tensor::from_slice(&row));
    }
    Tensor::stack(&out, 0).to_device(device)
}
