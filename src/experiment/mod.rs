//! The iterative-magnitude-pruning loop over a population of arms x seeds: train the dense
//! networks (round 0), then for each round prune every replica, reset it as its arm says,
//! retrain, and record. Each round starts from what is on disk, so a resumed run and an
//! uninterrupted one go through the same code and end with the same bytes.

mod device;
mod rows;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use tch::{Device, Tensor};

pub use device::{resolve_device, DeviceChoice};
pub use rows::{CURVES, LAYERS, ROUNDS, TIMINGS};

use crate::config::{config_hash, ArmKind, Experiment};
use crate::data::Dataset;
use crate::model::{self, init_population, Network};
use crate::progress::{Progress, ProgressMode};
use crate::prune::{self, PruneGroup};
use crate::record::tensors::{load_mask, load_params, replica_tensors, save_named};
use crate::record::{RunDir, Table};
use crate::report;
use crate::train::{EvalPoint, Replicas, Span, Trainer};
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
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            run_dir: None,
            plots_dir: Some(PathBuf::from("plots")),
            device: DeviceChoice::Auto,
            progress: ProgressMode::Auto,
        }
    }
}

/// The default run dir of an experiment: `runs/<name>-<hash of the resolved config>`.
pub fn default_run_dir(exp: &Experiment) -> PathBuf {
    Path::new("runs").join(format!("{}-{}", exp.name, config_hash(exp)))
}

/// One replica of a pruned round: an arm applied to a seed.
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
    dir: RunDir,
    device: Device,
    rounds: Table,
    curves: Table,
    layers: Table,
    timings: Table,
}

/// Runs (or resumes) an experiment and returns its run dir.
pub fn run(exp: &Experiment, opts: &RunOptions) -> Result<RunDir> {
    let device = resolve_device(opts.device)?;
    let dir = RunDir::at(opts.run_dir.clone().unwrap_or_else(|| default_run_dir(exp)));
    dir.check_owner(exp)?;
    let data = Dataset::load(
        Path::new(&exp.data.dir),
        exp.data.validation_size,
        exp.data.split_seed,
        device,
    )?;
    if exp.train.batch_size > data.train.len() {
        bail!(
            "invalid config: `train.batch_size` ({}) exceeds the {} training examples",
            exp.train.batch_size,
            data.train.len()
        );
    }
    let net = model::build(exp.model.arch, data.input_dim, data.num_classes);
    let groups = prune::groups(net.layout(), &exp.prune)?;
    dir.create(exp)?;
    let done = dir.rounds_completed()?.min(exp.prune.rounds + 1);
    let mut run = Run {
        rounds: Table::open(&dir.csv_path("rounds"), ROUNDS)?,
        curves: Table::open(&dir.csv_path("curves"), CURVES)?,
        layers: Table::open(&dir.csv_path("layers"), LAYERS)?,
        timings: Table::open(&dir.csv_path("timings"), TIMINGS)?,
        exp,
        data,
        net,
        groups,
        dir,
        device,
    };
    for table in [
        &mut run.rounds,
        &mut run.curves,
        &mut run.layers,
        &mut run.timings,
    ] {
        table.keep_rounds_below(done);
    }
    let total_steps: u64 = (done..=exp.prune.rounds).map(|r| run.round_steps(r)).sum();
    let mut progress = Progress::new(opts.progress, total_steps);
    progress.line(&format!(
        "lth: {} on {:?}, run dir {}{}",
        exp.name,
        device,
        run.dir.root().display(),
        if done > 0 {
            format!(" (resuming at round {done})")
        } else {
            String::new()
        }
    ));
    for round in done..=exp.prune.rounds {
        let started = Instant::now();
        run.round(round, &mut progress)?;
        let seconds = started.elapsed().as_secs_f64();
        run.record_timing(round, seconds)?;
        run.dir.set_rounds_completed(round + 1)?;
        run.plot(opts.plots_dir.as_deref())?;
        progress.line(&run.round_summary(round, seconds));
    }
    if done > exp.prune.rounds {
        run.plot(opts.plots_dir.as_deref())?;
        progress.line("lth: all rounds were already complete");
    }
    progress.finish();
    Ok(run.dir)
}

impl Run<'_> {
    fn arm_name(&self, m: Member) -> &str {
        &self.exp.arms[m.arm].name
    }

    /// Replicas trained in a pruned round, arm-major.
    fn members(&self) -> Vec<Member> {
        (0..self.exp.arms.len())
            .flat_map(|arm| self.exp.seeds.iter().map(move |&seed| Member { arm, seed }))
            .collect()
    }

    /// Schedule position a member's retraining starts from.
    fn start_iteration(&self, m: Member) -> u64 {
        match self.exp.arms[m.arm].kind {
            ArmKind::Rewind => self.exp.arms[m.arm].rewind_iteration,
        }
    }

    /// Population steps a round takes (one per cohort iteration).
    fn round_steps(&self, round: u32) -> u64 {
        let end = self.exp.train.iterations;
        if round == 0 {
            return end;
        }
        let starts: std::collections::BTreeSet<u64> = self
            .members()
            .into_iter()
            .map(|m| self.start_iteration(m))
            .collect();
        starts.into_iter().map(|s| end - s).sum()
    }

    fn trainer(&self) -> Trainer<'_> {
        Trainer {
            net: self.net.as_ref(),
            data: &self.data,
            cfg: &self.exp.train,
            device: self.device,
        }
    }

    fn round(&mut self, round: u32, progress: &mut Progress) -> Result<()> {
        if round == 0 {
            self.dense_round(progress)
        } else {
            self.pruned_round(round, progress)
        }
    }

    /// Round 0: every seed's dense network from theta_0, shared by all arms.
    fn dense_round(&mut self, progress: &mut Progress) -> Result<()> {
        let exp = self.exp;
        let layout = self.net.layout().clone();
        let all = || 0..layout.specs().len();
        let theta0 = init_population(&layout, &exp.seeds, self.device);
        for (r, &seed) in exp.seeds.iter().enumerate() {
            save_named(
                &self.dir.theta_path(seed, 0),
                &replica_tensors(&theta0, r, &layout, all()),
            )?;
        }
        let masks = prune::dense_masks(&theta0);
        let mut snapshots: Vec<u64> = exp
            .arms
            .iter()
            .map(|a| a.rewind_iteration)
            .filter(|&k| k > 0)
            .collect();
        snapshots.sort_unstable();
        snapshots.dedup();
        let span = Span {
            start: 0,
            end: exp.train.iterations,
            eval_every: exp.train.eval_every,
            snapshots,
        };
        let labels: Vec<String> = exp
            .seeds
            .iter()
            .map(|s| format!("seed {s} (round 0)"))
            .collect();
        let lrs = vec![exp.train.lr; exp.seeds.len()];
        progress.start_span(0, exp.prune.rounds, span.start, span.end);
        let replicas = Replicas {
            params: &theta0,
            masks: &masks,
            seeds: &exp.seeds,
            base_lrs: &lrs,
            labels: &labels,
        };
        let result = self.trainer().train(&replicas, &span, progress)?;
        for (r, &seed) in exp.seeds.iter().enumerate() {
            for (k, snap) in &result.snapshots {
                save_named(
                    &self.dir.theta_path(seed, *k),
                    &replica_tensors(snap, r, &layout, all()),
                )?;
            }
            save_named(
                &self.dir.weights_path("", seed, 0),
                &replica_tensors(&result.params, r, &layout, all()),
            )?;
            save_named(
                &self.dir.mask_path("", seed, 0),
                &replica_tensors(&masks, r, &layout, layout.prunable()),
            )?;
        }
        let counts = prune::remaining_counts(&masks, &layout);
        let rows: Vec<(Member, usize)> = self
            .members()
            .into_iter()
            .map(|m| {
                (
                    m,
                    exp.seeds
                        .iter()
                        .position(|&s| s == m.seed)
                        .expect("member seed"),
                )
            })
            .collect();
        for (m, r) in rows {
            self.record_replica(m, 0, &counts[r], &result.evals, r);
        }
        self.save_tables()
    }

    /// Round `round` >= 1: prune each replica's previous round, reset by arm, retrain.
    fn pruned_round(&mut self, round: u32, progress: &mut Progress) -> Result<()> {
        let layout = self.net.layout().clone();
        let members = self.members();
        let mut prev_params = Vec::with_capacity(members.len());
        let mut prev_masks = Vec::with_capacity(members.len());
        for &m in &members {
            let arm = self.arm_name(m);
            prev_params.push(load_params(
                &self.dir.weights_path(arm, m.seed, round - 1),
                &layout,
            )?);
            prev_masks.push(load_mask(
                &self.dir.mask_path(arm, m.seed, round - 1),
                &layout,
            )?);
        }
        let prev_params = Tensor::stack(&prev_params, 0).to_device(self.device);
        let prev_masks = Tensor::stack(&prev_masks, 0).to_device(self.device);
        let masks = prune::magnitude_prune(&prev_params, &prev_masks, &layout, &self.groups);
        let counts = prune::remaining_counts(&masks, &layout);

        let mut cohorts: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (r, &m) in members.iter().enumerate() {
            cohorts.entry(self.start_iteration(m)).or_default().push(r);
        }
        let mut finals: Vec<Option<Tensor>> = (0..members.len()).map(|_| None).collect();
        let mut evals: Vec<Option<(Vec<EvalPoint>, usize)>> =
            (0..members.len()).map(|_| None).collect();
        for (&start, idx) in &cohorts {
            let cohort: Vec<Member> = idx.iter().map(|&r| members[r]).collect();
            let mut starts = Vec::with_capacity(cohort.len());
            for m in &cohort {
                starts.push(load_params(&self.dir.theta_path(m.seed, start), &layout)?);
            }
            let params = Tensor::stack(&starts, 0).to_device(self.device);
            let index = Tensor::from_slice(&idx.iter().map(|&r| r as i64).collect::<Vec<_>>())
                .to_device(self.device);
            let cohort_masks = masks.index_select(0, &index);
            let seeds: Vec<u64> = cohort.iter().map(|m| m.seed).collect();
            let lrs = vec![self.exp.train.lr; cohort.len()];
            let labels: Vec<String> = cohort
                .iter()
                .map(|&m| format!("arm {} seed {} (round {round})", self.arm_name(m), m.seed))
                .collect();
            let span = Span {
                start,
                end: self.exp.train.iterations,
                eval_every: self.exp.train.eval_every,
                snapshots: Vec::new(),
            };
            progress.start_span(round, self.exp.prune.rounds, span.start, span.end);
            let replicas = Replicas {
                params: &params,
                masks: &cohort_masks,
                seeds: &seeds,
                base_lrs: &lrs,
                labels: &labels,
            };
            let result = self.trainer().train(&replicas, &span, progress)?;
            for (c, &r) in idx.iter().enumerate() {
                finals[r] = Some(result.params.get(c as i64));
                evals[r] = Some((result.evals.clone(), c));
            }
        }
        let finals = Tensor::stack(
            &finals
                .into_iter()
                .map(|t| t.expect("every member trained"))
                .collect::<Vec<_>>(),
            0,
        );
        for (r, &m) in members.iter().enumerate() {
            let arm = self.arm_name(m).to_string();
            save_named(
                &self.dir.weights_path(&arm, m.seed, round),
                &replica_tensors(&finals, r, &layout, 0..layout.specs().len()),
            )?;
            save_named(
                &self.dir.mask_path(&arm, m.seed, round),
                &replica_tensors(&masks, r, &layout, layout.prunable()),
            )?;
        }
        for (r, &m) in members.iter().enumerate() {
            let (points, c) = evals[r].as_ref().expect("every member evaluated");
            self.record_replica(m, round, &counts[r], points, *c);
        }
        self.save_tables()
    }

    /// Adds one replica's rows for a round to the three result tables.
    fn record_replica(
        &mut self,
        m: Member,
        round: u32,
        counts: &[u64],
        evals: &[EvalPoint],
        column: usize,
    ) {
        let layout = self.net.layout();
        let prunable: Vec<usize> = layout.prunable().collect();
        let remaining: u64 = prunable.iter().map(|&i| counts[i]).sum();
        let total = layout.prunable_total() as u64;
        let id = ReplicaRound {
            arm: &self.exp.arms[m.arm].name,
            seed: m.seed,
            round,
            remaining,
            total,
        };
        self.rounds.push(id.rounds_row(evals, column));
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

    fn record_timing(&mut self, round: u32, seconds: f64) -> Result<()> {
        let replicas = if round == 0 {
            self.exp.seeds.len()
        } else {
            self.exp.replicas()
        } as u64;
        let steps = if round == 0 {
            replicas * self.exp.train.iterations
        } else {
            self.members()
                .into_iter()
                .map(|m| self.exp.train.iterations - self.start_iteration(m))
                .sum()
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
        let name = "accuracy_vs_weights";
        report::accuracy_vs_weights(&self.rounds, &self.exp.name, &self.dir.root().join(name))?;
        if let Some(plots) = plots_dir {
            let run_name = self
                .dir
                .root()
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default();
            report::accuracy_vs_weights(
                &self.rounds,
                &self.exp.name,
                &plots.join(run_name).join(name),
            )?;
        }
        Ok(())
    }

    /// One line describing a finished round (mean over replicas).
    fn round_summary(&self, round: u32, seconds: f64) -> String {
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
            "round {round}/{}: {:.2}% of weights left, test accuracy {:.4} (early stop {:.4}), mean of {} replica rows, {}s",
            self.exp.prune.rounds,
            mean(pc),
            mean(tc),
            mean(ec),
            rows.len(),
            num((seconds * 10.0).round() / 10.0)
        )
    }
}
