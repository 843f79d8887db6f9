//! The step loop: R replicas trained together in lockstep over one span of the schedule.
//! Inside the loop nothing is read back to the host; metrics are read at evaluation points only.
//! What the loop does at each stop is in `span_loop`; here are the trainer, one step and one
//! evaluation.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::eval::{evaluate, evaluate_mixed, per_example};
use super::optim::OptimizerState;
use super::span::Span;
use super::span_loop::{Live, SpanLoop};
use crate::config::{LrPlan, TrainConfig};
use crate::data::augment::Crops;
use crate::data::Dataset;
use crate::model::sparse::SparseMlp;
use crate::model::{batch_losses, forward_population, DropoutKeys, Input, Network, Pass, State};

/// Metrics of every replica at one evaluation point (index = replica).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPoint {
    /// Schedule iteration.
    pub iteration: u64,
    /// Mean training loss over the steps since the previous point (None at the first point).
    pub train_loss: Option<Vec<f64>>,
    /// Validation loss.
    pub val_loss: Vec<f64>,
    /// Validation accuracy (fraction).
    pub val_accuracy: Vec<f64>,
    /// Test loss.
    pub test_loss: Vec<f64>,
    /// Test accuracy (fraction).
    pub test_accuracy: Vec<f64>,
}

/// Weights and optimizer state at one iteration.
#[derive(Debug)]
pub struct Snapshot {
    /// Schedule iteration.
    pub iteration: u64,
    /// Parameters and buffers.
    pub state: State,
    /// Masks `[R, P]` in force when the snapshot was taken.
    pub masks: Tensor,
    /// Optimizer state, when the span asked for it.
    pub optimizer: Option<OptimizerState>,
}

/// What training a span produced.
#[derive(Debug)]
pub struct SpanResult {
    /// Final parameters and buffers.
    pub state: State,
    /// Final masks `[R, P]`.
    pub masks: Tensor,
    /// One entry per evaluation point.
    pub evals: Vec<EvalPoint>,
    /// Requested snapshots, in iteration order.
    pub snapshots: Vec<Snapshot>,
    /// Per replica, the evaluation iteration at which its loss was first non-finite.
    pub diverged: Vec<Option<u64>>,
    /// The most replicas that ran on their surviving weights only at once in the span
    /// (`train.sparse_kernels`); 0: all dense.
    pub sparse_replicas: usize,
}

/// Masks that change during training (gradual pruning).
pub trait MaskSchedule {
    /// New masks `[R, P]` at `iteration`, given the current weights (and buffers) and masks.
    /// `dense_momentum`: the momentum of the dense gradient `[R, P]` when the schedule asks
    /// for it ([`MaskSchedule::dense_momentum`]).
    fn update(
        &mut self,
        iteration: u64,
        state: &State,
        masks: &Tensor,
        dense_momentum: Option<&Tensor>,
    ) -> Tensor;

    /// The coefficient beta of a momentum of the dense gradient (pruned positions included)
    /// the span keeps for the schedule, `m <- beta m + g` at every step (SNFS grows by it);
    /// `None`, the default: none kept. The span then trains every replica through autograd
    /// (the sparse kernels leave pruned positions' gradients unwritten).
    fn dense_momentum(&self) -> Option<f64> {
        None
    }

    /// What the weights an update makes active start from, `[R, P]` (read at those positions
    /// only); `None`, the default: zero.
    fn regrown_start(&self) -> Option<&Tensor> {
        None
    }

    /// Takes a snapshot as soon as it is made (to write it out rather than hold every one in
    /// memory); what it hands back is kept in the span's result.
    fn snapshot(&mut self, snapshot: Snapshot) -> Result<Option<Snapshot>> {
        Ok(Some(snapshot))
    }

    /// The span continues from a checkpoint at `iteration` (masks included): rebuild whatever
    /// the schedule kept from the snapshots before it.
    fn resume(&mut self, _iteration: u64) -> Result<()> {
        Ok(())
    }
}

/// Progress notifications from the step loop.
pub trait Observer {
    /// `steps` more optimizer steps were taken.
    fn steps(&mut self, steps: u64);
    /// An evaluation point was reached.
    fn evaluated(&mut self, point: &EvalPoint);
    /// Replica `label`'s loss became non-finite at `iteration`; it stops training.
    fn diverged(&mut self, _label: &str, _iteration: u64) {}
    /// The span continues from its checkpoint at `iteration` (called after `steps` has counted
    /// the iterations before it, and before any step).
    fn resumed(&mut self, _iteration: u64) {}
}

/// Everything the loop needs besides the weights.
pub struct Trainer<'a> {
    /// The network.
    pub net: &'a dyn Network,
    /// The data, on `device`.
    pub data: &'a Dataset,
    /// Hyperparameters.
    pub cfg: &'a TrainConfig,
    /// Random crop padding and flips, when augmenting.
    pub augment: Option<usize>,
    /// Device of the population.
    pub device: Device,
}

/// The replicas of one training span and what distinguishes them.
pub struct Replicas<'a> {
    /// Starting parameters `[R, P]` and buffers.
    pub start: &'a State,
    /// Masks `[R, P]` (1 = kept).
    pub masks: &'a Tensor,
    /// `seeds[r]` fixes replica r's batch order, augmentation and dropout.
    pub seeds: &'a [u64],
    /// `lrs[r]`: replica r's learning rate.
    pub lrs: &'a [LrPlan],
    /// `labels[r]` names replica r in error messages.
    pub labels: &'a [String],
    /// Optimizer state to start from (fresh when absent).
    pub optimizer: Option<&'a OptimizerState>,
    /// What the pruned positions hold, frozen through the span, `[R, P]` (read where the
    /// masks are 0; Zhou et al. 2019's mask-0 actions); `None`: zero.
    pub frozen: Option<&'a Tensor>,
}

impl Trainer<'_> {
    /// Trains the replicas over `span`, weights masked at the start and gradients masked at
    /// every step. Sets the process's GPU float32 precision from `cfg.tf32` first. At each
    /// stop of the span, in this order: the steps up to it, the evaluation, the snapshot, the
    /// mask update and the checkpoint that fall there. A stop signal ([`crate::interrupt`])
    /// ends it between two steps with an [`crate::interrupt::Interrupted`] error, after a
    /// checkpoint of the iteration reached.
    pub fn train(
        &self,
        replicas: &Replicas<'_>,
        span: &Span,
        observer: &mut dyn Observer,
        mut mask_schedule: Option<&mut dyn MaskSchedule>,
    ) -> Result<SpanResult> {
        crate::precision::set_tf32(self.cfg.tf32);
        let mut run = SpanLoop::start(self, replicas, span);
        if let Some(beta) = mask_schedule.as_deref().and_then(|s| s.dense_momentum()) {
            run.keep_dense_momentum(self, beta);
        }
        let resumed_at = run.resume(observer, mask_schedule.as_deref_mut());
        for stop in span.stops(run.eval_points()) {
            if stop <= resumed_at && resumed_at > span.start {
                continue; // done before the checkpoint
            }
            run.train_to(stop, observer);
            if let Some(signal) = crate::interrupt::pending() {
                if run.iteration() < stop {
                    return Err(run.interrupted(signal)?.into());
                }
            }
            run.evaluation_point(observer)?;
            run.snapshot(mask_schedule.as_deref_mut())?;
            run.update_masks(mask_schedule.as_deref_mut());
            run.checkpoint()?;
        }
        Ok(run.finish())
    }

    /// One optimizer step of every replica; returns the per-replica batch losses `[R]`.
    /// `augmentation`: the crops and this step's draws `[R x B, 3]`, when augmenting.
    pub(super) fn step(
        &self,
        live: &mut Live,
        indices: &Tensor,
        augmentation: Option<(&Crops, Tensor)>,
        keys: DropoutKeys<'_>,
        lr: &Tensor,
    ) -> Tensor {
        let (r, b) = (indices.size()[0], indices.size()[1]);
        let flat = indices.view([-1]);
        let mut x = self.data.train.images.index_select(0, &flat);
        if let Some((crops, draws)) = augmentation {
            x = crops.apply(&x, &draws);
        }
        let [c, h, w] = self.data.input_shape.map(|d| d as i64);
        let x = x.view([r, b, c, h, w]);
        let y = self.data.train.labels.index_select(0, &flat).view([r, b]);
        if live.sparse.is_some() {
            return self.mixed_step(live, &x, &y, lr);
        }
        let pass = Pass {
            params: &live.params,
            buffers: &live.buffers,
            train: true,
            dropout: Some(keys),
        };
        let logits = forward_population(self.net, &pass, Input::PerReplica(&x));
        let losses = batch_losses(&logits, &y);
        let mut grad =
            Tensor::run_backward(&[losses.sum(Kind::Float)], &[&live.params], false, false)
                .pop()
                .expect("one gradient");
        if let Some((momentum, beta)) = &mut live.dense_momentum {
            tch::no_grad(|| {
                let _ = momentum.g_mul_scalar_(*beta).g_add_(&grad);
            });
        }
        add_l1(live, &mut grad);
        live.optimizer
            .step(&mut live.params, &mut grad, &live.masks, lr);
        losses.detach()
    }

    /// [`Self::step`] when some replicas run sparse (a fully connected network without
    /// dropout or buffers): those by hand through the sparse kernels, the others through
    /// autograd on their own rows, exactly as in the ordinary step.
    fn mixed_step(&self, live: &mut Live, x: &Tensor, y: &Tensor, lr: &Tensor) -> Tensor {
        let sparse = live.sparse.as_ref().expect("a sparse plan");
        let replicas = live.params.size()[0];
        let (runs, rest): (Vec<i64>, Vec<i64>) =
            (0..replicas).partition(|&r| sparse.runs(r as usize));
        let mut losses = Tensor::zeros([replicas], (Kind::Float, self.device));
        // All sparse: the span's gradient buffer, zero at the pruned positions (never written)
        // and overwritten at the others by every step.
        let mut grad = if rest.is_empty() {
            let params = &live.params;
            live.sparse_grad
                .get_or_insert_with(|| params.detach().zeros_like())
                .shallow_clone()
        } else {
            let idx = Tensor::from_slice(&rest);
            let pass = Pass {
                params: &live.params.index_select(0, &idx),
                buffers: &[],
                train: true,
                dropout: None,
            };
            let xs = x.index_select(0, &idx);
            let logits = forward_population(self.net, &pass, Input::PerReplica(&xs));
            let own = batch_losses(&logits, &y.index_select(0, &idx));
            let _ = losses.index_copy_(0, &idx, &own.detach());
            Tensor::run_backward(&[own.sum(Kind::Float)], &[&live.params], false, false)
                .pop()
                .expect("one gradient")
        };
        let params = live.params.detach();
        tch::no_grad(|| {
            for &r in &runs {
                let mut row = grad.get(r);
                let loss = sparse.loss_and_grad(
                    r as usize,
                    &params.get(r),
                    &x.get(r),
                    &y.get(r),
                    &mut row,
                );
                let _ = losses.get(r).fill_(f64::from(loss));
            }
        });
        add_l1(live, &mut grad);
        // A sparse replica's gradient is zero at its pruned positions (never written), so
        // Adam visits its kept positions only (the same bits there; the pruned stay zero).
        let kept = sparse.kept();
        live.optimizer
            .step_kept(&mut live.params, &mut grad, &live.masks, lr, &kept);
        losses
    }

    /// Every replica's validation and test metrics at `iteration`.
    pub(super) fn evaluate(
        &self,
        live: &mut Live,
        iteration: u64,
        train_loss: Option<Vec<f64>>,
    ) -> Result<EvalPoint> {
        let state = live.view();
        let (val, test) = match &live.sparse {
            None => (
                evaluate(self.net, &state, &self.data.validation),
                evaluate(self.net, &state, &self.data.test),
            ),
            Some(sparse) => {
                let (data, net) = (self.data, self.net);
                let (vb, tb) = live.eval_blocks.get_or_insert_with(|| {
                    (
                        SparseMlp::blocks(&data.validation.images, &data.validation.labels),
                        SparseMlp::blocks(&data.test.images, &data.test.labels),
                    )
                });
                (
                    evaluate_mixed(net, sparse, &state, &data.validation, vb),
                    evaluate_mixed(net, sparse, &state, &data.test, tb),
                )
            }
        };
        let [val_loss, val_accuracy, test_loss, test_accuracy] =
            per_example(&val, &test, &self.data.validation, &self.data.test)?;
        Ok(EvalPoint {
            iteration,
            train_loss,
            val_loss,
            val_accuracy,
            test_loss,
            test_accuracy,
        })
    }
}

/// Adds `train.l1 * sign(w)` to the gradient of the prunable weights, when L1 is on. A pruned
/// weight is zero, so its sign adds nothing (and the optimizer masks its gradient anyway); a
/// sparse replica's gradient buffer gains nothing at positions no step writes.
fn add_l1(live: &Live, grad: &mut Tensor) {
    if let Some(l1) = &live.l1 {
        let _ = grad.g_add_(&(live.params.detach().sign() * l1));
    }
}
