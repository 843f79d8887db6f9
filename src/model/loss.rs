//! The training loss of a population: cross-entropy per replica, the mean over its batch.

use tch::{Kind, Tensor};

/// Per-replica mean cross-entropy `[R]` of logits `[R, B, C]` against labels `[R, B]`.
pub fn batch_losses(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits
        .log_softmax(-1, Kind::Float)
        .gather(2, &labels.unsqueeze(-1), false)
        .squeeze_dim(-1)
        .mean_dim(1, false, Kind::Float)
        .neg()
}
