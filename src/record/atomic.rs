//! Atomic file writes: write a temporary file beside the target, flush, sync, rename over the
//! target, sync the folder. A reader (or a rerun after a crash) sees the old file or the new
//! one, never a torn one.
//!
//! Fault injection for the crash tests (`tests/suite/crash.rs`): with `LTH_FAULT_INJECT=after:N`
//! the process aborts (as SIGKILL would: no cleanup) right after its N-th atomic write, with
//! `before-rename:N` after writing the N-th temporary file but before renaming it; with
//! `LTH_WRITE_LOG=<file>` every atomic write appends its path to that file.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".tmp-{name}"))
}

/// Replaces `path` with `bytes` atomically, creating parent folders as needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |tmp| {
        let mut f = File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })
}

static WRITES: AtomicU64 = AtomicU64::new(0);

/// Where the test hooks say to stop: `(before_rename, n)`.
fn fault_point() -> Option<(bool, u64)> {
    let spec = std::env::var("LTH_FAULT_INJECT").ok()?;
    let (kind, n) = spec.split_once(':')?;
    Some((kind == "before-rename", n.parse().ok()?))
}

/// Replaces `path` atomically with what `fill` writes into the temporary path it is given.
pub fn write_with(path: &Path, fill: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    let n = WRITES.fetch_add(1, Ordering::SeqCst) + 1;
    let fault = fault_point();
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    let tmp = temp_path(path);
    if let Err(e) = fill(&tmp).and_then(|()| File::open(&tmp)?.sync_all()) {
        // A partial temporary (disk full, file-size limit) would hold the space the user has
        // to free; the target is untouched.
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    if fault == Some((true, n)) {
        std::process::abort();
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    if let Some(dir) = dir {
        // Make the rename itself durable.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync folder {}", dir.display()))?;
    }
    if let Some(log) = std::env::var_os("LTH_WRITE_LOG") {
        let mut f = fs::OpenOptions::new().create(true).append(true).open(log)?;
        writeln!(f, "{}", path.display())?;
    }
    if fault == Some((false, n)) {
        std::process::abort();
    }
    Ok(())
}
