//! One writer per run dir: an exclusive `flock` on `<run>/.lock`, held for the whole run. The
//! kernel drops it when the process ends, however it ends, so a lock left by a killed run is
//! stale by construction and the next run simply takes it; a live holder is named in the error.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A held run-dir lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock of the run dir `root` (which must exist), or fails naming the holder.
    pub fn acquire(root: &Path) -> Result<Self> {
        let path = root.join(".lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        if !try_lock(&file) {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another process".to_string()
            } else {
                format!("process {holder}")
            };
            bail!(
                "run dir {} is in use by {who}; wait for it to finish or use another --run-dir",
                root.display()
            );
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .with_context(|| format!("cannot write lock file {}", path.display()))?;
        Ok(Self { _file: file })
    }
}

#[cfg(unix)]
fn try_lock(file: &File) -> bool {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor we own; non-blocking.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> bool {
    true
}

/// Whether another process holds the lock of the run dir `root` now (a run in progress);
/// probes with a shared lock, released at once.
pub fn held_elsewhere(root: &Path) -> bool {
    let Ok(file) = File::open(root.join(".lock")) else {
        return false;
    };
    !try_shared(&file)
}

#[cfg(unix)]
fn try_shared(file: &File) -> bool {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor we own; non-blocking; released when `file` drops.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) == 0 }
}

#[cfg(not(unix))]
fn try_shared(_file: &File) -> bool {
    true
}
