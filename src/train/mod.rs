//! Training: optimizers with per-replica learning rates, the batched step loop over a span,
//! evaluation, checkpoints inside a span and early-stop tracking.

pub mod checkpoint;
pub mod early_stop;
pub mod engine;
pub mod eval;
pub mod fused;
pub mod optim;
pub mod span;
mod span_loop;

pub use checkpoint::{CheckpointStore, Checkpointing};
pub use early_stop::EarlyStop;
pub use engine::{EvalPoint, MaskSchedule, Observer, Replicas, Snapshot, SpanResult, Trainer};
pub use optim::{Optimizer, OptimizerState};
pub use span::Span;
