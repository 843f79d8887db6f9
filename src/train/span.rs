//! A span of the schedule to train: where it starts and stops, where it evaluates, snapshots
//! and updates masks, and where it keeps checkpoints.

use super::checkpoint::{Checkpointing, SpanCheckpoint};

/// Most steps run between two progress reports.
const PROGRESS_STEPS: u64 = 100;

/// Which span of the schedule to train and where to look.
#[derive(Debug, Clone)]
pub struct Span {
    /// First iteration (the schedule position the weights are at), e.g. the rewind point.
    pub start: u64,
    /// Iteration at which training stops.
    pub end: u64,
    /// Evaluate at `start`, at every multiple of this in between, and at `end`.
    pub eval_every: u64,
    /// Iterations (in `start..=end`) at which to keep a copy of the weights (taken after
    /// evaluation, before any mask update there).
    pub snapshots: Vec<u64>,
    /// Whether snapshots also copy the optimizer state.
    pub snapshot_optimizer: bool,
    /// Iterations at which the mask schedule updates the masks (after evaluation and
    /// snapshot there).
    pub mask_updates: Vec<u64>,
    /// Whether every mask update is also an evaluation point (the gradual schedule's rows end
    /// at its pruning steps); topology updates of sparse arms are not, so that their
    /// cohort's other members are evaluated as they would be alone.
    pub evaluate_mask_updates: bool,
    /// Where the span keeps checkpoints to continue from after a stop (none: it restarts
    /// from `start`).
    pub checkpoint: Option<Checkpointing>,
}

impl Span {
    /// A span with no snapshots and no mask updates.
    pub fn new(start: u64, end: u64, eval_every: u64) -> Self {
        Self {
            start,
            end,
            eval_every,
            snapshots: Vec::new(),
            snapshot_optimizer: false,
            mask_updates: Vec::new(),
            evaluate_mask_updates: false,
            checkpoint: None,
        }
    }

    /// Whether a checkpoint is what this span's loop would have held at its iteration: its
    /// evaluation points are exactly the span's up to there, and its snapshots are the span's
    /// (all of them when `all_snapshots`: no mask schedule took any over).
    pub(super) fn led_to(
        &self,
        ck: &SpanCheckpoint,
        eval_points: &[u64],
        all_snapshots: bool,
    ) -> bool {
        let evaluated: Vec<u64> = ck.evals.iter().map(|e| e.iteration).collect();
        let due: Vec<u64> = eval_points
            .iter()
            .copied()
            .filter(|&t| t <= ck.iteration)
            .collect();
        let snapped: Vec<u64> = ck.snapshots.iter().map(|s| s.iteration).collect();
        let mut wanted: Vec<u64> = self
            .snapshots
            .iter()
            .copied()
            .filter(|&t| t >= self.start && t <= ck.iteration)
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let snapshots_fit = if all_snapshots {
            snapped == wanted
        } else {
            snapped.windows(2).all(|w| w[0] < w[1]) && snapped.iter().all(|t| wanted.contains(t))
        };
        evaluated == due && snapshots_fit
    }

    /// The evaluation iterations in order: `start`, the multiples of `eval_every`, every mask
    /// update (evaluated before the masks change) and `end`.
    pub fn eval_points(&self) -> Vec<u64> {
        let mut points = vec![self.start];
        let mut t = (self.start / self.eval_every + 1) * self.eval_every;
        while t < self.end {
            points.push(t);
            t += self.eval_every;
        }
        if self.end > self.start {
            points.push(self.end);
        }
        if self.evaluate_mask_updates {
            points.extend(
                self.mask_updates
                    .iter()
                    .filter(|&&u| u >= self.start && u <= self.end),
            );
        }
        points.sort_unstable();
        points.dedup();
        points
    }

    /// Iterations at which the loop pauses: evaluation points (`eval_points`), snapshots,
    /// mask updates and progress marks.
    pub(super) fn stops(&self, eval_points: &[u64]) -> Vec<u64> {
        let mut stops: Vec<u64> = eval_points.to_vec();
        stops.extend(
            self.snapshots
                .iter()
                .chain(&self.mask_updates)
                .copied()
                .filter(|&s| s >= self.start && s <= self.end),
        );
        let mut t = self.start + PROGRESS_STEPS;
        while t < self.end {
            stops.push(t);
            t += PROGRESS_STEPS;
        }
        stops.sort_unstable();
        stops.dedup();
        stops
    }
}
