//! Summary statistics across seeds, and the grouping of result rows they are computed over.

use std::collections::BTreeMap;

use crate::record::Table;

/// n, mean, sample standard deviation (n - 1 in the denominator; absent for n < 2), min, max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Number of values.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation.
    pub std: Option<f64>,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Stats {
    /// Statistics of `values`; `None` when empty.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = (n > 1).then(|| {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        });
        Some(Self {
            n,
            mean,
            std,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }

    /// Mean minus / plus one standard deviation (the mean itself without one).
    pub fn band(&self) -> (f64, f64) {
        let s = self.std.unwrap_or(0.0);
        (self.mean - s, self.mean + s)
    }
}

/// Metrics of `rounds.csv` that are summarised across seeds.
pub const METRICS: &[&str] = &[
    "train_loss",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "early_stop_iteration",
    "early_stop_val_loss",
    "early_stop_val_accuracy",
    "early_stop_test_accuracy",
    "early_stop_steps",
];

/// One arm x round of one run, summarised across seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmRound {
    /// Arm name.
    pub arm: String,
    /// Round.
    pub round: u32,
    /// Mean percent of weights remaining (or of the column [`summarise_over`] was given).
    pub pct: f64,
    /// Per metric (in [`METRICS`] order), its statistics when any seed has a value.
    pub metrics: Vec<(&'static str, Option<Stats>)>,
}

impl ArmRound {
    /// Statistics of one metric.
    pub fn get(&self, metric: &str) -> Option<Stats> {
        self.metrics
            .iter()
            .find(|(m, _)| *m == metric)
            .and_then(|(_, s)| *s)
    }
}

/// Groups `rounds.csv` rows by (arm, round), arms in order of first appearance, rounds
/// ascending, and summarises each metric across the group's seeds.
pub fn summarise(rounds: &Table) -> Vec<ArmRound> {
    summarise_over(rounds, "weights_remaining_pct")
}

/// [`summarise`], with each group's `pct` the mean of column `x` (`weights_remaining_pct` or
/// `flops_remaining_pct`).
pub fn summarise_over(rounds: &Table, x: &str) -> Vec<ArmRound> {
    let col = |n: &str| rounds.column(n).expect("rounds.csv column");
    let (arm_c, round_c, pct_c) = (col("arm"), col("round"), col(x));
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<(usize, u32), Vec<&Vec<String>>> = BTreeMap::new();
    for row in rounds.rows() {
        let Ok(round) = row[round_c].parse::<u32>() else {
            continue;
        };
        let arm = &row[arm_c];
        let a = match order.iter().position(|x| x == arm) {
            Some(a) => a,
            None => {
                order.push(arm.clone());
                order.len() - 1
            }
        };
        groups.entry((a, round)).or_default().push(row);
    }
    groups
        .into_iter()
        .map(|((a, round), rows)| {
            let values = |c: usize| -> Vec<f64> {
                rows.iter()
                    .filter_map(|r| r[c].parse::<f64>().ok())
                    .collect()
            };
            ArmRound {
                arm: order[a].clone(),
                round,
                pct: Stats::of(&values(pct_c)).map_or(f64::NAN, |s| s.mean),
                // A metric the table lacks (a report's derived column in a run's own table)
                // has no statistics.
                metrics: METRICS
                    .iter()
                    .map(|&m| (m, rounds.column(m).and_then(|c| Stats::of(&values(c)))))
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_three_values() {
        let s = Stats::of(&[0.8, 0.9, 1.0]).unwrap();
        assert_eq!(s.n, 3);
        assert!((s.mean - 0.9).abs() < 1e-12);
        assert!((s.std.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!((s.min, s.max), (0.8, 1.0));
        assert_eq!(Stats::of(&[2.0]).unwrap().std, None);
        assert!(Stats::of(&[]).is_none());
    }
}
