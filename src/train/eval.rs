//! Evaluation of every replica on a shared split: summed loss and correct counts stay on the
//! device until the caller reads them, once per evaluation point.

use tch::{Kind, Tensor};

use crate::data::Split;
use crate::model::{forward_population, Input, Network, Pass, State};

/// Per-replica summed cross-entropy and number of correct predictions, `[2, R]` on the device
/// (evaluation mode: BatchNorm uses its running statistics, no dropout).
pub fn evaluate(net: &dyn Network, state: &State, split: &Split) -> Tensor {
    let pass = Pass {
        params: &state.params,
        buffers: &state.buffers,
        train: false,
        dropout: None,
    };
    tch::no_grad(|| {
        let n = split.len() as i64;
        let chunk = net.eval_chunk(state.params.device()) as i64;
        let mut loss_sum: Option<Tensor> = None;
        let mut correct: Option<Tensor> = None;
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let x = split.images.narrow(0, start, len);
            let y = split.labels.narrow(0, start, len);
            let logits = forward_population(net, &pass, Input::Shared(&x));
            let (loss, hits) = loss_and_hits(&logits, &y);
            loss_sum = Some(loss_sum.map_or_else(|| loss.shallow_clone(), |s| s + &loss));
            correct = Some(correct.map_or_else(|| hits.shallow_clone(), |c| c + &hits));
            start += len;
        }
        Tensor::stack(
            &[
                loss_sum.expect("non-empty split"),
                correct.expect("non-empty split").to_kind(Kind::Double),
            ],
            0,
        )
    })
}

/// Summed cross-entropy `[R]` (f64) and correct counts `[R]` of logits `[R, M, C]` against
/// labels `[M]` shared by all replicas.
fn loss_and_hits(logits: &Tensor, labels: &Tensor) -> (Tensor, Tensor) {
    let (r, m) = (logits.size()[0], logits.size()[1]);
    let targets = labels.view([1, m, 1]).expand([r, m, 1], false);
    let nll = logits
        .log_softmax(-1, Kind::Float)
        .gather(2, &targets, false)
        .neg()
        .sum_dim_intlist(&[1i64, 2][..], false, Kind::Double);
    let hits = logits
        .argmax(-1, false)
        .eq_tensor(&labels.unsqueeze(0))
        .sum_dim_intlist(1, false, Kind::Int64);
    (nll, hits)
}

/// Per-replica mean cross-entropy `[R]` of logits `[R, B, C]` against labels `[R, B]`.
pub fn batch_losses(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits
        .log_softmax(-1, Kind::Float)
        .gather(2, &labels.unsqueeze(-1), false)
        .squeeze_dim(-1)
        .mean_dim(1, false, Kind::Float)
        .neg()
}
