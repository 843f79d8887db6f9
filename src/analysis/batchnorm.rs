//! BatchNorm statistics of networks that were never trained as they are (points on a path
//! between two networks): each network's running means and variances recomputed from training
//! batches, as PyTorch's `torch.optim.swa_utils.update_bn` does, the mean over the batches of
//! each batch's own statistics (unbiased variances), every batch normalised by its own
//! statistics on the way.

use tch::{Kind, Tensor};

use crate::data::Split;
use crate::model::state::initial_buffers;
use crate::model::{forward_population, Input, Network, Pass};

/// The momentum of the engine's BatchNorm (`model::layers::batch_norm`): a training pass moves
/// a running statistic this far towards the batch's.
const MOMENTUM: f64 = 0.1;

/// Which training examples the statistics are recomputed on: the first `batches` batches of
/// `batch_size` examples of `split`, in order (no augmentation), the same for every network.
#[derive(Clone, Copy)]
pub struct StatisticsBatches<'a> {
    /// The training split.
    pub split: &'a Split,
    /// Batches.
    pub batches: usize,
    /// Examples per batch.
    pub batch_size: usize,
}

/// The buffers (running statistics, `[A, ...]` each) of the A networks of `params` (`[A, P]`),
/// recomputed on `on`: each batch passes through the networks in training mode from
/// statistics of zero, which leaves `MOMENTUM` times the batch's statistics in the buffers;
/// those are summed and divided by the batches.
pub fn recompute_statistics(
    net: &dyn Network,
    params: &Tensor,
    on: StatisticsBatches<'_>,
) -> Vec<Tensor> {
    let networks = params.size()[0] as usize;
    let device = params.device();
    let zeros = || -> Vec<Tensor> {
        initial_buffers(net.layout(), networks, device)
            .iter()
            .map(Tensor::zeros_like)
            .collect()
    };
    let mut sums: Vec<Tensor> = zeros().iter().map(|b| b.to_kind(Kind::Double)).collect();
    let n = on.split.len();
    let batches = on.batches.min(n.div_ceil(on.batch_size)).max(1);
    tch::no_grad(|| {
        for b in 0..batches {
            let start = (b * on.batch_size) as i64;
            let len = on.batch_size.min(n - b * on.batch_size) as i64;
            let x = on.split.images.narrow(0, start, len);
            let buffers = zeros();
            let pass = Pass {
                params,
                buffers: &buffers,
                train: true,
                dropout: None,
            };
            let _ = forward_population(net, &pass, Input::Shared(&x));
            for (sum, moved) in sums.iter_mut().zip(&buffers) {
                *sum += moved.to_kind(Kind::Double) / MOMENTUM;
            }
        }
    });
    sums.iter()
        .map(|s| (s / batches as f64).to_kind(Kind::Float))
        .collect()
}
