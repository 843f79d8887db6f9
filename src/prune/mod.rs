//! Pruning with exact counts.
//!
//! Each round removes weights from each pruning group: under the global strategy one group
//! holds every prunable, non-excluded tensor of a replica (one threshold per replica); under
//! the layerwise strategy each tensor is its own group with its own fraction. Biases are never
//! prunable.
//!
//! Three independent settings decide a mask: the scope (the groups, here), the criterion that
//! scores weights ([`criterion`]: magnitude |w|, or random for the control; [`gradient`]:
//! first- and second-order criteria from the training loss; [`obs`]: layer-wise Optimal
//! Brain Surgeon, which also moves the surviving weights) and the schedule
//! that sets how many each group keeps ([`targets`]). Every combination goes through one
//! ranking, [`prune_to_keep`].
//!
//! How many: iteratively, a group with `n` remaining weights loses `round(fraction * n)`
//! (nearest integer, halves away from zero), see [`prune_count`]; one-shot and gradual
//! schedules set the number a group keeps directly ([`targets`]).
//!
//! Which: within a group, weights are ranked by score ascending and, among equal scores, by
//! position: tensors in layout order, then row-major index within a tensor. The first `count`
//! remaining weights of that ranking are pruned. Already pruned weights are never ranked
//! before remaining ones.

pub mod at_init;
pub mod criterion;
pub mod distribution;
pub mod gradient;
pub mod init_final;
pub mod obs;
pub mod rank;
pub mod structured;
pub mod targets;
pub mod topology;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

pub use at_init::{prune_at_init, shuffle_within_tensors, InitScoring};
pub use criterion::{Criterion, Magnitude, Random, ScoreContext};
pub use gradient::{Obd, ScoreData, Taylor};
pub use obs::Obs;
pub use rank::{prune_and_compensate, prune_to_keep, Pruned};

use crate::config::{PruneConfig, PruneCriterion, PruneScope};
use crate::model::{LayerKind, Layout, ParamSpec, State, UnitLayer};

/// The criterion `criterion` as `cfg` sets it up (batches of `batch_size` for `taylor`),
/// scoring on the examples of `data` where it reads any.
pub fn build_criterion<'a>(
    criterion: PruneCriterion,
    cfg: &PruneConfig,
    batch_size: usize,
    data: ScoreData<'a>,
    init: Option<Tensor>,
) -> Box<dyn Criterion + 'a> {
    match criterion {
        PruneCriterion::Magnitude => Box::new(Magnitude),
        PruneCriterion::Taylor => Box::new(Taylor {
            data,
            batches: cfg.score_batches as usize,
            batch_size,
        }),
        PruneCriterion::Obd => Box::new(Obd {
            data,
            examples: cfg.score_examples as usize,
        }),
        PruneCriterion::Obs => {
            Box::new(Obs::new(data, cfg.score_examples as usize, cfg.obs_damping))
        }
        rule => Box::new(init_final::InitFinal { rule, init }),
    }
}

/// Refuses scoring settings that ask for more distinct training examples than the training
/// split of `train` examples holds (batches of `batch_size` where `cfg.criterion` or, with
/// `batches_used`, another scorer reads batches).
pub fn check_score_sizes(
    cfg: &PruneConfig,
    batch_size: usize,
    train: usize,
    batches_used: bool,
) -> Result<()> {
    let c = cfg.criterion;
    let batches = cfg.score_batches as usize * batch_size;
    if (batches_used || c.takes_score_batches()) && batches > train {
        bail!(
            "invalid config: `prune.score_batches` ({}) x `train.batch_size` ({batch_size}) = {batches} examples exceeds the {train} training examples",
            cfg.score_batches
        );
    }
    if (c.takes_score_examples() || cfg.structured_reads_examples())
        && cfg.score_examples as usize > train
    {
        bail!(
            "invalid config: `prune.score_examples` ({}) exceeds the {train} training examples",
            cfg.score_examples
        );
    }
    Ok(())
}

/// Number of weights removed from a group with `remaining` weights.
pub fn prune_count(remaining: u64, fraction: f64) -> u64 {
    ((fraction * remaining as f64).round() as u64).min(remaining)
}

/// Parameters pruned together under one threshold, and the fraction they lose per round.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneGroup {
    /// Parameter indices in the layout, in layout order.
    pub params: Vec<usize>,
    /// Fraction of the group's remaining weights removed per round.
    pub fraction: f64,
}

impl PruneGroup {
    /// Number of weights in the group.
    pub fn size(&self, layout: &Layout) -> u64 {
        self.params
            .iter()
            .map(|&i| layout.specs()[i].numel() as u64)
            .sum()
    }

    /// Remaining weights of the group in one replica, from per-parameter counts.
    pub fn remaining(&self, counts: &[u64]) -> u64 {
        self.params.iter().map(|&i| counts[i]).sum()
    }
}

/// The pruning groups a config defines on a layout. Fails on names the layout lacks.
pub fn groups(layout: &Layout, cfg: &PruneConfig) -> Result<Vec<PruneGroup>> {
    for name in cfg.exclude.iter().chain(cfg.layer_fractions.keys()) {
        match layout.index_of(name) {
            Some(i) if layout.specs()[i].prunable => {}
            Some(_) => bail!("invalid config: prune setting names `{name}`, which is not prunable"),
            None => bail!(
                "invalid config: prune setting names `{name}`, which the model lacks (prunable: {})",
                layout
                    .prunable()
                    .map(|i| layout.specs()[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    if cfg.scope == PruneScope::Global && cfg.has_layer_settings() {
        bail!("invalid config: `prune.layer_fractions` and the per-kind fractions need `prune.strategy = \"layerwise\"` (remove them with `--set prune.layer_fractions={{}}` and `--unset prune.conv_fraction` / `fc_fraction` / `output_fraction`)");
    }
    if let Some(name) = cfg.layer_fractions.keys().find(|n| cfg.exclude.contains(n)) {
        bail!("invalid config: `prune.layer_fractions` sets `{name}`, which `prune.exclude` leaves dense (drop the entry, or all of them with `--set prune.layer_fractions={{}}`)");
    }
    let included: Vec<usize> = layout
        .prunable()
        .filter(|&i| !cfg.exclude.contains(&layout.specs()[i].name))
        .collect();
    if included.is_empty() {
        bail!("invalid config: `prune.exclude` leaves no prunable weight to prune");
    }
    // A per-kind fraction that reaches no pruned tensor (none of its kind, or each has its own
    // `layer_fractions` entry) would be silently ignored.
    for (key, fraction, kind) in [
        ("prune.conv_fraction", cfg.conv_fraction, LayerKind::Conv),
        ("prune.fc_fraction", cfg.fc_fraction, LayerKind::Fc),
        (
            "prune.output_fraction",
            cfg.output_fraction,
            LayerKind::Output,
        ),
    ] {
        let reaches = |i: &usize| {
            let spec = &layout.specs()[*i];
            spec.kind == kind && !cfg.layer_fractions.contains_key(&spec.name)
        };
        if fraction.is_some() && !included.iter().any(reaches) {
            bail!("invalid config: `{key}` is set, but no pruned weight of that kind takes it (none in the model after `prune.exclude`, or each has its own `prune.layer_fractions` entry); remove it with `--unset {key}`");
        }
    }
    Ok(match cfg.scope {
        PruneScope::Global => vec![PruneGroup {
            params: included,
            fraction: cfg.fraction,
        }],
        PruneScope::Layerwise => included
            .into_iter()
            .map(|i| PruneGroup {
                params: vec![i],
                fraction: fraction_for(cfg, &layout.specs()[i]),
            })
            .collect(),
    })
}

/// Fraction of remaining weights removed from a parameter per round: under layerwise pruning
/// its entry in `layer_fractions`, else its kind's fraction, else `fraction`.
pub fn fraction_for(cfg: &PruneConfig, spec: &ParamSpec) -> f64 {
    if cfg.scope == PruneScope::Global {
        return cfg.fraction;
    }
    if let Some(f) = cfg.layer_fractions.get(&spec.name) {
        return *f;
    }
    let by_kind = match spec.kind {
        LayerKind::Conv => cfg.conv_fraction,
        LayerKind::Fc => cfg.fc_fraction,
        LayerKind::Output => cfg.output_fraction,
        LayerKind::Other => None,
    };
    by_kind.unwrap_or(cfg.fraction)
}

/// One group per prunable parameter, in layout order (what per-tensor counts are matched
/// over, as a random-prune control matches its sibling's; the fraction is not used).
pub fn per_tensor_groups(layout: &Layout) -> Vec<PruneGroup> {
    layout
        .prunable()
        .map(|i| PruneGroup {
            params: vec![i],
            fraction: 0.0,
        })
        .collect()
}

/// New masks `[R, P]` after one iterative round: each group of each replica loses
/// `prune_count(remaining, group.fraction)` of its remaining weights, ranked by `criterion`
/// from the weights alone (no buffers: a criterion that runs a network with BatchNorm needs
/// [`prune_to_keep`] and the whole state).
pub fn prune_round(
    criterion: &mut dyn Criterion,
    weights: &Tensor,
    masks: &Tensor,
    layout: &Layout,
    groups: &[PruneGroup],
) -> Tensor {
    let state = State {
        params: weights.shallow_clone(),
        buffers: Vec::new(),
    };
    prune_to_keep(criterion, &state, masks, layout, groups, |remaining| {
        targets::keep_iterative(remaining, groups)
    })
}

/// Masks of all ones `[R, P]` (nothing pruned) of the kind and device of `like`.
pub fn dense_masks(like: &Tensor) -> Tensor {
    like.ones_like().detach()
}

/// Remaining (unpruned) entries of every parameter of every replica: `[R][param]`.
pub fn remaining_counts(masks: &Tensor, layout: &Layout) -> Vec<Vec<u64>> {
    let per_param: Vec<Tensor> = (0..layout.specs().len())
        .map(|i| {
            layout
                .segment(masks, i)
                .gt(0.5)
                .sum_dim_intlist(1, false, Kind::Int64)
        })
        .collect();
    let table =
        Vec::<Vec<i64>>::try_from(&Tensor::stack(&per_param, 1).to_device(tch::Device::Cpu))
            .expect("counts");
    table
        .into_iter()
        .map(|row| row.into_iter().map(|c| c as u64).collect())
        .collect()
}

/// What remains of one replica: the entries of every parameter of the layout, and the units
/// of the network's unit layers (`None` for a network without any).
#[derive(Debug, Clone, PartialEq)]
pub struct Remaining {
    /// Remaining entries per parameter, in layout order.
    pub counts: Vec<u64>,
    /// Remaining neurons and filters (see `model::UnitLayer::alive`).
    pub units: Option<u64>,
}

/// What remains of every replica of `masks` `[R, P]`.
pub fn remaining(masks: &Tensor, layout: &Layout, unit_layers: &[UnitLayer]) -> Vec<Remaining> {
    remaining_counts(masks, layout)
        .into_iter()
        .zip(structured::units_remaining(unit_layers, layout, masks))
        .map(|(counts, units)| Remaining { counts, units })
        .collect()
}

/// Remaining entries of every group of every replica: `[R][group]`.
pub fn group_remaining(masks: &Tensor, layout: &Layout, groups: &[PruneGroup]) -> Vec<Vec<u64>> {
    remaining_counts(masks, layout)
        .iter()
        .map(|counts| groups.iter().map(|g| g.remaining(counts)).collect())
        .collect()
}
