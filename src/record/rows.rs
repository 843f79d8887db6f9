//! Columns of the run's CSV files and the rows one replica's round adds to them. No wall-clock
//! value appears here, so reruns can be compared byte for byte.

use crate::train::{EarlyStop, EvalPoint};

/// `rounds.csv`: one row per arm x seed x round.
pub const ROUNDS: &[&str] = &[
    "arm",
    "seed",
    "round",
    "weights_remaining",
    "weights_total",
    "weights_remaining_pct",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "early_stop_iteration",
    "early_stop_val_loss",
    "early_stop_val_accuracy",
    "early_stop_test_accuracy",
    "diverged_iteration",
    "units_remaining",
    "params_remaining",
    "flops_remaining",
    "flops_remaining_pct",
    "train_flops",
    "train_flops_cumulative",
];

/// `curves.csv`: one row per arm x seed x round x evaluation point.
pub const CURVES: &[&str] = &[
    "arm",
    "seed",
    "round",
    "weights_remaining_pct",
    "iteration",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
];

/// `layers.csv`: one row per arm x seed x round x prunable parameter.
pub const LAYERS: &[&str] = &[
    "arm",
    "seed",
    "round",
    "layer",
    "remaining",
    "total",
    "remaining_pct",
];

/// `topology.csv`: one row per topology update x replica x pruned tensor of the dynamic
/// `sparse` arms (SET, RigL, SNFS): the weights active in the tensor before the update, dropped and grown by the
/// update, and the fraction of its positions whose mask differs from the round's start.
pub const TOPOLOGY: &[&str] = &[
    "arm",
    "seed",
    "round",
    "iteration",
    "layer",
    "active",
    "dropped",
    "grown",
    "churn",
];

/// `timings.csv`: wall-clock seconds per round (not part of the byte-identical set), and how
/// many of its replicas ran on the sparse kernels (`train.sparse_kernels`; 0: all dense).
pub const TIMINGS: &[&str] = &[
    "round",
    "replicas",
    "replica_steps",
    "seconds",
    "replica_steps_per_second",
    "sparse_replicas",
];

/// Formats a float as the shortest text that reads back to the same value.
pub fn num(x: f64) -> String {
    format!("{x}")
}

/// Formats an optional float; absent values are empty fields.
pub fn opt(x: Option<f64>) -> String {
    x.map(num).unwrap_or_default()
}

/// Percent of `total` that `part` is.
pub fn pct(part: u64, total: u64) -> f64 {
    100.0 * part as f64 / total as f64
}

/// Identity and sparsity of one replica's round.
pub struct ReplicaRound<'a> {
    /// Arm name.
    pub arm: &'a str,
    /// Seed.
    pub seed: u64,
    /// Round.
    pub round: u32,
    /// Remaining prunable weights.
    pub remaining: u64,
    /// All prunable weights.
    pub total: u64,
    /// Remaining neurons and filters of the network's unit layers (`None`: it has none).
    pub units: Option<u64>,
    /// Remaining parameters of every kind (weights, biases, BatchNorm's affine ones).
    pub params: u64,
    /// Multiply-adds of one forward pass per example through the remaining weights, and
    /// through all of them (`None`: the network does not say).
    pub flops: Option<(u64, u64)>,
    /// Multiply-adds of the round's training, and of every training the round's network
    /// needed (see `experiment::train_cost`); `None` where the network does not count them.
    pub train_flops: (Option<u64>, Option<u64>),
}

impl ReplicaRound<'_> {
    fn key(&self) -> Vec<String> {
        vec![
            self.arm.to_string(),
            self.seed.to_string(),
            self.round.to_string(),
        ]
    }

    /// The `rounds.csv` row of column `r` of `evals`; `diverged` is the iteration at which the
    /// replica's loss became non-finite, if it did.
    pub fn rounds_row(&self, evals: &[EvalPoint], r: usize, diverged: Option<u64>) -> Vec<String> {
        let last = evals.last().expect("a round has evaluation points");
        let stop = EarlyStop::find(evals, r).expect("a round has evaluation points");
        let mut row = self.key();
        row.extend([
            self.remaining.to_string(),
            self.total.to_string(),
            num(pct(self.remaining, self.total)),
            opt(last.train_loss.as_ref().map(|l| l[r])),
            num(last.val_loss[r]),
            num(last.val_accuracy[r]),
            num(last.test_loss[r]),
            num(last.test_accuracy[r]),
            stop.iteration.to_string(),
            num(stop.val_loss),
            num(stop.val_accuracy),
            num(stop.test_accuracy),
            diverged.map(|t| t.to_string()).unwrap_or_default(),
            self.units.map(|u| u.to_string()).unwrap_or_default(),
            self.params.to_string(),
            self.flops.map(|f| f.0.to_string()).unwrap_or_default(),
            opt(self.flops.map(|(part, all)| pct(part, all))),
            self.train_flops
                .0
                .map(|f| f.to_string())
                .unwrap_or_default(),
            self.train_flops
                .1
                .map(|f| f.to_string())
                .unwrap_or_default(),
        ]);
        row
    }

    /// The `curves.csv` rows of column `r` of `evals`.
    pub fn curve_rows(&self, evals: &[EvalPoint], r: usize) -> Vec<Vec<String>> {
        evals
            .iter()
            .map(|e| {
                let mut row = self.key();
                row.extend([
                    num(pct(self.remaining, self.total)),
                    e.iteration.to_string(),
                    opt(e.train_loss.as_ref().map(|l| l[r])),
                    num(e.val_loss[r]),
                    num(e.val_accuracy[r]),
                    num(e.test_loss[r]),
                    num(e.test_accuracy[r]),
                ]);
                row
            })
            .collect()
    }

    /// A `layers.csv` row.
    pub fn layer_row(&self, layer: &str, remaining: u64, total: u64) -> Vec<String> {
        let mut row = self.key();
        row.extend([
            layer.to_string(),
            remaining.to_string(),
            total.to_string(),
            num(pct(remaining, total)),
        ]);
        row
    }
}
