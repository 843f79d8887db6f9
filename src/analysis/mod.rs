//! Read-only studies of finished runs: what a run's saved networks do under other pruning,
//! without training them again. Each study loads a run dir's config, data and network, writes
//! a tidy CSV under `notebooks-data/<name>/` and a figure under `plots/<name>/`, and never
//! writes into the run dir.

pub mod batchnorm;
pub mod interpolation;
pub mod output;
pub mod overlap;
pub mod parts;
pub mod prune_curve;
pub mod saved;
pub mod scoring;
pub mod sensitivity;
pub mod stability;
pub mod stability_report;
pub mod supermask;

pub use prune_curve::{prune_curve, PruneCurveOutput, PruneCurveRequest};
pub use sensitivity::{sensitivity, SensitivityOutput, SensitivityRequest};

use std::path::{Path, PathBuf};

use anyhow::Result;
use tch::Device;

use saved::SavedRound;

/// Which networks a study reads, how it scores them, and where its outputs go.
#[derive(Debug, Clone)]
pub struct Study {
    /// The round whose trained networks are pruned.
    pub round: u32,
    /// The arm (default: see [`SavedRound::load`]).
    pub arm: Option<String>,
    /// `taylor`'s (and SNIP's, GraSP's) batches (default: the run's `prune.score_batches`).
    pub score_batches: Option<u32>,
    /// `obd`'s and `obs`'s examples (default: the run's `prune.score_examples`).
    pub score_examples: Option<u32>,
    /// Device to score and evaluate on.
    pub device: Device,
    /// Name of the outputs' folders: `notebooks-data/<name>/`, `plots/<name>/`.
    pub name: String,
    /// Root of the tidy data (`notebooks-data`).
    pub data_root: PathBuf,
    /// Root of the figures (`plots`).
    pub plots_root: PathBuf,
}

impl Study {
    /// The round's networks of the run at `run_dir`, once the output name is checked.
    pub fn load(&self, run_dir: &Path) -> Result<SavedRound> {
        crate::report::check_report_name(&self.name)?;
        SavedRound::load(run_dir, self.round, self.arm.as_deref(), self.device)
    }

    /// The CSV and the figure's base path of a study named `kind`:
    /// `<kind>_round_<R>[_<arm>]<suffix>` under `<data_root>/<name>/` and `<plots_root>/<name>/`.
    pub fn outputs(&self, saved: &SavedRound, kind: &str, suffix: &str) -> (PathBuf, PathBuf) {
        let stem = match saved.arm.as_str() {
            "" => format!("{kind}_round_{}{suffix}", saved.round),
            arm => format!("{kind}_round_{}_{arm}{suffix}", saved.round),
        };
        (
            self.data_root.join(&self.name).join(format!("{stem}.csv")),
            self.plots_root.join(&self.name).join(stem),
        )
    }
}
