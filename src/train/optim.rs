//! Optimizers over the flat `[R, P]` parameter tensor with per-replica learning rates
//! (`lr` is `[R, 1]`). The caller masks the gradient first; with a zero gradient a pruned
//! weight, its Adam moments and its momentum buffer all stay exactly zero (weight decay adds
//! `wd * 0`), so pruned weights remain exactly zero through every step.

use tch::Tensor;

use crate::config::{OptimizerKind, TrainConfig};

/// Optimizer state for one population.
#[derive(Debug)]
pub enum Optimizer {
    /// Adam with bias correction.
    Adam {
        /// First moments `[R, P]`.
        m: Tensor,
        /// Second moments `[R, P]`.
        v: Tensor,
        /// Steps taken so far.
        steps: i32,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator epsilon.
        eps: f64,
        /// L2 penalty added to the gradient.
        weight_decay: f64,
    },
    /// SGD with heavy-ball momentum (`buf = momentum * buf + g`, `p -= lr * buf`).
    Sgd {
        /// Momentum buffers `[R, P]`.
        buf: Tensor,
        /// Momentum coefficient.
        momentum: f64,
        /// L2 penalty added to the gradient.
        weight_decay: f64,
    },
}

impl Optimizer {
    /// Fresh state (zero moments) for parameters shaped like `params`.
    pub fn new(cfg: &TrainConfig, params: &Tensor) -> Self {
        let zeros = || params.zeros_like().detach();
        match cfg.optimizer {
            OptimizerKind::Adam => Optimizer::Adam {
                m: zeros(),
                v: zeros(),
                steps: 0,
                beta1: cfg.adam_beta1,
                beta2: cfg.adam_beta2,
                eps: cfg.adam_eps,
                weight_decay: cfg.weight_decay,
            },
            OptimizerKind::Sgd => Optimizer::Sgd {
                buf: zeros(),
                momentum: cfg.momentum,
                weight_decay: cfg.weight_decay,
            },
        }
    }

    /// One update of `params` in place with the (already masked) gradient `grad`.
    pub fn step(&mut self, params: &mut Tensor, grad: &Tensor, lr: &Tensor) {
        tch::no_grad(|| match self {
            Optimizer::Adam {
                m,
                v,
                steps,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                *steps += 1;
                let g = with_decay(grad, params, *weight_decay);
                let _ = m.lerp_(&g, 1.0 - *beta1);
                let _ = v.lerp_(&g.square(), 1.0 - *beta2);
                let bc1 = 1.0 - beta1.powi(*steps);
                let bc2 = 1.0 - beta2.powi(*steps);
                // sqrt(v + f32::MIN_POSITIVE), not sqrt(v): libtorch's CPU sqrt (MKL VML)
                // takes a slow path on zeros, and every pruned weight has v = 0, which made
                // masked steps ~30% slower. The shift is below half an ulp for any
                // v >= 2e-31 and below eps's ulp otherwise, so the update is unchanged.
                let denom = (&*v + f64::from(f32::MIN_POSITIVE)).sqrt() / bc2.sqrt() + *eps;
                let update = &*m / denom * (lr / bc1);
                let _ = params.g_sub_(&update);
            }
            Optimizer::Sgd {
                buf,
                momentum,
                weight_decay,
            } => {
                let g = with_decay(grad, params, *weight_decay);
                if *momentum > 0.0 {
                    let _ = buf.g_mul_scalar_(*momentum).g_add_(&g);
                    let _ = params.g_sub_(&(&*buf * lr));
                } else {
                    let _ = params.g_sub_(&(g * lr));
                }
            }
        })
    }
}

fn with_decay(grad: &Tensor, params: &Tensor, weight_decay: f64) -> Tensor {
    if weight_decay > 0.0 {
        grad + params * weight_decay
    } else {
        grad.shallow_clone()
    }
}
