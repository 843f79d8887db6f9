//! The step loop: R replicas trained together in lockstep over one span of the schedule.
//! Inside the loop nothing is read back to the host; metrics are read at evaluation points only.

use std::time::Instant;

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::checkpoint::{self, Checkpointing, SpanCheckpoint, SpanKey};
use super::eval::{batch_losses, evaluate};
use super::optim::{Optimizer, OptimizerState};
use crate::config::TrainConfig;
use crate::data::augment::{self, Crops};
use crate::data::{index_chunk, transfer, BatchOrder, Dataset};
use crate::model::{forward_population, DropoutKeys, Input, Network, Pass, State};

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
            checkpoint: None,
        }
    }

    /// Whether a checkpoint is what this span's loop would have held at its iteration: its
    /// evaluation points are exactly the span's up to there, and its snapshots are the span's
    /// (all of them when `all_snapshots`: no mask schedule took any over).
    fn led_to(&self, ck: &SpanCheckpoint, eval_points: &[u64], all_snapshots: bool) -> bool {
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
        points.extend(
            self.mask_updates
                .iter()
                .filter(|&&u| u >= self.start && u <= self.end),
        );
        points.sort_unstable();
        points.dedup();
        points
    }
}

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
}

/// How a replica's learning rate follows the schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrPlan {
    /// Learning rate before the schedule's factor.
    pub base: f64,
    /// Whether the step schedule (`train.lr_milestones`) applies; if not, `base` is constant.
    pub scheduled: bool,
}

/// Masks that change during training (gradual pruning).
pub trait MaskSchedule {
    /// New masks `[R, P]` at `iteration`, given the current weights and masks.
    fn update(&mut self, iteration: u64, params: &Tensor, masks: &Tensor) -> Tensor;

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
}

/// The mutable state of one training span.
struct Live {
    params: Tensor,
    buffers: Vec<Tensor>,
    masks: Tensor,
    optimizer: Optimizer,
}

impl Live {
    /// Whether a checkpoint's tensors have this span's shapes (a file that does not is not
    /// used: the span then starts from its beginning).
    fn fits(&self, ck: &SpanCheckpoint) -> bool {
        let like = |a: &Tensor, b: &Tensor| a.size() == b.size() && a.kind() == b.kind();
        let state_fits = |state: &State| {
            like(&state.params, &self.params)
                && state.buffers.len() == self.buffers.len()
                && state
                    .buffers
                    .iter()
                    .zip(&self.buffers)
                    .all(|(a, b)| like(a, b))
        };
        let optimizer_fits =
            |opt: &OptimizerState| opt.tensors.iter().all(|(_, t)| like(t, &self.params));
        let replicas = self.params.size()[0];
        state_fits(&ck.state)
            && like(&ck.masks, &self.masks)
            && optimizer_fits(&ck.optimizer)
            && ck.loss_sum.size() == [replicas]
            && ck.loss_sum.kind() == Kind::Float
            && ck.diverged.len() == replicas as usize
            && ck.snapshots.iter().all(|s| {
                state_fits(&s.state)
                    && like(&s.masks, &self.masks)
                    && s.optimizer.as_ref().is_none_or(optimizer_fits)
            })
    }

    fn state(&self) -> State {
        State {
            params: self.params.detach().copy(),
            buffers: self.buffers.iter().map(|b| b.copy()).collect(),
        }
    }
}

impl Trainer<'_> {
    /// Trains the replicas over `span`, weights masked at the start and gradients masked at
    /// every step. Sets the process's GPU float32 precision from `cfg.tf32` first.
    pub fn train(
        &self,
        replicas: &Replicas<'_>,
        span: &Span,
        observer: &mut dyn Observer,
        mut mask_schedule: Option<&mut dyn MaskSchedule>,
    ) -> Result<SpanResult> {
        crate::precision::set_tf32(self.cfg.tf32);
        let masks = replicas.masks.shallow_clone();
        let mut orders: Vec<BatchOrder> = replicas
            .seeds
            .iter()
            .map(|&s| BatchOrder::new(s, self.data.train.len(), self.cfg.batch_size))
            .collect();
        let params = (&replicas.start.params * &masks)
            .detach()
            .set_requires_grad(true);
        let mut optimizer = Optimizer::new(self.cfg, &params);
        if let Some(saved) = replicas.optimizer {
            optimizer.restore(saved);
            optimizer.apply_mask(&masks);
        }
        let mut live = Live {
            params,
            buffers: replicas
                .start
                .buffers
                .iter()
                .map(|b| b.detach().copy())
                .collect(),
            masks,
            optimizer,
        };
        let seed_tensor =
            Tensor::from_slice(&replicas.seeds.iter().map(|&s| s as i64).collect::<Vec<_>>())
                .to_device(self.device);
        let mut lr = LrState::new(replicas.lrs, self.device);
        let crops = self.augment.map(|padding| {
            Crops::new(
                padding,
                &self.data.black,
                self.data.input_shape[0],
                self.device,
            )
        });
        let mut diverged: Vec<Option<u64>> = vec![None; replicas.seeds.len()];
        let mut loss_sum = Tensor::zeros([orders.len() as i64], (Kind::Float, self.device));
        let mut since_eval = 0u64;
        let mut evals = Vec::new();
        let mut snapshots = Vec::new();
        let eval_points = span.eval_points();
        let stops = self.stops(span, &eval_points);
        // Where checkpoints go and what identifies this span's.
        let checkpointing = span.checkpoint.as_ref().map(|c| {
            let key = SpanKey {
                start: span.start,
                end: span.end,
                seeds: replicas.seeds.to_vec(),
                params: live.params.size()[1],
                origin: checkpoint::origin(
                    replicas.start,
                    replicas.masks,
                    replicas.optimizer,
                    replicas.lrs,
                ),
            };
            (c, key)
        });

        let mut t = span.start;
        let names = Optimizer::state_names(self.cfg.optimizer);
        let resumed = checkpointing
            .as_ref()
            .and_then(|(c, key)| checkpoint::load(&c.path, key, names, self.device))
            .filter(|ck| {
                ck.iteration > span.start
                    && ck.iteration < span.end
                    && live.fits(ck)
                    && span.led_to(ck, &eval_points, mask_schedule.is_none())
            })
            // The schedule rebuilds its own state first; if it cannot, start over.
            .filter(|ck| match mask_schedule.as_deref_mut() {
                Some(schedule) => schedule.resume(ck.iteration).is_ok(),
                None => true,
            });
        if let Some(ck) = resumed {
            live.params = ck.state.params.set_requires_grad(true);
            live.buffers = ck.state.buffers;
            live.masks = ck.masks;
            live.optimizer.restore(&ck.optimizer);
            loss_sum = ck.loss_sum;
            since_eval = ck.since_eval;
            for (r, d) in ck.diverged.iter().enumerate() {
                if d.is_some() {
                    lr.stop(r);
                }
            }
            diverged = ck.diverged;
            evals = ck.evals;
            snapshots = ck.snapshots;
            t = ck.iteration;
            observer.steps(t - span.start);
            observer.resumed(t);
            if let Some(last) = evals.last() {
                observer.evaluated(last);
            }
        }
        let resumed_at = t;
        let mut last_checkpoint = Instant::now();
        for &stop in &stops {
            if stop <= resumed_at && resumed_at > span.start {
                continue; // done before the checkpoint
            }
            if stop > t {
                // Everything the host prepares for these steps reaches the device in one
                // copy each: batch indices, augmentation draws, learning rates.
                let steps = stop - t;
                let chunk = index_chunk(&mut orders, t, steps, self.device);
                let draws = crops.as_ref().map(|_| {
                    let padding = self.augment.unwrap_or(0);
                    augment::draw_chunk(
                        replicas.seeds,
                        t,
                        steps,
                        self.cfg.batch_size,
                        padding,
                        self.device,
                    )
                });
                let factors: Vec<f64> = (t..stop).map(|i| self.cfg.lr_factor(i)).collect();
                let lrs = lr.chunk(&factors);
                for i in 0..steps {
                    let keys = DropoutKeys {
                        seeds: &seed_tensor,
                        iteration: t + i,
                    };
                    let augmentation = crops
                        .as_ref()
                        .zip(draws.as_ref())
                        .map(|(c, d)| (c, d.get(i as i64)));
                    let losses = self.step(
                        &mut live,
                        &chunk.get(i as i64),
                        augmentation,
                        keys,
                        &lrs.get(i as i64),
                    );
                    loss_sum += losses;
                }
                observer.steps(stop - t);
                since_eval += stop - t;
                t = stop;
            }
            if eval_points.contains(&t) && evals.last().map(|e: &EvalPoint| e.iteration) != Some(t)
            {
                let train_loss = (since_eval > 0).then(|| {
                    Vec::<f64>::try_from(
                        &(&loss_sum / since_eval as f64)
                            .to_kind(Kind::Double)
                            .to_device(Device::Cpu),
                    )
                    .expect("train losses")
                });
                let _ = loss_sum.zero_();
                since_eval = 0;
                let point = self.evaluate(&live, t, train_loss)?;
                for r in newly_diverged(&point, &diverged) {
                    // Stop it: a zero learning rate from here on. Replicas never mix (every
                    // op is per replica), so the others go on unaffected.
                    diverged[r] = Some(t);
                    lr.stop(r);
                    observer.diverged(&replicas.labels[r], t);
                }
                observer.evaluated(&point);
                evals.push(point);
            }
            if span.snapshots.contains(&t) {
                let snap = Snapshot {
                    iteration: t,
                    state: live.state(),
                    masks: live.masks.copy(),
                    optimizer: span.snapshot_optimizer.then(|| live.optimizer.state()),
                };
                let kept = match mask_schedule.as_deref_mut() {
                    Some(schedule) => schedule.snapshot(snap)?,
                    None => Some(snap),
                };
                snapshots.extend(kept);
            }
            if let Some(schedule) = mask_schedule.as_deref_mut() {
                if span.mask_updates.contains(&t) {
                    live.masks = schedule.update(t, &live.params.detach(), &live.masks);
                    tch::no_grad(|| {
                        let _ = live.params.g_mul_(&live.masks);
                    });
                    live.optimizer.apply_mask(&live.masks);
                }
            }
            if let Some((c, key)) = &checkpointing {
                if t > span.start
                    && t < span.end
                    && eval_points.contains(&t)
                    && last_checkpoint.elapsed() >= c.every
                {
                    // The lists move into the checkpoint for the write and back out.
                    let ck = SpanCheckpoint {
                        iteration: t,
                        state: State {
                            params: live.params.detach(),
                            buffers: live.buffers.iter().map(|b| b.shallow_clone()).collect(),
                        },
                        masks: live.masks.shallow_clone(),
                        optimizer: live.optimizer.shared_state(),
                        loss_sum: loss_sum.shallow_clone(),
                        since_eval,
                        diverged: diverged.clone(),
                        evals: std::mem::take(&mut evals),
                        snapshots: std::mem::take(&mut snapshots),
                    };
                    let saved = checkpoint::save(&c.path, key, &ck);
                    evals = ck.evals;
                    snapshots = ck.snapshots;
                    saved?;
                    last_checkpoint = Instant::now();
                }
            }
        }
        Ok(SpanResult {
            state: State {
                params: live.params.detach(),
                buffers: live.buffers,
            },
            masks: live.masks,
            evals,
            snapshots,
            diverged,
        })
    }

    /// Iterations at which the loop pauses: evaluation points, snapshots and progress marks.
    fn stops(&self, span: &Span, eval_points: &[u64]) -> Vec<u64> {
        let mut stops: Vec<u64> = eval_points.to_vec();
        stops.extend(
            span.snapshots
                .iter()
                .chain(&span.mask_updates)
                .copied()
                .filter(|&s| s >= span.start && s <= span.end),
        );
        let mut t = span.start + PROGRESS_STEPS;
        while t < span.end {
            stops.push(t);
            t += PROGRESS_STEPS;
        }
        stops.sort_unstable();
        stops.dedup();
        stops
    }

    /// One optimizer step of every replica; returns the per-replica batch losses `[R]`.
    /// `augmentation`: the crops and this step's draws `[R x B, 3]`, when augmenting.
    fn step(
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
        let pass = Pass {
            params: &live.params,
            buffers: &live.buffers,
            train: true,
            dropout: Some(keys),
        };
        let logits = forward_population(self.net, &pass, Input::PerReplica(&x));
        let losses = batch_losses(&logits, &y);
        let grad = Tensor::run_backward(&[losses.sum(Kind::Float)], &[&live.params], false, false)
            .pop()
            .expect("one gradient");
        let mut grad = grad;
        live.optimizer
            .step(&mut live.params, &mut grad, &live.masks, lr);
        losses.detach()
    }

    fn evaluate(
        &self,
        live: &Live,
        iteration: u64,
        train_loss: Option<Vec<f64>>,
    ) -> Result<EvalPoint> {
        let state = State {
            params: live.params.detach(),
            buffers: live.buffers.iter().map(|b| b.shallow_clone()).collect(),
        };
        let val = evaluate(self.net, &state, &self.data.validation);
        let test = evaluate(self.net, &state, &self.data.test);
        let both = Vec::<Vec<f64>>::try_from(&Tensor::cat(&[val, test], 0).to_device(Device::Cpu))?;
        let (nv, nt) = (
            self.data.validation.len() as f64,
            self.data.test.len() as f64,
        );
        Ok(EvalPoint {
            iteration,
            train_loss,
            val_loss: both[0].iter().map(|l| l / nv).collect(),
            val_accuracy: both[1].iter().map(|c| c / nv).collect(),
            test_loss: both[2].iter().map(|l| l / nt).collect(),
            test_accuracy: both[3].iter().map(|c| c / nt).collect(),
        })
    }
}

/// Replicas whose validation or training loss is not finite at `point` and were not yet
/// marked.
fn newly_diverged(point: &EvalPoint, diverged: &[Option<u64>]) -> Vec<usize> {
    let train = point.train_loss.as_deref().unwrap_or(&[]);
    (0..diverged.len())
        .filter(|&r| diverged[r].is_none())
        .filter(|&r| !point.val_loss[r].is_finite() || train.get(r).is_some_and(|l| !l.is_finite()))
        .collect()
}

/// Every replica's learning-rate plan; diverged replicas' are set to zero.
struct LrState {
    plans: Vec<LrPlan>,
    device: Device,
}

impl LrState {
    fn new(plans: &[LrPlan], device: Device) -> Self {
        Self {
            plans: plans.to_vec(),
            device,
        }
    }

    /// Replica `r` learns no more (learning rate 0 from now on).
    fn stop(&mut self, r: usize) {
        self.plans[r] = LrPlan {
            base: 0.0,
            scheduled: false,
        };
    }

    /// The learning rates `[steps, R, 1]` of a chunk of steps whose schedule factors are
    /// `factors`, on the device in one copy (step i's `[R, 1]` is `.get(i)`).
    fn chunk(&self, factors: &[f64]) -> Tensor {
        let values: Vec<f32> = factors
            .iter()
            .flat_map(|&f| {
                self.plans
                    .iter()
                    .map(move |p| (if p.scheduled { p.base * f } else { p.base }) as f32)
            })
            .collect();
        let host = Tensor::from_slice(&values).view([factors.len() as i64, -1, 1]);
        transfer::to_device(host, self.device)
    }
}
