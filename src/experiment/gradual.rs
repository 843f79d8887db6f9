//! The gradual schedule (Zhu & Gupta 2017): one training run per seed in which the masks are
//! tightened every `prune.gradual.every` iterations along the cubic schedule (of weights, or
//! of whole units under structured pruning). Rows use the
//! columns of the other schedules: round 0 is the dense stretch up to the first pruning step,
//! round i the stretch after the i-th pruning step up to the next one (or the end of training).
//! The run is one span of training: a run stopped mid-way continues from its last checkpoint,
//! the stretches written before it read back from disk.

use std::time::Instant;

use anyhow::Result;
use tch::Tensor;

use super::run::Run;
use super::Member;
use crate::config::GradualConfig;
use crate::model::{Layout, State};
use crate::progress::Progress;
use crate::prune::structured::{self, UnitSchedule};
use crate::prune::{self, prune_to_keep, targets, Criterion, PruneGroup, Remaining};
use crate::record::run_tensors::RoundFiles;
use crate::train::{EvalPoint, MaskSchedule, Snapshot, Span, SpanResult};

/// Masks set to the cubic schedule's sparsity at each pruning step, ranked by the criterion.
struct GradualMasks<'a> {
    layout: &'a Layout,
    groups: &'a [PruneGroup],
    cfg: &'a GradualConfig,
    /// `prune.fraction`, for layers with their own fraction (see `prune::targets`).
    default_fraction: f64,
}

impl GradualMasks<'_> {
    /// Weights each group keeps at iteration `t`.
    fn keep_at(&self, t: u64) -> Vec<u64> {
        let keep = 1.0 - self.cfg.sparsity_at(t);
        self.groups
            .iter()
            .map(|g| targets::keep_for_target(g, self.layout, keep, self.default_fraction))
            .collect()
    }

    fn masks_at(
        &self,
        criterion: &mut dyn Criterion,
        iteration: u64,
        state: &State,
        masks: &Tensor,
    ) -> Tensor {
        let keep = self.keep_at(iteration);
        prune_to_keep(
            criterion,
            state,
            masks,
            self.layout,
            self.groups,
            |remaining| vec![keep; remaining.len()],
        )
    }
}

/// One stretch of the gradual run once written: where it ends and its per-replica counts.
struct Stretch {
    to: u64,
    counts: Vec<Remaining>,
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
        let files = RoundFiles {
            start: &starts,
            weights: &finals,
            masks,
        };
        for (r, &seed) in run.exp.seeds.iter().enumerate() {
            run.dir
                .save_round((&self.arm, seed, round), files, r, self.masks.layout)?;
        }
        self.stretches.push(Stretch {
            to,
            counts: prune::remaining(masks, self.masks.layout, &run.setup.counted_units),
        });
        self.previous = Some(finals);
        Ok(())
    }
}

impl MaskSchedule for StreamingGradual<'_, '_> {
    fn update(
        &mut self,
        iteration: u64,
        state: &State,
        masks: &Tensor,
        _dense_momentum: Option<&Tensor>,
    ) -> Tensor {
        let run = self.run;
        let units = &run.setup.units;
        if !units.is_empty() {
            // Whole units, down to the schedule's share of them.
            let (layout, prune) = (self.masks.layout, &run.exp.prune);
            let data = run.score_data(&run.exp.seeds, iteration);
            let batch_size = run.exp.train.batch_size;
            let scores =
                structured::score_units(units, layout, prune, &data, (state, masks), batch_size);
            let schedule = UnitSchedule::Share(1.0 - self.masks.cfg.sparsity_at(iteration));
            return structured::prune_units_by(units, layout, (prune, schedule), &scores, masks);
        }
        // The criteria over (w_i, w_f) compare with θ₀, where the gradual run started.
        let init = run
            .exp
            .prune
            .criterion
            .reads_init()
            .then(|| self.theta0.params.shallow_clone());
        let mut criterion = self.run.criterion(&self.run.exp.seeds, iteration, init);
        self.masks
            .masks_at(criterion.as_mut(), iteration, state, masks)
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
                masks.push(run.dir.load_mask(&self.arm, seed, round, layout)?);
                finals.push(run.dir.load_weights(&self.arm, seed, round, layout)?);
            }
            stretches.push(Stretch {
                to,
                counts: prune::remaining(
                    &Tensor::stack(&masks, 0),
                    layout,
                    &run.setup.counted_units,
                ),
            });
            previous = Some(State::stack(&finals).to_device(run.setup.device));
        }
        // Only a complete read replaces the state (a failed one leaves it fresh).
        self.stretches = stretches;
        self.previous = previous;
        Ok(())
    }
}

impl Run<'_> {
    /// Trains every seed once under the gradual schedule and records one row per stretch.
    pub(super) fn run_gradual(&mut self) -> Result<()> {
        let last = self.exp.prune.gradual.steps().len() as u32;
        // Rows of the stretches are written together at the end: a run not done (or whose
        // rows were lost since) trains again from its start or its checkpoint.
        let (done, missing) = self.rounds_done(last + 1)?;
        // An incomplete gradual run trains again from its start (or its checkpoint): only a
        // complete one keeps files.
        self.check_kept_files(if done > last { done } else { 0 })?;
        let total = if done > last {
            0
        } else {
            self.exp.seeds.len() as u64 * self.exp.train.iterations
        };
        let mut progress = Progress::new(self.opts.progress, total);
        // No round-level resume here: the banner says "complete" or nothing.
        let shown = if done > last { done } else { 0 };
        self.announce(&progress, (shown, last + 1), missing);
        if done > last {
            self.write_missing_manifest(last)?;
            self.dir.remove_checkpoints_except(None)?;
            self.plot()?;
            progress.line("lth: the gradual run was already complete");
            progress.finish();
            return Ok(());
        }
        self.keep_rounds_below(0);
        self.dir.remove_checkpoints_except(Some(0))?;
        let started = Instant::now();
        let (result, stretches) = self.train_gradual(&mut progress)?;
        self.record_stretches(&result, &stretches);
        self.results.save()?;
        let seconds = started.elapsed().as_secs_f64();
        self.record_timing(0, total, seconds)?;
        self.dir.write_manifest(0..=last)?;
        self.dir.set_rounds_completed(last + 1)?;
        self.dir.remove_checkpoints_except(None)?;
        self.plot()?;
        // One training for every stretch: its time goes on the last line only.
        for round in 0..=last {
            let time = (round == last).then_some(seconds);
            progress.line(&self.round_summary(round, last, time));
        }
        progress.finish();
        Ok(())
    }

    /// The one training of every seed from θ₀, each stretch's files written as it ends.
    fn train_gradual(&self, progress: &mut Progress) -> Result<(SpanResult, Vec<Stretch>)> {
        let exp = self.exp;
        let cfg = &exp.prune.gradual;
        let steps = cfg.steps();
        let end = exp.train.iterations;
        let layout = self.layout().clone();
        let theta0 = State::init(&layout, &exp.seeds, self.setup.device);
        for (r, &seed) in exp.seeds.iter().enumerate() {
            self.dir.save_theta(seed, 0, &theta0, r, &layout)?;
        }
        let dense = prune::dense_masks(&theta0.params);
        let span = Span {
            start: 0,
            end,
            eval_every: exp.train.eval_every,
            snapshots: steps.clone(),
            snapshot_optimizer: false,
            mask_updates: steps.clone(),
            evaluate_mask_updates: true,
            checkpoint: self.checkpointing(0, "gradual"),
        };
        let mut stream = StreamingGradual {
            masks: GradualMasks {
                layout: &layout,
                groups: &self.setup.groups,
                cfg,
                default_fraction: exp.prune.fraction,
            },
            run: self,
            arm: exp.arms[0].name.clone(),
            previous: None,
            theta0: &theta0,
            stretches: Vec::new(),
        };
        progress.start_span(0, steps.len() as u32, (0, end), exp.seeds.len());
        let result = self.train_seeds(
            (&theta0, &dense),
            &span,
            "gradual",
            progress,
            Some(&mut stream),
        )?;
        // The last stretch ends with training.
        let finals = State {
            params: result.state.params.shallow_clone(),
            buffers: result
                .state
                .buffers
                .iter()
                .map(|b| b.shallow_clone())
                .collect(),
        };
        stream.write(finals, &result.masks, end)?;
        Ok((result, stream.stretches))
    }

    /// One row per seed and stretch: the evaluation points within the stretch (the first
    /// stretch also holds iteration 0), its counts, and a divergence up to its end.
    fn record_stretches(&mut self, result: &SpanResult, stretches: &[Stretch]) {
        let exp = self.exp;
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
                let m = Member { arm: 0, seed };
                let trained = (from, stretch.to);
                self.record_replica(
                    (m, i as u32),
                    &stretch.counts[r],
                    (&evals, r),
                    diverged,
                    trained,
                );
            }
            from = stretch.to;
        }
    }
}
