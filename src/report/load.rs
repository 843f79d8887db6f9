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
        if let Some((round, file)) =
            results.first_incomplete_round(&config.row_keys(), rounds_completed)
        {
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
