//! The report's figures, built as [`Figure`]s from a run's tables:
//! 1. test accuracy (at early stop; at the end of training) vs percent of weights remaining;
//! 2. early-stopping iteration vs percent of weights remaining;
//! 3. test accuracy vs training iteration for chosen rounds, one panel per arm;
//! 4. percent of each layer remaining across rounds;
//! 5. figure 1's early-stop panel across several runs, labelled by what differs;
//! 6. test accuracy against training multiply-adds (where the rows count them).
//!
//! Every arm keeps one colour and marker in every figure ([`ArmStyles`]); lines are means over
//! seeds with a shaded band of ±1 standard deviation.

use std::collections::BTreeMap;

use plotters::style::RGBColor;

use super::axis::{LogAxis, PercentAxis};
use super::chart::{
    entry, reference_entry, Chart, Dash, Figure, LegendEntry, Reference, Series, XAxis,
};
use super::stats::{summarise, summarise_over, ArmRound, Stats};
use super::style::arm_color;
use crate::config::PruneSchedule;
use crate::record::Table;

/// Single-column panel size (logical pixels; 3.6 in at 300 dpi in the PNG).
const PANEL: (u32, u32) = (360, 250);

/// Colour and marker of every arm, by order of first appearance.
#[derive(Debug, Clone, Default)]
pub struct ArmStyles {
    names: Vec<String>,
}

impl ArmStyles {
    /// Registers arms (keeps the first position of each name).
    pub fn add<'a>(&mut self, arms: impl IntoIterator<Item = &'a String>) {
        for a in arms {
            if !self.names.contains(a) {
                self.names.push(a.clone());
            }
        }
    }

    fn index(&self, arm: &str) -> usize {
        self.names
            .iter()
            .position(|a| a == arm)
            .unwrap_or(self.names.len())
    }

    /// The arm's colour.
    pub fn color(&self, arm: &str) -> RGBColor {
        arm_color(self.index(arm))
    }

    /// The arm's marker.
    pub fn marker(&self, arm: &str) -> usize {
        self.index(arm)
    }
}

fn arms_in_order(groups: &[ArmRound]) -> Vec<String> {
    let mut arms: Vec<String> = Vec::new();
    for g in groups {
        if !arms.contains(&g.arm) {
            arms.push(g.arm.clone());
        }
    }
    arms
}

/// One series per arm of `metric` against percent remaining.
fn metric_series(
    groups: &[ArmRound],
    metric: &str,
    styles: &ArmStyles,
    label_suffix: &str,
) -> Vec<Series> {
    arms_in_order(groups)
        .into_iter()
        .map(|arm| {
            let points: Vec<(f64, Stats)> = groups
                .iter()
                .filter(|g| g.arm == arm)
                .filter_map(|g| g.get(metric).map(|s| (g.pct, s)))
                .collect();
            Series {
                label: format!("{arm}{label_suffix}"),
                color: styles.color(&arm),
                marker: Some(styles.marker(&arm)),
                dash: Dash::Solid,
                points: points.iter().map(|(x, s)| (*x, s.mean)).collect(),
                band: points
                    .iter()
                    .filter(|(_, s)| s.std.is_some())
                    .map(|(x, s)| (*x, s.band().0, s.band().1))
                    .collect(),
            }
        })
        .collect()
}

/// The dense network's reference line at `y`, where there is one.
fn dense_line(y: Option<f64>) -> Vec<Reference> {
    y.map(|y| Reference {
        label: "dense".into(),
        y,
    })
    .into_iter()
    .collect()
}

/// The dense network's value of `metric`: the mean over round-0 rows.
fn dense(groups: &[ArmRound], metric: &str) -> Option<f64> {
    groups
        .iter()
        .find(|g| g.round == 0)
        .and_then(|g| g.get(metric))
        .map(|s| s.mean)
}

fn percent_axis(groups: &[ArmRound]) -> XAxis {
    XAxis::Percent(PercentAxis::covering(groups.iter().map(|g| g.pct)))
}

/// The legend text of the round-0 reference line: the dense network a pruned round is compared
/// with, which a gradual run does not have (its round 0 is the dense stretch before the first
/// pruning step, not a fully trained network).
pub fn round0_label(schedule: PruneSchedule) -> &'static str {
    match schedule {
        PruneSchedule::Gradual => "round 0: dense stretch before pruning starts",
        _ => "dense network (round 0)",
    }
}

fn legend_for(series: &[Series], reference: Option<&str>) -> Vec<LegendEntry> {
    let mut legend: Vec<LegendEntry> = series
        .iter()
        .filter(|s| !s.label.is_empty())
        .map(entry)
        .collect();
    if let Some(r) = reference {
        legend.push(reference_entry(r));
    }
    legend
}

/// Figure 1: test accuracy at early stop (top) and at the end of training (bottom).
/// `round0` labels the round-0 reference line ([`round0_label`]).
pub fn accuracy(rounds: &Table, styles: &ArmStyles, round0: &str) -> Figure {
    let groups = summarise(rounds);
    let panel = |metric: &str, title: &str| {
        let series = metric_series(&groups, metric, styles, "");
        Chart {
            title: title.into(),
            x_desc: "weights remaining (%)".into(),
            y_desc: "test accuracy".into(),
            x: percent_axis(&groups),
            y_decimals: 3,
            references: dense_line(dense(&groups, metric)),
            series,
        }
    };
    let top = panel(
        "early_stop_test_accuracy",
        "at the early-stopping iteration",
    );
    let bottom = panel("test_accuracy", "at the end of training");
    let legend = legend_for(&top.series, Some(round0));
    Figure {
        panels: vec![top, bottom],
        columns: 1,
        panel_size: PANEL,
        legend,
        legend_columns: 2,
    }
}

/// Figure 2: the early-stopping point against percent remaining, counted in iterations from
/// the start of each round's training (`early_stop_steps`), so that arms which retrain a
/// different stretch of the schedule (late rewinding, fine-tuning, learning-rate rewinding)
/// share the axis.
pub fn early_stop_iteration(rounds: &Table, styles: &ArmStyles, round0: &str) -> Figure {
    let groups = summarise(rounds);
    let series = metric_series(&groups, "early_stop_steps", styles, "");
    let legend = legend_for(&series, Some(round0));
    Figure {
        panels: vec![Chart {
            title: String::new(),
            x_desc: "weights remaining (%)".into(),
            y_desc: "iterations trained to early stop".into(),
            x: percent_axis(&groups),
            y_decimals: 0,
            references: dense_line(dense(&groups, "early_stop_steps")),
            series,
        }],
        columns: 1,
        panel_size: PANEL,
        legend,
        legend_columns: 2,
    }
}

/// Rounds drawn in figure 3 when none are asked for: the first, the middle and the last.
pub fn default_rounds(rounds: &Table) -> Vec<u32> {
    let col = rounds.column("round").expect("round column");
    let mut all: Vec<u32> = rounds
        .rows()
        .iter()
        .filter_map(|r| r[col].parse().ok())
        .collect();
    all.sort_unstable();
    all.dedup();
    match all.len() {
        0 => vec![],
        1 | 2 => all,
        n => vec![all[0], all[n / 2], all[n - 1]],
    }
}

/// A lighter shade of `c` (`f` = 0 keeps it, 1 is white).
fn lighten(c: RGBColor, f: f64) -> RGBColor {
    let l = |v: u8| (f64::from(v) + (255.0 - f64::from(v)) * f).round() as u8;
    RGBColor(l(c.0), l(c.1), l(c.2))
}

const DASHES: [Dash; 3] = [Dash::Solid, Dash::Dashed, Dash::Dotted];

/// Figure 3: test accuracy against training iteration for `chosen` rounds, one panel per arm
/// (darker and solid = later round).
pub fn curves(curves: &Table, rounds: &Table, chosen: &[u32], styles: &ArmStyles) -> Figure {
    let col = |n: &str| curves.column(n).expect("curves.csv column");
    let (arm_c, round_c, it_c, acc_c) = (
        col("arm"),
        col("round"),
        col("iteration"),
        col("test_accuracy"),
    );
    let pct_of: BTreeMap<u32, f64> = summarise(rounds).iter().map(|g| (g.round, g.pct)).collect();
    // (arm, round) -> iteration -> accuracies across seeds
    let mut data: BTreeMap<(String, u32), BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    let mut arm_order: Vec<String> = Vec::new();
    for row in curves.rows() {
        let (Ok(round), Ok(it), Ok(acc)) = (
            row[round_c].parse::<u32>(),
            row[it_c].parse::<u64>(),
            row[acc_c].parse::<f64>(),
        ) else {
            continue;
        };
        if !arm_order.contains(&row[arm_c]) {
            arm_order.push(row[arm_c].clone());
        }
        if chosen.contains(&round) {
            data.entry((row[arm_c].clone(), round))
                .or_default()
                .entry(it)
                .or_default()
                .push(acc);
        }
    }
    let n = chosen.len().max(1);
    let shade = |k: usize| {
        if n == 1 {
            0.0
        } else {
            0.6 * (1.0 - k as f64 / (n - 1) as f64)
        }
    };
    let style_of = |k: usize| (DASHES[(n - 1 - k) % 3], Some(k + 5));
    let panels: Vec<Chart> = arm_order
        .iter()
        .map(|arm| {
            let series: Vec<Series> = chosen
                .iter()
                .enumerate()
                .filter_map(|(k, &round)| {
                    let points = data.get(&(arm.clone(), round))?;
                    let stats: Vec<(f64, Stats)> = points
                        .iter()
                        .filter_map(|(it, v)| Stats::of(v).map(|s| (*it as f64, s)))
                        .collect();
                    let (dash, marker) = style_of(k);
                    Some(Series {
                        label: String::new(),
                        color: lighten(styles.color(arm), shade(k)),
                        marker,
                        dash,
                        points: stats.iter().map(|(x, s)| (*x, s.mean)).collect(),
                        band: stats
                            .iter()
                            .filter(|(_, s)| s.std.is_some())
                            .map(|(x, s)| (*x, s.band().0, s.band().1))
                            .collect(),
                    })
                })
                .collect();
            let (lo, hi) = series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.0))
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
                    (a.min(x), b.max(x))
                });
            let x = if lo.is_finite() && hi > lo {
                lo..hi
            } else {
                0.0..1.0
            };
            Chart {
                title: arm.clone(),
                x_desc: "training iteration".into(),
                y_desc: "test accuracy".into(),
                x: XAxis::Linear(x),
                y_decimals: 2,
                series,
                references: vec![],
            }
        })
        .collect();
    let legend = chosen
        .iter()
        .enumerate()
        .map(|(k, round)| {
            let (dash, marker) = style_of(k);
            LegendEntry {
                label: match pct_of.get(round) {
                    Some(p) => format!(
                        "round {round} ({}% of weights)",
                        super::axis::format_percent((p * 10.0).round() / 10.0)
                    ),
                    None => format!("round {round}"),
                },
                color: lighten(RGBColor(0, 0, 0), shade(k)),
                marker,
                dash,
            }
        })
        .collect();
    let columns = panels.len().clamp(1, 3);
    Figure {
        panels,
        columns,
        panel_size: (300, 220),
        legend,
        legend_columns: 3,
    }
}

/// Figure 4: percent of each prunable layer remaining across rounds (mean over seeds); one
/// panel per arm when the arms' layer sparsities differ, else one panel for all.
pub fn layers(layers: &Table) -> Figure {
    let col = |n: &str| layers.column(n).expect("layers.csv column");
    let (arm_c, round_c, layer_c, pct_c) =
        (col("arm"), col("round"), col("layer"), col("remaining_pct"));
    // arm -> layer -> round -> values
    let mut data: BTreeMap<String, BTreeMap<String, BTreeMap<u32, Vec<f64>>>> = BTreeMap::new();
    let mut arm_order: Vec<String> = Vec::new();
    let mut layer_order: Vec<String> = Vec::new();
    for row in layers.rows() {
        let (Ok(round), Ok(pct)) = (row[round_c].parse::<u32>(), row[pct_c].parse::<f64>()) else {
            continue;
        };
        if !arm_order.contains(&row[arm_c]) {
            arm_order.push(row[arm_c].clone());
        }
        if !layer_order.contains(&row[layer_c]) {
            layer_order.push(row[layer_c].clone());
        }
        data.entry(row[arm_c].clone())
            .or_default()
            .entry(row[layer_c].clone())
            .or_default()
            .entry(round)
            .or_default()
            .push(pct);
    }
    let means = |arm: &str| -> BTreeMap<String, Vec<(f64, f64)>> {
        data.get(arm)
            .map(|layers| {
                layers
                    .iter()
                    .map(|(l, rounds)| {
                        let pts = rounds
                            .iter()
                            .filter_map(|(r, v)| Stats::of(v).map(|s| (f64::from(*r), s.mean)))
                            .collect();
                        (l.clone(), pts)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let all_same = arm_order.windows(2).all(|w| means(&w[0]) == means(&w[1]));
    let panel_arms: Vec<(String, String)> = if all_same {
        arm_order
            .first()
            .map(|a| (a.clone(), format!("all arms: {}", arm_order.join(", "))))
            .into_iter()
            .collect()
    } else {
        arm_order.iter().map(|a| (a.clone(), a.clone())).collect()
    };
    let greys = [
        RGBColor(0, 0, 0),
        RGBColor(90, 90, 90),
        RGBColor(150, 150, 150),
    ];
    let layer_style = |i: usize| (greys[i % 3], DASHES[i % 3], Some(i));
    let max_round = data
        .values()
        .flat_map(|l| l.values().flat_map(|r| r.keys().copied()))
        .max()
        .unwrap_or(1)
        .max(1);
    let panels = panel_arms
        .iter()
        .map(|(arm, title)| {
            let m = means(arm);
            let series = layer_order
                .iter()
                .enumerate()
                .filter_map(|(i, layer)| {
                    let pts = m.get(layer)?;
                    let (color, dash, marker) = layer_style(i);
                    Some(Series {
                        label: layer.clone(),
                        color,
                        marker,
                        dash,
                        points: pts.clone(),
                        band: vec![],
                    })
                })
                .collect();
            Chart {
                title: if panel_arms.len() > 1 || all_same {
                    title.clone()
                } else {
                    String::new()
                },
                x_desc: "round".into(),
                y_desc: "weights remaining in layer (%)".into(),
                x: XAxis::Count(max_round),
                y_decimals: 0,
                series,
                references: vec![],
            }
        })
        .collect::<Vec<_>>();
    let legend = layer_order
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let (color, dash, marker) = layer_style(i);
            LegendEntry {
                label: layer.clone(),
                color,
                marker,
                dash,
            }
        })
        .collect();
    let columns = panels.len().clamp(1, 3);
    Figure {
        panels,
        columns,
        panel_size: if columns == 1 { PANEL } else { (300, 220) },
        legend,
        legend_columns: 3,
    }
}

/// Figure 6: test accuracy at early stop against the multiply-adds of every training each
/// pruned round's network needed (`train_flops_cumulative`: a ticket's rounds add up, a sparse
/// network trained from scratch pays its own), in multiples of one dense training (round 0's
/// `train_flops`); the dense network as the reference line. `None` when a row lacks the count.
pub fn accuracy_vs_train_flops(rounds: &Table, styles: &ArmStyles) -> Option<Figure> {
    let counted = |name: &str| {
        rounds.column(name).is_some_and(|c| {
            !rounds.rows().is_empty() && rounds.rows().iter().all(|r| r[c].parse::<f64>().is_ok())
        })
    };
    if !counted("train_flops") || !counted("train_flops_cumulative") {
        return None;
    }
    let one_dense = summarise_over(rounds, "train_flops")
        .iter()
        .find(|g| g.round == 0)
        .map(|g| g.pct)?;
    let groups = summarise_over(rounds, "train_flops_cumulative");
    let metric = "early_stop_test_accuracy";
    let reference = dense(&groups, metric);
    let pruned: Vec<ArmRound> = groups
        .into_iter()
        .filter(|g| g.round > 0)
        .map(|g| ArmRound {
            pct: g.pct / one_dense,
            ..g
        })
        .collect();
    let series = metric_series(&pruned, metric, styles, "");
    let legend = legend_for(&series, Some("dense network (round 0), 1x"));
    Some(Figure {
        panels: vec![Chart {
            title: String::new(),
            x_desc: "training multiply-adds (x one dense training)".into(),
            y_desc: "test accuracy at early stop".into(),
            x: XAxis::Multiple(LogAxis::covering(pruned.iter().map(|g| g.pct).chain([1.0]))),
            y_decimals: 3,
            references: dense_line(reference),
            series,
        }],
        columns: 1,
        panel_size: PANEL,
        legend,
        legend_columns: 2,
    })
}

/// What the x axis of a figure across runs measures: a percent column of `rounds.csv` and
/// its axis label.
#[derive(Debug, Clone, Copy)]
pub struct Remaining {
    /// The column (`weights_remaining_pct`, `flops_remaining_pct`).
    pub column: &'static str,
    /// The axis label.
    pub desc: &'static str,
}

/// Percent of the prunable weights remaining.
pub const WEIGHTS: Remaining = Remaining {
    column: "weights_remaining_pct",
    desc: "weights remaining (%)",
};

/// Percent of the dense network's multiply-adds per example remaining.
pub const FLOPS: Remaining = Remaining {
    column: "flops_remaining_pct",
    desc: "multiply-adds remaining (%)",
};

/// Figure 5: early-stop test accuracy against percent remaining (of weights, or of FLOPs:
/// `x`) for several runs; colour and marker by arm, line pattern by run; each run labelled
/// by `labels[i]`.
pub fn across_runs(runs: &[(&Table, String)], styles: &ArmStyles, x: Remaining) -> Figure {
    let mut series = Vec::new();
    let mut all_groups = Vec::new();
    // Runs of one and the same arm (a sweep's grid points) are told apart by colour too.
    let arms: Vec<Vec<String>> = runs
        .iter()
        .map(|(rounds, _)| arms_in_order(&summarise_over(rounds, x.column)))
        .collect();
    let one_arm = arms.iter().all(|a| a.len() == 1 && a == &arms[0]);
    for (i, (rounds, label)) in runs.iter().enumerate() {
        let groups = summarise_over(rounds, x.column);
        for mut s in metric_series(
            &groups,
            "early_stop_test_accuracy",
            styles,
            &format!(", {label}"),
        ) {
            s.dash = DASHES[i % DASHES.len()];
            if one_arm {
                s.color = arm_color(i);
            }
            // Past three runs the dashes repeat: the marker tells the runs apart instead.
            if runs.len() > DASHES.len() {
                s.marker = Some(i);
            }
            series.push(s);
        }
        all_groups.extend(groups);
    }
    let legend = legend_for(&series, None);
    let legend_columns = if legend.len() > 6 { 2 } else { 1 };
    Figure {
        panels: vec![Chart {
            title: String::new(),
            x_desc: x.desc.into(),
            y_desc: "test accuracy at early stop".into(),
            x: percent_axis(&all_groups),
            y_decimals: 3,
            series,
            references: vec![],
        }],
        columns: 1,
        panel_size: (480, 300),
        legend,
        legend_columns,
    }
}
