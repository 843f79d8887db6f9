//! What `lth stability` makes of its tidy rows: `instability.csv` (one row per network x k:
//! its barriers over seeds and pairs beside the trained copies' accuracy and the dense
//! network's, stable and matching read off), and the figures of Frankle et al. 2020 in kind:
//! test error along the path for each k, and instability against k, one line per sparsity.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::output::{mean_line, write_table, ROW_START};
use crate::report::chart::{entry, reference_entry, Chart, Figure, Reference, XAxis};
use crate::report::stats::Stats;

/// Columns of `stability.csv` after the study's first columns.
pub const PATH_COLUMNS: &[&str] = &[
    "k",
    "pair",
    "a",
    "test_loss",
    "test_error",
    "train_loss",
    "train_error",
];

/// Columns of `barriers.csv` after the study's first columns.
pub const BARRIER_COLUMNS: &[&str] = &[
    "k",
    "pair",
    "test_barrier",
    "train_barrier",
    "test_error_first",
    "test_error_second",
    "distance",
];

/// Columns of `instability.csv`.
const SUMMARY_COLUMNS: &[&str] = &[
    "run",
    "experiment",
    "round",
    "arm",
    "weights_remaining_pct",
    "k",
    "seeds",
    "pairs",
    "test_barrier_mean",
    "test_barrier_std",
    "train_barrier_mean",
    "train_barrier_std",
    "test_accuracy_mean",
    "test_accuracy_std",
    "dense_test_accuracy_mean",
    "dense_test_accuracy_std",
    "stable",
    "matching",
];

/// A network is stable at k when its mean test error barrier is below this (2 points, the
/// paper's threshold).
pub const STABLE_BELOW: f64 = 0.02;
/// A network trained from k is matching when its mean test accuracy is at most this far below
/// the dense network's mean (0.2 points).
pub const MATCHING_WITHIN: f64 = 0.002;

/// One network the study copied: a round's networks of one arm.
#[derive(Debug, Clone)]
pub struct Copied {
    /// The round (0: dense).
    pub round: u32,
    /// Its arm (empty for round 0).
    pub arm: String,
    /// Percent of the prunable weights its mask keeps (mean over seeds).
    pub remaining_pct: f64,
}

impl Copied {
    /// The name in figures: `dense` or `round R (X% remaining)`.
    fn label(&self) -> String {
        if self.round == 0 {
            "dense".into()
        } else {
            format!(
                "round {} ({:.1}% remaining)",
                self.round, self.remaining_pct
            )
        }
    }

    fn owns(&self, row: &[String]) -> bool {
        row[cell("round")] == self.round.to_string() && row[cell("arm")] == self.arm
    }
}

/// The index of column `name` of [`ROW_START`].
fn cell(name: &str) -> usize {
    ROW_START
        .iter()
        .position(|c| *c == name)
        .expect("a first column")
}

/// The index of column `name` of a table whose columns after [`ROW_START`] are `columns`.
fn column(columns: &[&str], name: &str) -> usize {
    ROW_START.len() + columns.iter().position(|c| *c == name).expect("a column")
}

fn number(row: &[String], i: usize) -> f64 {
    row[i].parse().expect("a number this study wrote")
}

/// Where the summary and the figures go.
#[derive(Debug, Clone)]
pub struct ReportPaths {
    /// `instability.csv`.
    pub summary: PathBuf,
    /// Base path of the error-along-the-path figure.
    pub paths_figure: PathBuf,
    /// Base path of the instability-against-k figure.
    pub instability_figure: PathBuf,
}

/// Everything the summary and figures are drawn from.
pub struct StabilityRows<'a> {
    /// The run's label and experiment name (first cells of the summary).
    pub run: (&'a str, &'a str),
    /// The copied networks, in request order.
    pub networks: &'a [Copied],
    /// The rewind iterations, in request order.
    pub ks: &'a [u64],
    /// `stability.csv`'s rows.
    pub paths: &'a [Vec<String>],
    /// `barriers.csv`'s rows.
    pub barriers: &'a [Vec<String>],
    /// Test accuracy of the run's trained dense network of each seed.
    pub dense_accuracy: &'a [f64],
}

/// Writes `instability.csv` and the two figures.
pub fn write_report(rows: &StabilityRows<'_>, out: &ReportPaths) -> Result<()> {
    write_table(&out.summary, SUMMARY_COLUMNS, &summary(rows))?;
    paths_figure(rows).render(&out.paths_figure)?;
    instability_figure(rows).render(&out.instability_figure)
}

/// `instability.csv`'s rows: network-major, then k.
fn summary(rows: &StabilityRows<'_>) -> Vec<Vec<String>> {
    let b = |name| column(BARRIER_COLUMNS, name);
    let dense = Stats::of(rows.dense_accuracy).expect("at least one seed");
    let mut out = Vec::new();
    for net in rows.networks {
        for &k in rows.ks {
            let of: Vec<&Vec<String>> = rows
                .barriers
                .iter()
                .filter(|r| net.owns(r) && r[b("k")] == k.to_string())
                .collect();
            let values = |name| of.iter().map(|r| number(r, b(name))).collect::<Vec<_>>();
            // Each trained copy once: pair "i-j" ends at copies i and j of its seed.
            let mut accuracy = BTreeMap::new();
            for r in &of {
                let (i, j) = r[b("pair")].split_once('-').expect("a pair i-j");
                let seed = r[cell("seed")].clone();
                accuracy.insert(
                    (seed.clone(), i.to_string()),
                    1.0 - number(r, b("test_error_first")),
                );
                accuracy.insert(
                    (seed, j.to_string()),
                    1.0 - number(r, b("test_error_second")),
                );
            }
            let seeds = of
                .iter()
                .map(|r| r[cell("seed")].as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            let test = Stats::of(&values("test_barrier")).expect("a pair");
            let train = Stats::of(&values("train_barrier")).expect("a pair");
            let acc = Stats::of(&accuracy.into_values().collect::<Vec<_>>()).expect("a copy");
            let std = |s: &Stats| s.std.map_or_else(String::new, |v| format!("{v}"));
            out.push(vec![
                rows.run.0.to_string(),
                rows.run.1.to_string(),
                net.round.to_string(),
                net.arm.clone(),
                format!("{}", net.remaining_pct),
                k.to_string(),
                seeds.to_string(),
                (of.len() / seeds.max(1)).to_string(),
                format!("{}", test.mean),
                std(&test),
                format!("{}", train.mean),
                std(&train),
                format!("{}", acc.mean),
                std(&acc),
                format!("{}", dense.mean),
                std(&dense),
                (test.mean < STABLE_BELOW).to_string(),
                (acc.mean >= dense.mean - MATCHING_WITHIN).to_string(),
            ]);
        }
    }
    out
}

/// Test error along the path, one panel per network, one line per k (mean over seeds and
/// pairs, ±1 standard deviation).
fn paths_figure(rows: &StabilityRows<'_>) -> Figure {
    let p = |name| column(PATH_COLUMNS, name);
    let mut legend = Vec::new();
    let panels: Vec<Chart> = rows
        .networks
        .iter()
        .map(|net| {
            let series: Vec<_> = rows
                .ks
                .iter()
                .enumerate()
                .map(|(i, &k)| {
                    let mut at: BTreeMap<String, (f64, Vec<f64>)> = BTreeMap::new();
                    for r in rows
                        .paths
                        .iter()
                        .filter(|r| net.owns(r) && r[p("k")] == k.to_string())
                    {
                        at.entry(r[p("a")].clone())
                            .or_insert_with(|| (number(r, p("a")), Vec::new()))
                            .1
                            .push(number(r, p("test_error")));
                    }
                    let mut points: Vec<(f64, Vec<f64>)> = at.into_values().collect();
                    points.sort_by(|x, y| x.0.total_cmp(&y.0));
                    mean_line(format!("k = {k}"), i, points)
                })
                .collect();
            if legend.is_empty() {
                legend = series.iter().map(entry).collect();
            }
            Chart {
                title: net.label(),
                x_desc: "interpolation a".into(),
                y_desc: "test error".into(),
                x: XAxis::Linear(0.0..1.0),
                y_decimals: 3,
                series,
                references: Vec::new(),
            }
        })
        .collect();
    let columns = panels.len().min(3);
    Figure {
        panels,
        columns,
        panel_size: (360, 280),
        legend,
        legend_columns: 4,
    }
}

/// Test error barrier against k, one line per network (mean over seeds and pairs, ±1
/// standard deviation), with the 2-point stability threshold dashed.
fn instability_figure(rows: &StabilityRows<'_>) -> Figure {
    let b = |name| column(BARRIER_COLUMNS, name);
    let series: Vec<_> = rows
        .networks
        .iter()
        .enumerate()
        .map(|(i, net)| {
            let points = rows
                .ks
                .iter()
                .enumerate()
                .map(|(x, &k)| {
                    let values = rows
                        .barriers
                        .iter()
                        .filter(|r| net.owns(r) && r[b("k")] == k.to_string())
                        .map(|r| number(r, b("test_barrier")))
                        .collect();
                    (x as f64, values)
                })
                .collect();
            mean_line(net.label(), i, points)
        })
        .collect();
    let threshold = "stable below (2 points)";
    let mut legend: Vec<_> = series.iter().map(entry).collect();
    legend.push(reference_entry(threshold));
    Figure {
        panels: vec![Chart {
            title: "instability: test error barrier".into(),
            x_desc: "rewind iteration k".into(),
            y_desc: "test error barrier".into(),
            x: XAxis::Categories(rows.ks.iter().map(u64::to_string).collect()),
            y_decimals: 3,
            series,
            references: vec![Reference {
                label: threshold.into(),
                y: STABLE_BELOW,
            }],
        }],
        columns: 1,
        panel_size: (480, 320),
        legend,
        legend_columns: 2,
    }
}

/// The report's paths for a study whose tidy data go to `data` and figures to `plots`.
pub fn report_paths(data: &Path, plots: &Path) -> ReportPaths {
    ReportPaths {
        summary: data.join("instability.csv"),
        paths_figure: plots.join("stability_paths"),
        instability_figure: plots.join("instability"),
    }
}
