//! The masks of a pruned round, for every replica: arms that prune their own trained weights
//! rank them by the run's criterion (all at once, on the device; scored on the round's own
//! examples where the criterion reads data); `reinit` arms take their
//! sibling's new mask; `random-prune` arms draw a random mask with their sibling's new
//! per-layer counts. The masks that are ranked (all but the copies) go through the one
//! counting and tie rule, [`prune::prune_to_keep`]. A criterion that moves the surviving
//! weights (`obs`) hands back the moved weights with the masks.

use anyhow::Result;
use tch::Tensor;

use super::run::Run;
use super::Member;
use crate::config::{Distribution, MaskRule, PruneSchedule, StartWeights};
use crate::model::State;
use crate::prune::structured::UnitSchedule;
use crate::prune::{self, targets, InitScoring, Pruned, Random};
use crate::rng::{arm_round_index, stream, Purpose};

/// A pruned round's masks, and the weights its pruning moved.
pub(super) struct RoundMasks {
    /// Masks `[M, P]`.
    pub(super) masks: Tensor,
    /// The pruned weights `[M, P]` after a criterion that moves the surviving ones (`obs`)
    /// made up for the removed ones (other members' rows unchanged); `None` when it only
    /// ranks.
    pub(super) moved: Option<Tensor>,
}

/// New masks `[M, P]` of round `round` for `members`, from the weights (and buffers) and
/// masks each one prunes (`prev`, `prev_masks`, both `[M, P]`).
pub(super) fn round_masks(
    run: &Run<'_>,
    round: u32,
    members: &[Member],
    prev: &State,
    prev_masks: &Tensor,
) -> Result<RoundMasks> {
    let mut rows: Vec<Option<Tensor>> = (0..members.len()).map(|_| None).collect();
    let rule = |r: usize| run.plans[members[r].arm].mask;
    let own: Vec<usize> = (0..members.len())
        .filter(|&r| rule(r) == MaskRule::OwnWeights)
        .collect();
    let pruned = own_weight_masks(run, round, (members, &own), (prev, prev_masks))?;
    let moved = pruned.as_ref().and_then(|p| p.weights.as_ref()).map(|w| {
        let mut all = prev.params.detach().copy();
        let _ = all.index_copy_(0, &index_tensor(&own, w.device()), w);
        all
    });
    place(&mut rows, &own, pruned.map(|p| p.masks));

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
        match rule(r) {
            MaskRule::AtInit(_) => rows[r] = Some(at_init_mask(run, round, members[r])?),
            MaskRule::Sparse(dist) => rows[r] = Some(sparse_mask(run, round, members[r], dist)),
            _ => {}
        }
    }
    let mut random = Vec::new();
    for r in 0..members.len() {
        match rule(r) {
            MaskRule::OwnWeights | MaskRule::AtInit(_) | MaskRule::Sparse(_) => {}
            MaskRule::SiblingMask(sibling) => rows[r] = Some(sibling_row(&rows, r, sibling).copy()),
            MaskRule::SiblingCounts(sibling) => random.push((r, sibling_row(&rows, r, sibling))),
        }
    }
    let index: Vec<usize> = random.iter().map(|(r, _)| *r).collect();
    let targets: Vec<Tensor> = random.into_iter().map(|(_, t)| t).collect();
    let drawn = random_masks(run, round, (members, &index), prev_masks, &targets);
    place(&mut rows, &index, drawn);
    let masks = Tensor::stack(
        &rows
            .into_iter()
            .map(|t| t.expect("every member has a mask"))
            .collect::<Vec<_>>(),
        0,
    );
    Ok(RoundMasks { masks, moved })
}

/// The mask `[P]` of an `at-init` member: its seed's θ₀ pruned by the arm's criterion to the
/// per-group counts the run's schedule reaches in `round` (as its sibling arms have), scored on
/// the seed's examples of round 0 (the same every round), then shuffled within each tensor
/// where the arm asks.
fn at_init_mask(run: &Run<'_>, round: u32, member: Member) -> Result<Tensor> {
    let arm = &run.exp.arms[member.arm];
    let MaskRule::AtInit(criterion) = run.plans[member.arm].mask else {
        unreachable!("an at-init member");
    };
    let (layout, groups) = (run.layout(), &run.setup.groups);
    let device = run.setup.device;
    let theta0 = run
        .dir
        .load_theta(member.seed, 0, layout)?
        .to_device(device);
    let keep = targets::keep_one_shot(groups, layout, &run.exp.prune, round);
    let index = arm_round_index(&arm.name, round);
    let scoring = InitScoring {
        data: run.score_data(&[member.seed], 0),
        batches: run.exp.prune.score_batches as usize,
        batch_size: run.exp.train.batch_size,
        synflow_iterations: arm.synflow_steps(),
        rngs: vec![stream(member.seed, Purpose::RandomMask, index)],
    };
    let mask = prune::prune_at_init(criterion, scoring, &theta0, layout, groups, &keep);
    Ok(if arm.shuffle {
        let rngs = vec![stream(member.seed, Purpose::Shuffle, index)];
        prune::shuffle_within_tensors(&mask, layout, rngs).get(0)
    } else {
        mask.get(0)
    })
}

/// The mask `[P]` of a `sparse` member: as many weights as the run's schedule keeps in
/// `round` over all pruned tensors, spread over them by `dist`
/// ([`prune::distribution::layer_counts`]), at random positions within each tensor, drawn from
/// the member's stream for its arm and round.
fn sparse_mask(run: &Run<'_>, round: u32, member: Member, dist: Distribution) -> Tensor {
    let (layout, groups) = (run.layout(), &run.setup.groups);
    let total: u64 = targets::keep_one_shot(groups, layout, &run.exp.prune, round)
        .iter()
        .sum();
    let tensors: Vec<usize> = groups.iter().flat_map(|g| g.params.clone()).collect();
    let per_tensor = prune::distribution::layer_counts(dist, layout, &tensors, total);
    let dense = Tensor::ones(
        [1, layout.total() as i64],
        (tch::Kind::Float, run.setup.device),
    );
    let index = arm_round_index(run.arm_name(member), round);
    let mut random = Random::new(vec![stream(member.seed, Purpose::RandomMask, index)]);
    let state = State {
        params: dense.shallow_clone(),
        buffers: Vec::new(),
    };
    let tensor_groups = prune::per_tensor_groups(layout);
    // Keep counts in the order of `per_tensor_groups` (every prunable tensor; those no group
    // prunes, excluded ones, stay whole).
    let keep: Vec<u64> = tensor_groups
        .iter()
        .map(|g| {
            let i = g.params[0];
            tensors
                .iter()
                .position(|&t| t == i)
                .map_or(layout.specs()[i].numel() as u64, |k| per_tensor[k])
        })
        .collect();
    prune::prune_to_keep(&mut random, &state, &dense, layout, &tensor_groups, |_| {
        vec![keep.clone()]
    })
    .get(0)
}

/// New masks of the members at `index`, which prune their own weights (their rows of the
/// state and masks `prev`): iteratively a fraction of what remains in each group, one-shot
/// the round's target.
fn own_weight_masks(
    run: &Run<'_>,
    round: u32,
    (members, index): (&[Member], &[usize]),
    (prev, prev_masks): (&State, &Tensor),
) -> Result<Option<Pruned>> {
    if index.is_empty() {
        return Ok(None);
    }
    let state = prev.select(&index_tensor(index, prev_masks.device()));
    let m = rows_of(prev_masks, index);
    let seeds: Vec<u64> = index.iter().map(|&r| members[r].seed).collect();
    let (layout, groups) = (run.layout(), &run.setup.groups);
    let prune = &run.exp.prune;
    let keep = |remaining: &[Vec<u64>]| match prune.schedule {
        PruneSchedule::OneShot => {
            vec![targets::keep_one_shot(groups, layout, prune, round); remaining.len()]
        }
        _ => targets::keep_iterative(remaining, groups),
    };
    if !run.setup.units.is_empty() {
        // Whole units: iteratively of what remains, one-shot of the dense network's.
        let units = &run.setup.units;
        let data = run.score_data(&seeds, u64::from(round));
        let batch_size = run.exp.train.batch_size;
        let scores =
            prune::structured::score_units(units, layout, prune, &data, (&state, &m), batch_size);
        let schedule = match prune.schedule {
            PruneSchedule::OneShot => UnitSchedule::OneShot(round),
            _ => UnitSchedule::Iterative,
        };
        let masks =
            prune::structured::prune_units_by(units, layout, (prune, schedule), &scores, &m);
        return Ok(Some(Pruned {
            masks,
            weights: None,
        }));
    }
    let init = if prune.criterion.reads_init() {
        Some(rewind_targets(run, members, index, prev_masks.device())?)
    } else {
        None
    };
    let mut criterion = run.criterion(&seeds, u64::from(round), init);
    // The moved weights matter only to members that go on from their trained weights.
    let compensate = index
        .iter()
        .any(|&r| run.plans[members[r].arm].start == StartWeights::Trained);
    if !compensate {
        let masks = prune::prune_to_keep(criterion.as_mut(), &state, &m, layout, groups, keep);
        return Ok(Some(Pruned {
            masks,
            weights: None,
        }));
    }
    Ok(Some(prune::prune_and_compensate(
        criterion.as_mut(),
        &state,
        &m,
        layout,
        groups,
        keep,
    )))
}

/// The weights `[len(index), P]` the members at `index` rewind to (w_i of the criteria over
/// (w_i, w_f)): θ_k for an arm that restarts from iteration k of the dense run, θ₀ for the
/// others.
fn rewind_targets(
    run: &Run<'_>,
    members: &[Member],
    index: &[usize],
    device: tch::Device,
) -> Result<Tensor> {
    let layout = run.layout();
    let rows = index
        .iter()
        .map(|&r| {
            let m = members[r];
            let k = match run.plans[m.arm].start {
                StartWeights::Theta(k) => k,
                _ => 0,
            };
            Ok(run.dir.load_theta(m.seed, k, layout)?.params.get(0))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&rows, 0).to_device(device))
}

/// Random masks of the members at `index` (their own rows of `prev_masks`), each keeping the
/// per-tensor counts of its sibling's new mask in `sibling_masks` (under structured pruning:
/// whole units, the sibling's count in each layer), drawn from the member's stream for this
/// arm and round.
fn random_masks(
    run: &Run<'_>,
    round: u32,
    (members, index): (&[Member], &[usize]),
    prev_masks: &Tensor,
    sibling_masks: &[Tensor],
) -> Option<Tensor> {
    if index.is_empty() {
        return None;
    }
    let own = rows_of(prev_masks, index);
    let layout = run.layout();
    let sibling = Tensor::stack(sibling_masks, 0);
    let mut rngs: Vec<_> = index
        .iter()
        .map(|&r| {
            let m = members[r];
            stream(
                m.seed,
                Purpose::RandomMask,
                arm_round_index(run.arm_name(m), round),
            )
        })
        .collect();
    let units = &run.setup.units;
    if !units.is_empty() {
        // Whole units: random ones, as many per layer as the sibling keeps.
        let counts = prune::structured::units_per_layer(units, layout, &sibling);
        return Some(prune::structured::random_units(
            units, layout, &own, &counts, &mut rngs,
        ));
    }
    let groups = prune::per_tensor_groups(layout);
    let counts = prune::group_remaining(&sibling, layout, &groups);
    let mut random = Random::new(rngs);
    let state = State {
        params: own.shallow_clone(),
        buffers: Vec::new(),
    };
    Some(prune::prune_to_keep(
        &mut random,
        &state,
        &own,
        layout,
        &groups,
        |_| counts,
    ))
}

/// Rows `index` of a `[M, P]` tensor.
fn rows_of(t: &Tensor, index: &[usize]) -> Tensor {
    t.index_select(0, &index_tensor(index, t.device()))
}

/// `index` as an index tensor on `device`.
fn index_tensor(index: &[usize], device: tch::Device) -> Tensor {
    Tensor::from_slice(&index.iter().map(|&r| r as i64).collect::<Vec<_>>()).to_device(device)
}

/// Puts row `k` of `masks` at `rows[index[k]]`.
fn place(rows: &mut [Option<Tensor>], index: &[usize], masks: Option<Tensor>) {
    if let Some(masks) = masks {
        for (k, &r) in index.iter().enumerate() {
            rows[r] = Some(masks.get(k as i64));
        }
    }
}
