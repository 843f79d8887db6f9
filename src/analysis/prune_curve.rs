//! `lth prune-curve`: the accuracy of a run's trained networks pruned one-shot by each
//! criterion to each sparsity, with no retraining. The figure that shows where a criterion
//! pays: second order (`obd`, `obs`) against magnitude is expected to matter at high sparsity.
//!
//! The networks of one round (every seed) are pruned from the masks they have, to each target
//! share of the prunable weights, through the run's own groups (its scope, exclusions and
//! layer fractions) and the one counting and tie rule; `obs` evaluates the weights it moved.
//! Each criterion scores once per network (on the examples of its seed's stream for that
//! round) and ranks for every sparsity from those scores.

use std::path::{Path, PathBuf};

use anyhow::Result;
use tch::{Device, Tensor};

use super::saved::{run_label, SavedRound};
use super::scoring::{criterion, default_criteria, scoring_config, Memo};
use crate::config::PruneCriterion;
use crate::model::State;
use crate::prune::{self, prune_and_compensate, remaining_counts, targets};
use crate::record::atomic::write_with;
use crate::record::rows::num;
use crate::report::axis::PercentAxis;
use crate::report::chart::{entry, reference_entry, Chart, Dash, Figure, Reference, Series, XAxis};
use crate::report::stats::Stats;
use crate::report::style::arm_color;

/// What to prune and how far.
#[derive(Debug, Clone)]
pub struct PruneCurveRequest {
    /// The round whose trained networks are pruned.
    pub round: u32,
    /// The arm (default: see [`SavedRound::load`]).
    pub arm: Option<String>,
    /// Criteria, one line each (empty: magnitude, taylor, obd, and obs where the network
    /// takes it).
    pub criteria: Vec<PruneCriterion>,
    /// `taylor`'s batches (default: the run's `prune.score_batches`).
    pub score_batches: Option<u32>,
    /// `obd`'s and `obs`'s examples (default: the run's `prune.score_examples`).
    pub score_examples: Option<u32>,
    /// Percent of the prunable weights removed, each a point of every line.
    pub sparsities: Vec<f64>,
    /// Device to score and evaluate on.
    pub device: Device,
    /// Name of the outputs' folders: `notebooks-data/<name>/`, `plots/<name>/`.
    pub name: String,
    /// Root of the tidy data (`notebooks-data`).
    pub data_root: PathBuf,
    /// Root of the figures (`plots`).
    pub plots_root: PathBuf,
}

/// What a prune curve wrote.
#[derive(Debug, Clone)]
pub struct PruneCurveOutput {
    /// The tidy CSV.
    pub data_file: PathBuf,
    /// The figure (`.svg` and `.png`).
    pub figure: PathBuf,
    /// Sparsities no network could be pruned to (each already as sparse or sparser).
    pub skipped: Vec<f64>,
}

/// Columns of `prune_curve_*.csv`.
pub const COLUMNS: &[&str] = &[
    "run",
    "experiment",
    "round",
    "arm",
    "seed",
    "criterion",
    "target_weights_remaining_pct",
    "weights_remaining",
    "weights_total",
    "weights_remaining_pct",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
];

/// One network evaluated.
struct Point {
    seed: u64,
    criterion: String,
    target_pct: Option<f64>,
    remaining: u64,
    total: u64,
    metrics: [f64; 4],
}

/// Prunes and evaluates the networks of `req.round` of the run at `run_dir`.
pub fn prune_curve(run_dir: &Path, req: &PruneCurveRequest) -> Result<PruneCurveOutput> {
    crate::report::check_report_name(&req.name)?;
    let saved = SavedRound::load(run_dir, req.round, req.arm.as_deref(), req.device)?;
    let criteria = if req.criteria.is_empty() {
        default_criteria(&saved)
    } else {
        req.criteria.clone()
    };
    let cfg = scoring_config(&saved, &criteria, req.score_batches, req.score_examples)?;
    let mut points = evaluate_points(&saved, "none", None, &saved.state, &saved.masks);
    let mut skipped = Vec::new();
    let mut sparsities = req.sparsities.clone();
    sparsities.sort_by(f64::total_cmp);
    for &c in &criteria {
        let mut memo = criterion(&saved, &cfg, c);
        for &s in &sparsities {
            match prune_to(&saved, &mut memo, s) {
                Some((state, masks)) => {
                    let name = c.name().to_string();
                    points.extend(evaluate_points(&saved, &name, Some(s), &state, &masks));
                }
                None if !skipped.contains(&s) => skipped.push(s),
                None => {}
            }
        }
    }
    let label = run_label(run_dir);
    let stem = match saved.arm.as_str() {
        "" => format!("prune_curve_round_{}", req.round),
        arm => format!("prune_curve_round_{}_{arm}", req.round),
    };
    let data_file = req.data_root.join(&req.name).join(format!("{stem}.csv"));
    write_rows(&data_file, &label, &saved, &points)?;
    let figure = req.plots_root.join(&req.name).join(&stem);
    draw(&points, &criteria, &saved, &label).render(&figure)?;
    Ok(PruneCurveOutput {
        data_file,
        figure,
        skipped,
    })
}

/// The networks pruned to `sparsity` percent of the prunable weights by `criterion` (weights
/// as the criterion left them, masked), or `None` when every network already is that sparse.
fn prune_to(
    saved: &SavedRound,
    criterion: &mut Memo<'_>,
    sparsity: f64,
) -> Option<(State, Tensor)> {
    let layout = saved.net.layout();
    let keep_share = 1.0 - sparsity / 100.0;
    let keep: Vec<u64> = saved
        .groups
        .iter()
        .map(|g| targets::keep_for_target(g, layout, keep_share, saved.exp.prune.fraction))
        .collect();
    let remaining = prune::group_remaining(&saved.masks, layout, &saved.groups);
    if remaining
        .iter()
        .all(|row| row.iter().zip(&keep).all(|(&n, &k)| n <= k))
    {
        return None;
    }
    let pruned = prune_and_compensate(
        criterion,
        &saved.state,
        &saved.masks,
        layout,
        &saved.groups,
        |r| vec![keep.clone(); r.len()],
    );
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

/// Validation and test metrics of every network of `state` under `masks`, one point each.
fn evaluate_points(
    saved: &SavedRound,
    criterion: &str,
    target_pct: Option<f64>,
    state: &State,
    masks: &Tensor,
) -> Vec<Point> {
    let metrics = saved.evaluate(state, masks);
    let layout = saved.net.layout();
    let counts = remaining_counts(masks, layout);
    let total = layout.prunable_total() as u64;
    saved
        .exp
        .seeds
        .iter()
        .enumerate()
        .map(|(r, &seed)| Point {
            seed,
            criterion: criterion.to_string(),
            target_pct,
            remaining: layout.prunable().map(|i| counts[r][i]).sum(),
            total,
            metrics: metrics[r],
        })
        .collect()
}

/// Writes the tidy CSV.
fn write_rows(path: &Path, label: &str, saved: &SavedRound, points: &[Point]) -> Result<()> {
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
                p.criterion.clone(),
                p.target_pct.map(|s| num(100.0 - s)).unwrap_or_default(),
                p.remaining.to_string(),
                p.total.to_string(),
                num(pct(p)),
            ];
            row.extend(p.metrics.iter().map(|&m| num(m)));
            w.write_record(&row)?;
        }
        w.flush()
    })
}

/// Percent of the prunable weights a point keeps.
fn pct(p: &Point) -> f64 {
    100.0 * p.remaining as f64 / p.total as f64
}

/// Test accuracy against weights remaining: one line per criterion (mean over seeds, ±1
/// standard deviation band), the networks before pruning as a reference line.
fn draw(points: &[Point], criteria: &[PruneCriterion], saved: &SavedRound, label: &str) -> Figure {
    let series: Vec<Series> = criteria
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let name = c.name().to_string();
            let mut targets: Vec<f64> = points
                .iter()
                .filter(|p| p.criterion == name)
                .filter_map(|p| p.target_pct)
                .collect();
            targets.dedup();
            let mut line = Vec::new();
            let mut band = Vec::new();
            for t in targets {
                let at: Vec<&Point> = points
                    .iter()
                    .filter(|p| p.criterion == name && p.target_pct == Some(t))
                    .collect();
                let x = at.iter().map(|p| pct(p)).sum::<f64>() / at.len() as f64;
                let acc: Vec<f64> = at.iter().map(|p| p.metrics[3]).collect();
                if let Some(s) = Stats::of(&acc) {
                    let (lo, hi) = s.band();
                    line.push((x, s.mean));
                    band.push((x, lo, hi));
                }
            }
            Series {
                label: name,
                color: arm_color(i),
                marker: Some(i),
                dash: Dash::Solid,
                points: line,
                band,
            }
        })
        .collect();
    let before: Vec<f64> = points
        .iter()
        .filter(|p| p.criterion == "none")
        .map(|p| p.metrics[3])
        .collect();
    let reference_label = "before pruning (mean of seeds)";
    let references: Vec<Reference> = Stats::of(&before)
        .map(|s| Reference {
            label: reference_label.into(),
            y: s.mean,
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
            "{label}: round {}{arm}, pruned one-shot, no retraining",
            saved.round
        ),
        x_desc: "weights remaining (%)".into(),
        y_desc: "test accuracy".into(),
        x: XAxis::Percent(PercentAxis::covering(points.iter().map(pct))),
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
