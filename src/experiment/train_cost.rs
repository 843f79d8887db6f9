//! What a replica's training costs in multiply-adds (`rounds.csv`'s `train_flops` and
//! `train_flops_cumulative`), by the accounting of Evci et al. 2020 ("Rigging the Lottery",
//! appendix H): a training step costs three forward passes through the weights it trains
//! under (one forward, two backward: the gradients of the inputs and of the weights), a
//! sparse layer costing its remaining weights' share of the dense one; RigL's dense gradient
//! costs a forward and an input gradient through the sparse network and a weight gradient
//! through the dense one, per example of its batch; SNFS takes that dense weight gradient at
//! every step. Evaluation and the scoring passes of
//! pruning criteria are not training and are not counted.

use crate::config::{ArmConfig, ArmKind, PruneSchedule, SparseMethod};
use crate::model::Layout;

/// Multiply-adds of one forward pass of one example through the weights of `counts` (remaining
/// entries per parameter, layout order): each remaining entry of a weight tensor (two or more
/// dimensions: fully connected and convolution weights; biases and BatchNorm's vectors are
/// not multiply-adds) times the output positions it is used at (`positions`).
pub fn forward_macs(layout: &Layout, positions: &[i64], counts: &[u64]) -> u64 {
    layout
        .specs()
        .iter()
        .zip(positions)
        .zip(counts)
        .filter(|((spec, _), _)| spec.shape.len() >= 2)
        .map(|((_, &at), &count)| count * at as u64)
        .sum()
}

/// The multiply-adds of training `steps` steps of `batch` examples through `forward` (one
/// example's forward multiply-adds), plus `dense_gradients` dense gradients of `batch`
/// examples each (RigL's updates) for a network of `dense` forward multiply-adds.
pub fn training_macs(
    forward: u64,
    dense: u64,
    steps: u64,
    batch: u64,
    dense_gradients: u64,
) -> u64 {
    3 * forward * steps * batch + dense_gradients * batch * (2 * forward + dense)
}

/// The multiply-adds of `steps` SNFS steps of `batch` examples: every step takes the dense
/// gradient of the weights (for the momentum it grows by), so its weight gradient costs the
/// dense network's `dense`, its forward and input gradient the sparse `forward` each.
pub fn snfs_macs(forward: u64, dense: u64, steps: u64, batch: u64) -> u64 {
    steps * batch * (2 * forward + dense)
}

/// Whether `arm`'s pruned rounds take a dense weight gradient at every step (SNFS).
pub fn dense_at_every_step(arm: &ArmConfig) -> bool {
    arm.kind == ArmKind::Sparse && arm.method == Some(SparseMethod::Snfs)
}

/// The dense gradients a member of `arm` computes while training [`from`, `to`] (RigL's
/// topology updates; topology updates run only in spans from iteration 0).
pub fn dense_gradients(arm: &ArmConfig, from: u64, to: u64) -> u64 {
    if arm.kind != ArmKind::Sparse || arm.method != Some(SparseMethod::Rigl) || from != 0 {
        return 0;
    }
    arm.topology_updates(to).len() as u64
}

/// Which rounds' training a replica's network of round `round` needed, so that
/// `train_flops_cumulative` adds up theirs (its own round included): under the iterative and
/// gradual schedules every earlier round (or stretch) of the arm; under one-shot the dense
/// round 0 and its own; arms that never train the dense network (`at-init`, `sparse`) only
/// their own round.
pub fn rounds_paid(arm: &ArmConfig, schedule: PruneSchedule, round: u32) -> Vec<u32> {
    if round == 0 || matches!(arm.kind, ArmKind::AtInit | ArmKind::Sparse) {
        return vec![round];
    }
    match schedule {
        PruneSchedule::OneShot => vec![0, round],
        PruneSchedule::Iterative | PruneSchedule::Gradual => (0..=round).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_costs_three_forward_passes_and_a_dense_gradient_adds_two_sparse_and_one_dense() {
        assert_eq!(training_macs(10, 40, 5, 2, 0), 3 * 10 * 5 * 2);
        assert_eq!(
            training_macs(10, 40, 5, 2, 1),
            3 * 10 * 5 * 2 + 2 * (2 * 10 + 40)
        );
    }
}
