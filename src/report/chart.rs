//! One drawing routine for every figure: line series with optional ±1 standard deviation bands,
//! horizontal reference lines, and a legend drawn in its own strip below the plot so it never
//! covers data. Figures are drawn once per backend: SVG at logical size, PNG at `scale`
//! times that (print resolution).

use std::ops::Range;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::{format_multiple, format_percent, LogAxis, PercentAxis};
use super::style::{draw_marker, register_fonts, FONT};
use crate::record::atomic::write_with;
use crate::record::write_atomic;

/// Line pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dash {
    /// Continuous.
    Solid,
    /// Long dashes.
    Dashed,
    /// Short dashes.
    Dotted,
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text (empty: no legend entry).
    pub label: String,
    /// Colour.
    pub color: RGBColor,
    /// Marker index (see `style::draw_marker`); `None` for no markers.
    pub marker: Option<usize>,
    /// Line pattern.
    pub dash: Dash,
    /// `(x, y)` points in drawing order.
    pub points: Vec<(f64, f64)>,
    /// `(x, low, high)` of a shaded band, if any.
    pub band: Vec<(f64, f64, f64)>,
}

/// A horizontal reference line (e.g. the dense network's accuracy).
#[derive(Debug, Clone)]
pub struct Reference {
    /// Legend text.
    pub label: String,
    /// Height.
    pub y: f64,
}

/// Something drawn at a logical size on any backend, at a scale (1 for SVG, [`PNG_SCALE`] for
/// PNG).
pub trait Drawing {
    /// Logical width and height.
    fn logical_size(&self) -> (u32, u32);
    /// Draws onto `root` at `scale`.
    fn paint<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        scale: f64,
    ) -> Result<(), String>;
}

/// Writes `drawing` to `<base>.svg` and `<base>.png` (atomically each), making the folder.
pub fn render_drawing(drawing: &impl Drawing, base: &Path) -> Result<()> {
    register_fonts();
    if let Some(dir) = base.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let (w, h) = drawing.logical_size();
    let svg_path = base.with_extension("svg");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        drawing
            .paint(&root, 1.0)
            .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", svg_path.display()))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    write_atomic(&svg_path, svg.as_bytes())?;
    let size = (
        (f64::from(w) * PNG_SCALE) as u32,
        (f64::from(h) * PNG_SCALE) as u32,
    );
    write_with(&base.with_extension("png"), |tmp| {
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        drawing
            .paint(&root, PNG_SCALE)
            .map_err(std::io::Error::other)?;
        root.present().map_err(std::io::Error::other)
    })
}

/// A figure with its legend laid out (columns, fitted labels).
struct LaidOut<'a> {
    figure: &'a Figure,
    legend: (usize, Vec<String>),
}

impl Drawing for LaidOut<'_> {
    fn logical_size(&self) -> (u32, u32) {
        self.figure.size(self.legend.0)
    }

    fn paint<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        scale: f64,
    ) -> Result<(), String> {
        self.figure.draw(root, &self.legend, scale)
    }
}

/// The x axis of a chart.
#[derive(Debug, Clone)]
pub enum XAxis {
    /// Percent of weights remaining, log scale, 100% on the left.
    Percent(PercentAxis),
    /// Multiples of a unit, log scale, low values on the left.
    Multiple(LogAxis),
    /// A linear range.
    Linear(Range<f64>),
    /// Whole numbers `0..=max` (rounds), ticks on whole numbers only.
    Count(u32),
    /// Named points at x = 0, 1, 2, ... (e.g. rewind iterations), each tick labelled by its
    /// name.
    Categories(Vec<String>),
}

/// How the x tick labels are written.
#[derive(Clone, Copy)]
enum XLabels<'a> {
    /// Percent remaining.
    Percent,
    /// Multiples of a unit.
    Multiple,
    /// Numbers with this many decimals.
    Number(usize),
    /// The name of the point at each whole x.
    Names(&'a [String]),
}

/// One panel: axes, series and reference lines.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Panel title (empty for none).
    pub title: String,
    /// X axis label with unit.
    pub x_desc: String,
    /// Y axis label with unit.
    pub y_desc: String,
    /// X axis.
    pub x: XAxis,
    /// Decimals of the y tick labels.
    pub y_decimals: usize,
    /// Lines.
    pub series: Vec<Series>,
    /// Reference lines.
    pub references: Vec<Reference>,
}

/// A legend entry.
#[derive(Debug, Clone)]
pub struct LegendEntry {
    /// Text.
    pub label: String,
    /// Colour.
    pub color: RGBColor,
    /// Marker.
    pub marker: Option<usize>,
    /// Line pattern.
    pub dash: Dash,
}

/// A figure: a grid of panels and one legend below them.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Panels, row-major.
    pub panels: Vec<Chart>,
    /// Panels per row.
    pub columns: usize,
    /// Logical size of one panel (SVG pixels).
    pub panel_size: (u32, u32),
    /// Legend entries.
    pub legend: Vec<LegendEntry>,
    /// Legend entries per row.
    pub legend_columns: usize,
}

/// Grey of reference lines.
const REFERENCE_GREY: RGBColor = RGBColor(110, 110, 110);
/// Height of one legend row (logical pixels).
const LEGEND_ROW: f64 = 15.0;
/// PNG pixels per SVG pixel: a 360-pixel-wide panel becomes 1080 pixels, 3.6 in at 300 dpi.
pub const PNG_SCALE: f64 = 3.0;

/// Logical width of a legend entry's start (margin and line sample) before its label, and of
/// the gap kept after it.
const LEGEND_LEAD: f64 = 38.0;
const LEGEND_GAP: f64 = 12.0;
/// Size of legend labels (logical pixels).
const LEGEND_FONT: f64 = 10.0;

/// Logical width of `text` in the legend's font (the bundled DejaVu Sans).
fn legend_text_width(text: &str) -> f64 {
    register_fonts();
    (FONT, LEGEND_FONT)
        .into_font()
        .box_size(text)
        .map_or(text.chars().count() as f64 * 6.5, |(w, _)| f64::from(w))
}

/// `label`, cut at the end with `...` where it is wider than `width` logical pixels.
fn fit_label(label: &str, width: f64) -> String {
    if legend_text_width(label) <= width {
        return label.to_string();
    }
    let mut chars: Vec<char> = label.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let cut = format!("{}...", chars.iter().collect::<String>().trim_end());
        if legend_text_width(&cut) <= width {
            return cut;
        }
    }
    "...".into()
}

impl Figure {
    /// Legend entries per row and their labels: at most `legend_columns`, fewer where the
    /// longest label would run into the next column; a label wider than the whole figure is
    /// cut with `...`.
    fn legend_layout(&self) -> (usize, Vec<String>) {
        let width = f64::from(self.panel_size.0) * self.columns.max(1) as f64;
        let longest = self
            .legend
            .iter()
            .map(|entry| legend_text_width(&entry.label))
            .fold(0.0, f64::max);
        let fit = (width / (LEGEND_LEAD + longest + LEGEND_GAP))
            .floor()
            .max(1.0) as usize;
        let columns = self.legend_columns.max(1).min(fit);
        let room = width / columns as f64 - LEGEND_LEAD - LEGEND_GAP;
        let labels = self
            .legend
            .iter()
            .map(|entry| fit_label(&entry.label, room))
            .collect();
        (columns, labels)
    }

    /// Logical size with the legend in `legend_columns` columns.
    fn size(&self, legend_columns: usize) -> (u32, u32) {
        let rows = self.panels.len().div_ceil(self.columns.max(1)) as u32;
        let legend_rows = self.legend.len().div_ceil(legend_columns) as u32;
        (
            self.panel_size.0 * self.columns as u32,
            self.panel_size.1 * rows + (f64::from(legend_rows) * LEGEND_ROW + 8.0) as u32,
        )
    }

    /// Writes `<base>.svg` and `<base>.png` (atomically).
    pub fn render(&self, base: &Path) -> Result<()> {
        register_fonts();
        // Measured once for both files: the labels' widths in the bundled font.
        let legend = self.legend_layout();
        let laid = LaidOut {
            figure: self,
            legend,
        };
        render_drawing(&laid, base)
    }

    /// Draws the panels and the legend laid out as `legend` (columns, labels) at `scale`.
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        (legend_columns, labels): &(usize, Vec<String>),
        scale: f64,
    ) -> Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let rows = self.panels.len().div_ceil(self.columns.max(1));
        let panel_h = (f64::from(self.panel_size.1) * scale) as u32 * rows as u32;
        let (grid, legend) = root.split_vertically(panel_h);
        let cells = grid.split_evenly((rows, self.columns.max(1)));
        for (chart, cell) in self.panels.iter().zip(&cells) {
            match &chart.x {
                XAxis::Percent(axis) => draw_panel(cell, chart, *axis, scale, XLabels::Percent, 8)?,
                XAxis::Multiple(axis) => {
                    draw_panel(cell, chart, *axis, scale, XLabels::Multiple, 8)?
                }
                XAxis::Linear(range) => {
                    // A short range (a in [0, 1]) needs decimals on its ticks.
                    let decimals = if range.end - range.start < 5.0 { 1 } else { 0 };
                    let axis: RangedCoordf64 = range.clone().into();
                    draw_panel(cell, chart, axis, scale, XLabels::Number(decimals), 8)?
                }
                XAxis::Count(max) => {
                    let axis: RangedCoordf64 = (0.0..f64::from(*max)).into();
                    let ticks = whole_number_ticks(*max);
                    draw_panel(cell, chart, axis, scale, XLabels::Number(0), ticks)?
                }
                XAxis::Categories(names) => {
                    let last = names.len().saturating_sub(1);
                    let axis: RangedCoordf64 = (-0.3..last as f64 + 0.3).into();
                    let ticks = whole_number_ticks(last as u32);
                    draw_panel(cell, chart, axis, scale, XLabels::Names(names), ticks)?
                }
            }
        }
        draw_legend(&legend, &self.legend, labels, *legend_columns, scale)
    }
}

/// The y range covering every point, band and reference line, padded a little.
fn y_range(chart: &Chart) -> Range<f64> {
    let values = chart
        .series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .map(|p| p.1)
                .chain(s.band.iter().flat_map(|b| [b.1, b.2]))
        })
        .chain(chart.references.iter().map(|r| r.y))
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.08).max(hi.abs().max(1e-3) * 0.005);
    (lo - pad)..(hi + pad)
}

/// The most x ticks on a `0..=max` axis of whole numbers: plotters steps ticks by 1, 2 or 5
/// times a power of ten, the finest that fits the count, so at most `max + 1` ticks keep every
/// step at 1 or more (no tick between two rounds).
fn whole_number_ticks(max: u32) -> usize {
    (max as usize + 1).clamp(2, 8)
}

fn draw_panel<DB, X>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart,
    x: X,
    scale: f64,
    labels: XLabels<'_>,
    x_ticks: usize,
) -> Result<(), String>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64> + ValueFormatter<f64> + Clone,
{
    let px = |v: f64| (v * scale).round() as u32;
    let e = |err: DrawingAreaErrorKind<DB::ErrorType>| err.to_string();
    let mut builder = ChartBuilder::on(area);
    builder
        .margin_top(px(6.0))
        .margin_right(px(10.0))
        .margin_left(px(4.0))
        .x_label_area_size(px(34.0))
        .y_label_area_size(px(46.0));
    if !chart.title.is_empty() {
        builder.caption(&chart.title, (FONT, px(12.0)));
    }
    let mut ctx = builder.build_cartesian_2d(x, y_range(chart)).map_err(e)?;
    let decimals = chart.y_decimals;
    let x_fmt = |v: &f64| {
        match labels {
            XLabels::Percent => format_percent(*v),
            XLabels::Multiple => format_multiple(*v),
            XLabels::Number(decimals) => format!("{v:.decimals$}"),
            // Only whole positions carry a name.
            XLabels::Names(names) if (v - v.round()).abs() < 1e-9 && *v >= 0.0 => {
                names.get(v.round() as usize).cloned().unwrap_or_default()
            }
            XLabels::Names(_) => String::new(),
        }
    };
    let y_fmt = |v: &f64| format!("{v:.decimals$}");
    ctx.configure_mesh()
        .x_desc(chart.x_desc.as_str())
        .y_desc(chart.y_desc.as_str())
        .x_labels(x_ticks)
        .y_labels(6)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FONT, px(10.0)))
        .axis_desc_style((FONT, px(11.0)))
        .max_light_lines(0)
        .bold_line_style(RGBColor(228, 228, 228).stroke_width(px(0.5).max(1)))
        .axis_style(RGBColor(60, 60, 60).stroke_width(px(0.8).max(1)))
        .draw()
        .map_err(e)?;
    for r in &chart.references {
        let (x0, x1) = (ctx.x_range().start, ctx.x_range().end);
        ctx.draw_series(DashedLineSeries::new(
            [(x0, r.y), (x1, r.y)],
            px(4.0),
            px(3.0),
            REFERENCE_GREY.stroke_width(px(1.0)),
        ))
        .map_err(e)?;
    }
    for s in &chart.series {
        if s.band.len() > 1 {
            let upper = s.band.iter().map(|b| (b.0, b.2));
            let lower = s.band.iter().rev().map(|b| (b.0, b.1));
            ctx.draw_series(std::iter::once(Polygon::new(
                upper.chain(lower).collect::<Vec<_>>(),
                s.color.mix(0.16).filled(),
            )))
            .map_err(e)?;
        }
    }
    for s in &chart.series {
        let style = s.color.stroke_width(px(1.4));
        match s.dash {
            Dash::Solid => {
                ctx.draw_series(LineSeries::new(s.points.iter().copied(), style))
                    .map_err(e)?;
            }
            Dash::Dashed | Dash::Dotted => {
                let (on, off) = if s.dash == Dash::Dashed {
                    (5.0, 3.0)
                } else {
                    (1.5, 2.5)
                };
                ctx.draw_series(DashedLineSeries::new(
                    s.points.iter().copied(),
                    px(on),
                    px(off),
                    style,
                ))
                .map_err(e)?;
            }
        }
        if let Some(marker) = s.marker {
            for &p in &s.points {
                draw_marker(ctx.plotting_area(), marker, p, px(2.6), s.color).map_err(e)?;
            }
        }
    }
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    labels: &[String],
    columns: usize,
    scale: f64,
) -> Result<(), String> {
    let e = |err: DrawingAreaErrorKind<DB::ErrorType>| err.to_string();
    let px = |v: f64| (v * scale).round() as i32;
    let (w, _) = area.dim_in_pixel();
    let col_w = w as i32 / columns as i32;
    for (i, (entry, label)) in entries.iter().zip(labels).enumerate() {
        let (row, col) = ((i / columns) as i32, (i % columns) as i32);
        let x = col * col_w + px(10.0);
        let y = px(4.0) + row * px(LEGEND_ROW) + px(LEGEND_ROW / 2.0);
        let style = entry.color.stroke_width(px(1.4).max(1) as u32);
        let (a, b) = ((x, y), (x + px(22.0), y));
        match entry.dash {
            Dash::Solid => area.draw(&PathElement::new(vec![a, b], style)).map_err(e)?,
            Dash::Dashed | Dash::Dotted => {
                let (on, off) = if entry.dash == Dash::Dashed {
                    (5.0, 3.0)
                } else {
                    (1.5, 2.5)
                };
                area.draw(&plotters::element::DashedPathElement::new(
                    vec![a, b],
                    px(on),
                    px(off),
                    style,
                ))
                .map_err(e)?
            }
        }
        if let Some(marker) = entry.marker {
            let mid = (x + px(11.0), y);
            draw_marker(area, marker, mid, px(2.6) as u32, entry.color).map_err(e)?;
        }
        area.draw_text(
            label,
            &TextStyle::from((FONT, px(LEGEND_FONT) as u32))
                .color(&BLACK)
                .pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Left,
                    plotters::style::text_anchor::VPos::Center,
                )),
            (x + px(28.0), y),
        )
        .map_err(e)?;
    }
    Ok(())
}

/// A legend entry for a series.
pub fn entry(s: &Series) -> LegendEntry {
    LegendEntry {
        label: s.label.clone(),
        color: s.color,
        marker: s.marker,
        dash: s.dash,
    }
}

/// The legend entry of reference lines.
pub fn reference_entry(label: &str) -> LegendEntry {
    LegendEntry {
        label: label.into(),
        color: REFERENCE_GREY,
        marker: None,
        dash: Dash::Dashed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(labels: &[&str], legend_columns: usize) -> Figure {
        Figure {
            panels: Vec::new(),
            columns: 1,
            panel_size: (480, 300),
            legend: labels.iter().map(|l| reference_entry(l)).collect(),
            legend_columns,
        }
    }

    #[test]
    fn legend_columns_shrink_until_the_labels_fit_and_overlong_labels_are_cut() {
        let short = figure(&["rewind", "reinit", "random", "finetune"], 2);
        let (columns, labels) = short.legend_layout();
        assert_eq!(columns, 2);
        assert_eq!(labels[0], "rewind");

        // Labels wider than half the figure go one to a row.
        let half = "rewind, prune.output_fraction=0.1, prune.rounds=1";
        assert!(legend_text_width(half) > 240.0 - LEGEND_LEAD - LEGEND_GAP);
        let (columns, labels) = figure(&[half, half], 2).legend_layout();
        assert_eq!((columns, labels[0].as_str()), (1, half));

        // A label wider than the figure is cut to fit it, with `...` at the end.
        let long = half.repeat(3);
        let (columns, labels) = figure(&[&long], 2).legend_layout();
        assert_eq!(columns, 1);
        assert!(labels[0].ends_with("...") && labels[0].len() < long.len());
        assert!(legend_text_width(&labels[0]) <= 480.0 - LEGEND_LEAD - LEGEND_GAP);
        assert!(long.starts_with(labels[0].trim_end_matches("...")));
    }

    #[test]
    fn a_round_axis_ticks_whole_rounds_only() {
        // With plotters' default of 8 ticks, 0..=3 was ticked every half round and the
        // labels read 0, 0, 1, 2, 2, 2, 3.
        for max in 1..=60u32 {
            let axis: RangedCoordf64 = (0.0..f64::from(max)).into();
            let ticks = axis.key_points(whole_number_ticks(max));
            assert!(ticks.len() >= 2, "round axis 0..={max}: {ticks:?}");
            assert!(
                ticks.iter().all(|t| t.fract() == 0.0),
                "round axis 0..={max}: {ticks:?}"
            );
            if max <= 7 {
                assert_eq!(ticks.len(), max as usize + 1, "every round of 0..={max}");
            }
        }
    }
}
