//! The rounds of a run over a population of arms x seeds: train the dense networks (round 0),
//! then for each round derive every replica's mask, reset its weights as its arm says, retrain,
//! and record. Each round starts from what is on disk, so a resumed run and an uninterrupted
//! one go through the same code and end with the same bytes.

mod device;
mod gradual;
mod masks;
mod plan;
mod rounds;
mod rows;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tch::{Device, Tensor};

pub use device::{resolve_device, DeviceChoice};
pub use plan::{ArmPlan, MaskRule, StartWeights};
pub use rows::{CURVES, LAYERS, ROUNDS, TIMINGS};

use crate::config::{config_hash, Experiment, PruneSchedule};
use crate::data::Dataset;
use crate::model::{self, Network, State};
use crate::progress::{Progress, ProgressMode};
use crate::prune::{self, PruneGroup};
use crate::record::table::first_incomplete_round;
use crate::record::tensors::{load_named, replica_tensors, save_named};
use crate::record::{RunDir, RunLock, Table};
use crate::report;
use crate::train::{
    Checkpointing, EvalPoint, LrPlan, MaskSchedule, Replicas, Span, SpanResult, Trainer,
};
use rows::{num, ReplicaRound};

/// How and where to run an experiment.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run dir; `runs/<name>-<hash>` when absent.
    pub run_dir: Option<PathBuf>,
    /// Where the accuracy plot is also copied (`<plots_dir>/<run dir name>/`); none to skip.
    pub plots_dir: Option<PathBuf>,
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

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            run_dir: None,
            plots_dir: Some(PathBuf::from("plots")),
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

/// One replica: an arm applied to a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    arm: usize,
    seed: u64,
}

/// The loaded pieces of a run.
struct Run<'a> {
    exp: &'a Experiment,
    data: Dataset,
    net: Box<dyn Network>,
    groups: Vec<PruneGroup>,
    plans: Vec<ArmPlan>,
    dir: RunDir,
    device: Device,
    rounds: Table,
    curves: Table,
    layers: Table,
    timings: Table,
    checkpoint_every: Option<Duration>,
}

/// Checks `exp` against its data set and model as [`run`] does before training (the data
/// files load and split, a batch fits the training split, the model builds and the pruning
/// settings name its tensors), on the CPU, writing nothing. Reads the whole data set.
pub fn check(exp: &Experiment) -> Result<()> {
    prepare(exp, Device::Cpu).map(|_| ())
}

/// The data set on `device`, the network and its pruning groups, each checked against `exp`.
fn prepare(
    exp: &Experiment,
    device: Device,
) -> Result<(Dataset, Box<dyn Network>, Vec<PruneGroup>)> {
    let data = Dataset::load(&exp.data, device)?;
    if exp.train.batch_size > data.train.len() {
        bail!(
            "invalid config: `train.batch_size` ({}) exceeds the {} training examples (the training files less `data.validation_size` = {})",
            exp.train.batch_size,
            data.train.len(),
            exp.data.validation_size
        );
    }
    let net = model::build(&exp.model, data.input_shape, data.num_classes)?;
    let groups = prune::groups(net.layout(), &exp.prune)?;
    Ok((data, net, groups))
}

/// Runs (or resumes) an experiment and returns its run dir.
pub fn run(exp: &Experiment, opts: &RunOptions) -> Result<RunDir> {
    let device = resolve_device(opts.device)?;
    let dir = RunDir::at(opts.run_dir.clone().unwrap_or_else(|| default_run_dir(exp)));
    dir.check_owner(exp)?;
    let (data, net, groups) = prepare(exp, device)?;
    if let Some(plots) = &opts.plots_dir {
        report::prepare_run_plots_dir(dir.root(), plots)?;
    }
    // Take the lock before writing anything, then check ownership again under it: two runs
    // racing for a new dir cannot both write.
    dir.create_folder()?;
    let _lock = RunLock::acquire(dir.root())?;
    dir.check_owner(exp)?;
    dir.write_config(exp)?;
    dir.remove_stale_temporaries()?;
    let mut run = Run {
        rounds: Table::open(&dir.csv_path("rounds"), ROUNDS)?,
        curves: Table::open(&dir.csv_path("curves"), CURVES)?,
        layers: Table::open(&dir.csv_path("layers"), LAYERS)?,
        timings: Table::open(&dir.csv_path("timings"), TIMINGS)?,
        checkpoint_every: opts.checkpoint_every,
        plans: exp.arms.iter().map(|a| ArmPlan::of(exp, a)).collect(),
        exp,
        data,
        net,
        groups,
        dir,
        device,
    };
    let result = if exp.prune.schedule == PruneSchedule::Gradual {
        run.run_gradual(opts)
    } else {
        run.run_rounds(opts)
    };
    result.map(|()| run.dir)
}

impl Run<'_> {
    /// Iterative and one-shot schedules: round 0, then one round per target.
    fn run_rounds(&mut self, opts: &RunOptions) -> Result<()> {
        let last = self.exp.pruned_rounds();
        let (done, missing) = self.rounds_done(last + 1)?;
        self.keep_rounds_below(done);
        if missing.is_some() {
            // Rounds from `done` on are redone: the files and progress.toml say so from now,
            // so that a report meanwhile sees a partial run, not a damaged one.
            self.save_tables()?;
            self.dir.set_rounds_completed(done)?;
        }
        self.dir.remove_checkpoints_except(Some(done))?;
        let total_steps: u64 = (done..=last).map(|r| self.round_steps(r)).sum();
        let mut progress = Progress::new(opts.progress, total_steps);
        self.announce(&progress, opts, (done, last + 1), missing);
        for round in done..=last {
            let started = Instant::now();
            if round == 0 {
                self.dense_round(&mut progress)?;
            } else {
                self.pruned_round(round, &mut progress)?;
            }
            let seconds = started.elapsed().as_secs_f64();
            self.record_timing(round, self.round_steps(round), seconds)?;
            self.dir.set_rounds_completed(round + 1)?;
            self.dir.remove_checkpoints_except(None)?;
            self.plot(opts.plots_dir.as_deref())?;
            progress.line(&self.round_summary(round, last, Some(seconds)));
        }
        if done > last {
            self.plot(opts.plots_dir.as_deref())?;
            progress.line("lth: all rounds were already complete");
        }
        progress.finish();
        Ok(())
    }

    /// Rounds already done: `progress.toml`'s count (of `total`), cut back to the first round
    /// whose rows a table lacks or repeats, if any (a file cut or edited after the run wrote
    /// it; from there the rounds run again, to the same bytes). Returns the count, and that
    /// round with the table's name.
    fn rounds_done(&self, total: u32) -> Result<(u32, Option<(u32, &'static str)>)> {
        let recorded = self.dir.rounds_completed(total)?;
        let missing = first_incomplete_round(
            &self.rounds,
            &self.curves,
            &self.layers,
            &self.exp.row_keys(),
            recorded,
        );
        Ok((missing.map_or(recorded, |(round, _)| round), missing))
    }

    /// First lines of a run: name, device, replicas, run dir and where it resumes (`done` of
    /// `total` rounds on disk); the round whose rows were `missing`, if any; and, on the CPU,
    /// advice when other `lth` processes share the cores.
    fn announce(
        &self,
        progress: &Progress,
        opts: &RunOptions,
        (done, total): (u32, u32),
        missing: Option<(u32, &str)>,
    ) {
        let resuming = if done >= total {
            " (already complete)".to_string()
        } else if done > 0 {
            format!(" (resuming at round {done})")
        } else {
            String::new()
        };
        let device = match self.device {
            Device::Cpu => match tch::get_num_threads() {
                1 => "cpu (1 thread)".to_string(),
                n => format!("cpu ({n} threads)"),
            },
            Device::Cuda(i) => format!("cuda:{i}"),
            other => format!("{other:?}").to_lowercase(),
        };
        progress.line(&format!(
            "lth: {} on {device}, {} replica(s), run dir {}{resuming}",
            self.exp.name,
            self.exp.replicas(),
            self.dir.root().display(),
        ));
        if let Some((round, file)) = missing {
            progress.line(&format!(
                "lth: {file} lacks (or repeats) rows of round {round}, which progress.toml counts as complete: it is trained again"
            ));
        }
        self.advise_threads(progress, opts);
    }

    /// On the CPU, with libtorch's default of one thread per core, says so when other `lth`
    /// processes run on the machine: their threads then outnumber the cores, and libgomp's
    /// waiting threads spin against each other (two LeNet runs on 2 cores trained 3.5x slower
    /// each with 2 threads than with `--threads 1`; BENCHMARKS.md).
    fn advise_threads(&self, progress: &Progress, opts: &RunOptions) {
        if self.device != Device::Cpu || opts.threads_chosen {
            return;
        }
        let others = crate::platform::other_processes_named("lth");
        if others > 0 {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            progress.line(&format!(
                "lth: {others} other lth process(es) running on this machine: give each run `--threads` so that all add up to the {cores} cores, or they slow each other down several times (BENCHMARKS.md)"
            ));
        }
    }

    fn keep_rounds_below(&mut self, done: u32) {
        for table in [
            &mut self.rounds,
            &mut self.curves,
            &mut self.layers,
            &mut self.timings,
        ] {
            table.keep_rounds_below(done);
        }
    }

    fn arm_name(&self, m: Member) -> &str {
        &self.exp.arms[m.arm].name
    }

    /// Replicas of a pruned round, arm-major.
    fn members(&self) -> Vec<Member> {
        (0..self.exp.arms.len())
            .flat_map(|arm| self.exp.seeds.iter().map(move |&seed| Member { arm, seed }))
            .collect()
    }

    /// Replica-steps a round takes.
    fn round_steps(&self, round: u32) -> u64 {
        let seeds = self.exp.seeds.len() as u64;
        if round == 0 {
            return seeds * self.exp.train.iterations;
        }
        self.plans.iter().map(|p| seeds * (p.to - p.from)).sum()
    }

    fn trainer(&self) -> Trainer<'_> {
        Trainer {
            net: self.net.as_ref(),
            data: &self.data,
            cfg: &self.exp.train,
            augment: self.exp.data.augment.then_some(self.exp.data.crop_padding),
            device: self.device,
        }
    }

    /// Where a span of `round` (named `tag`) keeps its checkpoints, when the run takes them.
    fn checkpointing(&self, round: u32, tag: &str) -> Option<Checkpointing> {
        self.checkpoint_every.map(|every| Checkpointing {
            path: self.dir.checkpoint_path(round, tag),
            every,
        })
    }

    /// Trains one replica per seed from `start` under `masks` (round 0, or the gradual run).
    fn train_seeds(
        &self,
        start: &State,
        masks: &Tensor,
        span: &Span,
        what: &str,
        progress: &mut Progress,
        schedule: Option<&mut dyn MaskSchedule>,
    ) -> Result<SpanResult> {
        let seeds = &self.exp.seeds;
        let labels: Vec<String> = seeds.iter().map(|s| format!("seed {s} ({what})")).collect();
        let lrs = vec![
            LrPlan {
                base: self.exp.train.lr,
                scheduled: true,
            };
            seeds.len()
        ];
        let replicas = Replicas {
            start,
            masks,
            seeds,
            lrs: &lrs,
            labels: &labels,
            optimizer: None,
        };
        self.trainer().train(&replicas, span, progress, schedule)
    }

    /// Saves replica `r` of `state` (parameters and buffers) in PyTorch layout.
    fn save_state(&self, path: &Path, state: &State, r: usize) -> Result<()> {
        save_named(path, &state.named(r, self.net.layout()))
    }

    /// Saves replica `r`'s mask of the prunable parameters.
    fn save_mask(&self, path: &Path, masks: &Tensor, r: usize) -> Result<()> {
        let layout = self.net.layout();
        save_named(path, &replica_tensors(masks, r, layout, layout.prunable()))
    }

    /// Loads one replica's parameters and buffers (R = 1, CPU).
    fn load_state(&self, path: &Path) -> Result<State> {
        State::from_named(&load_named(path)?, self.net.layout(), path)
    }

    /// Adds one replica's rows for a round to the three result tables.
    fn record_replica(
        &mut self,
        m: Member,
        round: u32,
        counts: &[u64],
        evals: &[EvalPoint],
        column: usize,
        diverged: Option<u64>,
    ) {
        let layout = self.net.layout();
        let prunable: Vec<usize> = layout.prunable().collect();
        let id = ReplicaRound {
            arm: &self.exp.arms[m.arm].name,
            seed: m.seed,
            round,
            remaining: prunable.iter().map(|&i| counts[i]).sum(),
            total: layout.prunable_total() as u64,
        };
        self.rounds.push(id.rounds_row(evals, column, diverged));
        for row in id.curve_rows(evals, column) {
            self.curves.push(row);
        }
        for &i in &prunable {
            let spec = &layout.specs()[i];
            self.layers
                .push(id.layer_row(&spec.name, counts[i], spec.numel() as u64));
        }
    }

    fn save_tables(&self) -> Result<()> {
        self.curves.save()?;
        self.layers.save()?;
        self.rounds.save()
    }

    fn record_timing(&mut self, round: u32, steps: u64, seconds: f64) -> Result<()> {
        let replicas = if round == 0 {
            self.exp.seeds.len()
        } else {
            self.exp.replicas()
        };
        self.timings.push(vec![
            round.to_string(),
            replicas.to_string(),
            steps.to_string(),
            format!("{seconds:.3}"),
            format!("{:.1}", steps as f64 / seconds.max(1e-9)),
        ]);
        self.timings.save()
    }

    fn plot(&self, plots_dir: Option<&Path>) -> Result<()> {
        report::run_figure(
            &self.rounds,
            self.exp.prune.schedule,
            self.dir.root(),
            plots_dir,
        )
    }

    /// One line describing a finished round (mean over its rows) and, when given, the seconds
    /// it took.
    fn round_summary(&self, round: u32, last: u32, seconds: Option<f64>) -> String {
        let col = |name: &str| self.rounds.column(name).expect("rounds column");
        let (rc, pc, tc, ec) = (
            col("round"),
            col("weights_remaining_pct"),
            col("test_accuracy"),
            col("early_stop_test_accuracy"),
        );
        let rows: Vec<&Vec<String>> = self
            .rounds
            .rows()
            .iter()
            .filter(|r| r[rc] == round.to_string())
            .collect();
        let mean = |c: usize| {
            rows.iter()
                .filter_map(|r| r[c].parse::<f64>().ok())
                .sum::<f64>()
                / rows.len().max(1) as f64
        };
        format!(
            "round {round}/{last}: {:.2}% of weights left, test accuracy {:.4} (early stop {:.4}), mean of {} rows{}",
            mean(pc),
            mean(tc),
            mean(ec),
            rows.len(),
            seconds.map_or(String::new(), |s| format!(", {}s", num((s * 10.0).round() / 10.0)))
        )
    }
}
