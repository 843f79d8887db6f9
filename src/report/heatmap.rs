//! A labelled grid of values in [0, 1] (rows x columns), each cell shaded from white to dark
//! blue and carrying its value, drawn as SVG and PNG like every figure (e.g. the Jaccard index
//! of mask pairs per layer).

use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::chart::{render_drawing, Drawing};
use super::style::FONT;

/// Logical size of a cell, the margin above the grid, and the width of a label character.
const CELL: (f64, f64) = (64.0, 18.0);
const TOP: f64 = 44.0;
const CHAR: f64 = 5.6;

/// The grid.
#[derive(Debug, Clone)]
pub struct Heatmap {
    /// Title above the grid.
    pub title: String,
    /// Row labels, top to bottom.
    pub rows: Vec<String>,
    /// Column labels, left to right.
    pub columns: Vec<String>,
    /// `values[row][column]`, in [0, 1] (NaN: an empty cell).
    pub values: Vec<Vec<f64>>,
}

/// White at 0 to dark blue at 1.
fn shade(v: f64) -> RGBColor {
    let t = v.clamp(0.0, 1.0);
    let mix = |from: f64, to: f64| (from + (to - from) * t).round() as u8;
    RGBColor(mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0))
}

impl Heatmap {
    /// The margin left of the grid: room for the longest row label.
    fn left(&self) -> f64 {
        let longest = self
            .rows
            .iter()
            .map(|r| r.chars().count())
            .max()
            .unwrap_or(0);
        (CHAR * longest as f64 + 14.0).max(80.0)
    }

    fn size(&self) -> (u32, u32) {
        let width = self.left() + CELL.0 * self.columns.len() as f64 + 10.0;
        (
            width.max(CHAR * 1.2 * self.title.chars().count() as f64 + 12.0) as u32,
            (TOP + CELL.1 * self.rows.len() as f64 + 10.0) as u32,
        )
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        scale: f64,
    ) -> Result<(), String> {
        let e = |err: DrawingAreaErrorKind<DB::ErrorType>| err.to_string();
        let px = |v: f64| (v * scale).round() as i32;
        let left = self.left();
        root.fill(&WHITE).map_err(e)?;
        let text = |size: f64| TextStyle::from((FONT, size * scale).into_font()).color(&BLACK);
        root.draw(&Text::new(
            self.title.clone(),
            (px(6.0), px(6.0)),
            text(12.0),
        ))
        .map_err(e)?;
        for (c, name) in self.columns.iter().enumerate() {
            let x = left + CELL.0 * (c as f64 + 0.5);
            let style = text(9.0).pos(Pos::new(HPos::Center, VPos::Bottom));
            root.draw(&Text::new(name.clone(), (px(x), px(TOP - 4.0)), style))
                .map_err(e)?;
        }
        for (r, name) in self.rows.iter().enumerate() {
            let y = TOP + CELL.1 * r as f64;
            let style = text(9.0).pos(Pos::new(HPos::Right, VPos::Center));
            let label = (px(left - 6.0), px(y + CELL.1 / 2.0));
            root.draw(&Text::new(name.clone(), label, style))
                .map_err(e)?;
            for (c, &v) in self.values[r].iter().enumerate() {
                let x = left + CELL.0 * c as f64;
                let corners = [(px(x), px(y)), (px(x + CELL.0), px(y + CELL.1))];
                if v.is_nan() {
                    continue;
                }
                root.draw(&Rectangle::new(corners, shade(v).filled()))
                    .map_err(e)?;
                let ink = if v > 0.55 { WHITE } else { BLACK };
                let style = TextStyle::from((FONT, 9.0 * scale).into_font())
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                let at = (px(x + CELL.0 / 2.0), px(y + CELL.1 / 2.0));
                root.draw(&Text::new(format!("{v:.2}"), at, style))
                    .map_err(e)?;
            }
        }
        Ok(())
    }

    /// Writes `<base>.svg` and `<base>.png` (atomically).
    pub fn render(&self, base: &Path) -> Result<()> {
        render_drawing(self, base)
    }
}

impl Drawing for Heatmap {
    fn logical_size(&self) -> (u32, u32) {
        self.size()
    }

    fn paint<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        scale: f64,
    ) -> Result<(), String> {
        self.draw(root, scale)
    }
}

#[cfg(test)]
mod tests {
    use super::shade;

    #[test]
    fn shades_run_from_white_to_dark_blue() {
        assert_eq!(shade(0.0), plotters::style::RGBColor(255, 255, 255));
        assert_eq!(shade(1.0), plotters::style::RGBColor(8, 48, 107));
        assert_eq!(shade(2.0), shade(1.0));
    }
}
