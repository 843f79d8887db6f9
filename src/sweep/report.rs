//! A sweep's grid points as runs for a report: each point's seed shards merged into one run,
//! labelled `point-<i>` (grid order), with the point's axis values beside it.

use std::path::Path;

use anyhow::Result;

use crate::report::tidy::config_columns;
use crate::report::RunData;

use super::{Sweep, Task};

/// What a sweep's report reads.
#[derive(Debug)]
pub struct SweepRuns {
    /// One run per grid point with a started shard, in grid order.
    pub runs: Vec<RunData>,
    /// The points left out because none of their shards has started (their text).
    pub not_started: Vec<String>,
}

/// Every grid point of `sweep` as one run: its shards' run dirs read and merged (a point
/// whose shards have not all started is partial).
pub fn point_runs(sweep: &Sweep) -> Result<SweepRuns> {
    let mut points: Vec<Vec<&Task>> = Vec::new();
    for task in &sweep.tasks {
        match points.last_mut() {
            Some(tasks) if tasks[0].point == task.point => tasks.push(task),
            _ => points.push(vec![task]),
        }
    }
    let mut out = SweepRuns {
        runs: Vec::new(),
        not_started: Vec::new(),
    };
    for (i, tasks) in points.iter().enumerate() {
        let started: Vec<&&Task> = tasks.iter().filter(|t| t.run_dir.exists()).collect();
        if started.is_empty() {
            out.not_started.push(tasks[0].point_text());
            continue;
        }
        let shards = started
            .iter()
            .map(|t| RunData::load(&t.run_dir))
            .collect::<Result<Vec<_>>>()?;
        let missing = tasks.len() - started.len();
        let mut run = RunData::merge(shards, missing, format!("point-{i}"), sweep.dir.clone())?;
        run.axes = axis_cells(&run, tasks[0]);
        out.runs.push(run);
    }
    Ok(out)
}

/// The point's value of each axis, as the report's config columns show it (the TOML value
/// where the config flattens it into several columns).
fn axis_cells(run: &RunData, task: &Task) -> Vec<(String, String)> {
    let columns = config_columns(run);
    task.point
        .iter()
        .map(|(key, value)| {
            let cell = columns.get(key).cloned().unwrap_or_else(|| match value {
                toml::Value::String(s) => s.clone(),
                v => v.to_string(),
            });
            (key.clone(), cell)
        })
        .collect()
}

/// Whether `path` names a sweep file rather than a run dir.
pub fn is_sweep_file(path: &Path) -> bool {
    path.is_file()
}
