//! Optimizers over the flat `[R, P]` parameter tensor with per-replica learning rates
//! (`lr` is `[R, 1]`). The caller masks the gradient first; with a zero gradient a pruned
//! weight, its Adam moments and its momentum buffer all stay exactly zero (weight decay adds
//! `wd * 0`), so pruned weights remain exactly zero through every step. When a mask changes
//! during training (gradual pruning), [`Optimizer::apply_mask`] zeroes the state of the newly
//! pruned weights.

use tch::Tensor;

use crate::config::{OptimizerKind, TrainConfig};

/// Optimizer state for one population.
#[derive(Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    /// Adam: `[exp_avg, exp_avg_sq]`; SGD: `[momentum_buffer]`; each `[R, P]`.
    state: Vec<Tensor>,
    /// Steps taken (Adam's bias correction).
    steps: i32,
    beta1: f64,
    beta2: f64,
    eps: f64,
    momentum: f64,
    weight_decay: f64,
}

/// A copy of an optimizer's state, named as PyTorch names it.
#[derive(Debug)]
pub struct OptimizerState {
    /// Named `[R, P]` tensors (`exp_avg`, `exp_avg_sq` or `momentum_buffer`).
    pub tensors: Vec<(String, Tensor)>,
    /// Steps taken.
    pub steps: i32,
}

impl OptimizerState {
    /// The state of replicas `index` (a `[K]` index tensor) only.
    pub fn select(&self, index: &Tensor) -> Self {
        Self {
            tensors: self
                .tensors
                .iter()
                .map(|(n, t)| (n.clone(), t.index_select(0, index)))
                .collect(),
            steps: self.steps,
        }
    }
}

impl Optimizer {
    /// Fresh state (zero moments) for parameters shaped like `params`.
    pub fn new(cfg: &TrainConfig, params: &Tensor) -> Self {
        let zeros = || params.zeros_like().detach();
        let state = match cfg.optimizer {
            OptimizerKind::Adam => vec![zeros(), zeros()],
            OptimizerKind::Sgd => vec![zeros()],
        };
        Self {
            kind: cfg.optimizer,
            state,
            steps: 0,
            beta1: cfg.adam_beta1,
            beta2: cfg.adam_beta2,
            eps: cfg.adam_eps,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
        }
    }

    /// Names of the state tensors, in order.
    pub fn state_names(kind: OptimizerKind) -> &'static [&'static str] {
        match kind {
            OptimizerKind::Adam => &["exp_avg", "exp_avg_sq"],
            OptimizerKind::Sgd => &["momentum_buffer"],
        }
    }

    /// A copy of the current state.
    pub fn state(&self) -> OptimizerState {
        let shared = self.shared_state();
        OptimizerState {
            tensors: shared
                .tensors
                .into_iter()
                .map(|(n, t)| (n, t.copy()))
                .collect(),
            steps: shared.steps,
        }
    }

    /// The current state without copying it (for writing it out at once).
    pub fn shared_state(&self) -> OptimizerState {
        OptimizerState {
            tensors: Self::state_names(self.kind)
                .iter()
                .zip(&self.state)
                .map(|(n, t)| (n.to_string(), t.shallow_clone()))
                .collect(),
            steps: self.steps,
        }
    }

    /// Replaces the state with a saved one (same optimizer kind and shape).
    pub fn restore(&mut self, saved: &OptimizerState) {
        for ((name, slot), (saved_name, t)) in Self::state_names(self.kind)
            .iter()
            .zip(&mut self.state)
            .zip(&saved.tensors)
        {
            assert_eq!(name, saved_name, "optimizer state of the same kind");
            *slot = t.to_device(slot.device()).detach();
        }
        self.steps = saved.steps;
    }

    /// Zeroes the state of weights the new `masks` prune.
    pub fn apply_mask(&mut self, masks: &Tensor) {
        tch::no_grad(|| {
            for t in &mut self.state {
                let _ = t.g_mul_(masks);
            }
        });
    }

    /// One update of `params` in place: the gradient `grad` is masked by `masks` and then
    /// consumed (overwritten). `lr` is `[R, 1]`. On the CPU the update runs in cache-sized
    /// chunks (all passes over one chunk before the next): a population's `[R, P]` state
    /// outgrows the cache, and each pass would otherwise stream it from memory.
    pub fn step(&mut self, params: &mut Tensor, grad: &mut Tensor, masks: &Tensor, lr: &Tensor) {
        let (r, p) = (params.size()[0], params.size()[1]);
        let chunks = if params.device() == tch::Device::Cpu {
            chunk_plan(r, p, CPU_CHUNK)
        } else {
            vec![(0, r, 0, p)]
        };
        self.steps += 1;
        if chunks.len() == 1 {
            self.update(params, grad, masks, lr, None);
            return;
        }
        for &(r0, nr, c0, nc) in &chunks {
            let cut = |t: &Tensor| t.narrow(0, r0, nr).narrow(1, c0, nc);
            let mut pc = cut(params);
            let mut gc = cut(grad);
            self.update(
                &mut pc,
                &mut gc,
                &cut(masks),
                &lr.narrow(0, r0, nr),
                Some((r0, nr, c0, nc)),
            );
        }
    }

    /// The update on one chunk (`at` = rows and columns of the chunk; `None` = everything);
    /// `step` has counted the step already.
    fn update(
        &mut self,
        params: &mut Tensor,
        grad: &mut Tensor,
        masks: &Tensor,
        lr: &Tensor,
        at: Option<(i64, i64, i64, i64)>,
    ) {
        tch::no_grad(|| {
            let _ = grad.g_mul_(masks);
            if self.weight_decay > 0.0 {
                let _ = grad.g_add_(&(&*params * self.weight_decay));
            }
            let cut = |t: &Tensor| match at {
                Some((r0, nr, c0, nc)) => t.narrow(0, r0, nr).narrow(1, c0, nc),
                None => t.shallow_clone(),
            };
            match self.kind {
                OptimizerKind::Adam => {
                    let (mut m, mut v) = (cut(&self.state[0]), cut(&self.state[1]));
                    let _ = m.lerp_(grad, 1.0 - self.beta1);
                    let _ = grad.square_();
                    let _ = v.lerp_(grad, 1.0 - self.beta2);
                    let bc1 = 1.0 - self.beta1.powi(self.steps);
                    let bc2 = 1.0 - self.beta2.powi(self.steps);
                    // sqrt(v + f32::MIN_POSITIVE), not sqrt(v): libtorch's CPU sqrt (MKL VML)
                    // takes a slow path on zeros, and every pruned weight has v = 0, which made
                    // masked steps ~30% slower. The shift is below half an ulp for any
                    // v >= 2e-31 and below eps's ulp otherwise, so the update is unchanged.
                    let mut denom = (&v + f64::from(f32::MIN_POSITIVE)).sqrt_();
                    let _ = denom.g_add_scalar_(self.eps * bc2.sqrt());
                    let _ = denom.g_div_(&(lr * (-bc2.sqrt() / bc1)));
                    let _ = params.addcdiv_(&m, &denom);
                }
                OptimizerKind::Sgd => {
                    let neg_lr = -lr;
                    if self.momentum > 0.0 {
                        let mut buf = cut(&self.state[0]);
                        let _ = buf.g_mul_scalar_(self.momentum).g_add_(grad);
                        let _ = params.addcmul_(&buf, &neg_lr);
                    } else {
                        let _ = params.addcmul_(grad, &neg_lr);
                    }
                }
            }
        })
    }
}

/// Elements per optimizer chunk on the CPU (1 MiB of float32 per state tensor).
const CPU_CHUNK: i64 = 1 << 18;

/// Chunks `(row, rows, column, columns)` covering `[r, p]`: whole rows grouped up to `chunk`
/// elements, or column blocks of `chunk` within each row when a row is larger.
fn chunk_plan(r: i64, p: i64, chunk: i64) -> Vec<(i64, i64, i64, i64)> {
    let mut out = Vec::new();
    if p >= chunk {
        for row in 0..r {
            let mut c = 0;
            while c < p {
                let n = chunk.min(p - c);
                out.push((row, 1, c, n));
                c += n;
            }
        }
    } else {
        let rows = (chunk / p).max(1);
        let mut row = 0;
        while row < r {
            let n = rows.min(r - row);
            out.push((row, n, 0, p));
            row += n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;

    /// Steps counted after `n` updates of a `[2, p]` population on the CPU.
    fn steps_after(kind: OptimizerKind, p: i64, n: i32) -> i32 {
        let cfg = TrainConfig {
            optimizer: kind,
            momentum: 0.9,
            ..TrainConfig::default()
        };
        let mut params = Tensor::ones([2, p], (tch::Kind::Float, tch::Device::Cpu));
        let masks = params.ones_like();
        let lr = Tensor::full([2, 1], 0.01, (tch::Kind::Float, tch::Device::Cpu));
        let mut opt = Optimizer::new(&cfg, &params);
        for _ in 0..n {
            let mut grad = params.ones_like();
            opt.step(&mut params, &mut grad, &masks, &lr);
        }
        opt.state().steps
    }

    #[test]
    fn every_optimizer_counts_its_steps_in_one_chunk_or_many() {
        for kind in [OptimizerKind::Adam, OptimizerKind::Sgd] {
            assert_eq!(steps_after(kind, 10, 3), 3, "{kind:?}, one chunk");
            assert_eq!(
                steps_after(kind, 2 * CPU_CHUNK, 3),
                3,
                "{kind:?}, several chunks"
            );
        }
    }
}
