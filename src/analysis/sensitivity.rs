//! `lth sensitivity`: how much pruning each prunable tensor tolerates on its own (the
//! sensitivity analysis of Han et al. 2015 and Distiller). One tensor at a time is pruned
//! one-shot to each sparsity by a criterion, the other tensors as they are, and the networks
//! are evaluated with no retraining. The tolerated sparsities can be turned into layerwise
//! rates (`--suggest`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use tch::{Device, Tensor};

use super::saved::{run_label, SavedRound};
use super::scoring::{criterion, scoring_config, Memo};
use crate::config::PruneCriterion;
use crate::model::State;
use crate::prune::{self, prune_and_compensate, remaining_counts, PruneGroup};
use crate::record::atomic::write_with;
use crate::record::rows::num;
use crate::report::axis::PercentAxis;
use crate::report::chart::{entry, reference_entry, Chart, Dash, Figure, Reference, Series, XAxis};
use crate::report::stats::Stats;
use crate::report::style::arm_color;

/// Which networks, which criterion, how far.
#[derive(Debug, Clone)]
pub struct SensitivityRequest {
    /// The round whose trained networks are pruned.
    pub round: u32,
    /// The arm (default: see [`SavedRound::load`]).
    pub arm: Option<String>,
    /// The criterion that ranks each tensor's weights.
    pub criterion: PruneCriterion,
    /// Percent of a tensor's weights removed, each a point of its line.
    pub sparsities: Vec<f64>,
    /// `taylor`'s batches (default: the run's `prune.score_batches`).
    pub score_batches: Option<u32>,
    /// `obd`'s and `obs`'s examples (default: the run's `prune.score_examples`).
    pub score_examples: Option<u32>,
    /// Largest drop of mean test accuracy a tensor may cause, for suggested layer fractions.
    pub suggest: Option<f64>,
    /// Device to score and evaluate on.
    pub device: Device,
    /// Name of the outputs' folders: `notebooks-data/<name>/`, `plots/<name>/`.
    pub name: String,
    /// Root of the tidy data (`notebooks-data`).
    pub data_root: PathBuf,
    /// Root of the figures (`plots`).
    pub plots_root: PathBuf,
}

/// What a sensitivity analysis wrote and found.
#[derive(Debug, Clone)]
pub struct SensitivityOutput {
    /// The tidy CSV.
    pub data_file: PathBuf,
    /// The figure (`.svg` and `.png`).
    pub figure: PathBuf,
    /// With `suggest`: the `[prune]` settings to paste into a config, with comments.
    pub suggestion: Option<String>,
}

/// Columns of `sensitivity_*.csv`.
pub const COLUMNS: &[&str] = &[
    "run",
    "experiment",
    "round",
    "arm",
    "seed",
    "criterion",
    "layer",
    "target_layer_remaining_pct",
    "layer_remaining",
    "layer_total",
    "weights_remaining_pct",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
];

/// One network evaluated: `layer` pruned to `target_pct` (`None`: nothing pruned).
struct Point {
    seed: u64,
    layer: Option<usize>,
    target_pct: Option<f64>,
    layer_remaining: u64,
    layer_total: u64,
    weights_pct: f64,
    metrics: [f64; 4],
}

/// Prunes each tensor of `req.round`'s networks alone and evaluates them.
pub fn sensitivity(run_dir: &Path, req: &SensitivityRequest) -> Result<SensitivityOutput> {
    crate::report::check_report_name(&req.name)?;
    let saved = SavedRound::load(run_dir, req.round, req.arm.as_deref(), req.device)?;
    let cfg = scoring_config(
        &saved,
        &[req.criterion],
        req.score_batches,
        req.score_examples,
    )?;
    let layers: Vec<usize> = saved
        .groups
        .iter()
        .flat_map(|g| g.params.iter().copied())
        .collect();
    let singles: Vec<PruneGroup> = layers
        .iter()
        .map(|&i| PruneGroup {
            params: vec![i],
            fraction: 0.0,
        })
        .collect();
    let mut points = evaluate_points(&saved, None, None, &saved.state, &saved.masks);
    let mut sparsities = req.sparsities.clone();
    sparsities.sort_by(f64::total_cmp);
    let mut memo = criterion(&saved, &cfg, req.criterion);
    for (g, &layer) in layers.iter().enumerate() {
        for &s in &sparsities {
            if let Some((state, masks)) = prune_one(&saved, &mut memo, (&singles, g), s) {
                points.extend(evaluate_points(
                    &saved,
                    Some(layer),
                    Some(s),
                    &state,
                    &masks,
                ));
            }
        }
    }
    let label = run_label(run_dir);
    let name = req.criterion.name();
    let stem = match saved.arm.as_str() {
        "" => format!("sensitivity_round_{}_{name}", req.round),
        arm => format!("sensitivity_round_{}_{arm}_{name}", req.round),
    };
    let data_file = req.data_root.join(&req.name).join(format!("{stem}.csv"));
    write_rows(&data_file, (&label, name), &saved, &points)?;
    let figure = req.plots_root.join(&req.name).join(&stem);
    draw(&points, &layers, &saved, (&label, name)).render(&figure)?;
    let suggestion = req
        .suggest
        .map(|bound| suggest(&points, &layers, &saved, bound));
    Ok(SensitivityOutput {
        data_file,
        figure,
        suggestion,
    })
}

/// The networks with group `g` of `groups` (one tensor) pruned to `sparsity` percent of its
/// weights and every other tensor as it was, or `None` when every network's tensor already is
/// that sparse.
fn prune_one(
    saved: &SavedRound,
    criterion: &mut Memo<'_>,
    (groups, g): (&[PruneGroup], usize),
    sparsity: f64,
) -> Option<(State, Tensor)> {
    let layout = saved.net.layout();
    let size = groups[g].size(layout) as f64;
    let target = (size * (1.0 - sparsity / 100.0)).round() as u64;
    let keep: Vec<u64> = (0..groups.len())
        .map(|k| if k == g { target } else { u64::MAX })
        .collect();
    let remaining = prune::group_remaining(&saved.masks, layout, groups);
    if remaining.iter().all(|row| row[g] <= target) {
        return None;
    }
    let pruned = prune_and_compensate(criterion, &saved.state, &saved.masks, layout, groups, |r| {
        vec![keep.clone(); r.len()]
    });
    let params = match pruned.weights {
        Some(moved) => moved,
        None => (&saved.state.params * &pruned.masks).detach(),
    };
    let state = State {
        params,
        buffers: saved
            .state
            .buffers
            .iter()
            .map(|b| b.shallow_clone())
            .collect(),
    };
    Some((state, pruned.masks))
}

/// Every network of `state` under `masks` evaluated, one point each.
fn evaluate_points(
    saved: &SavedRound,
    layer: Option<usize>,
    target_pct: Option<f64>,
    state: &State,
    masks: &Tensor,
) -> Vec<Point> {
    let metrics = saved.evaluate(state, masks);
    let layout = saved.net.layout();
    let counts = remaining_counts(masks, layout);
    let total = layout.prunable_total() as f64;
    saved
        .exp
        .seeds
        .iter()
        .enumerate()
        .map(|(r, &seed)| {
            let kept: u64 = layout.prunable().map(|i| counts[r][i]).sum();
            Point {
                seed,
                layer,
                target_pct,
                layer_remaining: layer.map_or(kept, |i| counts[r][i]),
                layer_total: layer.map_or(total as u64, |i| layout.specs()[i].numel() as u64),
                weights_pct: 100.0 * kept as f64 / total,
                metrics: metrics[r],
            }
        })
        .collect()
}

/// Name of a point's tensor (`none` for the networks as they were).
fn layer_name(saved: &SavedRound, layer: Option<usize>) -> String {
    layer.map_or_else(
        || "none".into(),
        |i| saved.net.layout().specs()[i].name.clone(),
    )
}

/// Percent of its tensor's weights a point keeps.
fn layer_pct(p: &Point) -> f64 {
    100.0 * p.layer_remaining as f64 / p.layer_total as f64
}

/// Writes the tidy CSV.
fn write_rows(
    path: &Path,
    (label, criterion): (&str, &str),
    saved: &SavedRound,
    points: &[Point],
) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    write_with(path, |tmp| {
        let mut w = csv::Writer::from_path(tmp)?;
        w.write_record(COLUMNS)?;
        for p in points {
            let mut row = vec![
                label.to_string(),
                saved.exp.name.clone(),
                saved.round.to_string(),
                saved.arm.clone(),
                p.seed.to_string(),
                criterion.to_string(),
                layer_name(saved, p.layer),
                p.target_pct.map(|s| num(100.0 - s)).unwrap_or_default(),
                p.layer_remaining.to_string(),
                p.layer_total.to_string(),
                num(p.weights_pct),
            ];
            row.extend(p.metrics.iter().map(|&m| num(m)));
            w.write_record(&row)?;
        }
        w.flush()
    })
}

/// Mean test accuracy of the points of `layer` at each target, in ascending sparsity.
fn layer_means(points: &[Point], layer: usize) -> Vec<(f64, Stats, f64)> {
    let mut targets: Vec<f64> = points
        .iter()
        .filter(|p| p.layer == Some(layer))
        .filter_map(|p| p.target_pct)
        .collect();
    targets.dedup();
    targets
        .into_iter()
        .filter_map(|t| {
            let at: Vec<&Point> = points
                .iter()
                .filter(|p| p.layer == Some(layer) && p.target_pct == Some(t))
                .collect();
            let x = at.iter().map(|p| layer_pct(p)).sum::<f64>() / at.len() as f64;
            let acc: Vec<f64> = at.iter().map(|p| p.metrics[3]).collect();
            Stats::of(&acc).map(|s| (t, s, x))
        })
        .collect()
}

/// Mean test accuracy of the networks as they were.
fn baseline(points: &[Point]) -> Option<f64> {
    let before: Vec<f64> = points
        .iter()
        .filter(|p| p.layer.is_none())
        .map(|p| p.metrics[3])
        .collect();
    Stats::of(&before).map(|s| s.mean)
}

/// Test accuracy against the pruned tensor's weights remaining, one line per tensor (mean of
/// the seeds, ±1 standard deviation band), the unpruned networks dashed.
fn draw(
    points: &[Point],
    layers: &[usize],
    saved: &SavedRound,
    (label, criterion): (&str, &str),
) -> Figure {
    let series: Vec<Series> = layers
        .iter()
        .enumerate()
        .map(|(i, &layer)| {
            let means = layer_means(points, layer);
            Series {
                label: layer_name(saved, Some(layer)),
                color: arm_color(i),
                marker: Some(i),
                dash: Dash::Solid,
                points: means.iter().map(|(_, s, x)| (*x, s.mean)).collect(),
                band: means
                    .iter()
                    .map(|(_, s, x)| {
                        let (lo, hi) = s.band();
                        (*x, lo, hi)
                    })
                    .collect(),
            }
        })
        .collect();
    let reference_label = "nothing pruned (mean of seeds)";
    let references: Vec<Reference> = baseline(points)
        .map(|y| Reference {
            label: reference_label.into(),
            y,
        })
        .into_iter()
        .collect();
    let mut legend: Vec<_> = series.iter().map(entry).collect();
    legend.push(reference_entry(reference_label));
    let arm = match saved.arm.as_str() {
        "" => String::new(),
        a => format!(", arm {a}"),
    };
    let chart = Chart {
        title: format!(
            "{label}: round {}{arm}, one tensor pruned by {criterion}",
            saved.round
        ),
        x_desc: "weights of the pruned tensor remaining (%)".into(),
        y_desc: "test accuracy".into(),
        x: XAxis::Percent(PercentAxis::covering(points.iter().map(layer_pct))),
        y_decimals: 2,
        series,
        references,
    };
    Figure {
        panels: vec![chart],
        columns: 1,
        panel_size: (480, 320),
        legend,
        legend_columns: 3,
    }
}

/// The `[prune]` settings under which every tensor reaches, in the same number of rounds, the
/// largest tested sparsity at which its mean test accuracy stays within `bound` of the
/// unpruned networks': the most tolerant tensor at the run's `prune.fraction` f (n rounds to
/// its sparsity s_max), every other at 1 - (1 - s_l)^(1/n); a tensor that tolerates none of
/// the tested sparsities is left dense.
fn suggest(points: &[Point], layers: &[usize], saved: &SavedRound, bound: f64) -> String {
    let Some(base) = baseline(points) else {
        return "# no networks evaluated".into();
    };
    let tolerated: Vec<(usize, f64)> = layers
        .iter()
        .map(|&layer| {
            let ok = layer_means(points, layer)
                .into_iter()
                .take_while(|(_, s, _)| base - s.mean <= bound)
                .map(|(t, _, _)| t / 100.0)
                .last()
                .unwrap_or(0.0);
            (layer, ok)
        })
        .collect();
    let name = |i: usize| saved.net.layout().specs()[i].name.clone();
    let mut text = format!(
        "# lth sensitivity: the largest tested sparsity at which each tensor alone keeps the mean test accuracy within {bound} of {base:.4}:\n"
    );
    for &(layer, s) in &tolerated {
        text += &format!("#   {} {}%\n", name(layer), num(100.0 * s));
    }
    let s_max = tolerated.iter().map(|t| t.1).fold(0.0, f64::max);
    if s_max <= 0.0 {
        text += "# no tensor tolerates any tested sparsity within the bound: nothing to suggest\n";
        return text;
    }
    let f = saved.exp.prune.fraction;
    let rounds = (1.0 - s_max).ln() / (1.0 - f).ln();
    text += &format!(
        "# as layerwise rates that reach those sparsities together, in {rounds:.1} rounds at prune.fraction = {f} for the most tolerant:\n[prune]\nstrategy = \"layerwise\"\n"
    );
    let mut fractions = BTreeMap::new();
    let mut dense = Vec::new();
    for &(layer, s) in &tolerated {
        if s <= 0.0 {
            dense.push(format!("\"{}\"", name(layer)));
        } else {
            let rate = 1.0 - (1.0 - s).powf(1.0 / rounds);
            fractions.insert(name(layer), (rate * 1e4).round() / 1e4);
        }
    }
    let entries: Vec<String> = fractions
        .iter()
        .map(|(n, r)| format!("\"{n}\" = {}", num(*r)))
        .collect();
    text += &format!("layer_fractions = {{ {} }}\n", entries.join(", "));
    if !dense.is_empty() {
        text += &format!("exclude = [{}]\n", dense.join(", "));
    }
    text
}
