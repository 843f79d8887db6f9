//! The local executor: a sweep's tasks on this machine, one after another in this process.

use crate::config::one_line;
use crate::experiment::{run, RunOptions};
use crate::progress::say;

use super::{Sweep, Task};

/// How a task ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// Its run is complete (now or before).
    Done,
    /// Its run stopped with this error line.
    Failed(String),
}

/// Runs every task of `sweep` in order, each with `options(task)`; a failing task is said
/// and the others go on. Each task's outcome, in order.
pub fn run_tasks(
    sweep: &Sweep,
    options: &dyn Fn(&Task) -> RunOptions,
    quiet: bool,
) -> Vec<(usize, TaskOutcome)> {
    let total = sweep.tasks.len();
    let mut outcomes = Vec::with_capacity(total);
    for task in &sweep.tasks {
        if !quiet {
            say(&format!(
                "lth sweep: task {}/{total} ({}, seeds {:?}) in {}",
                task.index + 1,
                task.point_text(),
                task.exp.seeds,
                task.run_dir.display()
            ));
        }
        let outcome = match run(&task.exp, &options(task)) {
            Ok(_) => TaskOutcome::Done,
            Err(e) => {
                let line = one_line(&format!("{e:#}"));
                crate::progress::warn(&format!("lth sweep: task {} failed: {line}", task.index));
                TaskOutcome::Failed(line)
            }
        };
        outcomes.push((task.index, outcome));
    }
    outcomes
}
