//! The rounds of a run over a population of arms x seeds: train the dense networks (round 0),
//! then for each round derive every replica's mask, reset its weights as its arm says, retrain,
//! and record. Each round starts from what is on disk, so a resumed run and an uninterrupted
//! one go through the same code and end with the same bytes.

mod device;
mod gradual;
mod iterative;
mod kept_start;
mod masks;
mod run;
mod topology;
pub mod train_cost;

use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Result};
use tch::Device;

pub use device::{resolve_device, run_device, DeviceChoice};

use crate::config::{config_hash, ArmPlan, Experiment, PruneCriterion, PruneSchedule};
use crate::data::Dataset;
use crate::model::{self, Network};
use crate::progress::ProgressMode;
use crate::prune::{self, PruneGroup};
use crate::record::{RunDir, RunLock, Table};
use run::{Run, Setup};

/// The figure a run draws of itself after each round (`lth` passes the report module's;
/// this module sits below `report` and does not call it).
pub trait RunFigure {
    /// Called once before any training: makes what the figure needs (its folders), so that a
    /// place that cannot hold it is an error now rather than after the first round.
    fn prepare(&self, dir: &RunDir) -> Result<()>;
    /// Draws the figure of the run in `dir` from its `rounds.csv` rows.
    fn draw(&self, dir: &RunDir, rounds: &Table, schedule: PruneSchedule) -> Result<()>;
}

/// How and where to run an experiment.
#[derive(Clone)]
pub struct RunOptions {
    /// Run dir; `runs/<name>-<hash>` when absent.
    pub run_dir: Option<PathBuf>,
    /// The figure drawn after each round (`lth run` passes `report::RunFigures`); none, the
    /// default, draws nothing.
    pub figure: Option<Rc<dyn RunFigure>>,
    /// Device selection.
    pub device: DeviceChoice,
    /// Progress display.
    pub progress: ProgressMode,
    /// Least time between two checkpoints inside a round (zero: at every evaluation point);
    /// `None` takes none, and a stopped round restarts from its beginning.
    pub checkpoint_every: Option<Duration>,
    /// Whether the user set libtorch's CPU thread count (`--threads`); when not, a CPU run
    /// that finds other `lth` processes running says how to share the cores.
    pub threads_chosen: bool,
}

impl fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOptions")
            .field("run_dir", &self.run_dir)
            .field("figure", &self.figure.is_some())
            .field("device", &self.device)
            .field("progress", &self.progress)
            .field("checkpoint_every", &self.checkpoint_every)
            .field("threads_chosen", &self.threads_chosen)
            .finish()
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            run_dir: None,
            figure: None,
            device: DeviceChoice::Auto,
            progress: ProgressMode::Auto,
            checkpoint_every: Some(DEFAULT_CHECKPOINT_EVERY),
            threads_chosen: false,
        }
    }
}

/// Default least time between two checkpoints inside a round.
pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(600);

/// The default run dir of an experiment: `runs/<name>-<hash of the resolved config>`.
pub fn default_run_dir(exp: &Experiment) -> PathBuf {
    Path::new("runs").join(format!("{}-{}", exp.name, config_hash(exp)))
}

/// Checks `exp` against its data set and model as [`run`] does before training (the data
/// files load and split, a batch fits the training split, the model builds and the pruning
/// settings name its tensors), on the CPU, writing nothing. Reads the whole data set.
pub fn check(exp: &Experiment) -> Result<()> {
    prepare(exp, Device::Cpu).map(|_| ())
}

/// The data set on `device`, the network and its pruning groups, each checked against `exp`.
fn prepare(exp: &Experiment, device: Device) -> Result<Setup> {
    let data = Dataset::load(&exp.data, device)?;
    if exp.train.batch_size > data.train.len() {
        bail!(
            "invalid config: `train.batch_size` ({}) exceeds the {} training examples (the training files less `data.validation_size` = {})",
            exp.train.batch_size,
            data.train.len(),
            exp.data.validation_size
        );
    }
    let batches_used = exp.scores_batches();
    prune::check_score_sizes(
        &exp.prune,
        exp.train.batch_size,
        data.train.len(),
        batches_used,
    )?;
    let net: Box<dyn Network> = model::build(&exp.model, data.input_shape, data.num_classes)?;
    let groups: Vec<PruneGroup> = prune::groups(net.layout(), &exp.prune)?;
    if exp.prune.criterion == PruneCriterion::Obs {
        prune::Obs::check(net.as_ref(), &groups)?;
    }
    let units = prune::structured::pruned_unit_layers(net.as_ref(), &exp.prune)?;
    Ok(Setup {
        counted_units: net.unit_layers(),
        positions: net.weight_positions(),
        data,
        net,
        groups,
        units,
        device,
    })
}

/// Runs (or resumes) an experiment and returns its run dir.
pub fn run(exp: &Experiment, opts: &RunOptions) -> Result<RunDir> {
    let device = run_device(exp, opts.device)?;
    let dir = RunDir::at(opts.run_dir.clone().unwrap_or_else(|| default_run_dir(exp)));
    dir.check_owner(exp)?;
    let setup = prepare(exp, device)?;
    if let Some(figure) = &opts.figure {
        figure.prepare(&dir)?;
    }
    // Take the lock before writing anything, then check ownership again under it: two runs
    // racing for a new dir cannot both write.
    dir.create_folder()?;
    let _lock = RunLock::acquire(dir.root())?;
    dir.check_owner(exp)?;
    dir.write_config(exp)?;
    dir.remove_stale_temporaries()?;
    let mut run = Run {
        results: dir.open_results()?,
        timings: dir.open_timings()?,
        plans: exp.arms.iter().map(|a| ArmPlan::of(exp, a)).collect(),
        exp,
        setup,
        dir,
        opts,
        sparse_replicas: Cell::default(),
    };
    let result = if exp.prune.schedule == PruneSchedule::Gradual {
        run.run_gradual()
    } else {
        run.run_rounds()
    };
    result.map(|()| run.dir)
}

/// One replica: an arm applied to a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    arm: usize,
    seed: u64,
}
