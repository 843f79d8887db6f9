//! The topology updates of dynamic `sparse` arms (SET, RigL) during a pruned round's training:
//! a [`MaskSchedule`] over a cohort that, at each member's update steps, drops and regrows the
//! same number of weights in every pruned tensor ([`prune::topology::drop_and_grow`]) and
//! leaves every other member's mask as it is.

use anyhow::Result;
use tch::{Kind, Tensor};

use super::run::Run;
use super::Member;
use crate::config::{GrowInit, SparseMethod};
use crate::model::State;
use crate::prune::topology::{drop_and_grow, Grow};
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
    /// Where regrown weights start, `[R, P]` on the device: θ₀ for members of arms with
    /// `grow_init = "init"`, zero for the others; `None` when no member regrows from θ₀.
    regrown: Option<Tensor>,
}

impl<'a, 'r> TopologyUpdates<'a, 'r> {
    /// The schedule of `members` (a cohort, row order) over [0, `iterations`] in `round`.
    pub(super) fn new(
        run: &'a Run<'r>,
        round: u32,
        members: Vec<Member>,
        iterations: u64,
    ) -> Result<Self> {
        let steps = members
            .iter()
            .map(|m| run.exp.arms[m.arm].topology_updates(iterations))
            .collect();
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
            regrown,
        })
    }

    /// The union of the members' update steps, ascending.
    pub(super) fn steps(&self) -> Vec<u64> {
        let mut steps: Vec<u64> = self.steps.concat();
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
    fn regrown_start(&self) -> Option<&Tensor> {
        self.regrown.as_ref()
    }

    fn update(&mut self, t: u64, state: &State, masks: &Tensor) -> Tensor {
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
        let weights = rows(&due_state.params);
        let mut new = rows(&due_masks);
        let layout = run.layout();
        let tensors: Vec<usize> = run
            .setup
            .groups
            .iter()
            .flat_map(|g| g.params.clone())
            .collect();
        for (d, &r) in due.iter().enumerate() {
            let m = self.members[r];
            let arm = &run.exp.arms[m.arm];
            let fraction = arm.drop_fraction_at(t, self.iterations);
            let draws = param_index(arm_round_index(&arm.name, self.round), t as usize);
            let mut rng = stream(m.seed, Purpose::RandomMask, draws);
            for &i in &tensors {
                let span = layout.offset(i)..layout.offset(i) + layout.specs()[i].numel();
                let grow = match (method(r), &gradients) {
                    (SparseMethod::Rigl, Some(g)) => Grow::Gradient(&g[d][span.clone()]),
                    _ => Grow::Random(&mut rng),
                };
                drop_and_grow(&weights[d][span.clone()], &mut new[d][span], fraction, grow);
            }
        }
        let updated = Tensor::from_slice(&new.concat())
            .view([due.len() as i64, -1])
            .to_device(device)
            .to_kind(masks.kind());
        masks.index_copy(0, &index, &updated)
    }
}
