//! What the studies write: tidy CSV rows that start with the same columns, and one-panel
//! figures of test accuracy against weights remaining, one line per series with a band of ±1
//! standard deviation over the seeds and a dashed reference line.

use std::path::Path;

use anyhow::Result;

use super::saved::SavedRound;
use crate::record::atomic::write_with;
use crate::report::axis::PercentAxis;
use crate::report::chart::{entry, reference_entry, Chart, Dash, Figure, Reference, Series, XAxis};
use crate::report::stats::Stats;
use crate::report::style::arm_color;

/// A tidy table's rows, each a list of cells.
pub type Rows = Vec<Vec<String>>;

/// The columns every study's CSV starts with.
pub const ROW_START: &[&str] = &["run", "experiment", "round", "arm", "seed", "criterion"];

/// The cells of [`ROW_START`] for one network of `saved`.
pub fn row_start(label: &str, saved: &SavedRound, seed: u64, criterion: &str) -> Vec<String> {
    vec![
        label.to_string(),
        saved.exp.name.clone(),
        saved.round.to_string(),
        saved.arm.clone(),
        seed.to_string(),
        criterion.to_string(),
    ]
}

/// Writes a CSV of `header` and `rows` to `path` atomically, making its folder.
pub fn write_table(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    write_with(path, |tmp| {
        let mut w = csv::Writer::from_path(tmp)?;
        w.write_record(header)?;
        for row in rows {
            w.write_record(row)?;
        }
        w.flush()
    })
}

/// Line `index` of a figure, labelled `label`: at each `(x, values)` the mean of the values,
/// with a ±1 standard deviation band.
pub fn mean_line(label: String, index: usize, points: Vec<(f64, Vec<f64>)>) -> Series {
    let mut line = Vec::new();
    let mut band = Vec::new();
    for (x, values) in points {
        if let Some(s) = Stats::of(&values) {
            let (lo, hi) = s.band();
            line.push((x, s.mean));
            band.push((x, lo, hi));
        }
    }
    Series {
        label,
        color: arm_color(index),
        marker: Some(index),
        dash: Dash::Solid,
        points: line,
        band,
    }
}

/// One panel of test accuracy against `x_desc` (a percent remaining, log scale over `xs`),
/// with the mean of `reference` as a dashed line labelled `reference_label`.
pub fn accuracy_figure(
    (title, x_desc): (String, &str),
    series: Vec<Series>,
    (reference_label, reference): (&str, &[f64]),
    xs: impl Iterator<Item = f64>,
) -> Figure {
    let references: Vec<Reference> = Stats::of(reference)
        .map(|s| Reference {
            label: reference_label.into(),
            y: s.mean,
        })
        .into_iter()
        .collect();
    let mut legend: Vec<_> = series.iter().map(entry).collect();
    legend.push(reference_entry(reference_label));
    let chart = Chart {
        title,
        x_desc: x_desc.into(),
        y_desc: "test accuracy".into(),
        x: XAxis::Percent(PercentAxis::covering(xs)),
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

/// The mean of `values`.
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}
