//! The topology updates of dynamic `sparse` arms (SET, RigL) during a pruned round's training:
//! a [`MaskSchedule`] over a cohort that, at each member's update steps, drops and regrows the
//! same number of weights in every pruned tensor ([`prune::topology::drop_and_grow`]) and
//! leaves every other member's mask as it is.

use tch::{Kind, Tensor};

use super::run::Run;
use super::Member;
use crate::config::SparseMethod;
use crate::model::State;
use crate::prune::topology::{drop_and_grow, Grow};
use crate::rng::{arm_round_index, param_index, stream, Purpose};
use crate::train::MaskSchedule;

/// The topology schedule of one cohort's span [0, `iterations`] in `round`.
pub(super) struct TopologyUpdates<'a, 'r> {
    pub(super) run: &'a Run<'r>,
    pub(super) round: u32,
    /// The cohort's members, row order.
    pub(super) members: Vec<Member>,
    /// The span's length (the schedule's `train.iterations`).
    pub(super) iterations: u64,
}

impl TopologyUpdates<'_, '_> {
    /// The union of the members' update steps, ascending.
    pub(super) fn steps(&self) -> Vec<u64> {
        let mut steps: Vec<u64> = self
            .members
            .iter()
            .flat_map(|m| self.run.exp.arms[m.arm].topology_updates(self.iterations))
            .collect();
        steps.sort_unstable();
        steps.dedup();
        steps
    }
}

/// Rows of a `[R, P]` tensor as float vectors on the CPU.
fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    let t = t.to_kind(Kind::Float).to_device(tch::Device::Cpu);
    Vec::<Vec<f32>>::try_from(&t).expect("a [R, P] table")
}

impl MaskSchedule for TopologyUpdates<'_, '_> {
    fn update(&mut self, t: u64, state: &State, masks: &Tensor) -> Tensor {
        let run = self.run;
        let due: Vec<usize> = (0..self.members.len())
            .filter(|&r| {
                run.exp.arms[self.members[r].arm]
                    .topology_updates(self.iterations)
                    .contains(&t)
            })
            .collect();
        if due.is_empty() {
            return masks.shallow_clone();
        }
        let method = |r: usize| run.exp.arms[self.members[r].arm].method.unwrap_or_default();
        let gradients = due
            .iter()
            .any(|&r| method(r) == SparseMethod::Rigl)
            .then(|| {
                let seeds: Vec<u64> = self.members.iter().map(|m| m.seed).collect();
                let data = run.score_data(&seeds, param_index(u64::from(self.round), t as usize));
                rows(&data.dense_gradient(state, masks, run.exp.train.batch_size))
            });
        let weights = rows(&state.params);
        let mut new = rows(masks);
        let layout = run.layout();
        let tensors: Vec<usize> = run
            .setup
            .groups
            .iter()
            .flat_map(|g| g.params.clone())
            .collect();
        for &r in &due {
            let m = self.members[r];
            let arm = &run.exp.arms[m.arm];
            let fraction = arm.drop_fraction_at(t, self.iterations);
            let index = param_index(arm_round_index(&arm.name, self.round), t as usize);
            let mut rng = stream(m.seed, Purpose::RandomMask, index);
            for &i in &tensors {
                let span = layout.offset(i)..layout.offset(i) + layout.specs()[i].numel();
                let grow = match (method(r), &gradients) {
                    (SparseMethod::Rigl, Some(g)) => Grow::Gradient(&g[r][span.clone()]),
                    _ => Grow::Random(&mut rng),
                };
                drop_and_grow(&weights[r][span.clone()], &mut new[r][span], fraction, grow);
            }
        }
        let flat: Vec<f32> = new.concat();
        Tensor::from_slice(&flat)
            .view([self.members.len() as i64, -1])
            .to_device(masks.device())
            .to_kind(masks.kind())
    }
}
