//! A logarithmic percent axis running from 100% on the left down to the sparsest point, with
//! ticks at 100, 50, 20, 10, 5, 2, 1, 0.5, ... as pruning papers draw it.

use std::ops::Range;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};

/// Percent of weights remaining, log scale, high values first.
#[derive(Debug, Clone, Copy)]
pub struct PercentAxis {
    /// Left end (largest percent).
    pub high: f64,
    /// Right end (smallest percent).
    pub low: f64,
}

impl PercentAxis {
    /// An axis covering `values` (percents > 0) with a little margin, 100% included.
    pub fn covering(values: impl Iterator<Item = f64>) -> Self {
        let low = values.filter(|v| *v > 0.0).fold(100.0f64, f64::min);
        Self {
            high: 100.0 * 1.15,
            low: (low / 1.15).min(50.0),
        }
    }

    fn fraction(&self, v: f64) -> f64 {
        (self.high.ln() - v.max(1e-12).ln()) / (self.high.ln() - self.low.ln())
    }
}

impl Ranged for PercentAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = f64::from(limit.1 - limit.0);
        limit.0 + (span * self.fraction(*value)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // The densest of 1..9, 1-2-5, 1-5 and 1 per decade that fits the hint.
        const STEPS: [&[f64]; 4] = [
            &[1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2],
            &[1.0, 0.5, 0.2],
            &[1.0, 0.5],
            &[1.0],
        ];
        let max = hint.max_num_points().max(2);
        let mut best = Vec::new();
        for steps in STEPS {
            let mut points = Vec::new();
            let mut decade = 100.0;
            while decade >= self.low / 10.0 {
                for m in steps {
                    let v = decade * m;
                    if v <= self.high && v >= self.low {
                        points.push(v);
                    }
                }
                decade /= 10.0;
            }
            best = points;
            if best.len() <= max {
                break;
            }
        }
        best
    }

    fn range(&self) -> Range<f64> {
        self.low..self.high
    }
}

impl ValueFormatter<f64> for PercentAxis {
    fn format(value: &f64) -> String {
        format_percent(*value)
    }
}

/// `100`, `50`, `0.5`, `0.02`: the shortest text of a tick value.
pub fn format_percent(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}
