//! The iterative and one-shot schedules: round 0 (the dense run of every seed, shared by all
//! arms), then one pruned round per target: masks for every replica, starting weights by arm,
//! retraining by cohort (replicas that train the same span together), then files and rows.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Instant;

use anyhow::Result;
use tch::{Kind, Tensor};

use super::kept_start::kept_start;
use super::masks::{round_masks, RoundMasks};
use super::run::Run;
use super::topology::TopologyUpdates;
use super::Member;
use crate::config::{rewind_points, LrPlan, Mask0, Mask1, PruneSchedule, StartWeights};
use crate::model::State;
use crate::progress::Progress;
use crate::prune;
use crate::record::run_tensors::RoundFiles;
use crate::rng::arm_round_index;
use crate::train::{EvalPoint, MaskSchedule, Optimizer, Replicas, Span, SpanResult};

/// What retraining a pruned round gave each member (indexed like the members).
struct Retrained {
    /// Final weights, stacked.
    finals: State,
    /// Final masks `[M, P]` (those of dynamic sparse arms changed during training).
    masks: Tensor,
    /// Each member's evaluation points (shared by its cohort) and its column in them.
    evals: Vec<(Rc<Vec<EvalPoint>>, usize)>,
    /// Each member's divergence iteration, if any.
    diverged: Vec<Option<u64>>,
    /// `topology.csv`'s rows of the round (dynamic `sparse` arms' updates).
    topology: Vec<Vec<String>>,
}

/// What a pruned round's members start from: their weights (before masking) and, where some
/// arm has a mask-0 action, the values the pruned positions hold frozen (`[M, P]` on the
/// device, zero at kept positions and for the other members).
struct Starts {
    weights: State,
    frozen: Option<Tensor>,
}

/// Replicas whose plans share this key (from, to, restored optimizer) train together.
type CohortKey = (u64, u64, Option<u64>);

impl Run<'_> {
    /// Iterative and one-shot schedules: round 0, then one round per target.
    pub(super) fn run_rounds(&mut self) -> Result<()> {
        let last = self.exp.pruned_rounds();
        let (done, missing) = self.rounds_done(last + 1)?;
        self.check_kept_files(done)?;
        self.keep_rounds_below(done);
        if missing.is_some() {
            // Rounds from `done` on are redone: the files and progress.toml say so from now,
            // so that a report meanwhile sees a partial run, not a damaged one.
            self.results.save()?;
            self.dir.set_rounds_completed(done)?;
        }
        self.dir.remove_checkpoints_except(Some(done))?;
        let total_steps: u64 = (done..=last).map(|r| self.round_steps(r)).sum();
        let mut progress = Progress::new(self.opts.progress, total_steps);
        self.announce(&progress, (done, last + 1), missing);
        for round in done..=last {
            let started = Instant::now();
            if round == 0 {
                self.dense_round(&mut progress)?;
            } else {
                self.pruned_round(round, &mut progress)?;
            }
            let seconds = started.elapsed().as_secs_f64();
            self.record_timing(round, self.round_steps(round), seconds)?;
            // The manifest first: a stop before progress.toml counts the round redoes it.
            self.dir.write_manifest(round..=round)?;
            self.dir.set_rounds_completed(round + 1)?;
            self.dir.remove_checkpoints_except(None)?;
            self.plot()?;
            progress.line(&self.round_summary(round, last, Some(seconds)));
        }
        if done > last {
            self.write_missing_manifest(last)?;
            self.plot()?;
            progress.line("lth: all rounds were already complete");
        }
        progress.finish();
        Ok(())
    }

    /// Round 0: every seed's dense network from θ₀, shared by all arms; θ_k and the optimizer
    /// state at every rewind point k are kept.
    fn dense_round(&mut self, progress: &mut Progress) -> Result<()> {
        let exp = self.exp;
        let layout = self.layout().clone();
        let theta0 = State::init(&layout, &exp.seeds, self.setup.device);
        for (r, &seed) in exp.seeds.iter().enumerate() {
            self.dir.save_theta(seed, 0, &theta0, r, &layout)?;
        }
        let masks = prune::dense_masks(&theta0.params);
        let span = Span {
            start: 0,
            end: exp.train.iterations,
            eval_every: exp.train.eval_every,
            snapshots: rewind_points(exp),
            snapshot_optimizer: self.plans.iter().any(|p| p.restore_optimizer.is_some()),
            mask_updates: Vec::new(),
            evaluate_mask_updates: false,
            checkpoint: self.checkpointing(0, "dense"),
        };
        progress.start_span(
            0,
            exp.pruned_rounds(),
            (span.start, span.end),
            exp.seeds.len(),
        );
        let result = self.train_seeds((&theta0, &masks), &span, "round 0", progress, None)?;
        for (r, &seed) in exp.seeds.iter().enumerate() {
            for snap in &result.snapshots {
                self.dir
                    .save_theta(seed, snap.iteration, &snap.state, r, &layout)?;
                if let Some(optimizer) = &snap.optimizer {
                    self.dir
                        .save_optimizer(seed, snap.iteration, optimizer, r)?;
                }
            }
            let files = RoundFiles {
                start: &theta0,
                weights: &result.state,
                masks: &masks,
            };
            self.dir.save_round(("", seed, 0), files, r, &layout)?;
        }
        let counts = prune::remaining(&masks, &layout, &self.setup.counted_units);
        for m in self.members() {
            let r = exp
                .seeds
                .iter()
                .position(|&s| s == m.seed)
                .expect("member seed");
            let trained = (0, exp.train.iterations);
            let evals = (&result.evals[..], r);
            self.record_replica((m, 0), &counts[r], evals, result.diverged[r], trained);
        }
        self.results.save()
    }

    /// Round `round` >= 1: masks for every replica, starting weights by arm, retraining by
    /// cohort, then files and rows.
    fn pruned_round(&mut self, round: u32, progress: &mut Progress) -> Result<()> {
        let layout = self.layout().clone();
        let members = self.members();
        let (prev, prev_masks) = self.pruned_weights(round, &members)?;
        let RoundMasks { masks, moved } = round_masks(self, round, &members, &prev, &prev_masks)?;
        // The weights the round pruned (w_f of a mask-0 action).
        let pruned = prev.params.shallow_clone();
        // Arms that keep their trained weights go on from the weights the criterion moved.
        let kept_weights = match moved {
            Some(params) => prev.with_params(params),
            None => prev,
        };
        let Starts { weights, frozen } =
            self.starts(round, &members, (&kept_weights, &pruned), &masks)?;
        let mut starts = weights.masked(&masks);
        if let Some(frozen) = &frozen {
            // The start file holds what training starts from, frozen values included.
            starts = starts.with_params(&starts.params + frozen);
        }
        let begin = (&starts, &masks, frozen.as_ref());
        let trained = self.retrain(round, &members, begin, progress)?;
        // What the round ends with (SNFS's redistribution moves counts between tensors).
        let counts = prune::remaining(&trained.masks, &layout, &self.setup.counted_units);
        for (r, &m) in members.iter().enumerate() {
            let files = RoundFiles {
                start: &starts,
                weights: &trained.finals,
                masks: &trained.masks,
            };
            let arm = self.arm_name(m).to_string();
            self.dir
                .save_round((&arm, m.seed, round), files, r, &layout)?;
        }
        for (r, &m) in members.iter().enumerate() {
            let (points, c) = &trained.evals[r];
            let plan = &self.plans[m.arm];
            let span = (plan.from, plan.to);
            self.record_replica(
                (m, round),
                &counts[r],
                (points, *c),
                trained.diverged[r],
                span,
            );
        }
        for row in trained.topology {
            self.results.topology.push(row);
        }
        self.results.save()
    }

    /// The weights and masks each member's round prunes, stacked on the device: its arm's
    /// previous round (iterative) or the dense run (one-shot).
    fn pruned_weights(&self, round: u32, members: &[Member]) -> Result<(State, Tensor)> {
        let layout = self.layout();
        let source_round = match self.exp.prune.schedule {
            PruneSchedule::OneShot => 0,
            _ => round - 1,
        };
        let mut prev = Vec::with_capacity(members.len());
        let mut prev_masks = Vec::with_capacity(members.len());
        for &m in members {
            let arm = self.arm_name(m);
            prev.push(self.dir.load_weights(arm, m.seed, source_round, layout)?);
            prev_masks.push(self.dir.load_mask(arm, m.seed, source_round, layout)?);
        }
        let device = self.setup.device;
        Ok((
            State::stack(&prev).to_device(device),
            Tensor::stack(&prev_masks, 0).to_device(device),
        ))
    }

    /// The weights each member starts its round from (before masking), stacked on the
    /// device, as its arm's plan says: θ_k (after a rewind arm's `mask1` action on what
    /// `masks` keeps), its own trained weights `prev` (as the criterion
    /// left them), or a fresh draw; and the frozen values of rewind arms' mask-0 actions, from
    /// the θ_k loaded for them and `pruned` (w_f, the weights the round pruned).
    fn starts(
        &self,
        round: u32,
        members: &[Member],
        (prev, pruned): (&State, &Tensor),
        masks: &Tensor,
    ) -> Result<Starts> {
        let layout = self.layout();
        let mut starts = Vec::with_capacity(members.len());
        let mut frozen: Vec<Option<Tensor>> = Vec::with_capacity(members.len());
        for (r, &m) in members.iter().enumerate() {
            let arm = &self.exp.arms[m.arm];
            frozen.push(None);
            starts.push(match self.plans[m.arm].start {
                StartWeights::Theta(k) => {
                    let theta = self.dir.load_theta(m.seed, k, layout)?;
                    // A rewind arm's mask-0 action: what its pruned weights hold, from w_i = θ_k
                    // and w_f, the weights its round pruned.
                    frozen[r] = match arm.mask0.unwrap_or_default() {
                        Mask0::Zero => None,
                        Mask0::FreezeInit => Some(theta.params.shallow_clone()),
                        Mask0::FreezeTowardZero => {
                            let w_i = &theta.params;
                            let w_f = pruned.get(r as i64).unsqueeze(0).to_device(w_i.device());
                            let away = w_f.abs().ge_tensor(&w_i.abs()).to_kind(w_i.kind());
                            Some(w_i * away)
                        }
                    };
                    // A rewind arm's mask-1 action on the kept weights (its mask is read back
                    // from the device only for an action other than `rewind`).
                    match arm.mask1.unwrap_or_default() {
                        Mask1::Rewind => theta,
                        action => {
                            let mask = masks.get(r as i64).unsqueeze(0);
                            let mask = mask.to_device(tch::Device::Cpu);
                            let index = arm_round_index(self.arm_name(m), round);
                            let draws = (m.seed, index);
                            let w = kept_start(action, (&theta.params, &mask), layout, draws);
                            theta.with_params(w)
                        }
                    }
                }
                StartWeights::Trained => prev.row(r).to_device(tch::Device::Cpu),
                StartWeights::Fresh => {
                    State::fresh(layout, m.seed, arm_round_index(self.arm_name(m), round))
                }
            });
        }
        let device = self.setup.device;
        // Zero for members without a mask-0 action, and at every kept position.
        let frozen = frozen.iter().any(Option::is_some).then(|| {
            let rows: Vec<Tensor> = frozen
                .into_iter()
                .map(|f| {
                    f.unwrap_or_else(|| {
                        Tensor::zeros([1, layout.total() as i64], (Kind::Float, tch::Device::Cpu))
                    })
                })
                .collect();
            let values = Tensor::cat(&rows, 0).to_device(device);
            &values * (1.0 - masks.to_kind(values.kind()))
        });
        Ok(Starts {
            weights: State::stack(&starts).to_device(device),
            frozen,
        })
    }

    /// Retrains every member from `starts` under `masks`, one cohort at a time.
    fn retrain(
        &self,
        round: u32,
        members: &[Member],
        (starts, masks, frozen): (&State, &Tensor, Option<&Tensor>),
        progress: &mut Progress,
    ) -> Result<Retrained> {
        let mut cohorts: BTreeMap<CohortKey, Vec<usize>> = BTreeMap::new();
        for (r, &m) in members.iter().enumerate() {
            cohorts
                .entry(self.plans[m.arm].cohort_key())
                .or_default()
                .push(r);
        }
        let mut finals: Vec<Option<State>> = (0..members.len()).map(|_| None).collect();
        let mut final_masks: Vec<Option<Tensor>> = (0..members.len()).map(|_| None).collect();
        let mut evals: Vec<Option<(Rc<Vec<EvalPoint>>, usize)>> =
            (0..members.len()).map(|_| None).collect();
        let mut diverged: Vec<Option<u64>> = vec![None; members.len()];
        let mut topology = Vec::new();
        for (&key, idx) in &cohorts {
            let cohort: Vec<Member> = idx.iter().map(|&r| members[r]).collect();
            let begin = (starts, masks, frozen);
            let (result, rows) = self.train_cohort(round, key, (idx, &cohort), begin, progress)?;
            topology.extend(rows);
            let shared = Rc::new(result.evals);
            for (c, &r) in idx.iter().enumerate() {
                finals[r] = Some(result.state.row(c));
                final_masks[r] = Some(result.masks.get(c as i64));
                evals[r] = Some((shared.clone(), c));
                diverged[r] = result.diverged[c];
            }
        }
        let masks = Tensor::stack(
            &final_masks
                .into_iter()
                .map(|t| t.expect("every member trained"))
                .collect::<Vec<_>>(),
            0,
        );
        Ok(Retrained {
            masks,
            finals: State::stack(
                &finals
                    .into_iter()
                    .map(|t| t.expect("every member trained"))
                    .collect::<Vec<_>>(),
            ),
            evals: evals
                .into_iter()
                .map(|e| e.expect("every member evaluated"))
                .collect(),
            diverged,
            topology,
        })
    }

    /// Trains one cohort (the members at `idx`) over its span, from its rows of `starts` and
    /// `masks`, with the optimizer state its plan restores.
    fn train_cohort(
        &self,
        round: u32,
        (from, to, restore): CohortKey,
        (idx, cohort): (&[usize], &[Member]),
        (starts, masks, frozen): (&State, &Tensor, Option<&Tensor>),
        progress: &mut Progress,
    ) -> Result<(SpanResult, Vec<Vec<String>>)> {
        let device = self.setup.device;
        let index = Tensor::from_slice(&idx.iter().map(|&r| r as i64).collect::<Vec<_>>())
            .to_device(device);
        let seeds: Vec<u64> = cohort.iter().map(|m| m.seed).collect();
        let lrs: Vec<LrPlan> = cohort.iter().map(|m| self.plans[m.arm].lr).collect();
        let labels: Vec<String> = cohort
            .iter()
            .map(|&m| format!("arm {} seed {} (round {round})", self.arm_name(m), m.seed))
            .collect();
        let saved = match restore {
            Some(k) => {
                let names = Optimizer::state_names(self.exp.train.optimizer);
                Some(self.dir.load_optimizers(&seeds, k, names, device)?)
            }
            None => None,
        };
        // Dynamic sparse arms (SET, RigL) update their topology during the span.
        let checkpointing = self.checkpointing(round, &cohort_tag(from, to, restore));
        let log = self.dir.topology_log(round, &cohort_tag(from, to, restore));
        let cohort_masks = masks.index_select(0, &index);
        let mut topology = TopologyUpdates::new(
            self,
            (round, cohort.to_vec()),
            (to, &cohort_masks),
            (&log, checkpointing.is_some()),
        )?;
        let mask_updates = if from == 0 {
            topology.steps()
        } else {
            Vec::new()
        };
        let span = Span {
            start: from,
            end: to,
            eval_every: self.exp.train.eval_every,
            snapshots: Vec::new(),
            snapshot_optimizer: false,
            mask_updates: mask_updates.clone(),
            evaluate_mask_updates: false,
            checkpoint: checkpointing,
        };
        let start = starts.select(&index);
        // Frozen values only for cohorts with a member that freezes (the others keep the
        // sparse kernels).
        let freezes = cohort
            .iter()
            .any(|m| self.exp.arms[m.arm].mask0.unwrap_or_default() != Mask0::Zero);
        let cohort_frozen = frozen
            .filter(|_| freezes)
            .map(|f| f.index_select(0, &index));
        let replicas = Replicas {
            frozen: cohort_frozen.as_ref(),
            start: &start,
            masks: &cohort_masks,
            seeds: &seeds,
            lrs: &lrs,
            labels: &labels,
            optimizer: saved.as_ref(),
        };
        progress.start_span(round, self.exp.pruned_rounds(), (from, to), idx.len());
        let schedule: Option<&mut dyn MaskSchedule> = if mask_updates.is_empty() {
            None
        } else {
            Some(&mut topology)
        };
        // A cohort from iteration 0 to other than `train.iterations` is of `sparse` arms
        // with their own length: the schedule stretched to it.
        let cfg = match from == 0 && to != self.exp.train.iterations {
            true => self.exp.train.stretched(to),
            false => self.exp.train.clone(),
        };
        let result = self.train_under(&cfg, &replicas, &span, progress, schedule)?;
        Ok((result, topology.into_rows()?))
    }
}

/// Names a cohort's checkpoint by what makes it a cohort.
fn cohort_tag(from: u64, to: u64, restore: Option<u64>) -> String {
    match restore {
        Some(k) => format!("from_{from}_to_{to}_optimizer_{k}"),
        None => format!("from_{from}_to_{to}"),
    }
}
