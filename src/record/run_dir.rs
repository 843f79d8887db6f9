//! Run-dir layout and ownership.
//!
//! ```text
//! <run>/config.toml                 resolved config (every key but unset optional ones),
//!                                   after a line with the SHA-256 of its text
//! <run>/progress.toml               rounds_completed = N
//! <run>/rounds.csv curves.csv layers.csv   results (no wall-clock values)
//! <run>/timings.csv                 wall-clock seconds per round
//! <run>/manifest.sha256 manifest.toml   SHA-256 of the files of completed rounds (`manifest`)
//! <run>/accuracy_vs_weights.{png,svg}
//! <run>/seed_<s>/theta_<k>.safetensors          weights at iteration k of the dense run
//! <run>/seed_<s>/optimizer_<k>.safetensors      optimizer state there (k > 0)
//! <run>/seed_<s>/round_00/{start,weights,mask}.safetensors  dense round, shared by all arms
//! <run>/seed_<s>/<arm>/round_<rr>/{start,weights,mask}.safetensors
//! ```
//!
//! `start` holds the masked weights a round starts training from (the ticket's
//! initialisation), `weights` its final weights, `mask` its mask. [`RunDir`] is the one owner
//! of these files: the paths, the config and progress here, the tables in `results`, the
//! tensor files in `run_tensors`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::atomic::write_atomic;
use super::results::Results;
use super::rows::TIMINGS;
use super::table::Table;
use crate::config::{with_digest_line, Experiment};

/// File name (without `.png` / `.svg`) of the figure a run draws of itself.
pub const RUN_FIGURE: &str = "accuracy_vs_weights";

/// A run dir on disk.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Wraps a path without touching the disk.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// An existing run dir and the config it was made with; an error when `path` is not one.
    pub fn open_existing(path: &Path) -> Result<(Self, Experiment)> {
        let dir = Self::at(path);
        match dir.saved_config()? {
            Some(exp) => Ok((dir, exp)),
            None => bail!("{} is not an lth run dir (no config.toml)", path.display()),
        }
    }

    /// The config saved in this run dir (checked against the digest on its first line), or
    /// `None` when there is none.
    pub fn saved_config(&self) -> Result<Option<Experiment>> {
        let config = self.config_path();
        if !config.exists() {
            return Ok(None);
        }
        Experiment::from_saved(&config).map(Some)
    }

    /// The result tables as they are on disk.
    pub fn open_results(&self) -> Result<Results> {
        Results::open(self)
    }

    /// `timings.csv` as it is on disk.
    pub fn open_timings(&self) -> Result<Table> {
        Table::open(&self.csv_path("timings"), TIMINGS)
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.toml`.
    pub(super) fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// The run's own figure, without its extension (`.png` and `.svg` are written).
    pub fn figure_base(&self) -> PathBuf {
        self.root.join(RUN_FIGURE)
    }

    /// `progress.toml`.
    pub(super) fn progress_path(&self) -> PathBuf {
        self.root.join("progress.toml")
    }

    /// A CSV file of the run, e.g. `rounds.csv`.
    pub(super) fn csv_path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.csv"))
    }

    /// Weights of `seed` at `iteration` of its dense run.
    pub(super) fn theta_path(&self, seed: u64, iteration: u64) -> PathBuf {
        self.root
            .join(format!("seed_{seed}"))
            .join(format!("theta_{iteration}.safetensors"))
    }

    /// Folder of one replica's round; round 0 (dense) is shared by all arms of a seed.
    pub(super) fn round_dir(&self, arm: &str, seed: u64, round: u32) -> PathBuf {
        let seed_dir = self.root.join(format!("seed_{seed}"));
        if round == 0 {
            seed_dir.join("round_00")
        } else {
            seed_dir.join(arm).join(format!("round_{round:02}"))
        }
    }

    /// Optimizer state of `seed`'s dense run at `iteration`.
    pub(super) fn optimizer_path(&self, seed: u64, iteration: u64) -> PathBuf {
        self.root
            .join(format!("seed_{seed}"))
            .join(format!("optimizer_{iteration}.safetensors"))
    }

    /// Masked starting weights of one replica's round.
    pub(super) fn start_path(&self, arm: &str, seed: u64, round: u32) -> PathBuf {
        self.round_dir(arm, seed, round).join("start.safetensors")
    }

    /// Final weights of one replica's round.
    pub(super) fn weights_path(&self, arm: &str, seed: u64, round: u32) -> PathBuf {
        self.round_dir(arm, seed, round).join("weights.safetensors")
    }

    /// Mask of one replica's round.
    pub(super) fn mask_path(&self, arm: &str, seed: u64, round: u32) -> PathBuf {
        self.round_dir(arm, seed, round).join("mask.safetensors")
    }

    /// Checkpoint file of one training span (`tag`) of `round`, kept while the round runs.
    pub(super) fn checkpoint_path(&self, round: u32, tag: &str) -> PathBuf {
        self.root
            .join("checkpoints")
            .join(format!("round_{round:02}"))
            .join(format!("{tag}.safetensors"))
    }

    /// Removes the checkpoints of every round but `keep` (all of them when `None`): a round's
    /// checkpoints are of no use once it is complete.
    pub fn remove_checkpoints_except(&self, keep: Option<u32>) -> Result<()> {
        let folder = self.root.join("checkpoints");
        if !folder.exists() {
            return Ok(());
        }
        let kept = keep.map(|r| format!("round_{r:02}"));
        let remove = || -> std::io::Result<()> {
            for entry in std::fs::read_dir(&folder)? {
                let entry = entry?;
                if kept.as_deref() == entry.file_name().to_str() {
                    continue;
                }
                if entry.file_type()?.is_dir() {
                    std::fs::remove_dir_all(entry.path())?;
                } else {
                    std::fs::remove_file(entry.path())?;
                }
            }
            if std::fs::read_dir(&folder)?.next().is_none() {
                std::fs::remove_dir(&folder)?;
            }
            Ok(())
        };
        remove().with_context(|| format!("cannot clean up {}", folder.display()))
    }

    /// Checks, without writing anything, that this dir is new, empty, or was made by `exp`.
    pub fn check_owner(&self, exp: &Experiment) -> Result<()> {
        if !self.root.exists() {
            return Ok(());
        }
        if !self.root.is_dir() {
            bail!("run dir {} exists and is not a folder", self.root.display());
        }
        let Some(saved) = self.saved_config()? else {
            // Empty but for the lock and temporaries of a run that died before its config
            // was written.
            let empty = std::fs::read_dir(&self.root)
                .with_context(|| format!("cannot read run dir {}", self.root.display()))?
                .filter_map(|e| e.ok())
                .all(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name == ".lock" || name.starts_with(".tmp-")
                });
            if !empty {
                bail!(
                    "{} is not an lth run dir (no config.toml) and is not empty; choose another --run-dir",
                    self.root.display()
                );
            }
            return Ok(());
        };
        if let Some(diff) = first_difference(&saved, exp) {
            bail!(
                "run dir {} belongs to another config ({diff}); use another --run-dir or the config that made it",
                self.root.display()
            );
        }
        Ok(())
    }

    /// Creates the run dir (and its parents).
    pub fn create_folder(&self) -> Result<()> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create run dir {}", self.root.display()))
    }

    /// Writes `config.toml` unless it is already there.
    pub fn write_config(&self, exp: &Experiment) -> Result<()> {
        if !self.config_path().exists() {
            let text = with_digest_line(&exp.to_toml());
            write_atomic(&self.config_path(), text.as_bytes())?;
        }
        Ok(())
    }

    /// Removes temporary files a killed run left behind (`.tmp-*`, see `atomic`). Call with
    /// the lock held.
    pub fn remove_stale_temporaries(&self) -> Result<()> {
        fn walk(dir: &Path) -> std::io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    walk(&path)?;
                } else if path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
                {
                    std::fs::remove_file(&path)?;
                }
            }
            Ok(())
        }
        walk(&self.root).with_context(|| format!("cannot clean up {}", self.root.display()))
    }

    /// Number of rounds whose results are complete on disk, of the `total` the run has (more
    /// is an error: the file was changed).
    pub fn rounds_completed(&self, total: u32) -> Result<u32> {
        let path = self.progress_path();
        if !path.exists() {
            return Ok(0);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("{} is corrupt", path.display()))?;
        let completed = table
            .get("rounds_completed")
            .and_then(toml::Value::as_integer)
            .and_then(|n| u32::try_from(n).ok())
            .with_context(|| format!("{} lacks rounds_completed", path.display()))?;
        if completed > total {
            bail!(
                "{} counts {completed} rounds complete, but the run has {total} (0..={}): the file was changed; set it to the rounds that rounds.csv holds",
                path.display(),
                total.saturating_sub(1)
            );
        }
        Ok(completed)
    }

    /// Records that rounds `0..n` are complete.
    pub fn set_rounds_completed(&self, n: u32) -> Result<()> {
        write_atomic(
            &self.progress_path(),
            format!("rounds_completed = {n}\n").as_bytes(),
        )
    }
}

/// The first key (other than `data.dir`) whose value differs, described for a message.
fn first_difference(saved: &Experiment, now: &Experiment) -> Option<String> {
    fn walk(prefix: &str, a: &toml::Value, b: &toml::Value) -> Option<String> {
        match (a, b) {
            (toml::Value::Table(ta), toml::Value::Table(tb)) => {
                let keys: std::collections::BTreeSet<&String> =
                    ta.keys().chain(tb.keys()).collect();
                keys.into_iter().find_map(|k| {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if path == "data.dir" || path == "stability" {
                        return None;
                    }
                    match (ta.get(k), tb.get(k)) {
                        (Some(x), Some(y)) => walk(&path, x, y),
                        (x, y) => Some(format!("`{path}` is {} there, {} here", show(x), show(y))),
                    }
                })
            }
            (x, y) if x == y => None,
            (x, y) => Some(format!("`{prefix}` is {x} there, {y} here")),
        }
    }
    fn show(v: Option<&toml::Value>) -> String {
        v.map_or_else(|| "unset".into(), ToString::to_string)
    }
    walk(
        "",
        &toml::Value::Table(saved.to_table()),
        &toml::Value::Table(now.to_table()),
    )
}
