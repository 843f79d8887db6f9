//! `lth supermask`: each complete round's masks of one arm applied to the untrained network
//! θ₀ (and, with `constant`, to α · sign(θ₀), α each tensor's θ₀ standard deviation), evaluated
//! with no training (Zhou et al. 2019's supermasks). A tidy CSV of accuracy against weights
//! remaining per seed and a figure with seed bands, chance marked.

use std::path::{Path, PathBuf};

use anyhow::Result;
use tch::{Kind, Tensor};

use super::output::{accuracy_figure, mean_line, write_table};
use super::saved::{run_label, SavedRound};
use super::Study;
use crate::model::{Layout, State};
use crate::record::RunDir;

/// What `lth supermask` computes.
#[derive(Debug, Clone)]
pub struct SupermaskRequest {
    /// The run's networks to read (its `round` is ignored: every complete round is read) and
    /// where the outputs go.
    pub study: Study,
    /// Also apply the masks to the signed constant network α · sign(θ₀).
    pub constant: bool,
}

/// What `lth supermask` wrote.
#[derive(Debug, Clone)]
pub struct SupermaskOutput {
    /// The tidy CSV.
    pub data_file: PathBuf,
    /// The figure (`.svg` and `.png`).
    pub figure: PathBuf,
    /// Rows written (rounds x starts x seeds).
    pub rows: usize,
}

/// Columns after [`super::output::ROW_START`].
const COLUMNS: &[&str] = &[
    "start",
    "weights_remaining_pct",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
];

/// θ₀ with each prunable tensor replaced by α · sign(θ₀), α the tensor's standard deviation.
pub fn signed_constant(layout: &Layout, theta0: &State) -> State {
    let params = theta0.params.detach().copy();
    for i in layout.prunable() {
        let w = layout.segment(&theta0.params, i);
        let alpha = w.std_dim(-1, false, true);
        layout.segment(&params, i).copy_(&(w.sign() * alpha));
    }
    theta0.with_params(params)
}

/// Evaluates every complete round's masks of the study's arm (default: the first arm that
/// prunes its own weights) on θ₀, and on α · sign(θ₀) with `constant`.
pub fn supermask(run_dir: &Path, req: &SupermaskRequest) -> Result<SupermaskOutput> {
    let study = &req.study;
    let saved: SavedRound = Study {
        round: 0,
        arm: None,
        ..study.clone()
    }
    .load(run_dir)?;
    let layout = saved.net.layout();
    let (dir, _) = RunDir::open_existing(run_dir)?;
    let device = saved.masks.device();
    let thetas = saved
        .exp
        .seeds
        .iter()
        .map(|&seed| dir.load_theta(seed, 0, layout))
        .collect::<Result<Vec<_>>>()?;
    let theta0 = State::stack(&thetas).to_device(device);
    let mut starts = vec![("theta0", theta0.copy())];
    if req.constant {
        starts.push(("constant", signed_constant(layout, &theta0)));
    }
    let completed = dir.rounds_completed(saved.exp.total_rounds())?;
    let label = run_label(run_dir);
    let mut rows = Vec::new();
    // (start, percent, test accuracies)
    let mut points: Vec<(usize, f64, Vec<f64>)> = Vec::new();
    let mut arm_used = String::new();
    for round in 0..completed {
        let asked = if round == 0 {
            None
        } else {
            study.arm.as_deref()
        };
        let (arm, masks) = saved.masks_of(run_dir, round, asked)?;
        if round > 0 {
            arm_used = arm.clone();
        }
        let percent = remaining_pct(layout, &masks);
        for (s, (start, state)) in starts.iter().enumerate() {
            let metrics = saved.evaluate(state, &masks);
            for (r, &seed) in saved.exp.seeds.iter().enumerate() {
                // `ROW_START`'s cells for this round's arm (no criterion).
                let mut row = vec![
                    label.clone(),
                    saved.exp.name.clone(),
                    round.to_string(),
                    arm.clone(),
                    seed.to_string(),
                    String::new(),
                ];
                row.push((*start).to_string());
                row.push(percent[r].to_string());
                row.extend(metrics[r].iter().map(f64::to_string));
                rows.push(row);
            }
            let mean_pct = percent.iter().sum::<f64>() / percent.len() as f64;
            points.push((s, mean_pct, metrics.iter().map(|m| m[3]).collect()));
        }
    }
    let stem = if arm_used.is_empty() {
        "supermask".to_string()
    } else {
        format!("supermask_{arm_used}")
    };
    let data_file = study
        .data_root
        .join(&study.name)
        .join(format!("{stem}.csv"));
    let figure = study.plots_root.join(&study.name).join(&stem);
    let mut header = super::output::ROW_START.to_vec();
    header.extend_from_slice(COLUMNS);
    write_table(&data_file, &header, &rows)?;
    let series = starts
        .iter()
        .enumerate()
        .map(|(s, (start, _))| {
            let line: Vec<(f64, Vec<f64>)> = points
                .iter()
                .filter(|p| p.0 == s)
                .map(|p| (p.1, p.2.clone()))
                .collect();
            mean_line(format!("masks on {start}, no training"), s, line)
        })
        .collect();
    let chance = 1.0 / saved.data.num_classes as f64;
    let title = format!("supermasks of {label} ({})", saved.exp.name);
    let xs = points.iter().map(|p| p.1).collect::<Vec<_>>();
    accuracy_figure(
        (title, "weights remaining (%)"),
        series,
        ("chance", &[chance]),
        xs.into_iter(),
    )
    .render(&figure)?;
    Ok(SupermaskOutput {
        data_file,
        figure,
        rows: rows.len(),
    })
}

/// Percent of prunable weights each mask row keeps.
fn remaining_pct(layout: &Layout, masks: &Tensor) -> Vec<f64> {
    let total = layout.prunable_total() as f64;
    let kept: Vec<f64> = (0..masks.size()[0])
        .map(|r| {
            layout
                .prunable()
                .map(|i| {
                    layout
                        .segment(&masks.get(r).unsqueeze(0), i)
                        .sum(Kind::Double)
                        .double_value(&[])
                })
                .sum::<f64>()
        })
        .collect();
    kept.into_iter().map(|k| 100.0 * k / total).collect()
}
