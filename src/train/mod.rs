//! Training: optimizers with per-replica learning rates, the batched step loop, evaluation and
//! early-stop tracking.

pub mod checkpoint;
pub mod early_stop;
pub mod engine;
pub mod eval;
pub mod fused;
pub mod optim;

pub use checkpoint::Checkpointing;
pub use early_stop::EarlyStop;
pub use engine::{
    EvalPoint, LrPlan, MaskSchedule, Observer, Replicas, Snapshot, Span, SpanResult, Trainer,
};
pub use optim::{Optimizer, OptimizerState};
