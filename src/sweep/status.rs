//! Where each task of a sweep stands, read from its run dir and its log file.

use std::collections::BTreeMap;
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
    /// Waiting in Slurm's queue.
    Queued,
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
            Self::Queued => "queued",
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

/// The line starting with `error:` that ends the last attempt in the log at `path`, if any:
/// none when a stop signal (`lth: stopped by ...`) came after the last error line, since
/// Slurm appends each attempt of a task to its log.
pub fn last_error_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|l| l.starts_with("error:") || l.starts_with(STOPPED))
        .filter(|l| l.starts_with("error:"))
        .map(String::from)
}

/// How a task's log says that it stopped at a checkpoint on a signal.
const STOPPED: &str = "lth: stopped by ";

/// Where `task` of `sweep` stands; `queue` holds the sweep's array tasks in Slurm's queue by
/// index, with their `squeue` state, when it was submitted there.
pub fn task_state(
    sweep: &Sweep,
    task: &Task,
    queue: Option<&BTreeMap<usize, String>>,
) -> Result<TaskState> {
    let total = task.exp.total_rounds();
    let in_queue = queue.and_then(|q| q.get(&task.index));
    if !task.run_dir.exists() {
        return Ok(match in_queue {
            Some(state) if waiting(state) => TaskState::Queued,
            Some(_) => TaskState::Running { done: 0, total },
            None => failed_or(sweep, task, TaskState::NotStarted),
        });
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
    match in_queue {
        Some(state) if waiting(state) => return Ok(TaskState::Queued),
        Some(_) => return Ok(TaskState::Running { done, total }),
        None if held_elsewhere(&task.run_dir) => return Ok(TaskState::Running { done, total }),
        None => {}
    }
    Ok(failed_or(sweep, task, TaskState::Stopped { done, total }))
}

/// Whether a `squeue` state is one of waiting to run.
fn waiting(state: &str) -> bool {
    matches!(
        state,
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "CONFIGURING"
    )
}

/// `Failed` when the task's log ends its last attempt with an error line, else `state`.
fn failed_or(sweep: &Sweep, task: &Task, state: TaskState) -> TaskState {
    let log = log_path(&sweep.dir, task.index);
    match last_error_line(&log) {
        Some(line) => TaskState::Failed { line, log },
        None => state,
    }
}
