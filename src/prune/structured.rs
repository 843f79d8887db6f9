//! Structured pruning: whole neurons of hidden fully connected layers or whole filters of
//! convolutions, with exact counts and the same tie rule as single weights.
//!
//! Units are scored by their incoming weights (a row of the layer's weight), per weight so
//! that layers of different fan-in compare under one global ranking: `l1` the mean |w|, `l2`
//! the root mean square; or by `taylor`, the squared first-order estimate of the loss change
//! when the unit goes (from training batches, [`taylor_unit_scores`]); or by their activations
//! (`apoz`, `mean-activation`, [`activation_unit_scores`]). Iteratively, a layer with `n` remaining units loses
//! `round(fraction * n)` (layerwise, the layer's fraction as for weights), or all layers
//! together lose `round(fraction * n)` of their `n` remaining units (global). Among equal
//! scores, units go in position order: layers in layout order, then unit index. A removed
//! unit's row, its own entries (bias) and the inputs it feeds in the next layer are masked
//! ([`UnitLayer::apply`]), so it computes nothing and reaches nothing.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use rand_chacha::ChaCha20Rng;

use super::gradient::ScoreData;
use super::{fraction_for, prune_count, targets};
use crate::config::{Granularity, PruneConfig, PruneScope, StructuredCriterion};
use crate::model::{LayerInput, LayerKind, Layout, Network, State, UnitLayer};
use crate::rng::permutation;

/// The unit layers `cfg` prunes on `net`: those of its granularity's kind whose weight
/// `prune.exclude` does not name; empty for single-weight pruning. Refuses a granularity the
/// network has no units of.
pub fn pruned_unit_layers(net: &dyn Network, cfg: &PruneConfig) -> Result<Vec<UnitLayer>> {
    let (kind, what) = match cfg.granularity {
        Granularity::Weight => return Ok(Vec::new()),
        Granularity::Neuron => (LayerKind::Fc, "hidden fully connected neurons"),
        Granularity::Filter => (LayerKind::Conv, "convolution filters"),
    };
    let layout = net.layout();
    let all = net.unit_layers();
    if !all.iter().any(|l| l.kind(layout) == kind) {
        bail!(
            "invalid config: `prune.granularity = \"{}\"`: the model has no {what} that lth can remove (neurons: LeNet and Conv-2/4/6's fc1, fc2; filters: Conv-2/4/6, VGG, and ResNet's inner conv1 of each block)",
            cfg.granularity.name()
        );
    }
    let layers: Vec<UnitLayer> = all
        .into_iter()
        .filter(|l| l.kind(layout) == kind)
        .filter(|l| !cfg.exclude.contains(&layout.specs()[l.weight].name))
        .collect();
    if layers.is_empty() {
        bail!("invalid config: `prune.exclude` leaves no {what} to prune");
    }
    let c = cfg.structured_criterion;
    if c.reads_activations() && !net.has_layer_inputs() {
        bail!(
            "invalid config: `prune.structured_criterion = \"{}\"` ranks units by what the next layer receives, which lth reads for LeNet and Conv-2/4/6 only (not BatchNorm or residual networks); use l1, l2 or taylor here",
            if c == StructuredCriterion::Apoz { "apoz" } else { "mean-activation" }
        );
    }
    Ok(layers)
}

/// Scores `[R, units]` (double) of a layer's units from the flat weights `params` `[R, P]`
/// by a norm criterion (`l1`, `l2`; the others read data: [`score_units`]).
pub fn unit_scores(
    layer: &UnitLayer,
    layout: &Layout,
    params: &Tensor,
    criterion: StructuredCriterion,
) -> Tensor {
    let rows = layer.rows(layout, params).to_kind(Kind::Double);
    match criterion {
        StructuredCriterion::L1 => rows.abs().mean_dim(-1, false, Kind::Double),
        StructuredCriterion::L2 => rows.square().mean_dim(-1, false, Kind::Double).sqrt(),
        StructuredCriterion::Taylor
        | StructuredCriterion::Apoz
        | StructuredCriterion::MeanActivation => {
            panic!("taylor and activation scores need data: taylor_unit_scores, activation_unit_scores")
        }
    }
}

/// Scores `[R, units]` of every layer's units by `cfg.structured_criterion`: the norms from
/// the weights alone, `taylor` from `cfg.score_batches` batches of `batch_size`, the
/// activation criteria from `cfg.score_examples` examples, each replica's own (`data`).
pub fn score_units(
    layers: &[UnitLayer],
    layout: &Layout,
    cfg: &PruneConfig,
    data: &ScoreData<'_>,
    (state, masks): (&State, &Tensor),
    batch_size: usize,
) -> Vec<Tensor> {
    let c = cfg.structured_criterion;
    match c {
        StructuredCriterion::L1 | StructuredCriterion::L2 => layers
            .iter()
            .map(|l| unit_scores(l, layout, &state.params, c))
            .collect(),
        StructuredCriterion::Taylor => {
            let sizes = (cfg.score_batches as usize, batch_size);
            taylor_unit_scores(layers, layout, data, (state, masks), sizes)
        }
        StructuredCriterion::Apoz | StructuredCriterion::MeanActivation => {
            let how = (c, cfg.score_examples as usize);
            activation_unit_scores(layers, layout, data, (state, masks), how)
        }
    }
}

/// Taylor scores `[R, units]` (double) of every layer's units (see
/// [`StructuredCriterion::Taylor`]): per batch, the gradient of each replica's mean loss on
/// its own examples (as the single-weight `taylor` criterion draws them, see [`ScoreData`]),
/// summed as w * g over the unit's row and bias, squared; averaged over `batches` batches of
/// `batch_size`. Not normalised: it estimates a change of loss, which compares across layers.
pub fn taylor_unit_scores(
    layers: &[UnitLayer],
    layout: &Layout,
    data: &ScoreData<'_>,
    (state, masks): (&State, &Tensor),
    (batches, batch_size): (usize, usize),
) -> Vec<Tensor> {
    let replicas = masks.size()[0];
    let w = (&state.params * masks).detach();
    let examples: Vec<Vec<i64>> = (0..replicas as usize)
        .map(|r| data.examples(r, batches * batch_size))
        .collect();
    let mut sums: Vec<Tensor> = layers
        .iter()
        .map(|l| Tensor::zeros([replicas, l.units(layout)], (Kind::Double, masks.device())))
        .collect();
    for b in 0..batches {
        let index: Vec<i64> = examples
            .iter()
            .flat_map(|e| e[b * batch_size..(b + 1) * batch_size].to_vec())
            .collect();
        let (x, y) = data.batch(&index, replicas);
        let g = data.gradient(&w, &state.buffers, &x, &y);
        let wg = (&w * g).to_kind(Kind::Double);
        for (sum, layer) in sums.iter_mut().zip(layers) {
            let units = layer.units(layout);
            let mut s = layer
                .rows(layout, &wg)
                .sum_dim_intlist(-1, false, Kind::Double);
            for &p in &layer.owned {
                s += layout.segment(&wg, p).view([replicas, units]);
            }
            *sum += s.square();
        }
    }
    sums.into_iter().map(|s| s / batches as f64).collect()
}

/// Whether each unit remains, `[R][units]` (see [`UnitLayer::alive`]).
fn remaining_units(layer: &UnitLayer, layout: &Layout, masks: &Tensor) -> Vec<Vec<bool>> {
    let alive = layer.alive(layout, masks).to_device(tch::Device::Cpu);
    Vec::<Vec<bool>>::try_from(&alive).expect("a [R, units] table")
}

/// Units remaining in each replica over all of `layers` (`None` when there are none).
pub fn units_remaining(layers: &[UnitLayer], layout: &Layout, masks: &Tensor) -> Vec<Option<u64>> {
    let replicas = masks.size()[0] as usize;
    if layers.is_empty() {
        return vec![None; replicas];
    }
    let mut total = vec![0u64; replicas];
    for layer in layers {
        for (r, units) in remaining_units(layer, layout, masks).iter().enumerate() {
            total[r] += units.iter().filter(|&&a| a).count() as u64;
        }
    }
    total.into_iter().map(Some).collect()
}

/// Activation scores `[R, units]` (double) of every layer's units: the fraction of their
/// activations that are not zero (`apoz`) or their mean (`mean-activation`), over
/// `examples` training examples of each replica (drawn as `obd` draws them, see
/// [`ScoreData`]), in chunks of 100. A unit's activations are what the layer it feeds
/// multiplies: the next fully connected layer's input columns (a channel's H x W of them after
/// the last convolution's pooling), or the centres of the next convolution's 3 x 3 patches, one
/// per position. Networks without layer inputs ([`Network::has_layer_inputs`]) are refused
/// by [`pruned_unit_layers`].
pub fn activation_unit_scores(
    layers: &[UnitLayer],
    layout: &Layout,
    data: &ScoreData<'_>,
    (state, masks): (&State, &Tensor),
    (criterion, examples): (StructuredCriterion, usize),
) -> Vec<Tensor> {
    let replicas = masks.size()[0];
    let w = (&state.params * masks).detach();
    let mut scores: Vec<Vec<Tensor>> = layers.iter().map(|_| Vec::new()).collect();
    for r in 0..replicas {
        let index = data.examples(r as usize, examples);
        // Per layer: activations that are not zero, their sum, how many.
        let mut totals: Vec<Option<(Tensor, Tensor, i64)>> = layers.iter().map(|_| None).collect();
        for chunk in index.chunks(100) {
            let (x, _) = data.batch(chunk, 1);
            let inputs = tch::no_grad(|| data.net.layer_inputs(&w.get(r), &x.get(0)))
                .expect("a network with layer inputs");
            for (total, layer) in totals.iter_mut().zip(layers) {
                let a = unit_activations(layer, layout, &inputs);
                let nonzero = a.gt(0.0).sum_dim_intlist(0, false, Kind::Double);
                let sum = a.sum_dim_intlist(0, false, Kind::Double);
                let n = a.size()[0];
                *total = Some(match total.take() {
                    None => (nonzero, sum, n),
                    Some((z, s, c)) => (z + nonzero, s + sum, c + n),
                });
            }
        }
        for (l, total) in totals.into_iter().enumerate() {
            let (nonzero, sum, n) = total.expect("at least one example");
            scores[l].push(match criterion {
                StructuredCriterion::Apoz => nonzero / n as f64,
                _ => sum / n as f64,
            });
        }
    }
    scores.iter().map(|s| Tensor::stack(s, 0)).collect()
}

/// The activations of `layer`'s units among one replica's layer `inputs`, `[samples, units]`:
/// its consumer's input columns (a unit's `span` of them as samples of their own), or the
/// centre of each of the consumer convolution's patches.
fn unit_activations(layer: &UnitLayer, layout: &Layout, inputs: &[LayerInput]) -> Tensor {
    let units = layer.units(layout);
    let consumer = layer.consumers[0];
    let rows = &inputs
        .iter()
        .find(|i| i.weight == consumer.weight)
        .expect("the consumer's layer inputs")
        .rows;
    let m = rows.size()[0];
    let shape = &layout.specs()[consumer.weight].shape;
    if shape.len() == 4 {
        // Patches `[M, units * k * k]`: the centre of each is the unit's activation there.
        let kk = shape[2] * shape[3];
        rows.view([m, units, kk]).select(2, kk / 2)
    } else {
        rows.view([m, units, consumer.span])
            .transpose(1, 2)
            .reshape([-1, units])
    }
}

/// How many units a structured step keeps of each group (a layer under the layerwise scope,
/// all pruned layers under the global one), mirroring the single-weight schedules
/// ([`super::targets`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnitSchedule {
    /// One iterative round: a group of `n` remaining units loses `round(fraction * n)`.
    Iterative,
    /// One-shot round `r` (from 1) of the dense network's units: `prune.targets[r - 1]`
    /// percent of them, or what `r` iterative rounds would leave.
    OneShot(u32),
    /// A share `keep` of the units (the gradual schedule's target at a pruning step); a layer
    /// with its own fraction keeps proportionally more, as single weights do.
    Share(f64),
}

/// The groups `cfg.scope` ranks together: layer indices into `layers`, and their fraction.
fn unit_groups(layers: &[UnitLayer], layout: &Layout, cfg: &PruneConfig) -> Vec<(Vec<usize>, f64)> {
    match cfg.scope {
        PruneScope::Global => vec![((0..layers.len()).collect(), cfg.fraction)],
        PruneScope::Layerwise => (0..layers.len())
            .map(|l| {
                (
                    vec![l],
                    fraction_for(cfg, &layout.specs()[layers[l].weight]),
                )
            })
            .collect(),
    }
}

/// Units a group of `size` units (dense) at `fraction` keeps when `alive` remain.
fn units_kept(
    schedule: UnitSchedule,
    cfg: &PruneConfig,
    size: u64,
    fraction: f64,
    alive: u64,
) -> u64 {
    let share = |keep: f64| {
        (size as f64 * targets::target_ratio(fraction, keep, cfg.fraction)).round() as u64
    };
    let keep = match schedule {
        UnitSchedule::Iterative => alive - prune_count(alive, fraction),
        UnitSchedule::OneShot(round) => match cfg.targets.get(round as usize - 1) {
            Some(pct) => share(pct / 100.0),
            None => targets::keep_after_rounds(size, fraction, round),
        },
        UnitSchedule::Share(keep) => share(keep),
    };
    keep.min(alive)
}

/// New masks `[R, P]` after one iterative round of structured pruning of `layers` (see the
/// module), from each replica's weights `params` and masks `masks`, ranked by the norm
/// criterion of `cfg` (`l1`, `l2`).
pub fn prune_units_round(
    layers: &[UnitLayer],
    layout: &Layout,
    cfg: &PruneConfig,
    params: &Tensor,
    masks: &Tensor,
) -> Tensor {
    let scores: Vec<Tensor> = layers
        .iter()
        .map(|l| unit_scores(l, layout, params, cfg.structured_criterion))
        .collect();
    prune_units_by(
        layers,
        layout,
        (cfg, UnitSchedule::Iterative),
        &scores,
        masks,
    )
}

/// New masks `[R, P]` of one structured step of `schedule` under `cfg`'s scope and fractions,
/// the units' scores given (`[R, units]` per layer): each group keeps its count of its
/// remaining units, those of the highest scores (equal scores: the later position stays).
pub fn prune_units_by(
    layers: &[UnitLayer],
    layout: &Layout,
    (cfg, schedule): (&PruneConfig, UnitSchedule),
    scores: &[Tensor],
    masks: &Tensor,
) -> Tensor {
    let groups = unit_groups(layers, layout, cfg);
    let sizes: Vec<u64> = groups
        .iter()
        .map(|(ls, _)| ls.iter().map(|&l| layers[l].units(layout) as u64).sum())
        .collect();
    let layer_groups: Vec<Vec<usize>> = groups.iter().map(|(ls, _)| ls.clone()).collect();
    keep_best_units(
        layers,
        layout,
        &layer_groups,
        scores,
        masks,
        |_, g, alive| units_kept(schedule, cfg, sizes[g], groups[g].1, alive),
    )
}

/// New masks `[R, P]` of a random structured control: each replica keeps, in every layer, as
/// many of its remaining units as `counts[r][layer]` says (its sibling's), drawn from its own
/// stream `rngs[r]`.
pub fn random_units(
    layers: &[UnitLayer],
    layout: &Layout,
    masks: &Tensor,
    counts: &[Vec<u64>],
    rngs: &mut [ChaCha20Rng],
) -> Tensor {
    let replicas = masks.size()[0] as usize;
    let alive: Vec<Vec<Vec<bool>>> = layers
        .iter()
        .map(|l| remaining_units(l, layout, masks))
        .collect();
    let scores: Vec<Tensor> = layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let units = layer.units(layout) as usize;
            let mut table = vec![0f64; replicas * units];
            for (r, rng) in rngs.iter_mut().enumerate() {
                let kept: Vec<usize> = (0..units).filter(|&u| alive[l][r][u]).collect();
                for (rank, &k) in permutation(rng, kept.len()).iter().enumerate() {
                    table[r * units + kept[k as usize]] = rank as f64;
                }
            }
            Tensor::from_slice(&table).view([replicas as i64, units as i64])
        })
        .collect();
    let per_layer: Vec<Vec<usize>> = (0..layers.len()).map(|l| vec![l]).collect();
    keep_best_units(layers, layout, &per_layer, &scores, masks, |r, l, _| {
        counts[r][l]
    })
}

/// Units each replica has left in each layer, `[R][layers]`.
pub fn units_per_layer(layers: &[UnitLayer], layout: &Layout, masks: &Tensor) -> Vec<Vec<u64>> {
    let replicas = masks.size()[0] as usize;
    let mut out = vec![Vec::with_capacity(layers.len()); replicas];
    for layer in layers {
        for (r, units) in remaining_units(layer, layout, masks).iter().enumerate() {
            out[r].push(units.iter().filter(|&&a| a).count() as u64);
        }
    }
    out
}

/// Masks `[R, P]` where each group of `layers` (indices) keeps, per replica, `keep(r, group,
/// remaining)` of its remaining units, those of the highest `scores`; among equal scores
/// units go in position order (layers in layout order, then unit index).
fn keep_best_units(
    layers: &[UnitLayer],
    layout: &Layout,
    groups: &[Vec<usize>],
    scores: &[Tensor],
    masks: &Tensor,
    keep: impl Fn(usize, usize, u64) -> u64,
) -> Tensor {
    let replicas = masks.size()[0] as usize;
    let scores: Vec<Vec<Vec<f64>>> = scores
        .iter()
        .map(|s| {
            let s = s.to_kind(Kind::Double).to_device(tch::Device::Cpu);
            Vec::<Vec<f64>>::try_from(&s).expect("a [R, units] table")
        })
        .collect();
    let alive: Vec<Vec<Vec<bool>>> = layers
        .iter()
        .map(|l| remaining_units(l, layout, masks))
        .collect();
    // kept[layer][replica][unit]
    let mut kept: Vec<Vec<Vec<f32>>> = alive
        .iter()
        .map(|per| {
            per.iter()
                .map(|units| units.iter().map(|&a| f32::from(u8::from(a))).collect())
                .collect()
        })
        .collect();
    for r in 0..replicas {
        for (g, ls) in groups.iter().enumerate() {
            // Candidates (score, layer, unit) in position order.
            let mut candidates: Vec<(f64, usize, usize)> = ls
                .iter()
                .flat_map(|&l| {
                    let (scores, alive) = (&scores[l][r], &alive[l][r]);
                    (0..scores.len())
                        .filter(move |&u| alive[u])
                        .map(move |u| (scores[u], l, u))
                })
                .collect();
            // Stable: equal scores stay in position order.
            candidates.sort_by(|a, b| a.0.total_cmp(&b.0));
            let remaining = candidates.len() as u64;
            let count = (remaining - keep(r, g, remaining).min(remaining)) as usize;
            for &(_, l, u) in &candidates[..count] {
                kept[l][r][u] = 0.0;
            }
        }
    }
    let mut out = masks.detach().copy();
    for (layer, kept) in layers.iter().zip(kept) {
        let flat: Vec<f32> = kept.concat();
        let units = layer.units(layout);
        let k = Tensor::from_slice(&flat)
            .view([replicas as i64, units])
            .to_device(masks.device())
            .to_kind(masks.kind());
        layer.apply(layout, &mut out, &k);
    }
    out
}
