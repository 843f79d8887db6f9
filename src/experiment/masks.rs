//! The masks of a pruned round, for every replica: magnitude arms prune their own trained
//! weights (all at once, on the device); `reinit` arms take their sibling's new mask;
//! `random-prune` arms draw a random mask with their sibling's new per-layer counts.

use tch::Tensor;

use super::plan::MaskRule;
use super::{Member, Run};
use crate::config::PruneSchedule;
use crate::prune::targets::{keep_after_rounds, keep_for_target, removals};
use crate::prune::{magnitude_prune, prune_to_counts, random_prune_to_counts, remaining_counts};
use crate::rng::{arm_round_index, stream, Purpose};

/// New masks `[M, P]` of round `round` for `members`, from the weights and masks each one
/// prunes (`prev_params`, `prev_masks`, both `[M, P]`).
pub(super) fn round_masks(
    run: &Run<'_>,
    round: u32,
    members: &[Member],
    prev_params: &Tensor,
    prev_masks: &Tensor,
) -> Tensor {
    let layout = run.net.layout();
    let device = prev_masks.device();
    let mut rows: Vec<Option<Tensor>> = (0..members.len()).map(|_| None).collect();

    let magnitude: Vec<usize> = (0..members.len())
        .filter(|&r| run.plans[members[r].arm].mask == MaskRule::Magnitude)
        .collect();
    if !magnitude.is_empty() {
        let index = index_tensor(&magnitude, device);
        let w = prev_params.index_select(0, &index);
        let m = prev_masks.index_select(0, &index);
        let pruned = match run.exp.prune.schedule {
            PruneSchedule::OneShot => {
                let keep = one_shot_keep(run, round);
                let remaining: Vec<Vec<u64>> = remaining_counts(&m, layout)
                    .iter()
                    .map(|c| run.groups.iter().map(|g| g.remaining(c)).collect())
                    .collect();
                prune_to_counts(&w, &m, layout, &run.groups, &removals(&remaining, &keep))
            }
            _ => magnitude_prune(&w, &m, layout, &run.groups),
        };
        for (k, &r) in magnitude.iter().enumerate() {
            rows[r] = Some(pruned.get(k as i64));
        }
    }

    let sibling_row = |rows: &[Option<Tensor>], r: usize, sibling: usize| -> Tensor {
        let seed = members[r].seed;
        let s = members
            .iter()
            .position(|m| m.arm == sibling && m.seed == seed)
            .expect("sibling replica of the same seed");
        rows[s]
            .as_ref()
            .expect("sibling mask computed first")
            .shallow_clone()
    };
    for r in 0..members.len() {
        let m = members[r];
        match run.plans[m.arm].mask {
            MaskRule::Magnitude => {}
            MaskRule::SiblingMask(sibling) => rows[r] = Some(sibling_row(&rows, r, sibling).copy()),
            MaskRule::SiblingCounts(sibling) => {
                let target = sibling_row(&rows, r, sibling).unsqueeze(0);
                let keep = remaining_counts(&target, layout);
                let mut rng = vec![stream(
                    m.seed,
                    Purpose::RandomMask,
                    arm_round_index(run.arm_name(m), round),
                )];
                let own = prev_masks.get(r as i64).unsqueeze(0);
                rows[r] = Some(random_prune_to_counts(&own, layout, &keep, &mut rng).get(0));
            }
        }
    }
    Tensor::stack(
        &rows
            .into_iter()
            .map(|t| t.expect("every member has a mask"))
            .collect::<Vec<_>>(),
        0,
    )
}

/// Weights each pruning group keeps in one-shot round `round`: the listed target, or the count
/// the iterative schedule reaches after `round` rounds.
fn one_shot_keep(run: &Run<'_>, round: u32) -> Vec<u64> {
    let layout = run.net.layout();
    let prune = &run.exp.prune;
    run.groups
        .iter()
        .map(|g| match prune.targets.get(round as usize - 1) {
            Some(pct) => keep_for_target(g, layout, pct / 100.0, prune.fraction),
            None => keep_after_rounds(g.size(layout), g.fraction, round),
        })
        .collect()
}

fn index_tensor(rows: &[usize], device: tch::Device) -> Tensor {
    Tensor::from_slice(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>()).to_device(device)
}
