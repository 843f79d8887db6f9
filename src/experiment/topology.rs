//! The topology updates of dynamic `sparse` arms (SET, RigL, SNFS) during a pruned round's
//! training: a [`MaskSchedule`] over a cohort that, at each member's update steps, drops and
//! regrows weights in every pruned tensor ([`prune::topology::drop_and_grow`]; SNFS may split
//! the regrowth between tensors) and leaves every other member's mask as it is, and logs what each update did (`topology.csv`'s
//! rows). With checkpoints, the rows so far are kept beside the span's checkpoint, so that a
//! span resumed from it has every row before it.

use std::path::Path;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::run::Run;
use super::Member;
use crate::config::{GrowInit, SparseMethod};
use crate::model::State;
use crate::prune::prune_count;
use crate::prune::topology::{drop_and_grow, drop_then_grow, redistribute, Grow};
use crate::record::rows::{num, TOPOLOGY};
use crate::record::Table;
use crate::rng::{arm_round_index, param_index, stream, Purpose};
use crate::train::MaskSchedule;

/// The topology schedule of one cohort's span [0, `iterations`] in `round`.
pub(super) struct TopologyUpdates<'a, 'r> {
    run: &'a Run<'r>,
    round: u32,
    /// The cohort's members, row order.
    members: Vec<Member>,
    /// The span's length (the schedule's `train.iterations`).
    iterations: u64,
    /// Each member's update steps (empty for arms that keep their mask).
    steps: Vec<Vec<u64>>,
    /// Each member's mask at the span's start, a CPU row (empty for members that never
    /// update: only the others are read back).
    initial: Vec<Vec<f32>>,
    /// `topology.csv`'s rows of the span so far; saved at each update where the span takes
    /// checkpoints (`persist`).
    log: Table,
    persist: bool,
    /// The first failure to save `log`, reported when the rows are taken.
    error: Option<anyhow::Error>,
    /// Where regrown weights start, `[R, P]` on the device: θ₀ for members of arms with
    /// `grow_init = "init"`, zero for the others; `None` when no member regrows from θ₀.
    regrown: Option<Tensor>,
}

impl<'a, 'r> TopologyUpdates<'a, 'r> {
    /// The schedule of `members` (a cohort, row order) over [0, `iterations`] in `round`.
    /// `initial` `[M, P]` the members' masks at the span's start; the rows so far are kept at
    /// `log` (beside the span's checkpoint) when `persist`.
    pub(super) fn new(
        run: &'a Run<'r>,
        (round, members): (u32, Vec<Member>),
        (iterations, initial): (u64, &Tensor),
        (log, persist): (&Path, bool),
    ) -> Result<Self> {
        let steps: Vec<Vec<u64>> = members
            .iter()
            .map(|m| run.exp.arms[m.arm].topology_updates(iterations))
            .collect();
        let updating: Vec<i64> = (0..steps.len())
            .filter(|&r| !steps[r].is_empty())
            .map(|r| r as i64)
            .collect();
        let mut read = match updating.is_empty() {
            true => Vec::new(),
            false => {
                let index = Tensor::from_slice(&updating).to_device(initial.device());
                rows(&initial.index_select(0, &index))
            }
        }
        .into_iter();
        let initial = (0..steps.len())
            .map(|r| match steps[r].is_empty() {
                true => Vec::new(),
                false => read.next().expect("a row per updating member"),
            })
            .collect();
        // The rows of an earlier attempt count only when the span resumes (`resume`).
        let mut log = Table::open(log, TOPOLOGY)?;
        log.retain(|_| false);
        let from_init = |m: &Member| run.exp.arms[m.arm].grow_init == Some(GrowInit::Init);
        let regrown = match members.iter().any(from_init) {
            true => {
                let layout = run.layout();
                let rows = members
                    .iter()
                    .map(|m| match from_init(m) {
                        true => Ok(run.dir.load_theta(m.seed, 0, layout)?.params),
                        false => Ok(Tensor::zeros(
                            [1, layout.total() as i64],
                            (Kind::Float, tch::Device::Cpu),
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?;
                Some(Tensor::cat(&rows, 0).to_device(run.setup.device))
            }
            false => None,
        };
        Ok(Self {
            run,
            round,
            members,
            iterations,
            steps,
            initial,
            log,
            persist,
            error: None,
            regrown,
        })
    }

    /// The tensors the topology updates move (the pruned ones).
    fn pruned_tensors(&self) -> Vec<usize> {
        let groups = &self.run.setup.groups;
        groups.iter().flat_map(|g| g.params.clone()).collect()
    }

    /// The span's `topology.csv` rows: each update's, in order of iteration, then member,
    /// then tensor.
    pub(super) fn into_rows(self) -> Result<Vec<Vec<String>>> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.log.rows().to_vec()),
        }
    }

    /// The union of the members' update steps, ascending.
    pub(super) fn steps(&self) -> Vec<u64> {
        let mut steps: Vec<u64> = self.steps.concat();
        steps.sort_unstable();
        steps.dedup();
        steps
    }
}

/// Per tensor of `spans` in one member's `mask` row, (dropped, grown) under SNFS's
/// redistribution: each drops `round(fraction * active)` (at most its inactive positions), and
/// all those are regrown split by the tensors' mean |`momentum`| over their active weights
/// ([`redistribute`], each at most its inactive positions).
fn redistributed(
    mask: &[f32],
    momentum: &[f32],
    spans: &[std::ops::Range<usize>],
    fraction: f64,
) -> Vec<(usize, usize)> {
    let mut drops = Vec::with_capacity(spans.len());
    let mut caps = Vec::with_capacity(spans.len());
    let mut strengths = Vec::with_capacity(spans.len());
    for span in spans {
        let (m, g) = (&mask[span.clone()], &momentum[span.clone()]);
        let active = m.iter().filter(|&&v| v > 0.5).count();
        let inactive = m.len() - active;
        drops.push((prune_count(active as u64, fraction) as usize).min(inactive) as u64);
        caps.push(inactive as u64);
        let sum: f64 = m
            .iter()
            .zip(g)
            .filter(|(v, _)| **v > 0.5)
            .map(|(_, x)| f64::from(x.abs()))
            .sum();
        strengths.push(if active > 0 { sum / active as f64 } else { 0.0 });
    }
    let grows = redistribute(drops.iter().sum(), &strengths, &caps);
    drops
        .into_iter()
        .zip(grows)
        .map(|(d, g)| (d as usize, g as usize))
        .collect()
}

/// SNFS's momentum coefficient (Dettmers & Zettlemoyer 2019 train with momentum 0.9 and grow
/// by that momentum of the dense gradient).
pub const SNFS_MOMENTUM: f64 = 0.9;

/// Rows of a `[R, P]` tensor as float vectors on the CPU.
fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    let t = t.to_kind(Kind::Float).to_device(tch::Device::Cpu);
    Vec::<Vec<f32>>::try_from(&t).expect("a [R, P] table")
}

impl MaskSchedule for TopologyUpdates<'_, '_> {
    fn regrown_start(&self) -> Option<&Tensor> {
        self.regrown.as_ref()
    }

    fn resume(&mut self, iteration: u64) -> Result<()> {
        let mut log = Table::open(self.log.path(), TOPOLOGY)?;
        let at = TOPOLOGY
            .iter()
            .position(|&c| c == "iteration")
            .expect("column");
        log.retain(|row| row[at].parse::<u64>().is_ok_and(|t| t <= iteration));
        // Every update before the checkpoint must have its rows, or the span starts over.
        let tensors = self.pruned_tensors().len();
        let expected: usize = self
            .steps
            .iter()
            .map(|s| s.iter().filter(|&&t| t <= iteration).count() * tensors)
            .sum();
        if log.rows().len() != expected {
            bail!(
                "{} lacks topology rows before iteration {iteration}",
                log.path().display()
            );
        }
        self.log = log;
        Ok(())
    }

    fn dense_momentum(&self) -> Option<f64> {
        let method = |m: &Member| self.run.exp.arms[m.arm].method.unwrap_or_default();
        let snfs = self.members.iter().any(|m| method(m) == SparseMethod::Snfs);
        snfs.then_some(SNFS_MOMENTUM)
    }

    fn update(
        &mut self,
        t: u64,
        state: &State,
        masks: &Tensor,
        dense_momentum: Option<&Tensor>,
    ) -> Tensor {
        let run = self.run;
        // Only the members due at `t` are read back from the device and updated.
        let due: Vec<usize> = (0..self.members.len())
            .filter(|&r| self.steps[r].contains(&t))
            .collect();
        if due.is_empty() {
            return masks.shallow_clone();
        }
        let device = masks.device();
        let index = Tensor::from_slice(&due.iter().map(|&r| r as i64).collect::<Vec<_>>())
            .to_device(device);
        let due_state = state.select(&index);
        let due_masks = masks.index_select(0, &index);
        let method = |r: usize| run.exp.arms[self.members[r].arm].method.unwrap_or_default();
        let gradients = due
            .iter()
            .any(|&r| method(r) == SparseMethod::Rigl)
            .then(|| {
                let seeds: Vec<u64> = due.iter().map(|&r| self.members[r].seed).collect();
                let data = run.score_data(&seeds, param_index(u64::from(self.round), t as usize));
                let batch = run.exp.train.batch_size;
                rows(&data.dense_gradient(&due_state, &due_masks, batch))
            });
        let momentum = due
            .iter()
            .any(|&r| method(r) == SparseMethod::Snfs)
            .then(|| {
                rows(
                    &dense_momentum
                        .expect("SNFS keeps a momentum")
                        .index_select(0, &index),
                )
            });
        let weights = rows(&due_state.params);
        let mut new = rows(&due_masks);
        let layout = run.layout();
        let tensors = self.pruned_tensors();
        for (d, &r) in due.iter().enumerate() {
            let m = self.members[r];
            let arm = &run.exp.arms[m.arm];
            let fraction = arm.drop_fraction_at(t, self.iterations);
            let draws = param_index(arm_round_index(&arm.name, self.round), t as usize);
            let mut rng = stream(m.seed, Purpose::RandomMask, draws);
            let spans: Vec<std::ops::Range<usize>> = tensors
                .iter()
                .map(|&i| layout.offset(i)..layout.offset(i) + layout.specs()[i].numel())
                .collect();
            // SNFS with redistribution: each tensor drops its share, the regrowth is split
            // between tensors by their active weights' mean |momentum|.
            let counts = match (&momentum, arm.redistribute == Some(true)) {
                (Some(mo), true) => Some(redistributed(&new[d], &mo[d], &spans, fraction)),
                _ => None,
            };
            for (t_index, &i) in tensors.iter().enumerate() {
                let span = spans[t_index].clone();
                let grow = match (method(r), &gradients, &momentum) {
                    (SparseMethod::Rigl, Some(g), _) => Grow::Gradient(&g[d][span.clone()]),
                    (SparseMethod::Snfs, _, Some(m)) => Grow::Gradient(&m[d][span.clone()]),
                    _ => Grow::Random(&mut rng),
                };
                let (w, mask) = (&weights[d][span.clone()], &mut new[d][span.clone()]);
                let update = match &counts {
                    Some(c) => drop_then_grow(w, mask, c[t_index], grow),
                    None => drop_and_grow(w, mask, fraction, grow),
                };
                let churn = new[d][span.clone()]
                    .iter()
                    .zip(&self.initial[r][span.clone()])
                    .filter(|(a, b)| a != b)
                    .count();
                self.log.push(vec![
                    arm.name.clone(),
                    m.seed.to_string(),
                    self.round.to_string(),
                    t.to_string(),
                    layout.specs()[i].name.clone(),
                    update.active.to_string(),
                    update.dropped.to_string(),
                    update.grown.to_string(),
                    num(churn as f64 / span.len() as f64),
                ]);
            }
        }
        if self.persist && self.error.is_none() {
            self.error = self.log.save().err();
        }
        let updated = Tensor::from_slice(&new.concat())
            .view([due.len() as i64, -1])
            .to_device(device)
            .to_kind(masks.kind());
        masks.index_copy(0, &index, &updated)
    }
}
