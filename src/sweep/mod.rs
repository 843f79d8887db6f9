//! Sweeps: a grid of experiments (config points x seed shards) described by one sweep file,
//! each task a run dir of its own under the sweep's folder `runs/<sweep name>/`, run on this
//! machine (`lth sweep run`, one task after another or `--jobs N` at once) or one at a time by
//! index (`lth sweep task`) or as a Slurm job array (`lth sweep run --executor slurm`), and
//! where each stands (`lth sweep status`).

pub mod file;
pub mod local;
pub mod report;
pub mod slurm;
pub mod status;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::{replica_steps, ConfigSource, Experiment, Reproducibility};
use crate::experiment::default_run_dir;

pub use file::{Axis, Base, SlurmSettings, SweepFile};
pub use local::{run_in_parallel, run_tasks, TaskOutcome};
pub use status::{log_path, task_state, TaskState};

/// One task: a config point (one value of every axis) and a shard of its seeds, trained as
/// one population into its own run dir.
#[derive(Debug, Clone)]
pub struct Task {
    /// Position in the sweep, from 0 (Slurm's array index).
    pub index: usize,
    /// The point's value of each axis, in axis order.
    pub point: Vec<(String, toml::Value)>,
    /// The resolved config, its seeds the shard's.
    pub exp: Experiment,
    /// Its run dir, `runs/<sweep name>/<name>-<hash>`.
    pub run_dir: PathBuf,
}

impl Task {
    /// The point as `key=value` words (`(base)` for a sweep without axes).
    pub fn point_text(&self) -> String {
        point_text(&self.point)
    }

    /// Replica-steps the task trains.
    pub fn replica_steps(&self) -> u64 {
        replica_steps(&self.exp)
    }
}

/// A sweep file with every task resolved and checked.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// The file as read.
    pub file: SweepFile,
    /// The sweep's folder, `<runs root>/<name>`.
    pub dir: PathBuf,
    /// Every task, points in grid order (the first axis slowest), seed shards within a point.
    pub tasks: Vec<Task>,
}

impl Sweep {
    /// Reads the sweep file at `path` and resolves its tasks under the runs root `runs`:
    /// the base config, each axis value on the base alone, then every task's config; the first
    /// that the config refuses is the error, naming the axis and value or the task's point.
    pub fn load(path: &Path, runs: &Path) -> Result<Self> {
        let file = SweepFile::read(path)?;
        let invalid = || format!("invalid sweep file {}", path.display());
        let tasks = tasks(&file, runs).with_context(invalid)?;
        if let (Some(first), Some(other)) = (
            tasks.first(),
            tasks
                .iter()
                .find(|t| t.exp.reproducibility != tasks[0].exp.reproducibility),
        ) {
            anyhow::bail!(
                "{}: task {} runs with reproducibility = \"{}\", task 0 with \"{}\"; a sweep runs in one mode",
                invalid(),
                other.index,
                other.exp.reproducibility.name(),
                first.exp.reproducibility.name()
            );
        }
        Ok(Self {
            dir: runs.join(&file.name),
            file,
            tasks,
        })
    }

    /// The one reproducibility mode of every task ([`Sweep::load`] refuses a sweep that mixes
    /// them: its tasks may run in one process, whose code paths are pinned once).
    pub fn reproducibility(&self) -> Reproducibility {
        self.tasks
            .first()
            .map(|t| t.exp.reproducibility)
            .unwrap_or_default()
    }

    /// Checks each grid point's config against its data set and model as `lth run` would
    /// before training (its first seed shard; the others differ in seeds only), writing
    /// nothing.
    pub fn check(&self) -> Result<()> {
        let mut seen: Vec<&[(String, toml::Value)]> = Vec::new();
        for task in &self.tasks {
            if seen.contains(&task.point.as_slice()) {
                continue;
            }
            seen.push(&task.point);
            crate::experiment::check(&task.exp)
                .with_context(|| format!("task {} ({})", task.index, task.point_text()))?;
        }
        Ok(())
    }

    /// The task at `index`, or an error naming how many there are.
    pub fn task(&self, index: usize) -> Result<&Task> {
        self.tasks.get(index).with_context(|| {
            format!(
                "the sweep has {} task(s), numbered 0 to {}; there is no task {index}",
                self.tasks.len(),
                self.tasks.len().saturating_sub(1)
            )
        })
    }
}

/// The base config as a source.
fn source(base: &Base) -> ConfigSource {
    match base {
        Base::Preset(name) => ConfigSource::Preset(name.clone()),
        Base::Config(path) => ConfigSource::File(path.clone()),
    }
}

/// `key=value` as `--set` takes it.
fn set_arg(key: &str, value: &toml::Value) -> String {
    format!("{key}={value}")
}

/// Every task of `file`, checked.
fn tasks(file: &SweepFile, runs: &Path) -> Result<Vec<Task>> {
    let source = source(&file.base);
    let sets: Vec<String> = file.set.iter().map(|(k, v)| set_arg(k, v)).collect();
    let base = Experiment::resolve(&source, &sets).context("the base config")?;
    for axis in &file.axes {
        for value in &axis.values {
            let mut with = sets.clone();
            with.push(set_arg(&axis.key, value));
            Experiment::resolve(&source, &with)
                .with_context(|| format!("grid axis `{}` = {value}", axis.key))?;
        }
    }
    let per_task = file.seeds_per_task.unwrap_or(base.seeds.len()).max(1);
    let shards: Vec<&[u64]> = base.seeds.chunks(per_task).collect();
    let mut out = Vec::new();
    for point in grid_points(&file.axes) {
        for seeds in &shards {
            let mut with = sets.clone();
            with.extend(point.iter().map(|(k, v)| set_arg(k, v)));
            with.push(set_arg(
                "seeds",
                &toml::Value::Array(
                    seeds
                        .iter()
                        .map(|&s| toml::Value::Integer(s as i64))
                        .collect(),
                ),
            ));
            let index = out.len();
            let exp = Experiment::resolve(&source, &with)
                .with_context(|| format!("task {index} ({})", point_text(&point)))?;
            let run_dir = runs
                .join(&file.name)
                .join(default_run_dir(&exp).file_name().expect("a run dir name"));
            out.push(Task {
                index,
                point: point.clone(),
                exp,
                run_dir,
            });
        }
    }
    Ok(out)
}

/// A point as `key=value` words (`(base)` for a sweep without axes).
fn point_text(point: &[(String, toml::Value)]) -> String {
    if point.is_empty() {
        return "(base)".into();
    }
    point
        .iter()
        .map(|(k, v)| set_arg(k, v))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every combination of one value per axis, the first axis varying slowest.
fn grid_points(axes: &[Axis]) -> Vec<Vec<(String, toml::Value)>> {
    let mut points = vec![Vec::new()];
    for axis in axes {
        points = points
            .into_iter()
            .flat_map(|point| {
                axis.values.iter().map(move |v| {
                    let mut p = point.clone();
                    p.push((axis.key.clone(), v.clone()));
                    p
                })
            })
            .collect();
    }
    points
}
