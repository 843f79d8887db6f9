//! One span being trained, step by named step: set-up, resume from a checkpoint, the steps up
//! to a stop, the evaluation point, the snapshot, the mask update and the checkpoint there.
//! Every step runs in the order [`super::Trainer::train`] calls them, on the same tensors, so
//! a span continued from a checkpoint ends with the same bits as one that never stopped.

use std::time::Instant;

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::checkpoint::{self, Checkpointing, SpanCheckpoint, SpanKey};
use super::engine::{EvalPoint, MaskSchedule, Observer, Replicas, Snapshot, SpanResult, Trainer};
use super::optim::Optimizer;
use super::span::Span;
use crate::config::LrPlan;
use crate::data::augment::{self, Crops};
use crate::data::{index_chunk, transfer, BatchOrder};
use crate::model::sparse::{EvalBlocks, SparseMlp};
use crate::model::{DropoutKeys, State};

/// The tensors a span trains.
pub(super) struct Live {
    pub(super) params: Tensor,
    pub(super) buffers: Vec<Tensor>,
    pub(super) masks: Tensor,
    pub(super) optimizer: Optimizer,
    /// The replicas that run on their surviving weights only (`train.sparse_kernels`) and
    /// their layers' entries; `None`: all dense, through autograd.
    pub(super) sparse: Option<SparseMlp>,
    /// The validation and test inputs as [`SparseMlp::blocks`], made at the first sparse
    /// evaluation of the span (they never change).
    pub(super) eval_blocks: Option<(EvalBlocks, EvalBlocks)>,
    /// The gradient `[R, P]` of steps where every replica runs sparse, kept from one step to
    /// the next (zero at the pruned positions, which no step writes); made anew with each plan.
    pub(super) sparse_grad: Option<Tensor>,
    /// `train.l1` at the prunable weights' positions, 0 elsewhere (`[P]`); `None` without L1.
    pub(super) l1: Option<Tensor>,
    /// The momentum of the dense gradient `[R, P]` and its beta, where the mask schedule
    /// keeps one ([`super::MaskSchedule::dense_momentum`]).
    pub(super) dense_momentum: Option<(Tensor, f64)>,
    /// The frozen values of pruned positions ([`super::Replicas::frozen`], zero at the kept
    /// ones), which mask updates put back; with them the sparse kernels, which compute
    /// through the kept weights only, are not used.
    pub(super) frozen: Option<Tensor>,
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
            |opt: &super::OptimizerState| opt.tensors.iter().all(|(_, t)| like(t, &self.params));
        let replicas = self.params.size()[0];
        state_fits(&ck.state)
            && like(&ck.masks, &self.masks)
            && optimizer_fits(&ck.optimizer)
            && ck.loss_sum.size() == [replicas]
            && ck.loss_sum.kind() == Kind::Float
            && ck.diverged.len() == replicas as usize
            && match (&self.dense_momentum, &ck.dense_momentum) {
                (Some((m, _)), Some(c)) => like(m, c),
                (None, None) => true,
                _ => false,
            }
            && ck.snapshots.iter().all(|s| {
                state_fits(&s.state)
                    && like(&s.masks, &self.masks)
                    && s.optimizer.as_ref().is_none_or(optimizer_fits)
            })
    }

    /// Plans which replicas run sparse under the masks in force, and raises
    /// `sparse_replicas` (the span's most, for `timings.csv`) to their number.
    fn plan_sparse(&mut self, trainer: &Trainer<'_>, sparse_replicas: &mut usize) {
        self.sparse_grad = None;
        if self.dense_momentum.is_some() || self.frozen.is_some() {
            self.sparse = None;
            return;
        }
        self.sparse = trainer.net.fully_connected().and_then(|layers| {
            SparseMlp::plan(
                trainer.net.layout(),
                layers,
                &self.masks,
                trainer.cfg.sparse_kernels,
            )
        });
        *sparse_replicas =
            (*sparse_replicas).max(self.sparse.as_ref().map_or(0, SparseMlp::replicas));
    }

    fn state(&self) -> State {
        State {
            params: self.params.detach().copy(),
            buffers: self.buffers.iter().map(|b| b.copy()).collect(),
        }
    }

    /// The live weights (detached) and buffers, shared rather than copied.
    pub(super) fn view(&self) -> State {
        State {
            params: self.params.detach(),
            buffers: self.buffers.iter().map(|b| b.shallow_clone()).collect(),
        }
    }
}

/// What the loop has gathered so far, carried from one stop to the next (and in checkpoints).
struct Gathered {
    /// Per replica, the iteration at which it diverged.
    diverged: Vec<Option<u64>>,
    /// Sum of the per-replica batch losses `[R]` since the last evaluation.
    loss_sum: Tensor,
    /// Steps summed in `loss_sum`.
    since_eval: u64,
    evals: Vec<EvalPoint>,
    snapshots: Vec<Snapshot>,
}

/// One span in training.
pub(super) struct SpanLoop<'s> {
    trainer: &'s Trainer<'s>,
    replicas: &'s Replicas<'s>,
    span: &'s Span,
    live: Live,
    orders: Vec<BatchOrder>,
    seed_tensor: Tensor,
    lr: LrState,
    crops: Option<Crops>,
    eval_points: Vec<u64>,
    /// Where checkpoints go and what identifies this span's.
    checkpointing: Option<(&'s Checkpointing, SpanKey)>,
    gathered: Gathered,
    /// The most replicas that ran sparse at once in the span.
    sparse_replicas: usize,
    /// The iteration reached.
    t: u64,
    last_checkpoint: Instant,
}

impl<'s> SpanLoop<'s> {
    /// The span at its first iteration: weights masked, optimizer fresh or restored (and
    /// masked), batch orders, learning rates and crops of every replica.
    pub(super) fn start(
        trainer: &'s Trainer<'s>,
        replicas: &'s Replicas<'s>,
        span: &'s Span,
    ) -> Self {
        let (cfg, device) = (trainer.cfg, trainer.device);
        let masks = replicas.masks.shallow_clone();
        let orders: Vec<BatchOrder> = replicas
            .seeds
            .iter()
            .map(|&s| BatchOrder::new(s, trainer.data.train.len(), cfg.batch_size))
            .collect();
        // Pruned positions hold zero, or their frozen values (never updated: the optimizer
        // masks their gradients and keeps no state for them).
        let params = match replicas.frozen {
            None => &replicas.start.params * &masks,
            Some(frozen) => &replicas.start.params * &masks + frozen * (1.0 - &masks),
        };
        let params = params.detach().set_requires_grad(true);
        let mut optimizer = Optimizer::new(cfg, &params);
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
            sparse: None,
            eval_blocks: None,
            sparse_grad: None,
            l1: l1_weights(trainer, device),
            dense_momentum: None,
            frozen: replicas.frozen.map(|f| f * (1.0 - replicas.masks)),
        };
        let mut sparse_replicas = 0;
        live.plan_sparse(trainer, &mut sparse_replicas);
        let seed_tensor =
            Tensor::from_slice(&replicas.seeds.iter().map(|&s| s as i64).collect::<Vec<_>>())
                .to_device(device);
        let crops = trainer.augment.map(|padding| {
            Crops::new(
                padding,
                &trainer.data.black,
                trainer.data.input_shape[0],
                device,
            )
        });
        let gathered = Gathered {
            diverged: vec![None; replicas.seeds.len()],
            loss_sum: Tensor::zeros([orders.len() as i64], (Kind::Float, device)),
            since_eval: 0,
            evals: Vec::new(),
            snapshots: Vec::new(),
        };
        let checkpointing = span.checkpoint.as_ref().map(|c| {
            let key = SpanKey {
                start: span.start,
                end: span.end,
                seeds: replicas.seeds.to_vec(),
                params: live.params.size()[1],
                origin: checkpoint::origin(
                    replicas.start,
                    (replicas.masks, replicas.frozen),
                    replicas.optimizer,
                    replicas.lrs,
                ),
            };
            (c, key)
        });
        Self {
            trainer,
            replicas,
            span,
            live,
            orders,
            seed_tensor,
            lr: LrState::new(replicas.lrs, device),
            crops,
            eval_points: span.eval_points(),
            checkpointing,
            gathered,
            sparse_replicas,
            t: span.start,
            last_checkpoint: Instant::now(),
        }
    }

    /// The span's evaluation iterations.
    pub(super) fn eval_points(&self) -> &[u64] {
        &self.eval_points
    }

    /// Continues from the span's checkpoint when there is a usable one (of this span, with
    /// its shapes, at a point this loop would have reached the same way, and one the mask
    /// schedule can rebuild its own state for); returns the iteration the loop is at.
    pub(super) fn resume(
        &mut self,
        observer: &mut dyn Observer,
        mut mask_schedule: Option<&mut (dyn MaskSchedule + '_)>,
    ) -> u64 {
        let names = Optimizer::state_names(self.trainer.cfg.optimizer);
        let span = self.span;
        let without_schedule = mask_schedule.is_none();
        let resumed = self
            .checkpointing
            .as_ref()
            .and_then(|(c, key)| c.store.load(key, names, self.trainer.device))
            .filter(|ck| {
                ck.iteration > span.start
                    && ck.iteration < span.end
                    && self.live.fits(ck)
                    && span.led_to(ck, &self.eval_points, without_schedule)
            })
            // The schedule rebuilds its own state first; if it cannot, start over.
            .filter(|ck| match &mut mask_schedule {
                Some(schedule) => schedule.resume(ck.iteration).is_ok(),
                None => true,
            });
        if let Some(ck) = resumed {
            self.live.params = ck.state.params.set_requires_grad(true);
            self.live.buffers = ck.state.buffers;
            self.live.masks = ck.masks;
            self.live
                .plan_sparse(self.trainer, &mut self.sparse_replicas);
            self.live.optimizer.restore(&ck.optimizer);
            if let (Some((m, _)), Some(saved)) = (&mut self.live.dense_momentum, ck.dense_momentum)
            {
                m.copy_(&saved);
            }
            for (r, d) in ck.diverged.iter().enumerate() {
                if d.is_some() {
                    self.lr.stop(r);
                }
            }
            self.gathered = Gathered {
                diverged: ck.diverged,
                loss_sum: ck.loss_sum,
                since_eval: ck.since_eval,
                evals: ck.evals,
                snapshots: ck.snapshots,
            };
            self.t = ck.iteration;
            observer.steps(self.t - span.start);
            observer.resumed(self.t);
            if let Some(last) = self.gathered.evals.last() {
                observer.evaluated(last);
            }
        }
        self.last_checkpoint = Instant::now();
        self.t
    }

    /// Trains every replica up to iteration `stop`. Everything the host prepares for these
    /// steps reaches the device in one copy each: batch indices, augmentation draws, learning
    /// rates.
    pub(super) fn train_to(&mut self, stop: u64, observer: &mut dyn Observer) {
        let t = self.t;
        if stop <= t {
            return;
        }
        let (trainer, cfg, device) = (self.trainer, self.trainer.cfg, self.trainer.device);
        let steps = stop - t;
        let chunk = index_chunk(&mut self.orders, t, steps, device);
        let draws = self.crops.as_ref().map(|_| {
            let padding = trainer.augment.unwrap_or(0);
            augment::draw_chunk(
                self.replicas.seeds,
                t,
                steps,
                cfg.batch_size,
                padding,
                device,
            )
        });
        let factors: Vec<f64> = (t..stop).map(|i| cfg.lr_factor(i)).collect();
        let lrs = self.lr.chunk(&factors);
        let mut done = 0;
        for i in 0..steps {
            if crate::interrupt::pending().is_some() {
                break;
            }
            let keys = DropoutKeys {
                seeds: &self.seed_tensor,
                iteration: t + i,
            };
            let augmentation = self
                .crops
                .as_ref()
                .zip(draws.as_ref())
                .map(|(c, d)| (c, d.get(i as i64)));
            let losses = trainer.step(
                &mut self.live,
                &chunk.get(i as i64),
                augmentation,
                keys,
                &lrs.get(i as i64),
            );
            self.gathered.loss_sum += losses;
            done += 1;
        }
        observer.steps(done);
        self.gathered.since_eval += done;
        self.t = t + done;
    }

    /// The iteration reached.
    pub(super) fn iteration(&self) -> u64 {
        self.t
    }

    /// Stops the span where a stop signal found it (see [`crate::interrupt`]): a checkpoint
    /// of the iteration reached when the span takes checkpoints and has trained a step; the
    /// error saying so.
    pub(super) fn interrupted(
        &mut self,
        signal: &'static str,
    ) -> Result<crate::interrupt::Interrupted> {
        let checkpoint =
            self.checkpointing.is_some() && self.t > self.span.start && self.t < self.span.end;
        if checkpoint {
            self.save_checkpoint()?;
        }
        Ok(crate::interrupt::Interrupted::in_training(
            signal, self.t, checkpoint,
        ))
    }

    /// Evaluates every replica when the iteration reached is an evaluation point not yet
    /// evaluated; a replica whose loss is no longer finite stops learning from here on.
    pub(super) fn evaluation_point(&mut self, observer: &mut dyn Observer) -> Result<()> {
        let t = self.t;
        let g = &mut self.gathered;
        if !self.eval_points.contains(&t) || g.evals.last().map(|e| e.iteration) == Some(t) {
            return Ok(());
        }
        let train_loss = (g.since_eval > 0).then(|| {
            Vec::<f64>::try_from(
                &(&g.loss_sum / g.since_eval as f64)
                    .to_kind(Kind::Double)
                    .to_device(Device::Cpu),
            )
            .expect("train losses")
        });
        let _ = g.loss_sum.zero_();
        g.since_eval = 0;
        let point = self.trainer.evaluate(&mut self.live, t, train_loss)?;
        for r in newly_diverged(&point, &g.diverged) {
            // Stop it: a zero learning rate from here on. Replicas never mix (every op is
            // per replica), so the others go on unaffected.
            g.diverged[r] = Some(t);
            self.lr.stop(r);
            observer.diverged(&self.replicas.labels[r], t);
        }
        observer.evaluated(&point);
        g.evals.push(point);
        Ok(())
    }

    /// Keeps a copy of the weights (and masks, and the optimizer state when the span asks)
    /// when the iteration reached is one of the span's snapshots; a mask schedule takes it
    /// first.
    pub(super) fn snapshot(
        &mut self,
        mask_schedule: Option<&mut (dyn MaskSchedule + '_)>,
    ) -> Result<()> {
        let t = self.t;
        if !self.span.snapshots.contains(&t) {
            return Ok(());
        }
        let snap = Snapshot {
            iteration: t,
            state: self.live.state(),
            masks: self.live.masks.copy(),
            optimizer: self
                .span
                .snapshot_optimizer
                .then(|| self.live.optimizer.state()),
        };
        let kept = match mask_schedule {
            Some(schedule) => schedule.snapshot(snap)?,
            None => Some(snap),
        };
        self.gathered.snapshots.extend(kept);
        Ok(())
    }

    /// Sets the masks the schedule gives at the iteration reached, when it is one of the
    /// span's mask updates: newly pruned weights and their optimizer state become zero, newly
    /// active ones start where the schedule says (zero by default).
    pub(super) fn update_masks(&mut self, mask_schedule: Option<&mut (dyn MaskSchedule + '_)>) {
        let t = self.t;
        let Some(schedule) = mask_schedule else {
            return;
        };
        if !self.span.mask_updates.contains(&t) {
            return;
        }
        let live = &mut self.live;
        let momentum = live.dense_momentum.as_ref().map(|(m, _)| m);
        let updated = schedule.update(t, &live.view(), &live.masks, momentum);
        let before = std::mem::replace(&mut live.masks, updated);
        tch::no_grad(|| {
            let _ = live.params.g_mul_(&live.masks);
            if let Some(start) = schedule.regrown_start() {
                let grown = &live.masks * (1.0 - &before);
                let start = start.to_kind(live.params.kind());
                let _ = live.params.g_add_(&(start * grown));
            }
            // Frozen values of members whose mask the update leaves as it is, put back.
            if let Some(frozen) = &live.frozen {
                let _ = live.params.g_add_(&(frozen * (1.0 - &live.masks)));
            }
        });
        live.optimizer.apply_mask(&live.masks);
        live.plan_sparse(self.trainer, &mut self.sparse_replicas);
    }

    /// Keeps a momentum of the dense gradient with coefficient `beta` from the span's start
    /// (zero there), for the mask schedule; every replica then trains through autograd.
    pub(super) fn keep_dense_momentum(&mut self, trainer: &Trainer<'_>, beta: f64) {
        let zeros = self.live.params.detach().zeros_like();
        self.live.dense_momentum = Some((zeros, beta));
        let mut sparse = 0;
        self.live.plan_sparse(trainer, &mut sparse);
        self.sparse_replicas = sparse;
    }

    /// Saves a checkpoint when the span takes them, the iteration reached is an evaluation
    /// point strictly inside the span, and the least time between two has passed.
    pub(super) fn checkpoint(&mut self) -> Result<()> {
        let t = self.t;
        let Some((c, _)) = &self.checkpointing else {
            return Ok(());
        };
        if !(t > self.span.start
            && t < self.span.end
            && self.eval_points.contains(&t)
            && self.last_checkpoint.elapsed() >= c.every)
        {
            return Ok(());
        }
        self.save_checkpoint()
    }

    /// Saves the checkpoint of the iteration reached (everything due there already done).
    fn save_checkpoint(&mut self) -> Result<()> {
        let t = self.t;
        let Some((c, key)) = &self.checkpointing else {
            return Ok(());
        };
        // The lists move into the checkpoint for the write and back out.
        let g = &mut self.gathered;
        let ck = SpanCheckpoint {
            iteration: t,
            state: State {
                params: self.live.params.detach(),
                buffers: self
                    .live
                    .buffers
                    .iter()
                    .map(|b| b.shallow_clone())
                    .collect(),
            },
            masks: self.live.masks.shallow_clone(),
            optimizer: self.live.optimizer.shared_state(),
            dense_momentum: self
                .live
                .dense_momentum
                .as_ref()
                .map(|(m, _)| m.shallow_clone()),
            loss_sum: g.loss_sum.shallow_clone(),
            since_eval: g.since_eval,
            diverged: g.diverged.clone(),
            evals: std::mem::take(&mut g.evals),
            snapshots: std::mem::take(&mut g.snapshots),
        };
        let saved = c.store.save(key, &ck);
        g.evals = ck.evals;
        g.snapshots = ck.snapshots;
        saved?;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// What the span produced.
    pub(super) fn finish(self) -> SpanResult {
        SpanResult {
            state: State {
                params: self.live.params.detach(),
                buffers: self.live.buffers,
            },
            masks: self.live.masks,
            evals: self.gathered.evals,
            snapshots: self.gathered.snapshots,
            diverged: self.gathered.diverged,
            sparse_replicas: self.sparse_replicas,
        }
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

/// `train.l1` at the positions of the network's prunable weights, 0 elsewhere, on `device`;
/// `None` when L1 is off.
fn l1_weights(trainer: &Trainer<'_>, device: Device) -> Option<Tensor> {
    let l1 = trainer.cfg.l1;
    if l1 == 0.0 {
        return None;
    }
    let layout = trainer.net.layout();
    let mut values = vec![0f32; layout.total()];
    for i in layout.prunable() {
        let off = layout.offset(i);
        values[off..off + layout.specs()[i].numel()].fill(l1 as f32);
    }
    Some(Tensor::from_slice(&values).to_device(device))
}
