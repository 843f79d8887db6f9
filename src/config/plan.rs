//! What each arm does in a pruned round: where its mask comes from, which weights it starts
//! from, which span of the schedule it trains and at which learning rate. Plans derive from the
//! config alone, never from what is on disk, so that the run (progress totals, cohorts) and the
//! report (the tidy `arm.*` columns, where each arm's training starts) read the same plan.

use super::{
    ArmConfig, ArmKind, ControlStart, Distribution, Experiment, InitCriterion, RandomStart,
};

/// How a replica's learning rate follows the schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrPlan {
    /// Learning rate before the schedule's factor.
    pub base: f64,
    /// Whether the step schedule (`train.lr_milestones`) applies; if not, `base` is constant.
    pub scheduled: bool,
}

impl LrPlan {
    /// `base` under the config's step schedule.
    pub fn scheduled(base: f64) -> Self {
        Self {
            base,
            scheduled: true,
        }
    }
}

/// Where a pruned round's mask comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskRule {
    /// The pruning criterion ranks the arm's own trained weights (and their mask).
    OwnWeights,
    /// Exactly the mask the sibling arm (this index) gets this round.
    SiblingMask(usize),
    /// A random mask with the per-layer counts of the sibling arm's mask this round.
    SiblingCounts(usize),
    /// θ₀ pruned by this criterion to the round's per-group counts (`at-init` arms).
    AtInit(InitCriterion),
    /// A random mask with the round's total count, spread over the tensors by this
    /// distribution (`sparse` arms).
    Sparse(Distribution),
}

/// Which weights a pruned round starts from (then masked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartWeights {
    /// The seed's dense run at iteration k (θ_k).
    Theta(u64),
    /// The arm's own trained weights of the previous round (one-shot: the dense run's).
    Trained,
    /// A fresh seeded draw.
    Fresh,
}

/// One arm's retraining in every pruned round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmPlan {
    /// Mask source.
    pub mask: MaskRule,
    /// Starting weights.
    pub start: StartWeights,
    /// First schedule iteration trained.
    pub from: u64,
    /// Iteration training stops at.
    pub to: u64,
    /// Learning rate.
    pub lr: LrPlan,
    /// Restore the optimizer state saved at this iteration of the dense run.
    pub restore_optimizer: Option<u64>,
}

impl ArmPlan {
    /// The plan of `arm` under `exp`.
    pub fn of(exp: &Experiment, arm: &ArmConfig) -> Self {
        let t = exp.train.iterations;
        let scheduled = LrPlan::scheduled(arm.lr.unwrap_or(exp.train.lr));
        let sibling = || {
            let name = arm.sibling.as_deref().expect("validated: sibling set");
            exp.arms
                .iter()
                .position(|a| a.name == name)
                .expect("validated: sibling exists")
        };
        let retrain = arm.iterations.unwrap_or(t);
        // A control's first iteration: 0, or its rewind sibling's k under `start_at = "rewind"`.
        let control_from = || match arm.start_at.unwrap_or(ControlStart::Init) {
            ControlStart::Init => 0,
            ControlStart::Rewind => exp.arms[sibling()].rewind_iteration,
        };
        match arm.kind {
            ArmKind::Rewind => Self {
                mask: MaskRule::OwnWeights,
                start: StartWeights::Theta(arm.rewind_iteration),
                from: arm.rewind_iteration,
                to: t,
                lr: scheduled,
                restore_optimizer: (arm.restore_optimizer && arm.rewind_iteration > 0)
                    .then_some(arm.rewind_iteration),
            },
            ArmKind::Finetune => Self {
                mask: MaskRule::OwnWeights,
                start: StartWeights::Trained,
                from: t,
                to: t + retrain,
                lr: LrPlan {
                    base: arm
                        .lr
                        .unwrap_or_else(|| exp.train.lr * exp.train.lr_factor(t - 1)),
                    scheduled: false,
                },
                restore_optimizer: None,
            },
            ArmKind::LrRewind => Self {
                mask: MaskRule::OwnWeights,
                start: StartWeights::Trained,
                from: t - retrain,
                to: t,
                lr: scheduled,
                restore_optimizer: None,
            },
            ArmKind::Reinit => Self {
                mask: MaskRule::SiblingMask(sibling()),
                start: StartWeights::Fresh,
                from: control_from(),
                to: t,
                lr: scheduled,
                restore_optimizer: None,
            },
            ArmKind::RandomPrune => Self {
                mask: MaskRule::SiblingCounts(sibling()),
                start: match arm.init.unwrap_or(RandomStart::Theta0) {
                    RandomStart::Theta0 => StartWeights::Theta(control_from()),
                    RandomStart::Fresh => StartWeights::Fresh,
                },
                from: control_from(),
                to: t,
                lr: scheduled,
                restore_optimizer: None,
            },
            ArmKind::AtInit => Self {
                mask: MaskRule::AtInit(arm.criterion.expect("validated: criterion set")),
                start: match arm.init.unwrap_or(RandomStart::Theta0) {
                    RandomStart::Theta0 => StartWeights::Theta(0),
                    RandomStart::Fresh => StartWeights::Fresh,
                },
                from: 0,
                to: t,
                lr: scheduled,
                restore_optimizer: None,
            },
            ArmKind::Sparse => Self {
                mask: MaskRule::Sparse(arm.distribution.unwrap_or_default()),
                start: StartWeights::Theta(0),
                from: 0,
                to: retrain,
                lr: scheduled,
                restore_optimizer: None,
            },
            ArmKind::Gradual => Self {
                mask: MaskRule::OwnWeights,
                start: StartWeights::Theta(0),
                from: 0,
                to: t,
                lr: scheduled,
                restore_optimizer: None,
            },
        }
    }

    /// Replicas whose plans share this key train together as one cohort.
    pub fn cohort_key(&self) -> (u64, u64, Option<u64>) {
        (self.from, self.to, self.restore_optimizer)
    }
}

/// Iterations of the dense run whose weights (and optimizer state) must be kept.
pub fn rewind_points(exp: &Experiment) -> Vec<u64> {
    let mut points: Vec<u64> = exp
        .arms
        .iter()
        .map(|a| ArmPlan::of(exp, a))
        .filter_map(|p| match p.start {
            StartWeights::Theta(k) if k > 0 => Some(k),
            _ => None,
        })
        .collect();
    points.sort_unstable();
    points.dedup();
    points
}

/// Replica-steps (iterations times the replicas that train them) of round `round` under the
/// iterative and one-shot schedules, given every arm's plan: round 0 trains each seed's dense
/// network once, a pruned round every arm of every seed over its span.
pub fn round_replica_steps(exp: &Experiment, plans: &[ArmPlan], round: u32) -> u64 {
    let seeds = exp.seeds.len() as u64;
    if round == 0 {
        return seeds * exp.train.iterations;
    }
    plans.iter().map(|p| seeds * (p.to - p.from)).sum()
}

/// Replica-steps of a whole run: every round, or under the gradual schedule the one run per
/// seed.
pub fn replica_steps(exp: &Experiment) -> u64 {
    if exp.prune.schedule == super::PruneSchedule::Gradual {
        return exp.seeds.len() as u64 * exp.train.iterations;
    }
    let plans: Vec<ArmPlan> = exp.arms.iter().map(|a| ArmPlan::of(exp, a)).collect();
    (0..=exp.pruned_rounds())
        .map(|round| round_replica_steps(exp, &plans, round))
        .sum()
}
