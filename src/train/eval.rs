//! Evaluation of every replica on a shared split: summed loss and correct counts stay on the
//! device until the caller reads them, once per evaluation point.

use tch::{Device, Kind, Tensor};

use crate::data::Split;
use crate::model::sparse::{EvalBlocks, SparseMlp};
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

/// [`evaluate`] of a population some of whose replicas run sparse (`sparse.runs(r)`): those
/// through the sparse kernels, the others through [`evaluate`] on their own rows (the same
/// bits as in any population). `blocks` is `split` as [`SparseMlp::blocks`]. `[2, R]`.
pub fn evaluate_mixed(
    net: &dyn Network,
    sparse: &SparseMlp,
    state: &State,
    split: &Split,
    blocks: &EvalBlocks,
) -> Tensor {
    let replicas = state.params.size()[0];
    let (runs, rest): (Vec<i64>, Vec<i64>) = (0..replicas).partition(|&r| sparse.runs(r as usize));
    let mut out = Tensor::zeros([2, replicas], (Kind::Double, state.params.device()));
    if !rest.is_empty() {
        let idx = Tensor::from_slice(&rest);
        let subset = State {
            params: state.params.index_select(0, &idx),
            buffers: state
                .buffers
                .iter()
                .map(|b| b.index_select(0, &idx))
                .collect(),
        };
        let _ = out.index_copy_(1, &idx, &evaluate(net, &subset, split));
    }
    for &r in &runs {
        let (loss, correct) = sparse.evaluate(r as usize, &state.params.get(r), blocks);
        let column = Tensor::from_slice(&[loss, correct as f64]);
        out.select(1, r).copy_(&column);
    }
    out
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

/// Per-replica validation loss and accuracy, test loss and accuracy (per example) from the
/// `[2, R]` sums of [`evaluate`] on the validation and test splits, read back to the host.
pub fn per_example(
    val: &Tensor,
    test: &Tensor,
    validation: &Split,
    test_split: &Split,
) -> anyhow::Result<[Vec<f64>; 4]> {
    let both = Vec::<Vec<f64>>::try_from(&Tensor::cat(&[val, test], 0).to_device(Device::Cpu))?;
    let (nv, nt) = (validation.len() as f64, test_split.len() as f64);
    let scale = |row: &[f64], n: f64| row.iter().map(|v| v / n).collect::<Vec<f64>>();
    Ok([
        scale(&both[0], nv),
        scale(&both[1], nv),
        scale(&both[2], nt),
        scale(&both[3], nt),
    ])
}
