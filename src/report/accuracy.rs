//! The first figure of every run: test accuracy against percent of weights remaining, one line
//! per arm (mean over seeds, band of +-1 standard deviation when there are several seeds).
//! Solid: test accuracy at the early-stopping iteration; dashed: at the end of training.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::{format_percent, PercentAxis};
use super::style::{arm_color, draw_marker, register_fonts, FONT};
use crate::record::Table;

/// Mean and sample standard deviation of each metric at one sparsity.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Percent of prunable weights remaining.
    pub pct: f64,
    /// Mean early-stop test accuracy.
    pub early_stop: f64,
    /// Its standard deviation across seeds (0 for one seed).
    pub early_stop_std: f64,
    /// Mean final test accuracy.
    pub last: f64,
}

/// The seeds' values of one arm at one round.
struct Samples {
    pct: f64,
    early_stop: Vec<f64>,
    last: Vec<f64>,
}

/// Per arm (in order of first appearance), the points sorted by round.
pub fn arm_series(rounds: &Table) -> Vec<(String, Vec<Point>)> {
    let col = |n: &str| rounds.column(n).expect("rounds.csv column");
    let (arm_c, round_c, pct_c, es_c, last_c) = (
        col("arm"),
        col("round"),
        col("weights_remaining_pct"),
        col("early_stop_test_accuracy"),
        col("test_accuracy"),
    );
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<(usize, u32), Samples> = BTreeMap::new();
    for row in rounds.rows() {
        let arm = &row[arm_c];
        let a = order.iter().position(|x| x == arm).unwrap_or_else(|| {
            order.push(arm.clone());
            order.len() - 1
        });
        let (Ok(round), Ok(pct), Ok(es), Ok(last)) = (
            row[round_c].parse::<u32>(),
            row[pct_c].parse::<f64>(),
            row[es_c].parse::<f64>(),
            row[last_c].parse::<f64>(),
        ) else {
            continue;
        };
        let g = groups.entry((a, round)).or_insert_with(|| Samples {
            pct,
            early_stop: Vec::new(),
            last: Vec::new(),
        });
        g.early_stop.push(es);
        g.last.push(last);
    }
    order
        .iter()
        .enumerate()
        .map(|(a, name)| {
            let points = groups
                .range((a, 0)..=(a, u32::MAX))
                .map(|(_, s)| Point {
                    pct: s.pct,
                    early_stop: mean(&s.early_stop),
                    early_stop_std: std_dev(&s.early_stop),
                    last: mean(&s.last),
                })
                .collect();
            (name.clone(), points)
        })
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn std_dev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// Draws the figure to `<base>.svg` and `<base>.png`.
pub fn accuracy_vs_weights(rounds: &Table, title: &str, base: &Path) -> Result<()> {
    register_fonts();
    let series = arm_series(rounds);
    if let Some(dir) = base.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let svg = base.with_extension("svg");
    let png = base.with_extension("png");
    let mut svg_text = String::new();
    {
        let root = SVGBackend::with_string(&mut svg_text, (720, 480)).into_drawing_area();
        draw(&root, &series, title, 1.0)
            .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", svg.display()))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    crate::record::write_atomic(&svg, svg_text.as_bytes())?;
    crate::record::atomic::write_with(&png, |tmp| {
        let root = BitMapBackend::new(tmp, (1440, 960)).into_drawing_area();
        draw(&root, &series, title, 2.0).map_err(std::io::Error::other)?;
        root.present().map_err(std::io::Error::other)
    })
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &[(String, Vec<Point>)],
    title: &str,
    scale: f64,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let px = |v: f64| (v * scale).round() as u32;
    let e = |err: DrawingAreaErrorKind<DB::ErrorType>| err.to_string();
    root.fill(&WHITE).map_err(e)?;
    let all = series.iter().flat_map(|(_, p)| p.iter());
    let x_axis = PercentAxis::covering(all.clone().map(|p| p.pct));
    let (mut lo, mut hi) = all
        .flat_map(|p| {
            [
                p.early_stop - p.early_stop_std,
                p.early_stop + p.early_stop_std,
                p.last,
            ]
        })
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(0.005);
    let y_range = (lo - pad).max(0.0)..(hi + pad).min(1.0);
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, px(18.0)))
        .margin(px(12.0))
        .x_label_area_size(px(46.0))
        .y_label_area_size(px(62.0))
        .build_cartesian_2d(x_axis, y_range)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("weights remaining (%)")
        .y_desc("test accuracy")
        .x_label_formatter(&|v| format_percent(*v))
        .y_label_formatter(&|v| format!("{v:.3}"))
        .label_style((FONT, px(13.0)))
        .axis_desc_style((FONT, px(14.0)))
        .max_light_lines(1)
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(e)?;
    for (i, (arm, points)) in series.iter().enumerate() {
        let color = arm_color(i);
        let width = px(2.0);
        if points.iter().any(|p| p.early_stop_std > 0.0) {
            let upper = points
                .iter()
                .map(|p| (p.pct, p.early_stop + p.early_stop_std));
            let lower = points
                .iter()
                .rev()
                .map(|p| (p.pct, p.early_stop - p.early_stop_std));
            chart
                .draw_series(std::iter::once(Polygon::new(
                    upper.chain(lower).collect::<Vec<_>>(),
                    color.mix(0.18).filled(),
                )))
                .map_err(e)?;
        }
        chart
            .draw_series(DashedLineSeries::new(
                points.iter().map(|p| (p.pct, p.last)),
                px(6.0),
                px(4.0),
                color.stroke_width(px(1.0)),
            ))
            .map_err(e)?;
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.pct, p.early_stop)),
                color.stroke_width(width),
            ))
            .map_err(e)?
            .label(format!("{arm} (solid: early stop, dashed: final)"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
            });
        for p in points {
            draw_marker(
                chart.plotting_area(),
                i,
                (p.pct, p.early_stop),
                px(4.0),
                color,
            )
            .map_err(e)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font((FONT, px(13.0)))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(e)?;
    Ok(())
}
