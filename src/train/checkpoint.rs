//! Checkpoints inside a training span, so that a run stopped mid-round (SIGKILL, a crash, a
//! full disk) continues from its last checkpoint instead of the round's first iteration.
//!
//! A checkpoint is taken at an evaluation point (or wherever a stop signal finds the span,
//! [`crate::interrupt`]) and holds everything the step loop carries
//! from one iteration to the next: weights, buffers, masks, optimizer state, the training-loss
//! sum since the last evaluation, the evaluation points and snapshots so far and which
//! replicas diverged. Batches, augmentation, dropout and learning rates depend only on (seed,
//! iteration), so a span continued from a checkpoint ends with the same bits as one that never
//! stopped (`tests/suite/crash.rs` checks it). Where a checkpoint is kept is the caller's
//! [`CheckpointStore`] (a run dir's file, `record::CheckpointFile`).

use std::fmt::Debug;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use sha2::{Digest, Sha256};

use super::engine::{EvalPoint, Snapshot};
use super::optim::OptimizerState;
use crate::config::LrPlan;
use crate::model::State;

/// Keeps the checkpoint of one span.
pub trait CheckpointStore: Debug {
    /// The checkpoint kept for the span `key`, if there is one and it is whole: one that is
    /// missing, unreadable, changed since it was written or of another span gives `None`,
    /// and the span starts from its first iteration (the same results, only later).
    fn load(
        &self,
        key: &SpanKey,
        optimizer_names: &[&str],
        device: Device,
    ) -> Option<SpanCheckpoint>;

    /// Keeps `checkpoint` for the span `key`, replacing the one before (atomically).
    fn save(&self, key: &SpanKey, checkpoint: &SpanCheckpoint) -> Result<()>;
}

/// Where and how often a span saves its progress.
#[derive(Debug, Clone)]
pub struct Checkpointing {
    /// Where the span's checkpoint is kept.
    pub store: Rc<dyn CheckpointStore>,
    /// Least wall-clock time between two checkpoints; zero takes one at every evaluation
    /// point. When checkpoints are taken never changes results.
    pub every: Duration,
}

/// The step loop's state at an evaluation point.
#[derive(Debug)]
pub struct SpanCheckpoint {
    /// The iteration reached (an evaluation point, already evaluated, or where a stop signal
    /// stopped the span).
    pub iteration: u64,
    /// Weights and buffers.
    pub state: State,
    /// Masks `[R, P]`.
    pub masks: Tensor,
    /// Optimizer state.
    pub optimizer: OptimizerState,
    /// The momentum of the dense gradient `[R, P]`, where the mask schedule keeps one.
    pub dense_momentum: Option<Tensor>,
    /// Sum of the per-replica training losses `[R]` since the last evaluation.
    pub loss_sum: Tensor,
    /// Steps summed in `loss_sum`.
    pub since_eval: u64,
    /// Per replica, the iteration at which it diverged.
    pub diverged: Vec<Option<u64>>,
    /// Evaluation points so far.
    pub evals: Vec<EvalPoint>,
    /// Snapshots kept so far.
    pub snapshots: Vec<Snapshot>,
}

/// What identifies a span: a checkpoint of another span (other replicas or iterations) is
/// never taken for this one.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanKey {
    /// First and last iteration.
    pub start: u64,
    /// Last iteration.
    pub end: u64,
    /// Replica seeds, in population order.
    pub seeds: Vec<u64>,
    /// Flat parameter count.
    pub params: i64,
    /// What the span starts from ([`origin`]): two spans of the same seeds and iterations
    /// that start from different weights (another round, another arm) never share a
    /// checkpoint, whatever path a caller gives them.
    pub origin: [u8; 32],
}

/// SHA-256 of a span's starting point: weights and buffers, masks, the optimizer state it
/// starts with (if any) and the replicas' learning rates, each tensor with its shape and
/// dtype.
pub fn origin(
    start: &State,
    (masks, frozen): (&Tensor, Option<&Tensor>),
    optimizer: Option<&OptimizerState>,
    lrs: &[LrPlan],
) -> [u8; 32] {
    let mut hash = Sha256::new();
    let mut tensor = |t: &Tensor| hash_tensor(&mut hash, t);
    tensor(&start.params);
    start.buffers.iter().for_each(&mut tensor);
    tensor(masks);
    if let Some(frozen) = frozen {
        tensor(frozen);
    }
    if let Some(opt) = optimizer {
        opt.tensors.iter().for_each(|(_, t)| tensor(t));
        hash.update(opt.steps.to_le_bytes());
    }
    for lr in lrs {
        hash.update(lr.base.to_le_bytes());
        hash.update([u8::from(lr.scheduled)]);
    }
    hash.finalize().into()
}

/// Adds a tensor's dtype, shape and bytes to `hash`.
pub fn hash_tensor(hash: &mut Sha256, t: &Tensor) {
    hash.update(format!("{:?} {:?};", t.kind(), t.size()));
    let t = t
        .detach()
        .to_device(Device::Cpu)
        .contiguous()
        .flatten(0, -1);
    let bytes = Vec::<u8>::try_from(&t.view_dtype(Kind::Uint8)).expect("tensor bytes");
    hash.update(&bytes);
}
