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
        densest_fitting(hint.max_num_points(), &STEPS, |steps| {
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
            points
        })
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

/// The ticks of the densest of `step_sets` (densest first) whose ticks, as `ticks` places
/// them, number at most `max` (at least 2); the sparsest set's when none fits.
fn densest_fitting(
    max: usize,
    step_sets: &[&[f64]],
    ticks: impl Fn(&[f64]) -> Vec<f64>,
) -> Vec<f64> {
    let max = max.max(2);
    let mut best = Vec::new();
    for steps in step_sets {
        best = ticks(steps);
        if best.len() <= max {
            break;
        }
    }
    best
}

/// `100`, `50`, `0.5`, `0.02`: the shortest text of a tick value.
pub fn format_percent(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A logarithmic axis of positive values, low values first, with ticks at 1, 2 and 5 times the
/// powers of ten (e.g. training cost in multiples of one dense training).
#[derive(Debug, Clone, Copy)]
pub struct LogAxis {
    /// Left end.
    pub low: f64,
    /// Right end.
    pub high: f64,
}

impl LogAxis {
    /// An axis covering `values` (those > 0) with a little margin on each side.
    pub fn covering(values: impl Iterator<Item = f64>) -> Self {
        let (low, high) = values
            .filter(|v| *v > 0.0 && v.is_finite())
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        if !low.is_finite() {
            return Self {
                low: 0.1,
                high: 10.0,
            };
        }
        // At least a factor of four end to end, so that a tick always falls inside.
        let (low, high) = (low / 1.15, high * 1.15);
        let widen = (4.0 / (high / low)).max(1.0).sqrt();
        Self {
            low: low / widen,
            high: high * widen,
        }
    }

    fn fraction(&self, v: f64) -> f64 {
        (v.max(1e-300).ln() - self.low.ln()) / (self.high.ln() - self.low.ln())
    }
}

impl Ranged for LogAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = f64::from(limit.1 - limit.0);
        limit.0 + (span * self.fraction(*value)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        const STEPS: [&[f64]; 3] = [&[1.0, 2.0, 5.0], &[1.0, 3.0], &[1.0]];
        densest_fitting(hint.max_num_points(), &STEPS, |steps| {
            let mut points = Vec::new();
            let mut decade = 10f64.powf(self.low.log10().floor());
            while decade <= self.high {
                points.extend(
                    steps
                        .iter()
                        .map(|m| decade * m)
                        .filter(|v| *v >= self.low && *v <= self.high),
                );
                decade *= 10.0;
            }
            points
        })
    }

    fn range(&self) -> Range<f64> {
        self.low..self.high
    }
}

impl ValueFormatter<f64> for LogAxis {
    fn format(value: &f64) -> String {
        format_multiple(*value)
    }
}

/// `0.05x`, `1x`, `20x`: a tick of an axis in multiples of a unit.
pub fn format_multiple(v: f64) -> String {
    let s = format!("{v:.4}");
    format!("{}x", s.trim_end_matches('0').trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_axis_covers_its_values_and_ticks_at_one_two_five() {
        let axis = LogAxis::covering([0.02, 0.5, 3.0].into_iter());
        assert!(axis.low < 0.02 && axis.high > 3.0);
        let ticks = axis.key_points(20usize);
        assert_eq!(ticks, vec![0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]);
        assert_eq!(format_multiple(0.05), "0.05x");
        assert_eq!(format_multiple(2.0), "2x");
    }
}
