//! Stopping training cleanly on a signal. SIGTERM (what `kill`, `scancel` and Slurm's
//! preemption send) and SIGUSR1 (Slurm's early warning, `--signal=B:USR1@120`, which a
//! sweep's batch script passes on to `lth`) ask the training loop to write a checkpoint at
//! the iteration it has reached and stop; the process then exits with [`EXIT_CODE`], and the
//! same command run again continues from that checkpoint with the same bytes as a run that
//! never stopped. A second signal while the first is still pending ends the process at once,
//! as the signal's default action would have.

use std::sync::atomic::{AtomicI32, Ordering};

/// The exit status of a process stopped by a signal after writing its checkpoint
/// (`EX_TEMPFAIL`: try again).
pub const EXIT_CODE: u8 = 75;

/// The signal asked for and not yet acted on (0: none).
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_signal(signal: libc::c_int) {
    if PENDING.swap(signal, Ordering::SeqCst) != 0 {
        // SAFETY: `signal` and `raise` are async-signal-safe; the default action of TERM and
        // USR1 ends the process.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}

/// From now on SIGTERM and SIGUSR1 ask training to stop at a checkpoint instead of ending the
/// process. Only commands that train call it: the others keep the signals' default action.
pub fn catch_stop_signals() {
    #[cfg(unix)]
    // SAFETY: the handler only stores into an atomic (and, on a second signal, restores the
    // default action and raises the signal again), all async-signal-safe.
    unsafe {
        let handler = note_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGUSR1, handler);
    }
}

/// The stop signal received and not yet acted on, by name (`SIGTERM`, `SIGUSR1`).
pub fn pending() -> Option<&'static str> {
    match PENDING.load(Ordering::Relaxed) {
        0 => None,
        libc::SIGTERM => Some("SIGTERM"),
        libc::SIGUSR1 => Some("SIGUSR1"),
        _ => Some("a signal"),
    }
}

/// Work stopped at a signal's request (the error a run returns then).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("stopped by {signal} {detail}")]
pub struct Interrupted {
    /// The signal's name.
    pub signal: &'static str,
    /// Where it stopped and how to continue.
    pub detail: String,
}

impl Interrupted {
    /// Training stopped at `iteration`, with its checkpoint written there or not (none when
    /// checkpoints are off, or before the span's first step, where there is nothing to keep).
    pub fn in_training(signal: &'static str, iteration: u64, checkpoint: bool) -> Self {
        let then = if checkpoint {
            "checkpoint written there; the same command continues from it"
        } else {
            "no checkpoint needed or taken; the same command continues from the last one on disk"
        };
        Self {
            signal,
            detail: format!("at iteration {iteration}: {then}"),
        }
    }
}
