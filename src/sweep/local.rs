//! The local executor: a sweep's tasks on this machine, one after another in this process or
//! several at once as child processes, each attempt's output or error line in the task's log
//! file (`<sweep dir>/logs/task-<index>.log`, which `lth sweep status` reads).

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::one_line;
use crate::experiment::{run, RunOptions};
use crate::interrupt::{self, Interrupted};
use crate::progress::{say, warn};

use super::status::{last_error_line, log_path};
use super::{Sweep, Task};

/// How a task ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// Its run is complete (now or before).
    Done,
    /// Its run stopped with this error line.
    Failed(String),
}

/// A fresh log file for task `index` (its previous attempt's is replaced).
fn fresh_log(sweep: &Sweep, index: usize) -> Result<File> {
    let path = log_path(&sweep.dir, index);
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    File::create(&path).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs every task of `sweep` in order in this process, each with `options(task)`; a failing
/// task is said (and its error line written to its log) and the others go on. Each task's
/// outcome, in order. `quiet` leaves the failures to the caller's summary.
pub fn run_tasks(
    sweep: &Sweep,
    options: &dyn Fn(&Task) -> RunOptions,
    quiet: bool,
) -> Result<Vec<(usize, TaskOutcome)>> {
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
        let mut log = fresh_log(sweep, task.index)?;
        let outcome = match run(&task.exp, &options(task)) {
            Ok(_) => TaskOutcome::Done,
            // A stop signal stops the sweep, not only this task.
            Err(e) if e.downcast_ref::<Interrupted>().is_some() => return Err(e),
            Err(e) => {
                let line = one_line(&format!("{e:#}"));
                use std::io::Write;
                let _ = writeln!(log, "error: {line}");
                if !quiet {
                    warn(&format!("lth sweep: task {} failed: {line}", task.index));
                }
                TaskOutcome::Failed(line)
            }
        };
        outcomes.push((task.index, outcome));
    }
    Ok(outcomes)
}

/// Passes a stop signal on to the running tasks (SIGTERM: each writes its checkpoint and
/// stops) and waits for them; the error to stop the sweep with.
fn stop_all(signal: &'static str, running: Vec<(usize, Child)>) -> Interrupted {
    let mut tasks = Vec::new();
    for (index, mut child) in running {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill only sends a signal to our own child process.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let _ = child.wait();
        tasks.push(index.to_string());
    }
    Interrupted {
        signal,
        detail: format!(
            "(passed on to task(s) {}, which stopped at their checkpoints); the same command continues them",
            tasks.join(", ")
        ),
    }
}

/// Runs every task of `sweep` as a child process `command(index)` (an `lth sweep task`), at
/// most `jobs` at once, each one's output going to its log file; a failing task is said and
/// the others go on. Each task's outcome, by index.
pub fn run_in_parallel(
    sweep: &Sweep,
    command: &dyn Fn(usize) -> Command,
    jobs: usize,
    quiet: bool,
) -> Result<Vec<(usize, TaskOutcome)>> {
    let total = sweep.tasks.len();
    let mut waiting = sweep.tasks.iter().map(|t| t.index);
    let mut running: Vec<(usize, Child)> = Vec::new();
    let mut outcomes = Vec::with_capacity(total);
    loop {
        while running.len() < jobs.max(1) {
            let Some(index) = waiting.next() else { break };
            let log = fresh_log(sweep, index)?;
            let child = command(index)
                .stdin(Stdio::null())
                .stdout(log.try_clone().context("cannot share a log file")?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start task {index}"))?;
            if !quiet {
                say(&format!(
                    "lth sweep: task {index} started ({}), log {}",
                    sweep.tasks[index].point_text(),
                    log_path(&sweep.dir, index).display()
                ));
            }
            running.push((index, child));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if let Some(signal) = interrupt::pending() {
            return Err(stop_all(signal, running).into());
        }
        let mut k = 0;
        while k < running.len() {
            let status = running[k]
                .1
                .try_wait()
                .with_context(|| format!("cannot watch task {}", running[k].0))?;
            let Some(status) = status else {
                k += 1;
                continue;
            };
            let (index, _) = running.swap_remove(k);
            let outcome = if status.success() {
                TaskOutcome::Done
            } else {
                let log = log_path(&sweep.dir, index);
                let line = last_error_line(&log)
                    .map(|l| l.trim_start_matches("error: ").to_string())
                    .unwrap_or_else(|| format!("it exited with {status} (log {})", log.display()));
                if !quiet {
                    warn(&format!("lth sweep: task {index} failed: {line}"));
                }
                TaskOutcome::Failed(line)
            };
            outcomes.push((index, outcome));
            if !quiet {
                say(&format!(
                    "lth sweep: {} of {total} task(s) finished",
                    outcomes.len()
                ));
            }
        }
    }
    outcomes.sort_by_key(|(i, _)| *i);
    Ok(outcomes)
}
