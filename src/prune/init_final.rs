//! Zhou et al. 2019's mask criteria ("Deconstructing Lottery Tickets"): scores over each
//! weight's value w_i where its arm rewinds to (θ₀ or θ_k) and its trained value w_f, the
//! highest kept (see [`PruneCriterion`]'s variants).

use tch::{Kind, Tensor};

use super::criterion::{Criterion, ScoreContext};
use crate::config::PruneCriterion;

/// A criterion over (w_i, w_f): `init` `[R, P]` holds each replica's w_i, the weights being
/// pruned its w_f.
pub struct InitFinal {
    /// Which criterion.
    pub rule: PruneCriterion,
    /// w_i, `[R, P]`, on the masks' device (unused by `large-final` and `small-final`).
    pub init: Option<Tensor>,
}

/// The scores `[R, P]` (double) of `rule` for weights `wi` and `wf`.
pub fn init_final_scores(rule: PruneCriterion, wi: &Tensor, wf: &Tensor) -> Tensor {
    let (wi, wf) = (wi.to_kind(Kind::Double), wf.to_kind(Kind::Double));
    let (ai, af) = (wi.abs(), wf.abs());
    match rule {
        PruneCriterion::LargeFinal => af,
        PruneCriterion::SmallFinal => -af,
        PruneCriterion::LargeInit => ai,
        PruneCriterion::LargeInitLargeFinal => ai.minimum(&af),
        PruneCriterion::SmallInitSmallFinal => -ai.maximum(&af),
        PruneCriterion::MagnitudeIncrease => af - ai,
        PruneCriterion::Movement => (&wf - &wi).abs(),
        PruneCriterion::LargeFinalSameSign => {
            // Flipped (or zero-crossing) weights score below every weight that kept its sign:
            // -1 / (1 + |w_f|) < 0 <= |w_f|.
            let same = (wi.sign() * wf.sign()).gt(0.0);
            let flipped = -(af.ones_like() / (&af + 1.0));
            af.where_self(&same, &flipped)
        }
        _ => panic!("{} is not a criterion over (w_i, w_f)", rule.name()),
    }
}

impl Criterion for InitFinal {
    fn scores(&mut self, ctx: &ScoreContext<'_>) -> Tensor {
        let wf = &ctx.state.params;
        let wi = self.init.as_ref().unwrap_or(wf);
        init_final_scores(self.rule, wi, wf)
    }
}
