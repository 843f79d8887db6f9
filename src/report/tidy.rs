//! Tidy data for notebooks: one observation per row, one variable per column, plain CSV that
//! pandas, polars and R read without options. Every file starts with the `run` (run dir name)
//! and `experiment` (config name) columns, so files of several runs concatenate cleanly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::load::{RunData, DERIVED_ROUND_COLUMNS};
use super::stats::{summarise, METRICS};
use crate::config::{ArmConfig, ArmPlan, ControlStart, Experiment, InitCriterion, RandomStart};
use crate::record::atomic::write_with;
use crate::record::{CURVES, LAYERS, ROUNDS};

/// Settings of the row's arm, as `arm.<key>` columns (fixed order).
const ARM_COLUMNS: &[&str] = &[
    "kind",
    "rewind_iteration",
    "restore_optimizer",
    "iterations",
    "lr",
    "sibling",
    "init",
    "start_at",
    "criterion",
    "shuffle",
    "synflow_iterations",
];

/// Text of a TOML value in a CSV cell: strings bare, lists as TOML inline lists.
fn cell(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => format!("{f}"),
        other => other.to_string(),
    }
}

/// Flattens a table into dotted keys (`train.lr`), skipping `skip` at the top level.
fn flatten(prefix: &str, table: &toml::Table, skip: &[&str], out: &mut BTreeMap<String, String>) {
    for (key, value) in table {
        if prefix.is_empty() && skip.contains(&key.as_str()) {
            continue;
        }
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(t) => flatten(&path, t, &[], out),
            v => {
                out.insert(path, cell(v));
            }
        }
    }
}

/// The config keys of a run as columns (`name`, `seeds` and `arms` are covered by the
/// `experiment`, `seed` and `arm.*` columns).
pub fn config_columns(run: &RunData) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    flatten(
        "",
        &run.config.to_table(),
        &["name", "seeds", "arms"],
        &mut out,
    );
    out
}

/// The `arm.*` cells of a row: each setting the arm's kind takes, with its default filled in
/// where the config leaves it unset (`iterations` t, the learning rate the arm trains at,
/// `init`, `start_at`); empty for settings the kind does not take.
fn arm_columns(arm: Option<&ArmConfig>, config: &Experiment) -> Vec<String> {
    let Some(arm) = arm else {
        return vec![String::new(); ARM_COLUMNS.len()];
    };
    let synflow = arm.criterion == Some(InitCriterion::Synflow);
    let resolved = ArmConfig {
        iterations: arm.iterations.or(Some(config.train.iterations)),
        lr: Some(ArmPlan::of(config, arm).lr.base),
        init: arm.init.or(Some(RandomStart::Theta0)),
        start_at: arm.start_at.or(Some(ControlStart::Init)),
        synflow_iterations: synflow.then(|| arm.synflow_steps()),
        ..arm.clone()
    };
    let table = toml::Value::try_from(&resolved)
        .ok()
        .and_then(|v| v.as_table().cloned())
        .unwrap_or_default();
    ARM_COLUMNS
        .iter()
        .map(|&k| match table.get(k) {
            Some(v) if k == "kind" || arm.takes(k) => cell(v),
            // Left out of the TOML while false.
            None if k == "shuffle" && arm.takes(k) => "false".into(),
            _ => String::new(),
        })
        .collect()
}

/// A sweep's axis keys, in the order the runs first name them (none for plain runs).
fn axis_keys(runs: &[RunData]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for (key, _) in runs.iter().flat_map(|r| &r.axes) {
        if !keys.contains(key) {
            keys.push(key.clone());
        }
    }
    keys
}

/// Writes the tidy files of `runs` into `dir` and returns their paths.
pub fn write_tidy(runs: &[RunData], dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut save = |name: &str, header: Vec<String>, rows: Vec<Vec<String>>| -> Result<()> {
        let path = dir.join(name);
        write_with(&path, |tmp| {
            let mut w = csv::Writer::from_path(tmp)?;
            w.write_record(&header)?;
            for row in &rows {
                w.write_record(row)?;
            }
            w.flush()
        })?;
        written.push(path);
        Ok(())
    };

    // runs.csv: one row per run.
    let axes = axis_keys(runs);
    let axis_cells = |run: &RunData| -> Vec<String> {
        axes.iter()
            .map(|k| {
                run.axes
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            })
            .collect()
    };
    // The first columns of runs.csv, summary.csv, curves.csv and layers.csv: run, experiment,
    // then a sweep's axes (rounds.csv has them among its config columns).
    let lead_header = || -> Vec<String> {
        let mut h: Vec<String> = vec!["run".into(), "experiment".into()];
        h.extend(axes.iter().cloned());
        h
    };
    let lead = |run: &RunData| -> Vec<String> {
        let mut cells = vec![run.label.clone(), run.config.name.clone()];
        cells.extend(axis_cells(run));
        cells
    };
    let mut header = lead_header();
    header.extend(
        [
            "path",
            "rounds_completed",
            "rounds_expected",
            "partial",
            "seeds",
            "arms",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let rows = runs
        .iter()
        .map(|r| {
            let mut row = lead(r);
            row.extend([
                r.dir.display().to_string(),
                r.rounds_completed.to_string(),
                r.rounds_expected.to_string(),
                r.is_partial().to_string(),
                r.config.seeds.len().to_string(),
                r.arms().join(" "),
            ]);
            row
        })
        .collect();
    save("runs.csv", header, rows)?;

    // rounds.csv: every run's rows with its config keys and the row's arm settings.
    let configs: Vec<BTreeMap<String, String>> = runs.iter().map(config_columns).collect();
    let keys: BTreeSet<&String> = configs.iter().flat_map(|c| c.keys()).collect();
    let mut header: Vec<String> = vec!["run".into(), "experiment".into()];
    header.extend(ROUNDS.iter().map(|s| s.to_string()));
    header.extend(DERIVED_ROUND_COLUMNS.iter().map(|s| s.to_string()));
    header.extend(keys.iter().map(|k| k.to_string()));
    header.extend(ARM_COLUMNS.iter().map(|k| format!("arm.{k}")));
    let mut rows = Vec::new();
    for (run, config) in runs.iter().zip(&configs) {
        let arm_c = run.rounds.column("arm").expect("arm column");
        // Each arm's settings once, not once per row.
        let settings: BTreeMap<&str, Vec<String>> = run
            .config
            .arms
            .iter()
            .map(|a| (a.name.as_str(), arm_columns(Some(a), &run.config)))
            .collect();
        let unknown = arm_columns(None, &run.config);
        for row in run.rounds.rows() {
            let mut out = vec![run.label.clone(), run.config.name.clone()];
            out.extend(row.iter().cloned());
            out.extend(
                keys.iter()
                    .map(|k| config.get(*k).cloned().unwrap_or_default()),
            );
            out.extend_from_slice(settings.get(row[arm_c].as_str()).unwrap_or(&unknown));
            rows.push(out);
        }
    }
    save("rounds.csv", header, rows)?;

    // summary.csv: per run x arm x round x metric, statistics across seeds.
    let mut header = lead_header();
    header.extend(
        [
            "arm",
            "round",
            "weights_remaining_pct",
            "metric",
            "n",
            "mean",
            "std",
            "min",
            "max",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut rows = Vec::new();
    for run in runs {
        for group in summarise(&run.rounds) {
            for &metric in METRICS {
                let Some(s) = group.get(metric) else { continue };
                let mut row = lead(run);
                row.extend([
                    group.arm.clone(),
                    group.round.to_string(),
                    format!("{}", group.pct),
                    metric.to_string(),
                    s.n.to_string(),
                    format!("{}", s.mean),
                    s.std.map(|v| format!("{v}")).unwrap_or_default(),
                    format!("{}", s.min),
                    format!("{}", s.max),
                ]);
                rows.push(row);
            }
        }
    }
    save("summary.csv", header, rows)?;

    // curves.csv and layers.csv: the run's rows behind run and experiment columns.
    for (name, columns, pick) in [("curves.csv", CURVES, 0usize), ("layers.csv", LAYERS, 1)] {
        let mut header = lead_header();
        header.extend(columns.iter().map(|s| s.to_string()));
        let mut rows = Vec::new();
        for run in runs {
            let table = if pick == 0 { &run.curves } else { &run.layers };
            for row in table.rows() {
                let mut out = lead(run);
                out.extend(row.iter().cloned());
                rows.push(out);
            }
        }
        save(name, header, rows)?;
    }
    Ok(written)
}
