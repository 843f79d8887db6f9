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
        OptimizerState {
            tensors: Self::state_names(self.kind)
                .iter()
                .zip(&self.state)
                .map(|(n, t)| (n.to_string(), t.copy()))
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

    /// One update of `params` in place with the (already masked) gradient `grad`.
    pub fn step(&mut self, params: &mut Tensor, grad: &Tensor, lr: &Tensor) {
        tch::no_grad(|| {
            let g = if self.weight_decay > 0.0 {
                grad + &*params * self.weight_decay
            } else {
                grad.shallow_clone()
            };
            match self.kind {
                OptimizerKind::Adam => {
                    self.steps += 1;
                    let (m, v) = self.state.split_at_mut(1);
                    let (m, v) = (&mut m[0], &mut v[0]);
                    let _ = m.lerp_(&g, 1.0 - self.beta1);
                    let _ = v.lerp_(&g.square(), 1.0 - self.beta2);
                    let bc1 = 1.0 - self.beta1.powi(self.steps);
                    let bc2 = 1.0 - self.beta2.powi(self.steps);
                    // sqrt(v + f32::MIN_POSITIVE), not sqrt(v): libtorch's CPU sqrt (MKL VML)
                    // takes a slow path on zeros, and every pruned weight has v = 0, which made
                    // masked steps ~30% slower. The shift is below half an ulp for any
                    // v >= 2e-31 and below eps's ulp otherwise, so the update is unchanged.
                    let denom = (&*v + f64::from(f32::MIN_POSITIVE)).sqrt() / bc2.sqrt() + self.eps;
                    let update = &*m / denom * (lr / bc1);
                    let _ = params.g_sub_(&update);
                }
                OptimizerKind::Sgd => {
                    if self.momentum > 0.0 {
                        let buf = &mut self.state[0];
                        let _ = buf.g_mul_scalar_(self.momentum).g_add_(&g);
                        let _ = params.g_sub_(&(&*buf * lr));
                    } else {
                        let _ = params.g_sub_(&(g * lr));
                    }
                }
            }
        })
    }
}
