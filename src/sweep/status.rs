//! Where each task of a sweep stands, read from its run dir and its log file.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::config::one_line;
use crate::record::lock::held_elsewhere;
use crate::record::RunDir;

use super::{Sweep, Task};

/// The state of one task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    /// No run dir yet.
    NotStarted,
    /// A process holds its run dir: `done` of `total` rounds complete so far.
    Running {
        /// Rounds complete.
        done: u32,
        /// Rounds of the run.
        total: u32,
    },
    /// Stopped part-way (resumes from its checkpoint when run again).
    Stopped {
        /// Rounds complete.
        done: u32,
        /// Rounds of the run.
        total: u32,
    },
    /// Its last attempt failed: the error line from its log file.
    Failed {
        /// The `error:` line.
        line: String,
        /// The log it came from.
        log: PathBuf,
    },
    /// Every round complete.
    Done,
}

impl TaskState {
    /// A short word for the state: `done`, `running`, `stopped`, `failed`, `not started`.
    pub fn word(&self) -> &'static str {
        match self {
            Self::NotStarted => "not started",
            Self::Running { .. } => "running",
            Self::Stopped { .. } => "stopped",
            Self::Failed { .. } => "failed",
            Self::Done => "done",
        }
    }
}

/// The log file of task `index`: `<sweep dir>/logs/task-<index>.log`.
pub fn log_path(sweep_dir: &Path, index: usize) -> PathBuf {
    sweep_dir.join("logs").join(format!("task-{index}.log"))
}

/// The last line starting with `error:` in the log at `path`, if any.
pub fn last_error_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .map(String::from)
}

/// Where `task` of `sweep` stands.
pub fn task_state(sweep: &Sweep, task: &Task) -> Result<TaskState> {
    let total = task.exp.total_rounds();
    if !task.run_dir.exists() {
        return Ok(failed_or(sweep, task, TaskState::NotStarted));
    }
    let dir = RunDir::at(&task.run_dir);
    if let Err(e) = dir.check_owner(&task.exp) {
        // Not this task's run (another config's, or not a run dir): it cannot run there.
        return Ok(TaskState::Failed {
            line: format!("error: {}", one_line(&format!("{e:#}"))),
            log: log_path(&sweep.dir, task.index),
        });
    }
    let done = dir.rounds_completed(total)?;
    if done == total {
        return Ok(TaskState::Done);
    }
    if held_elsewhere(&task.run_dir) {
        return Ok(TaskState::Running { done, total });
    }
    Ok(failed_or(sweep, task, TaskState::Stopped { done, total }))
}

/// `Failed` when the task's log ends its last attempt with an error line, else `state`.
fn failed_or(sweep: &Sweep, task: &Task, state: TaskState) -> TaskState {
    let log = log_path(&sweep.dir, task.index);
    match last_error_line(&log) {
        Some(line) => TaskState::Failed { line, log },
        None => state,
    }
}
