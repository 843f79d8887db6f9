//! Round 0 (the dense run of every seed, shared by all arms) and the pruned rounds of the
//! iterative and one-shot schedules.

use std::collections::BTreeMap;
use std::rc::Rc;

use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use super::masks::round_masks;
use super::plan::{rewind_points, StartWeights};
use super::{Member, Run};
use crate::config::PruneSchedule;
use crate::model::State;
use crate::progress::Progress;
use crate::prune;
use crate::record::tensors::{load_mask, load_named, save_named};
use crate::rng::arm_round_index;
use crate::train::{EvalPoint, LrPlan, OptimizerState, Replicas, Span};

impl Run<'_> {
    /// Round 0: every seed's dense network from θ₀, shared by all arms; θ_k and the optimizer
    /// state at every rewind point k are kept.
    pub(super) fn dense_round(&mut self, progress: &mut Progress) -> Result<()> {
        let exp = self.exp;
        let layout = self.net.layout().clone();
        let theta0 = State::init(&layout, &exp.seeds, self.device);
        for (r, &seed) in exp.seeds.iter().enumerate() {
            self.save_state(&self.dir.theta_path(seed, 0), &theta0, r)?;
        }
        let masks = prune::dense_masks(&theta0.params);
        let span = Span {
            start: 0,
            end: exp.train.iterations,
            eval_every: exp.train.eval_every,
            snapshots: rewind_points(exp),
            snapshot_optimizer: self.plans.iter().any(|p| p.restore_optimizer.is_some()),
            mask_updates: Vec::new(),
            checkpoint: self.checkpointing(0, "dense"),
        };
        progress.start_span(
            0,
            exp.pruned_rounds(),
            (span.start, span.end),
            exp.seeds.len(),
        );
        let result = self.train_seeds(&theta0, &masks, &span, "round 0", progress, None)?;
        for (r, &seed) in exp.seeds.iter().enumerate() {
            for snap in &result.snapshots {
                self.save_state(&self.dir.theta_path(seed, snap.iteration), &snap.state, r)?;
                if let Some(optimizer) = &snap.optimizer {
                    let state: Vec<(String, Tensor)> = optimizer
                        .tensors
                        .iter()
                        .map(|(n, t)| (n.clone(), t.get(r as i64).to_device(tch::Device::Cpu)))
                        .chain(std::iter::once((
                            "step".to_string(),
                            Tensor::from(optimizer.steps as f32),
                        )))
                        .collect();
                    save_named(&self.dir.optimizer_path(seed, snap.iteration), &state)?;
                }
            }
            self.save_state(&self.dir.start_path("", seed, 0), &theta0, r)?;
            self.save_state(&self.dir.weights_path("", seed, 0), &result.state, r)?;
            self.save_mask(&self.dir.mask_path("", seed, 0), &masks, r)?;
        }
        let counts = prune::remaining_counts(&masks, &layout);
        for m in self.members() {
            let r = exp
                .seeds
                .iter()
                .position(|&s| s == m.seed)
                .expect("member seed");
            self.record_replica(m, 0, &counts[r], &result.evals, r, result.diverged[r]);
        }
        self.save_tables()
    }

    /// Round `round` >= 1: masks for every replica, starting weights by arm, retraining by
    /// cohort (replicas that train the same span together), then files and rows.
    pub(super) fn pruned_round(&mut self, round: u32, progress: &mut Progress) -> Result<()> {
        let layout = self.net.layout().clone();
        let members = self.members();
        // The weights a round prunes: the arm's previous round (iterative) or the dense run.
        let source_round = match self.exp.prune.schedule {
            PruneSchedule::OneShot => 0,
            _ => round - 1,
        };
        let mut prev = Vec::with_capacity(members.len());
        let mut prev_masks = Vec::with_capacity(members.len());
        for &m in &members {
            let arm = self.arm_name(m);
            prev.push(self.load_state(&self.dir.weights_path(arm, m.seed, source_round))?);
            prev_masks.push(load_mask(
                &self.dir.mask_path(arm, m.seed, source_round),
                &layout,
            )?);
        }
        let prev = State::stack(&prev).to_device(self.device);
        let prev_masks = Tensor::stack(&prev_masks, 0).to_device(self.device);
        let masks = round_masks(self, round, &members, &prev.params, &prev_masks);
        let counts = prune::remaining_counts(&masks, &layout);

        let mut starts = Vec::with_capacity(members.len());
        for (r, &m) in members.iter().enumerate() {
            starts.push(match self.plans[m.arm].start {
                StartWeights::Theta(k) => self.load_state(&self.dir.theta_path(m.seed, k))?,
                StartWeights::Trained => prev.row(r).to_device(tch::Device::Cpu),
                StartWeights::Fresh => {
                    State::fresh(&layout, m.seed, arm_round_index(self.arm_name(m), round))
                }
            });
        }
        let starts = State::stack(&starts).to_device(self.device).masked(&masks);

        let mut cohorts: BTreeMap<(u64, u64, Option<u64>), Vec<usize>> = BTreeMap::new();
        for (r, &m) in members.iter().enumerate() {
            cohorts
                .entry(self.plans[m.arm].cohort_key())
                .or_default()
                .push(r);
        }
        let mut finals: Vec<Option<State>> = (0..members.len()).map(|_| None).collect();
        let mut evals: Vec<Option<(Rc<Vec<EvalPoint>>, usize)>> =
            (0..members.len()).map(|_| None).collect();
        let mut diverged: Vec<Option<u64>> = vec![None; members.len()];
        for (&(from, to, restore), idx) in &cohorts {
            let cohort: Vec<Member> = idx.iter().map(|&r| members[r]).collect();
            let index = Tensor::from_slice(&idx.iter().map(|&r| r as i64).collect::<Vec<_>>())
                .to_device(self.device);
            let seeds: Vec<u64> = cohort.iter().map(|m| m.seed).collect();
            let lrs: Vec<LrPlan> = cohort.iter().map(|m| self.plans[m.arm].lr).collect();
            let labels: Vec<String> = cohort
                .iter()
                .map(|&m| format!("arm {} seed {} (round {round})", self.arm_name(m), m.seed))
                .collect();
            let saved = match restore {
                Some(k) => Some(self.load_optimizer_states(&seeds, k)?),
                None => None,
            };
            let span = Span {
                start: from,
                end: to,
                eval_every: self.exp.train.eval_every,
                snapshots: Vec::new(),
                snapshot_optimizer: false,
                mask_updates: Vec::new(),
                checkpoint: self.checkpointing(round, &cohort_tag(from, to, restore)),
            };
            let start = starts.select(&index);
            let cohort_masks = masks.index_select(0, &index);
            let replicas = Replicas {
                start: &start,
                masks: &cohort_masks,
                seeds: &seeds,
                lrs: &lrs,
                labels: &labels,
                optimizer: saved.as_ref(),
            };
            progress.start_span(round, self.exp.pruned_rounds(), (from, to), idx.len());
            let result = self.trainer().train(&replicas, &span, progress, None)?;
            let shared = Rc::new(result.evals);
            for (c, &r) in idx.iter().enumerate() {
                finals[r] = Some(result.state.row(c));
                evals[r] = Some((shared.clone(), c));
                diverged[r] = result.diverged[c];
            }
        }
        let finals = State::stack(
            &finals
                .into_iter()
                .map(|t| t.expect("every member trained"))
                .collect::<Vec<_>>(),
        );
        for (r, &m) in members.iter().enumerate() {
            let arm = self.arm_name(m).to_string();
            self.save_state(&self.dir.start_path(&arm, m.seed, round), &starts, r)?;
            self.save_state(&self.dir.weights_path(&arm, m.seed, round), &finals, r)?;
            self.save_mask(&self.dir.mask_path(&arm, m.seed, round), &masks, r)?;
        }
        for (r, &m) in members.iter().enumerate() {
            let (points, c) = evals[r].as_ref().expect("every member evaluated");
            self.record_replica(m, round, &counts[r], points, *c, diverged[r]);
        }
        self.save_tables()
    }

    /// The optimizer states the dense runs of `seeds` saved at iteration `k`, stacked.
    fn load_optimizer_states(&self, seeds: &[u64], k: u64) -> Result<OptimizerState> {
        let names = crate::train::Optimizer::state_names(self.exp.train.optimizer);
        let mut rows: Vec<Vec<Tensor>> = names.iter().map(|_| Vec::new()).collect();
        let mut steps = 0;
        for &seed in seeds {
            let path = self.dir.optimizer_path(seed, k);
            let named = load_named(&path)?;
            let get = |name: &str| {
                named
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t.shallow_clone())
                    .with_context(|| format!("{} lacks `{name}`", path.display()))
            };
            for (slot, name) in rows.iter_mut().zip(names) {
                slot.push(get(name)?);
            }
            steps = get("step")?.to_kind(Kind::Float).double_value(&[]) as i32;
        }
        let tensors = names
            .iter()
            .zip(rows)
            .map(|(name, r)| {
                (
                    name.to_string(),
                    Tensor::stack(&r, 0).to_device(self.device),
                )
            })
            .collect();
        Ok(OptimizerState { tensors, steps })
    }
}

/// Names a cohort's checkpoint by what makes it a cohort.
fn cohort_tag(from: u64, to: u64, restore: Option<u64>) -> String {
    match restore {
        Some(k) => format!("from_{from}_to_{to}_optimizer_{k}"),
        None => format!("from_{from}_to_{to}"),
    }
}
