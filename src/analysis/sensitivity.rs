//! `lth sensitivity`: how much pruning each prunable tensor tolerates on its own (the
//! sensitivity analysis of Han et al. 2015 and Distiller). One tensor at a time is pruned
//! one-shot to each sparsity by a criterion, the other tensors as they are, and the networks
//! are evaluated with no retraining. The tolerated sparsities can be turned into layerwise
//! rates (`--suggest`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use tch::Tensor;

use super::output::{accuracy_figure, mean, mean_line, row_start, write_table};
use super::saved::{run_label, SavedRound};
use super::scoring::{criterion, scoring_config, Memo};
use super::Study;
use crate::config::PruneCriterion;
use crate::model::State;
use crate::prune::{remaining_counts, PruneGroup};
use crate::record::rows::num;
use crate::report::chart::{Figure, Series};

/// Which networks, which criterion, how far.
#[derive(Debug, Clone)]
pub struct SensitivityRequest {
    /// Which networks, and where the outputs go.
    pub study: Study,
    /// The criterion that ranks each tensor's weights.
    pub criterion: PruneCriterion,
    /// Percent of a tensor's weights removed, each a point of its line.
    pub sparsities: Vec<f64>,
    /// Largest drop of mean test accuracy a tensor may cause, for suggested layer fractions.
    pub suggest: Option<f64>,
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

/// Prunes each tensor of the study's round's networks alone and evaluates them.
pub fn sensitivity(run_dir: &Path, req: &SensitivityRequest) -> Result<SensitivityOutput> {
    let study = &req.study;
    let saved = study.load(run_dir)?;
    let cfg = scoring_config(
        &saved,
        &[req.criterion],
        study.score_batches,
        study.score_examples,
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
    // w_i of the criteria over (w_i, w_f): the run's θ₀.
    let init = match req.criterion.reads_init() {
        true => Some(saved.theta0(run_dir)?.params),
        false => None,
    };
    let mut memo = criterion(&saved, &cfg, req.criterion, init);
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
    let (data_file, figure) = study.outputs(&saved, "sensitivity", &format!("_{name}"));
    write_rows(&data_file, (&label, name), &saved, &points)?;
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
    let size = groups[g].size(saved.net.layout()) as f64;
    let target = (size * (1.0 - sparsity / 100.0)).round() as u64;
    let keep: Vec<u64> = (0..groups.len())
        .map(|k| if k == g { target } else { u64::MAX })
        .collect();
    saved.prune(criterion, groups, &keep)
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
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|p| {
            let mut row = row_start(label, saved, p.seed, criterion);
            row.extend([
                layer_name(saved, p.layer),
                p.target_pct.map(|s| num(100.0 - s)).unwrap_or_default(),
                p.layer_remaining.to_string(),
                p.layer_total.to_string(),
                num(p.weights_pct),
            ]);
            row.extend(p.metrics.iter().map(|&m| num(m)));
            row
        })
        .collect();
    write_table(path, COLUMNS, &rows)
}

/// At each target of `layer`, in ascending sparsity: the target, the mean percent its
/// tensor keeps and the seeds' test accuracies.
fn layer_points(points: &[Point], layer: usize) -> Vec<(f64, f64, Vec<f64>)> {
    let mut targets: Vec<f64> = points
        .iter()
        .filter(|p| p.layer == Some(layer))
        .filter_map(|p| p.target_pct)
        .collect();
    targets.dedup();
    targets
        .into_iter()
        .map(|t| {
            let at: Vec<&Point> = points
                .iter()
                .filter(|p| p.layer == Some(layer) && p.target_pct == Some(t))
                .collect();
            let xs: Vec<f64> = at.iter().map(|p| layer_pct(p)).collect();
            (t, mean(&xs), at.iter().map(|p| p.metrics[3]).collect())
        })
        .collect()
}

/// Test accuracies of the networks as they were.
fn unpruned(points: &[Point]) -> Vec<f64> {
    points
        .iter()
        .filter(|p| p.layer.is_none())
        .map(|p| p.metrics[3])
        .collect()
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
            let at = layer_points(points, layer)
                .into_iter()
                .map(|(_, x, acc)| (x, acc))
                .collect();
            mean_line(layer_name(saved, Some(layer)), i, at)
        })
        .collect();
    let title = format!(
        "{label}: round {}{}, one tensor pruned by {criterion}",
        saved.round,
        saved.arm_suffix()
    );
    accuracy_figure(
        (title, "weights of the pruned tensor remaining (%)"),
        series,
        ("nothing pruned (mean of seeds)", &unpruned(points)),
        points.iter().map(layer_pct),
    )
}

/// The `[prune]` settings under which every tensor reaches, in the same number of rounds, the
/// largest tested sparsity at which its mean test accuracy stays within `bound` of the
/// unpruned networks': the most tolerant tensor at the run's `prune.fraction` f (n rounds to
/// its sparsity s_max), every other at 1 - (1 - s_l)^(1/n); a tensor that tolerates none of
/// the tested sparsities is left dense.
fn suggest(points: &[Point], layers: &[usize], saved: &SavedRound, bound: f64) -> String {
    let base = mean(&unpruned(points));
    let tolerated: Vec<(usize, f64)> = layers
        .iter()
        .map(|&layer| {
            let ok = layer_points(points, layer)
                .into_iter()
                .take_while(|(_, _, acc)| base - mean(acc) <= bound)
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
