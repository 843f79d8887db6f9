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
use tch::Tensor;

use super::output::{accuracy_figure, mean, mean_line, row_start, write_table};
use super::saved::{run_label, SavedRound};
use super::scoring::{criterion, default_criteria, scoring_config, Memo};
use super::Study;
use crate::config::PruneCriterion;
use crate::model::State;
use crate::prune::{remaining_counts, targets};
use crate::record::rows::num;
use crate::report::chart::{Figure, Series};

/// What to prune and how far.
#[derive(Debug, Clone)]
pub struct PruneCurveRequest {
    /// Which networks, and where the outputs go.
    pub study: Study,
    /// Criteria, one line each (empty: magnitude, taylor, obd, and obs where the network
    /// takes it).
    pub criteria: Vec<PruneCriterion>,
    /// Percent of the prunable weights removed, each a point of every line.
    pub sparsities: Vec<f64>,
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

/// Prunes and evaluates the networks of the study's round of the run at `run_dir`.
pub fn prune_curve(run_dir: &Path, req: &PruneCurveRequest) -> Result<PruneCurveOutput> {
    let study = &req.study;
    let saved = study.load(run_dir)?;
    let criteria = if req.criteria.is_empty() {
        default_criteria(&saved)
    } else {
        req.criteria.clone()
    };
    let cfg = scoring_config(&saved, &criteria, study.score_batches, study.score_examples)?;
    let mut points = evaluate_points(&saved, "none", None, &saved.state, &saved.masks);
    let mut skipped = Vec::new();
    let mut sparsities = req.sparsities.clone();
    sparsities.sort_by(f64::total_cmp);
    // w_i of the criteria over (w_i, w_f): the run's θ₀.
    let theta0 = match criteria.iter().any(|c| c.reads_init()) {
        true => Some(saved.theta0(run_dir)?.params),
        false => None,
    };
    for &c in &criteria {
        let init = theta0
            .as_ref()
            .filter(|_| c.reads_init())
            .map(|t| t.shallow_clone());
        let mut memo = criterion(&saved, &cfg, c, init);
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
    let (data_file, figure) = study.outputs(&saved, "prune_curve", "");
    write_rows(&data_file, &label, &saved, &points)?;
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
    saved.prune(criterion, &saved.groups, &keep)
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
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|p| {
            let mut row = row_start(label, saved, p.seed, &p.criterion);
            row.extend([
                p.target_pct.map(|s| num(100.0 - s)).unwrap_or_default(),
                p.remaining.to_string(),
                p.total.to_string(),
                num(pct(p)),
            ]);
            row.extend(p.metrics.iter().map(|&m| num(m)));
            row
        })
        .collect();
    write_table(path, COLUMNS, &rows)
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
            let name = c.name();
            let mut targets: Vec<f64> = points
                .iter()
                .filter(|p| p.criterion == name)
                .filter_map(|p| p.target_pct)
                .collect();
            targets.dedup();
            let at_targets = targets
                .into_iter()
                .map(|t| {
                    let at: Vec<&Point> = points
                        .iter()
                        .filter(|p| p.criterion == name && p.target_pct == Some(t))
                        .collect();
                    let xs: Vec<f64> = at.iter().map(|p| pct(p)).collect();
                    (mean(&xs), at.iter().map(|p| p.metrics[3]).collect())
                })
                .collect();
            mean_line(name.to_string(), i, at_targets)
        })
        .collect();
    let before: Vec<f64> = points
        .iter()
        .filter(|p| p.criterion == "none")
        .map(|p| p.metrics[3])
        .collect();
    let title = format!(
        "{label}: round {}{}, pruned one-shot, no retraining",
        saved.round,
        saved.arm_suffix()
    );
    accuracy_figure(
        (title, "weights remaining (%)"),
        series,
        ("before pruning (mean of seeds)", &before),
        points.iter().map(pct),
    )
}
