//! A finished run's networks of one round, loaded for a study: the config, the data and the
//! network on a device, and every seed's weights and mask of that round as one population.

use std::path::Path;

use anyhow::{bail, Result};
use tch::{Device, Tensor};

use crate::config::ArmPlan;
use crate::config::{Experiment, MaskRule, PruneSchedule};
use crate::data::Dataset;
use crate::model::{self, Layout, Network, State};
use crate::prune::{self, Criterion, PruneGroup};
use crate::record::RunDir;
use crate::train::eval::{evaluate, per_example};

/// One round of a run, loaded.
pub struct SavedRound {
    /// The run's config.
    pub exp: Experiment,
    /// Its data set on the device.
    pub data: Dataset,
    /// Its network.
    pub net: Box<dyn Network>,
    /// Its pruning groups.
    pub groups: Vec<PruneGroup>,
    /// The arm whose networks these are (empty: the dense round 0 of the iterative and
    /// one-shot schedules).
    pub arm: String,
    /// The round.
    pub round: u32,
    /// Weights and buffers of every seed, in the config's seed order.
    pub state: State,
    /// Their masks `[R, P]`.
    pub masks: Tensor,
}

impl SavedRound {
    /// Loads round `round` of `arm` (default: round 0's dense networks, or for a pruned round
    /// the first arm that prunes its own weights) from the run dir at `path`, onto `device`.
    pub fn load(path: &Path, round: u32, arm: Option<&str>, device: Device) -> Result<Self> {
        let (dir, exp) = RunDir::open_existing(path)?;
        let arm = checked_round(path, &dir, &exp, round, arm)?;
        let data = Dataset::load(&exp.data, device)?;
        let net = model::build(&exp.model, data.input_shape, data.num_classes)?;
        let groups = prune::groups(net.layout(), &exp.prune)?;
        let (state, masks) = load_networks(&dir, &exp, &arm, round, net.layout(), device)?;
        Ok(Self {
            state,
            masks,
            exp,
            data,
            net,
            groups,
            arm,
            round,
        })
    }

    /// Every seed's θ₀ (the untrained network) from the run dir at `path`, stacked in seed
    /// order on the device of the saved networks.
    pub fn theta0(&self, path: &Path) -> Result<State> {
        let dir = RunDir::at(path);
        let layout = self.net.layout();
        let thetas = self
            .exp
            .seeds
            .iter()
            .map(|&seed| dir.load_theta(seed, 0, layout))
            .collect::<Result<Vec<_>>>()?;
        Ok(State::stack(&thetas).to_device(self.masks.device()))
    }

    /// Validation loss and accuracy, test loss and accuracy of every seed's network of
    /// `state` under `masks` (evaluation mode), in seed order.
    pub fn evaluate(&self, state: &State, masks: &Tensor) -> Vec<[f64; 4]> {
        let masked = state.masked(masks);
        let net = self.net.as_ref();
        let (validation, test) = (&self.data.validation, &self.data.test);
        let val = evaluate(net, &masked, validation);
        let sums = evaluate(net, &masked, test);
        let m = per_example(&val, &sums, validation, test).expect("metrics of a population");
        (0..self.exp.seeds.len())
            .map(|r| [m[0][r], m[1][r], m[2][r], m[3][r]])
            .collect()
    }

    /// The networks pruned by `criterion` until group `g` of `groups` keeps `keep[g]` weights
    /// (a group already at or below its count loses nothing): their weights as the criterion
    /// left them (moved by `obs`), masked, and the masks; `None` when no network loses any.
    pub fn prune(
        &self,
        criterion: &mut dyn Criterion,
        groups: &[PruneGroup],
        keep: &[u64],
    ) -> Option<(State, Tensor)> {
        let layout = self.net.layout();
        let remaining = prune::group_remaining(&self.masks, layout, groups);
        if remaining
            .iter()
            .all(|row| row.iter().zip(keep).all(|(&n, &k)| n <= k))
        {
            return None;
        }
        let pruned =
            prune::prune_and_compensate(criterion, &self.state, &self.masks, layout, groups, |r| {
                vec![keep.to_vec(); r.len()]
            });
        let params = match pruned.weights {
            Some(moved) => moved,
            None => (&self.state.params * &pruned.masks).detach(),
        };
        Some((self.state.with_params(params), pruned.masks))
    }

    /// Another round's masks of the same run (at `path`), `[S, P]` in seed order on this
    /// round's device, with the arm they belong to: resolved and checked as [`Self::load`]
    /// does, without loading the data again.
    pub fn masks_of(&self, path: &Path, round: u32, arm: Option<&str>) -> Result<(String, Tensor)> {
        let dir = RunDir::at(path);
        let arm = checked_round(path, &dir, &self.exp, round, arm)?;
        let layout = self.net.layout();
        let masks = self
            .exp
            .seeds
            .iter()
            .map(|&seed| dir.load_mask(&arm, seed, round, layout))
            .collect::<Result<Vec<_>>>()?;
        Ok((arm, Tensor::stack(&masks, 0).to_device(self.masks.device())))
    }

    /// Validation loss and accuracy, test loss and accuracy of another round's trained
    /// networks of the same run (at `path`, its default arm), in seed order.
    pub fn metrics_of(&self, path: &Path, round: u32) -> Result<Vec<[f64; 4]>> {
        let dir = RunDir::at(path);
        let arm = checked_round(path, &dir, &self.exp, round, None)?;
        let layout = self.net.layout();
        let (state, masks) =
            load_networks(&dir, &self.exp, &arm, round, layout, self.masks.device())?;
        Ok(self.evaluate(&state, &masks))
    }

    /// `, arm NAME` for a pruned round's arm, empty for round 0's dense networks.
    pub fn arm_suffix(&self) -> String {
        match self.arm.as_str() {
            "" => String::new(),
            arm => format!(", arm {arm}"),
        }
    }

    /// The arm whose files hold round `round`: round 0 of the iterative and one-shot
    /// schedules belongs to no arm; a pruned round to `asked`, or the first arm that prunes
    /// its own weights.
    fn arm_of(exp: &Experiment, round: u32, asked: Option<&str>) -> Result<String> {
        let names: Vec<&str> = exp.arms.iter().map(|a| a.name.as_str()).collect();
        if let Some(name) = asked {
            if !names.contains(&name) {
                bail!("run has no arm `{name}` (arms: {})", names.join(", "));
            }
        }
        if round == 0 && exp.prune.schedule != PruneSchedule::Gradual {
            if asked.is_some() {
                bail!("round 0 is the dense run every arm shares: leave out --arm");
            }
            return Ok(String::new());
        }
        if let Some(name) = asked {
            return Ok(name.to_string());
        }
        exp.arms
            .iter()
            .find(|a| ArmPlan::of(exp, a).mask == MaskRule::OwnWeights)
            .map(|a| a.name.clone())
            .ok_or_else(|| {
                anyhow::anyhow!("no arm of the run prunes its own weights; name one with --arm")
            })
    }
}

/// The arm whose files hold round `round` of the run `exp` in `dir` (at `path`), once the round
/// is one the run has, complete, and its files match the run dir's manifest.
fn checked_round(
    path: &Path,
    dir: &RunDir,
    exp: &Experiment,
    round: u32,
    arm: Option<&str>,
) -> Result<String> {
    let total = exp.total_rounds();
    if round >= total {
        bail!("run has no round {round} (rounds 0..={})", total - 1);
    }
    let completed = dir.rounds_completed(total)?;
    if round >= completed {
        bail!(
            "round {round} is not complete in {} ({completed} round(s) complete, of 0..={})",
            path.display(),
            total - 1
        );
    }
    let arm = SavedRound::arm_of(exp, round, arm)?;
    for &seed in &exp.seeds {
        dir.verify_replica_round(&arm, seed, round)?;
    }
    Ok(arm)
}

/// Every seed's weights and masks of round `round` of `arm` in `dir`, stacked in seed order on
/// `device`.
fn load_networks(
    dir: &RunDir,
    exp: &Experiment,
    arm: &str,
    round: u32,
    layout: &Layout,
    device: Device,
) -> Result<(State, Tensor)> {
    let mut states = Vec::with_capacity(exp.seeds.len());
    let mut masks = Vec::with_capacity(exp.seeds.len());
    for &seed in &exp.seeds {
        states.push(dir.load_weights(arm, seed, round, layout)?);
        masks.push(dir.load_mask(arm, seed, round, layout)?);
    }
    Ok((
        State::stack(&states).to_device(device),
        Tensor::stack(&masks, 0).to_device(device),
    ))
}

/// A run dir's folder name (its label in tables and figures).
pub fn run_label(path: &Path) -> String {
    path.canonicalize()
        .unwrap_or_else(|_| path.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
