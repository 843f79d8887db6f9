//! A run in progress: what was loaded for it, and what every schedule does with it (who the
//! replicas are, how a group of them trains, what a finished round prints and records).

use std::cell::Cell;
use std::rc::Rc;

use anyhow::Result;
use tch::{Device, Tensor};

use super::{train_cost, Member, RunOptions};
use crate::config::{ArmPlan, Experiment, LrPlan, TrainConfig};
use crate::data::Dataset;
use crate::model::{Layout, Network, State, UnitLayer};
use crate::progress::Progress;
use crate::prune::{self, Criterion, PruneGroup, Remaining, ScoreData};
use crate::record::results::ReplicaRow;
use crate::record::rows::num;
use crate::record::{Results, RunDir, Table, TableCheck};
use crate::train::{Checkpointing, EvalPoint, MaskSchedule, Replicas, Span, SpanResult, Trainer};

/// What a run trains on and with: the data on its device, the network and its pruning groups.
pub(super) struct Setup {
    pub(super) data: Dataset,
    pub(super) net: Box<dyn Network>,
    pub(super) groups: Vec<PruneGroup>,
    /// The unit layers structured pruning removes units of (empty for single weights).
    pub(super) units: Vec<UnitLayer>,
    /// Every unit layer of the network (whose units `rounds.csv` counts).
    pub(super) counted_units: Vec<UnitLayer>,
    /// Per parameter, the output positions each entry is used at per example (for
    /// `flops_remaining`), where the network says.
    pub(super) positions: Option<Vec<i64>>,
    pub(super) device: Device,
}

/// The loaded pieces of a run.
pub(super) struct Run<'a> {
    pub(super) exp: &'a Experiment,
    pub(super) setup: Setup,
    /// Each arm's plan, in config order.
    pub(super) plans: Vec<ArmPlan>,
    pub(super) dir: RunDir,
    pub(super) results: Results,
    pub(super) timings: Table,
    pub(super) opts: &'a RunOptions,
    /// Replicas that ran sparse in the round being trained (`train.sparse_kernels`), summed
    /// over its spans, for its row of `timings.csv`.
    pub(super) sparse_replicas: Cell<usize>,
}

impl Run<'_> {
    /// The network's parameter layout.
    pub(super) fn layout(&self) -> &Layout {
        self.setup.net.layout()
    }

    /// The criterion that ranks the weights of arms that prune their own (the one place a
    /// run picks it: a criterion that needs the network or the data is built here from
    /// `setup`), for replicas of `seeds` (in population order) at scoring `index` (the
    /// round, or a gradual pruning step's iteration); `init` `[R, P]`, the weights each one
    /// rewinds to, for the criteria over (w_i, w_f).
    pub(super) fn criterion(
        &self,
        seeds: &[u64],
        index: u64,
        init: Option<Tensor>,
    ) -> Box<dyn Criterion + '_> {
        let prune = &self.exp.prune;
        let data = self.score_data(seeds, index);
        prune::build_criterion(
            prune.criterion,
            prune,
            self.exp.train.batch_size,
            data,
            init,
        )
    }

    /// Where scoring `index` (the round) of the replicas of `seeds` draws its training
    /// examples.
    pub(super) fn score_data(&self, seeds: &[u64], index: u64) -> ScoreData<'_> {
        ScoreData {
            net: self.setup.net.as_ref(),
            train: &self.setup.data.train,
            seeds: seeds.to_vec(),
            index,
        }
    }

    pub(super) fn arm_name(&self, m: Member) -> &str {
        &self.exp.arms[m.arm].name
    }

    /// Replicas of a pruned round, arm-major.
    pub(super) fn members(&self) -> Vec<Member> {
        (0..self.exp.arms.len())
            .flat_map(|arm| self.exp.seeds.iter().map(move |&seed| Member { arm, seed }))
            .collect()
    }

    /// Rounds already done: `progress.toml`'s count (of `total`), cut back to the first round
    /// whose rows a table lacks or repeats, if any (a file cut or edited after the run wrote
    /// it; from there the rounds run again, to the same bytes). Returns the count, and that
    /// round with the table's name. Rows of an arm or seed the config lacks are refused.
    pub(super) fn rounds_done(&self, total: u32) -> Result<(u32, Option<(u32, &'static str)>)> {
        let recorded = self.dir.rounds_completed(total)?;
        let members = self.exp.row_keys();
        self.results.check_members(&members)?;
        let topology = self.exp.topology_row_keys();
        let missing = self
            .results
            .first_incomplete_round((&members, &topology), recorded);
        Ok((missing.map_or(recorded, |(round, _)| round), missing))
    }

    /// Before anything is written: checks the files of the `kept` rounds (those the run does
    /// not redo) against the run dir's manifest, the CSVs by their rows of those rounds.
    pub(super) fn check_kept_files(&self, kept: u32) -> Result<()> {
        self.dir.verify_manifest(kept, TableCheck::Prefix)
    }

    /// Writes the manifest of a run dir that is complete and has none (made before
    /// manifests): from now on its files are checked.
    pub(super) fn write_missing_manifest(&self, last: u32) -> Result<()> {
        if self.dir.has_manifest() {
            return Ok(());
        }
        self.dir.write_manifest(last..=last)
    }

    /// Drops the rows (results and timings) of the rounds from `done` on.
    pub(super) fn keep_rounds_below(&mut self, done: u32) {
        self.results.keep_rounds_below(done);
        self.timings.keep_rounds_below(done);
    }

    /// Replica-steps a round takes.
    pub(super) fn round_steps(&self, round: u32) -> u64 {
        crate::config::round_replica_steps(self.exp, &self.plans, round)
    }

    /// Trains a span of replicas, counting those that ran sparse for `timings.csv`.
    pub(super) fn train(
        &self,
        replicas: &Replicas<'_>,
        span: &Span,
        progress: &mut Progress,
        schedule: Option<&mut dyn MaskSchedule>,
    ) -> Result<SpanResult> {
        self.train_under(&self.exp.train, replicas, span, progress, schedule)
    }

    /// [`Run::train`] under the training settings `cfg` (a `sparse` arm's stretched schedule).
    pub(super) fn train_under(
        &self,
        cfg: &TrainConfig,
        replicas: &Replicas<'_>,
        span: &Span,
        progress: &mut Progress,
        schedule: Option<&mut dyn MaskSchedule>,
    ) -> Result<SpanResult> {
        let result = self
            .trainer(cfg)
            .train(replicas, span, progress, schedule)?;
        self.sparse_replicas
            .set(self.sparse_replicas.get() + result.sparse_replicas);
        Ok(result)
    }

    fn trainer<'c>(&'c self, cfg: &'c TrainConfig) -> Trainer<'c> {
        Trainer {
            net: self.setup.net.as_ref(),
            data: &self.setup.data,
            cfg,
            augment: self.exp.data.augment.then_some(self.exp.data.crop_padding),
            device: self.setup.device,
        }
    }

    /// Where a span of `round` (named `tag`) keeps its checkpoints, when the run takes them.
    pub(super) fn checkpointing(&self, round: u32, tag: &str) -> Option<Checkpointing> {
        self.opts.checkpoint_every.map(|every| Checkpointing {
            store: Rc::new(self.dir.checkpoint_file(round, tag)),
            every,
        })
    }

    /// Trains one replica per seed from `start` under `masks` (round 0, or the gradual run).
    pub(super) fn train_seeds(
        &self,
        (start, masks): (&State, &Tensor),
        span: &Span,
        what: &str,
        progress: &mut Progress,
        schedule: Option<&mut dyn MaskSchedule>,
    ) -> Result<SpanResult> {
        let seeds = &self.exp.seeds;
        let labels: Vec<String> = seeds.iter().map(|s| format!("seed {s} ({what})")).collect();
        let lrs = vec![LrPlan::scheduled(self.exp.train.lr); seeds.len()];
        let replicas = Replicas {
            frozen: None,
            start,
            masks,
            seeds,
            lrs: &lrs,
            labels: &labels,
            optimizer: None,
        };
        self.train(&replicas, span, progress, schedule)
    }

    /// The multiply-adds of `m`'s training over iterations `trained` (`from`, `to`) of
    /// `round` under `counts`, and of every training its network of that round needed (the
    /// earlier rounds' from their rows: `None` where one lacks it); both `None` for networks
    /// that do not count their multiply-adds.
    fn train_flops(
        &self,
        m: Member,
        round: u32,
        counts: &[u64],
        (from, to): (u64, u64),
    ) -> (Option<u64>, Option<u64>) {
        let Some(at) = self.setup.positions.as_deref() else {
            return (None, None);
        };
        let layout = self.layout();
        let all: Vec<u64> = layout.specs().iter().map(|s| s.numel() as u64).collect();
        let arm = &self.exp.arms[m.arm];
        let gradients = if round == 0 {
            0
        } else {
            train_cost::dense_gradients(arm, from, to)
        };
        let (forward, dense) = (
            train_cost::forward_macs(layout, at, counts),
            train_cost::forward_macs(layout, at, &all),
        );
        let batch = self.exp.train.batch_size as u64;
        let own = match round > 0 && train_cost::dense_at_every_step(arm) {
            true => train_cost::snfs_macs(forward, dense, to - from, batch),
            false => train_cost::training_macs(forward, dense, to - from, batch, gradients),
        };
        let cumulative = train_cost::rounds_paid(arm, self.exp.prune.schedule, round)
            .into_iter()
            .map(|r| match r == round {
                true => Some(own),
                false => self.results.train_flops(&arm.name, m.seed, r),
            })
            .sum();
        (Some(own), cumulative)
    }

    /// Adds one replica's rows for a round to the result tables; `trained` is the span of
    /// iterations (`from`, `to`) its training of the round covered.
    pub(super) fn record_replica(
        &mut self,
        (m, round): (Member, u32),
        remaining: &Remaining,
        evals: (&[EvalPoint], usize),
        diverged: Option<u64>,
        trained: (u64, u64),
    ) {
        let train_flops = self.train_flops(m, round, &remaining.counts, trained);
        let row = ReplicaRow {
            arm: &self.exp.arms[m.arm].name,
            seed: m.seed,
            round,
            counts: &remaining.counts,
            units: remaining.units,
            positions: self.setup.positions.as_deref(),
            evals: evals.0,
            column: evals.1,
            diverged,
            train_flops,
        };
        self.results.push_replica(self.setup.net.layout(), &row);
    }

    /// Records the wall-clock time of `round` in `timings.csv`.
    pub(super) fn record_timing(&mut self, round: u32, steps: u64, seconds: f64) -> Result<()> {
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
            self.sparse_replicas.take().to_string(),
        ]);
        self.timings.save()
    }

    /// Draws the run's figure, when the run has one.
    pub(super) fn plot(&self) -> Result<()> {
        match &self.opts.figure {
            Some(figure) => figure.draw(&self.dir, &self.results.rounds, self.exp.prune.schedule),
            None => Ok(()),
        }
    }

    /// First lines of a run: name, device, replicas, run dir and where it resumes (`done` of
    /// `total` rounds on disk); the round whose rows were `missing`, if any; and, on the CPU,
    /// advice when other `lth` processes share the cores.
    pub(super) fn announce(
        &self,
        progress: &Progress,
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
        let device = match self.setup.device {
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
        self.advise_threads(progress);
    }

    /// On the CPU, with libtorch's default of one thread per core, says so when other `lth`
    /// processes run on the machine: their threads then outnumber the cores, and libgomp's
    /// waiting threads spin against each other (two LeNet runs on 2 cores trained 3.5x slower
    /// each with 2 threads than with `--threads 1`; BENCHMARKS.md).
    fn advise_threads(&self, progress: &Progress) {
        if self.setup.device != Device::Cpu || self.opts.threads_chosen {
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

    /// One line describing a finished round (mean over its rows) and, when given, the seconds
    /// it took.
    pub(super) fn round_summary(&self, round: u32, last: u32, seconds: Option<f64>) -> String {
        let rounds = &self.results.rounds;
        let col = |name: &str| rounds.column(name).expect("rounds column");
        let (rc, pc, tc, ec) = (
            col("round"),
            col("weights_remaining_pct"),
            col("test_accuracy"),
            col("early_stop_test_accuracy"),
        );
        let rows: Vec<&Vec<String>> = rounds
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
