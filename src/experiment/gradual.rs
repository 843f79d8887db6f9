//! The gradual schedule (Zhu & Gupta 2017): one training run per seed in which the masks are
//! tightened every `prune.gradual.every` iterations along the cubic schedule. Rows use the
//! columns of the other schedules: round 0 is the dense stretch up to the first pruning step,
//! round i the stretch after the i-th pruning step up to the next one (or the end of training).
//! The run is one span of training: a run stopped mid-way continues from its last checkpoint,
//! the stretches written before it read back from disk.

use std::time::Instant;

use anyhow::Result;
use tch::Tensor;

use super::{Member, Run, RunOptions};
use crate::config::GradualConfig;
use crate::model::{Layout, State};
use crate::progress::Progress;
use crate::prune::targets::{keep_for_target, removals};
use crate::prune::{self, prune_to_counts, remaining_counts, PruneGroup};
use crate::record::tensors::load_mask;
use crate::train::{EvalPoint, MaskSchedule, Snapshot, Span};

/// Masks set to the cubic schedule's sparsity at each pruning step, by magnitude.
pub struct GradualMasks<'a> {
    /// Parameter layout.
    pub layout: &'a Layout,
    /// Pruning groups.
    pub groups: &'a [PruneGroup],
    /// The schedule.
    pub cfg: &'a GradualConfig,
    /// `prune.fraction`, for layers with their own fraction (see `prune::targets`).
    pub default_fraction: f64,
}

impl GradualMasks<'_> {
    /// Weights each group keeps at iteration `t`.
    pub fn keep_at(&self, t: u64) -> Vec<u64> {
        let keep = 1.0 - self.cfg.sparsity_at(t);
        self.groups
            .iter()
            .map(|g| keep_for_target(g, self.layout, keep, self.default_fraction))
            .collect()
    }

    fn masks_at(&self, iteration: u64, params: &Tensor, masks: &Tensor) -> Tensor {
        let keep = self.keep_at(iteration);
        let remaining: Vec<Vec<u64>> = remaining_counts(masks, self.layout)
            .iter()
            .map(|c| self.groups.iter().map(|g| g.remaining(c)).collect())
            .collect();
        prune_to_counts(
            params,
            masks,
            self.layout,
            self.groups,
            &removals(&remaining, &keep),
        )
    }
}

impl MaskSchedule for GradualMasks<'_> {
    fn update(&mut self, iteration: u64, params: &Tensor, masks: &Tensor) -> Tensor {
        self.masks_at(iteration, params, masks)
    }
}

/// One stretch of the gradual run once written: where it ends and its per-replica counts.
struct Stretch {
    to: u64,
    counts: Vec<Vec<u64>>,
}

/// The schedule plus the writer of each stretch as soon as its snapshot arrives (the snapshot
/// at a pruning step holds the weights and masks that end the stretch before it), keeping one
/// snapshot in memory rather than all of them.
struct StreamingGradual<'a, 'r> {
    masks: GradualMasks<'a>,
    run: &'a Run<'r>,
    arm: String,
    previous: Option<State>,
    theta0: &'a State,
    stretches: Vec<Stretch>,
}

impl StreamingGradual<'_, '_> {
    /// Writes stretch `stretches.len()`: start weights, final weights and masks per seed.
    fn write(&mut self, finals: State, masks: &Tensor, to: u64) -> Result<()> {
        let round = self.stretches.len() as u32;
        let starts = match &self.previous {
            None => self.theta0.copy(),
            Some(previous) => previous.masked(masks),
        };
        let run = self.run;
        for (r, &seed) in run.exp.seeds.iter().enumerate() {
            run.save_state(&run.dir.start_path(&self.arm, seed, round), &starts, r)?;
            run.save_state(&run.dir.weights_path(&self.arm, seed, round), &finals, r)?;
            run.save_mask(&run.dir.mask_path(&self.arm, seed, round), masks, r)?;
        }
        self.stretches.push(Stretch {
            to,
            counts: remaining_counts(masks, self.masks.layout),
        });
        self.previous = Some(finals);
        Ok(())
    }
}

impl MaskSchedule for StreamingGradual<'_, '_> {
    fn update(&mut self, iteration: u64, params: &Tensor, masks: &Tensor) -> Tensor {
        self.masks.masks_at(iteration, params, masks)
    }

    fn snapshot(&mut self, snapshot: Snapshot) -> Result<Option<Snapshot>> {
        self.write(snapshot.state, &snapshot.masks, snapshot.iteration)?;
        Ok(None)
    }

    /// Reads back the stretches written up to `iteration` (every pruning step at or before
    /// a checkpoint was written before it was taken).
    fn resume(&mut self, iteration: u64) -> Result<()> {
        let run = self.run;
        let layout = self.masks.layout;
        let mut stretches = Vec::new();
        let mut previous = None;
        let ends = self
            .masks
            .cfg
            .steps()
            .into_iter()
            .filter(|&s| s <= iteration);
        for (round, to) in ends.enumerate() {
            let round = round as u32;
            let mut masks = Vec::new();
            let mut finals = Vec::new();
            for &seed in &run.exp.seeds {
                let path = run.dir.mask_path(&self.arm, seed, round);
                masks.push(load_mask(&path, layout)?);
                finals.push(run.load_state(&run.dir.weights_path(&self.arm, seed, round))?);
            }
            stretches.push(Stretch {
                to,
                counts: remaining_counts(&Tensor::stack(&masks, 0), layout),
            });
            previous = Some(State::stack(&finals).to_device(run.device));
        }
        // Only a complete read replaces the state (a failed one leaves it fresh).
        self.stretches = stretches;
        self.previous = previous;
        Ok(())
    }
}

impl Run<'_> {
    /// Trains every seed once under the gradual schedule and records one row per stretch.
    pub(super) fn run_gradual(&mut self, opts: &RunOptions) -> Result<()> {
        let exp = self.exp;
        let cfg = &exp.prune.gradual;
        let steps = cfg.steps();
        let last = steps.len() as u32;
        // Rows of the stretches are written together at the end: a run not done (or whose
        // rows were lost since) trains again from its start or its checkpoint.
        let (done, missing) = self.rounds_done(last + 1)?;
        let end = exp.train.iterations;
        let total = if done > last {
            0
        } else {
            exp.seeds.len() as u64 * end
        };
        let mut progress = Progress::new(opts.progress, total);
        // No round-level resume here: the banner says "complete" or nothing.
        let shown = if done > last { done } else { 0 };
        self.announce(&progress, opts, (shown, last + 1), missing);
        if done > last {
            self.dir.remove_checkpoints_except(None)?;
            self.plot(opts.plots_dir.as_deref())?;
            progress.line("lth: the gradual run was already complete");
            progress.finish();
            return Ok(());
        }
        self.keep_rounds_below(0);
        self.dir.remove_checkpoints_except(Some(0))?;
        let started = Instant::now();
        let layout = self.net.layout().clone();
        let theta0 = State::init(&layout, &exp.seeds, self.device);
        for (r, &seed) in exp.seeds.iter().enumerate() {
            self.save_state(&self.dir.theta_path(seed, 0), &theta0, r)?;
        }
        let dense = prune::dense_masks(&theta0.params);
        let span = Span {
            start: 0,
            end,
            eval_every: exp.train.eval_every,
            snapshots: steps.clone(),
            snapshot_optimizer: false,
            mask_updates: steps,
            checkpoint: self.checkpointing(0, "gradual"),
        };
        let mut stream = StreamingGradual {
            masks: GradualMasks {
                layout: &layout,
                groups: &self.groups,
                cfg,
                default_fraction: exp.prune.fraction,
            },
            run: self,
            arm: exp.arms[0].name.clone(),
            previous: None,
            theta0: &theta0,
            stretches: Vec::new(),
        };
        progress.start_span(0, last, (0, end), exp.seeds.len());
        let result = self.train_seeds(
            &theta0,
            &dense,
            &span,
            "gradual",
            &mut progress,
            Some(&mut stream),
        )?;
        // The last stretch ends with training.
        stream.write(result.state, &result.masks, end)?;
        let stretches = stream.stretches;

        let mut from = 0;
        for (i, stretch) in stretches.iter().enumerate() {
            let evals: Vec<EvalPoint> = result
                .evals
                .iter()
                .filter(|e| {
                    (e.iteration > from || (i == 0 && e.iteration == 0))
                        && e.iteration <= stretch.to
                })
                .cloned()
                .collect();
            for (r, &seed) in exp.seeds.iter().enumerate() {
                let diverged = result.diverged[r].filter(|&t| t <= stretch.to);
                self.record_replica(
                    Member { arm: 0, seed },
                    i as u32,
                    &stretch.counts[r],
                    &evals,
                    r,
                    diverged,
                );
            }
            from = stretch.to;
        }
        self.save_tables()?;
        let seconds = started.elapsed().as_secs_f64();
        self.record_timing(0, total, seconds)?;
        self.dir.set_rounds_completed(last + 1)?;
        self.dir.remove_checkpoints_except(None)?;
        self.plot(opts.plots_dir.as_deref())?;
        // One training for every stretch: its time goes on the last line only.
        for round in 0..=last {
            let time = (round == last).then_some(seconds);
            progress.line(&self.round_summary(round, last, time));
        }
        progress.finish();
        Ok(())
    }
}
