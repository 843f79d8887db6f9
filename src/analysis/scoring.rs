//! The criteria a study scores with: the run's scoring settings with the study's overrides,
//! checked against the network and data, and each criterion scored once per network.

use anyhow::{anyhow, Result};
use tch::Tensor;

use super::saved::SavedRound;
use crate::config::{PruneConfig, PruneCriterion};
use crate::prune::{self, Criterion, ScoreContext, ScoreData};

/// The run's pruning settings with `score_batches` / `score_examples` replaced where given,
/// after checking that every criterion of `criteria` can score the saved networks.
pub fn scoring_config(
    saved: &SavedRound,
    criteria: &[PruneCriterion],
    score_batches: Option<u32>,
    score_examples: Option<u32>,
) -> Result<PruneConfig> {
    let mut cfg = saved.exp.prune.clone();
    cfg.score_batches = score_batches.unwrap_or(cfg.score_batches);
    cfg.score_examples = score_examples.unwrap_or(cfg.score_examples);
    for &c in criteria {
        cfg.criterion = c;
        prune::check_score_sizes(
            &cfg,
            saved.exp.train.batch_size,
            saved.data.train.len(),
            false,
        )
        .map_err(|e| anyhow!("{e:#} (give --score-batches / --score-examples)"))?;
        if c == PruneCriterion::Obs {
            prune::Obs::check(saved.net.as_ref(), &saved.groups)?;
        }
    }
    Ok(cfg)
}

/// Magnitude, taylor and obd, and obs where the network takes it.
pub fn default_criteria(saved: &SavedRound) -> Vec<PruneCriterion> {
    let mut all = vec![
        PruneCriterion::Magnitude,
        PruneCriterion::Taylor,
        PruneCriterion::Obd,
    ];
    if prune::Obs::check(saved.net.as_ref(), &saved.groups).is_ok() {
        all.push(PruneCriterion::Obs);
    }
    all
}

/// The criterion `c` with the scoring settings of `cfg`, on each seed's examples of the
/// saved round, scoring once; `init` `[R, P]` is w_i for Zhou et al.'s criteria over
/// (w_i, w_f) (the saved weights are w_f).
pub fn criterion<'a>(
    saved: &'a SavedRound,
    cfg: &PruneConfig,
    c: PruneCriterion,
    init: Option<Tensor>,
) -> Memo<'a> {
    let data = ScoreData {
        net: saved.net.as_ref(),
        train: &saved.data.train,
        seeds: saved.exp.seeds.clone(),
        index: u64::from(saved.round),
    };
    let mut scored = vec![false; saved.net.layout().specs().len()];
    for &i in saved.groups.iter().flat_map(|g| &g.params) {
        scored[i] = true;
    }
    Memo {
        inner: prune::build_criterion(c, cfg, saved.exp.train.batch_size, data, init),
        scored,
        scores: None,
    }
}

/// A criterion that scores once (every tensor the run prunes, of every network) and hands
/// those scores to every later ranking of the same networks; compensation stays the
/// criterion's own.
pub struct Memo<'a> {
    inner: Box<dyn Criterion + 'a>,
    /// Per parameter: whether it is scored (in one of the run's pruning groups).
    scored: Vec<bool>,
    scores: Option<Tensor>,
}

impl Criterion for Memo<'_> {
    fn scores(&mut self, ctx: &ScoreContext<'_>) -> Tensor {
        if self.scores.is_none() {
            let all = vec![self.scored.clone(); ctx.losing.len()];
            let every = ScoreContext {
                losing: &all,
                ..*ctx
            };
            self.scores = Some(self.inner.scores(&every));
        }
        self.scores.as_ref().expect("scored").shallow_clone()
    }

    fn compensate(&mut self, ctx: &ScoreContext<'_>, masks: &Tensor) -> Option<Tensor> {
        self.inner.compensate(ctx, masks)
    }
}
