//! `lth supermask`: each complete round's masks of one arm (and, with `criteria`, masks that a
//! criterion over (w_i = θ₀, w_f = the trained dense network) cuts one-shot to the same
//! per-tensor counts) applied to the untrained network θ₀ (and, with `constant`, to
//! α · sign(θ₀), α each tensor's θ₀ standard deviation), evaluated with no training (Zhou et
//! al. 2019's supermasks). A tidy CSV of accuracy against weights remaining per seed and a
//! figure with seed bands, one line per mask source and start, chance marked.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::output::{accuracy_figure, mean_line, write_table};
use super::saved::{run_label, SavedRound};
use super::scoring::{criterion, scoring_config};
use super::Study;
use crate::config::PruneCriterion;
use crate::model::{Layout, State};
use crate::prune::{self, per_tensor_groups};
use crate::record::RunDir;
use crate::report::chart::Dash;

/// What `lth supermask` computes.
#[derive(Debug, Clone)]
pub struct SupermaskRequest {
    /// The run's networks to read (its `round` is ignored: every complete round is read) and
    /// where the outputs go.
    pub study: Study,
    /// Also apply the masks to the signed constant network α · sign(θ₀).
    pub constant: bool,
    /// Criteria whose one-shot masks (from θ₀ and the trained dense network, at each round's
    /// per-tensor counts) are evaluated beside the round's own masks.
    pub criteria: Vec<PruneCriterion>,
    /// Rounds evaluated (default: every complete round).
    pub rounds: Option<Vec<u32>>,
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

/// Evaluates the asked rounds' masks of the study's arm (default: every complete round, the
/// first arm that prunes its own weights), and each criterion's one-shot masks at their
/// per-tensor counts, on θ₀, and on α · sign(θ₀) with `constant`.
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
    let theta0 = saved.theta0(run_dir)?;
    let mut starts = vec![("theta0", theta0.copy())];
    if req.constant {
        starts.push(("constant", signed_constant(layout, &theta0)));
    }
    let completed = dir.rounds_completed(saved.exp.total_rounds())?;
    let rounds: Vec<u32> = match &req.rounds {
        Some(asked) => asked.clone(),
        None => (0..completed).collect(),
    };
    if let Some(&r) = rounds.iter().find(|&&r| r >= completed) {
        bail!(
            "`--rounds` asks for round {r}, but {} has rounds 0 to {} complete",
            run_dir.display(),
            completed.saturating_sub(1)
        );
    }
    // The criteria score the trained dense networks (w_f) against θ₀ (w_i), once.
    let cfg = scoring_config(&saved, &req.criteria, None, None)?;
    let mut scorers: Vec<_> = req
        .criteria
        .iter()
        .map(|&c| {
            let init = c.reads_init().then(|| theta0.params.shallow_clone());
            (c, criterion(&saved, &cfg, c, init))
        })
        .collect();
    let tensors = per_tensor_groups(layout);
    let label = run_label(run_dir);
    let mut rows = Vec::new();
    // (source, start, percent, test accuracies)
    let mut points: Vec<(usize, usize, f64, Vec<f64>)> = Vec::new();
    let mut arm_used = String::new();
    for &round in &rounds {
        let asked = if round == 0 {
            None
        } else {
            study.arm.as_deref()
        };
        let (arm, masks) = saved.masks_of(run_dir, round, asked)?;
        if round > 0 {
            arm_used = arm.clone();
        }
        // The round's masks, then each criterion's at the same per-tensor counts.
        let counts = prune::group_remaining(&masks, layout, &tensors);
        let mut sources = vec![(String::new(), masks.shallow_clone())];
        for (c, scorer) in scorers.iter_mut() {
            let cut = prune::rank::prune_to_keep(
                scorer,
                &saved.state,
                &prune::dense_masks(&masks),
                layout,
                &tensors,
                |_| counts.clone(),
            );
            sources.push((c.name().to_string(), cut));
        }
        for (k, (source, masks)) in sources.iter().enumerate() {
            let percent = remaining_pct(layout, masks);
            for (s, (start, state)) in starts.iter().enumerate() {
                let metrics = saved.evaluate(state, masks);
                for (r, &seed) in saved.exp.seeds.iter().enumerate() {
                    // `ROW_START`'s cells: this round's arm, the criterion of a cut mask.
                    let mut row = vec![
                        label.clone(),
                        saved.exp.name.clone(),
                        round.to_string(),
                        arm.clone(),
                        seed.to_string(),
                        source.clone(),
                    ];
                    row.push((*start).to_string());
                    row.push(percent[r].to_string());
                    row.extend(metrics[r].iter().map(f64::to_string));
                    rows.push(row);
                }
                let mean_pct = percent.iter().sum::<f64>() / percent.len() as f64;
                points.push((k, s, mean_pct, metrics.iter().map(|m| m[3]).collect()));
            }
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
    let source_names: Vec<String> = std::iter::once("round masks".to_string())
        .chain(req.criteria.iter().map(|c| format!("{} masks", c.name())))
        .collect();
    let mut series = Vec::new();
    for (k, source) in source_names.iter().enumerate() {
        for (s, (start, _)) in starts.iter().enumerate() {
            let line: Vec<(f64, Vec<f64>)> = points
                .iter()
                .filter(|p| p.0 == k && p.1 == s)
                .map(|p| (p.2, p.3.clone()))
                .collect();
            // Colour and marker by mask source, the line pattern by start.
            let mut line = mean_line(format!("{source} on {start}"), k, line);
            if s > 0 {
                line.dash = Dash::Dashed;
            }
            series.push(line);
        }
    }
    let chance = 1.0 / saved.data.num_classes as f64;
    let title = format!("supermasks of {label} ({}), no training", saved.exp.name);
    let xs = points.iter().map(|p| p.2).collect::<Vec<_>>();
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
