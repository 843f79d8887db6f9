//! Reading run dirs for a report: the resolved config, the three result tables and how far
//! the run got. A run still in progress is read as it stands (its CSVs only ever hold whole
//! rounds). Rows of an arm or seed the config lacks, and files that do not match the run
//! dir's manifest (see `record::manifest`), are refused.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::config::{ArmConfig, ArmPlan, Experiment, PruneSchedule};
use crate::record::{RunDir, Table, TableCheck};

/// One run dir, loaded.
#[derive(Debug, Clone)]
pub struct RunData {
    /// Where it is.
    pub dir: PathBuf,
    /// Its folder name (`<name>-<hash>`), used as the run's label.
    pub label: String,
    /// The resolved config it was made with.
    pub config: Experiment,
    /// `rounds.csv`.
    pub rounds: Table,
    /// `curves.csv`.
    pub curves: Table,
    /// `layers.csv`.
    pub layers: Table,
    /// Rounds complete on disk.
    pub rounds_completed: u32,
    /// Rounds the config asks for (round 0 included).
    pub rounds_expected: u32,
    /// For a grid point of a sweep, each axis and the point's value (as the config column
    /// shows it); empty for a run on its own.
    pub axes: Vec<(String, String)>,
}

impl RunData {
    /// Loads a run dir; fails with a clear message when it is not one.
    pub fn load(path: &Path) -> Result<Self> {
        let (dir, config) = RunDir::open_existing(path)?;
        let rounds_expected = config.total_rounds();
        let label = path
            .canonicalize()
            .unwrap_or_else(|_| path.to_path_buf())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        // Progress first: a run still writing saves a round's rows before counting it.
        let rounds_completed = dir.rounds_completed(rounds_expected)?;
        let results = dir.open_results()?;
        if let Some((round, file)) = results.first_incomplete_round(
            (&config.row_keys(), &config.topology_row_keys()),
            rounds_completed,
        ) {
            bail!(
                "{}: {file} lacks (or repeats) rows of round {round}, which progress.toml counts as complete (the file was changed after the run wrote it); `lth run --config {}/config.toml --run-dir {}` redoes it",
                path.display(),
                path.display(),
                path.display()
            );
        }
        results.check_members(&config.row_keys())?;
        // A run still writing may have saved the rows of the round in progress: only a
        // complete run's CSVs must match whole.
        let tables = if rounds_completed == rounds_expected {
            TableCheck::Whole
        } else {
            TableCheck::Prefix
        };
        dir.verify_manifest(rounds_completed, tables)?;
        let mut rounds = results.rounds;
        add_retraining_columns(&mut rounds, &config);
        Ok(Self {
            rounds,
            curves: results.curves,
            layers: results.layers,
            rounds_completed,
            dir: path.to_path_buf(),
            label,
            config,
            rounds_expected,
            axes: Vec::new(),
        })
    }

    /// The seed shards of one config (runs whose configs differ in `seeds` only), read as one
    /// run labelled `label` at `dir`: the shards' seeds in order, their rows in the order one
    /// run of all those seeds writes them (round, then arm, then seed; a group's own rows in
    /// their order), and the fewest rounds any shard has complete (0 when `missing` shards
    /// have not started).
    pub fn merge(
        shards: Vec<RunData>,
        missing: usize,
        label: String,
        dir: PathBuf,
    ) -> Result<Self> {
        let Some(first) = shards.first() else {
            bail!("{label}: no seed shard has started");
        };
        let seeds: Vec<u64> = shards.iter().flat_map(|s| s.config.seeds.clone()).collect();
        let mut config = first.config.clone();
        config.seeds = seeds.clone();
        for shard in &shards {
            let mut same = shard.config.clone();
            same.seeds = seeds.clone();
            if same.to_table() != config.to_table() {
                bail!(
                    "{} and {} differ in more than their seeds: they are not shards of one config",
                    first.dir.display(),
                    shard.dir.display()
                );
            }
        }
        let arms = first.arms();
        let merged = |table: fn(&RunData) -> &Table| -> Table {
            let t = table(first);
            let col = |n: &str| t.column(n).expect("arm, seed and round columns");
            let (arm_c, seed_c, round_c) = (col("arm"), col("seed"), col("round"));
            let mut rows: Vec<Vec<String>> = shards
                .iter()
                .flat_map(|s| table(s).rows().to_vec())
                .collect();
            rows.sort_by_key(|r| {
                (
                    r[round_c].parse::<u32>().unwrap_or(u32::MAX),
                    arms.iter().position(|a| *a == r[arm_c]),
                    seeds.iter().position(|s| s.to_string() == r[seed_c]),
                )
            });
            t.with_rows(rows)
        };
        let rounds_completed = if missing > 0 {
            0
        } else {
            shards.iter().map(|s| s.rounds_completed).min().unwrap_or(0)
        };
        Ok(Self {
            rounds: merged(|r| &r.rounds),
            curves: merged(|r| &r.curves),
            layers: merged(|r| &r.layers),
            rounds_completed,
            rounds_expected: first.rounds_expected,
            dir,
            label,
            config,
            axes: Vec::new(),
        })
    }

    /// Whether rounds are still missing.
    pub fn is_partial(&self) -> bool {
        self.rounds_completed < self.rounds_expected
    }

    /// Arm names in config order.
    pub fn arms(&self) -> Vec<String> {
        self.config.arms.iter().map(|a| a.name.clone()).collect()
    }
}

/// Columns a report adds to a run's `rounds.csv` rows, after the run's own.
pub const DERIVED_ROUND_COLUMNS: &[&str] = &["start_iteration", "early_stop_steps"];

/// Adds [`DERIVED_ROUND_COLUMNS`]: `start_iteration`, the schedule iteration the row's
/// training started at (0 for round 0, rewinding to θ₀ and the controls; k for rewinding to
/// θ_k and controls with `start_at = "rewind"`; T for fine-tuning; T − t for learning-rate rewinding), and `early_stop_steps`,
/// `early_stop_iteration` minus it: the iterations trained until the early-stopping point,
/// comparable across arms.
fn add_retraining_columns(rounds: &mut Table, config: &Experiment) {
    let col = |n: &str| rounds.column(n).expect("rounds.csv column");
    let (arm_c, round_c, stop_c) = (col("arm"), col("round"), col("early_stop_iteration"));
    // Where each arm's pruned rounds start (a gradual run trains once, from 0).
    let pruned_start = |arm: &ArmConfig| match config.prune.schedule {
        PruneSchedule::Gradual => 0,
        _ => ArmPlan::of(config, arm).from,
    };
    let starts: Vec<(&str, u64)> = config
        .arms
        .iter()
        .map(|a| (a.name.as_str(), pruned_start(a)))
        .collect();
    let start = |row: &[String]| -> Option<u64> {
        let round: u32 = row[round_c].parse().ok()?;
        let (_, from) = starts.iter().find(|(name, _)| *name == row[arm_c])?;
        Some(if round == 0 { 0 } else { *from })
    };
    rounds.add_column(DERIVED_ROUND_COLUMNS[0], |row| {
        start(row).map(|s| s.to_string()).unwrap_or_default()
    });
    let start_c = rounds.column(DERIVED_ROUND_COLUMNS[0]).expect("just added");
    rounds.add_column(DERIVED_ROUND_COLUMNS[1], |row| {
        match (row[stop_c].parse::<u64>(), row[start_c].parse::<u64>()) {
            (Ok(stop), Ok(start)) => stop.saturating_sub(start).to_string(),
            _ => String::new(),
        }
    });
}
