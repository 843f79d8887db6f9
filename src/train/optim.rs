//! Optimizers over the flat `[R, P]` parameter tensor with per-replica learning rates
//! (`lr` is `[R, 1]`). The caller masks the gradient first; with a zero gradient a pruned
//! weight, its Adam moments and its momentum buffer all stay exactly zero (weight decay adds
//! `wd * 0`), so pruned weights remain exactly zero through every step. When a mask changes
//! during training (gradual pruning), [`Optimizer::apply_mask`] zeroes the state of the newly
//! pruned weights.

use tch::Tensor;

use super::fused;

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
    /// consumed (overwritten). `lr` is `[R, 1]`. Float32 CPU tensors take the one-pass update
    /// of [`super::fused`]; other devices run it as libtorch operations over the whole
    /// `[R, P]` population (a handful of kernels per step, whatever the number of layers).
    pub fn step(&mut self, params: &mut Tensor, grad: &mut Tensor, masks: &Tensor, lr: &Tensor) {
        self.step_kept(params, grad, masks, lr, &[]);
    }

    /// [`Self::step`] where `kept[r]`, when given, lists (ascending) the positions of row r
    /// whose mask is not zero, and row r's gradient is zero elsewhere: Adam on the CPU then
    /// updates those positions only, to the same bits there (the pruned weights and their
    /// moments are zero and stay so, keeping the sign of a -0.0). Empty `kept`: every row
    /// whole.
    pub fn step_kept(
        &mut self,
        params: &mut Tensor,
        grad: &mut Tensor,
        masks: &Tensor,
        lr: &Tensor,
        kept: &[Option<&[u32]>],
    ) {
        self.steps += 1;
        if !self.fused_cpu(params, grad, masks, lr, kept) {
            self.update(params, grad, masks, lr);
        }
    }

    /// The update as one pass over memory ([`super::fused`]) for float32 CPU tensors; false
    /// (nothing done) for other devices or dtypes, whose update runs as libtorch operations.
    fn fused_cpu(
        &mut self,
        params: &Tensor,
        grad: &Tensor,
        masks: &Tensor,
        lr: &Tensor,
        kept: &[Option<&[u32]>],
    ) -> bool {
        let fits = |t: &Tensor| {
            t.device() == tch::Device::Cpu
                && t.kind() == tch::Kind::Float
                && t.is_contiguous()
                && t.size() == params.size()
        };
        if !fits(params) || !fits(grad) || !fits(masks) || !self.state.iter().all(fits) {
            return false;
        }
        let lrs = Vec::<f32>::try_from(&lr.reshape([-1])).expect("learning rates");
        let n = params.numel();
        let floats = |t: &Tensor| t.data_ptr() as *mut f32;
        // SAFETY: the weights, gradient, masks and each state tensor are distinct contiguous
        // float32 CPU tensors of n elements (checked above; the gradient is this step's or the
        // span's sparse gradient buffer, the masks and states their own allocations), and
        // nothing else touches them during the update (autograd is done with this step's graph).
        let (slices, states) = unsafe {
            let slices = fused::Slices {
                params: std::slice::from_raw_parts_mut(floats(params), n),
                grad: std::slice::from_raw_parts(floats(grad), n),
                masks: std::slice::from_raw_parts(floats(masks), n),
            };
            let states: Vec<&mut [f32]> = self
                .state
                .iter()
                .map(|t| std::slice::from_raw_parts_mut(floats(t), n))
                .collect();
            (slices, states)
        };
        match self.kind {
            OptimizerKind::Adam => {
                let bc1 = 1.0 - self.beta1.powi(self.steps);
                let bc2 = 1.0 - self.beta2.powi(self.steps);
                let c = (bc2.sqrt() / bc1) as f32;
                let scale: Vec<f32> = lrs.iter().map(|&l| -(l * c)).collect();
                let k = fused::AdamStep {
                    w1: (1.0 - self.beta1) as f32,
                    w2: (1.0 - self.beta2) as f32,
                    eps: (self.eps * bc2.sqrt()) as f32,
                    weight_decay: self.weight_decay as f32,
                };
                let [m, v] = <[&mut [f32]; 2]>::try_from(states).expect("two moments");
                if kept.is_empty() {
                    fused::adam(slices, m, v, &scale, k);
                } else {
                    fused::adam_kept(slices, m, v, &scale, k, kept);
                }
            }
            OptimizerKind::Sgd => {
                let neg_lr: Vec<f32> = lrs.iter().map(|&l| -l).collect();
                let k = fused::SgdStep {
                    momentum: self.momentum as f32,
                    weight_decay: self.weight_decay as f32,
                };
                let [buffer] = <[&mut [f32]; 1]>::try_from(states).expect("one buffer");
                fused::sgd(slices, buffer, &neg_lr, k);
            }
        }
        true
    }

    /// The update as libtorch operations; `step` has counted the step already.
    fn update(&mut self, params: &mut Tensor, grad: &mut Tensor, masks: &Tensor, lr: &Tensor) {
        tch::no_grad(|| {
            let _ = grad.g_mul_(masks);
            if self.weight_decay > 0.0 {
                let _ = grad.g_add_(&(&*params * self.weight_decay));
            }
            match self.kind {
                OptimizerKind::Adam => {
                    let [m, v] = &mut self.state[..] else {
                        unreachable!("Adam keeps two moments")
                    };
                    let _ = m.lerp_(grad, 1.0 - self.beta1);
                    let _ = grad.square_();
                    let _ = v.lerp_(grad, 1.0 - self.beta2);
                    let bc1 = 1.0 - self.beta1.powi(self.steps);
                    let bc2 = 1.0 - self.beta2.powi(self.steps);
                    // sqrt(v + f32::MIN_POSITIVE), as the CPU's one-pass update (where it kept
                    // MKL's sqrt off its slow path on the zeros of pruned weights). The shift is
                    // below half an ulp for any v >= 2e-31 and below eps's ulp otherwise.
                    let mut denom = (&*v + f64::from(f32::MIN_POSITIVE)).sqrt_();
                    let _ = denom.g_add_scalar_(self.eps * bc2.sqrt());
                    let _ = denom.g_div_(&(lr * (-bc2.sqrt() / bc1)));
                    let _ = params.addcdiv_(m, &denom);
                }
                OptimizerKind::Sgd => {
                    let neg_lr = -lr;
                    if self.momentum > 0.0 {
                        let buf = &mut self.state[0];
                        let _ = buf.g_mul_scalar_(self.momentum).g_add_(grad);
                        let _ = params.addcmul_(buf, &neg_lr);
                    } else {
                        let _ = params.addcmul_(grad, &neg_lr);
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;
    use tch::{Device, Kind};

    fn config(kind: OptimizerKind, momentum: f64, weight_decay: f64) -> TrainConfig {
        TrainConfig {
            optimizer: kind,
            momentum,
            weight_decay,
            ..TrainConfig::default()
        }
    }

    /// Steps counted after `n` updates of a `[2, 10]` population of dtype `kind_of_tensors`.
    fn steps_after(kind: OptimizerKind, kind_of_tensors: Kind, n: i32) -> i32 {
        let mut params = Tensor::ones([2, 10], (kind_of_tensors, Device::Cpu));
        let masks = params.ones_like();
        let lr = Tensor::full([2, 1], 0.01, (kind_of_tensors, Device::Cpu));
        let mut opt = Optimizer::new(&config(kind, 0.9, 0.0), &params);
        for _ in 0..n {
            let mut grad = params.ones_like();
            opt.step(&mut params, &mut grad, &masks, &lr);
        }
        opt.state().steps
    }

    #[test]
    fn every_optimizer_counts_its_steps_in_one_pass_or_as_operations() {
        for kind in [OptimizerKind::Adam, OptimizerKind::Sgd] {
            assert_eq!(steps_after(kind, Kind::Float, 3), 3, "{kind:?}, one pass");
            // Double precision is not the one-pass update's: libtorch operations.
            assert_eq!(
                steps_after(kind, Kind::Double, 3),
                3,
                "{kind:?}, operations"
            );
        }
    }

    #[test]
    fn the_one_pass_update_is_the_update_of_libtorch_operations() {
        let cases = [
            config(OptimizerKind::Adam, 0.0, 0.0),
            config(OptimizerKind::Adam, 0.0, 1e-2),
            config(OptimizerKind::Sgd, 0.9, 1e-2),
            config(OptimizerKind::Sgd, 0.0, 0.0),
        ];
        for cfg in cases {
            let start = Tensor::randn([3, 1000], (Kind::Float, Device::Cpu));
            let masks = Tensor::rand([3, 1000], (Kind::Float, Device::Cpu))
                .ge(0.3)
                .to_kind(Kind::Float);
            let lr = Tensor::from_slice(&[0.01f32, 0.002, 0.05]).view([3, 1]);
            let (mut fused, mut ops) = (&start * &masks, &start * &masks);
            let mut one_pass = Optimizer::new(&cfg, &fused);
            let mut operations = Optimizer::new(&cfg, &ops);
            for _ in 0..5 {
                let grad = Tensor::randn([3, 1000], (Kind::Float, Device::Cpu));
                one_pass.step(&mut fused, &mut grad.copy(), &masks, &lr);
                operations.steps += 1;
                operations.update(&mut ops, &mut grad.copy(), &masks, &lr);
            }
            let what = format!("{:?}, weight decay {}", cfg.optimizer, cfg.weight_decay);
            let scale = ops.abs().max().double_value(&[]);
            let diff = (&fused - &ops).abs().max().double_value(&[]);
            assert!(diff <= 1e-5 * scale, "{what}: differ by {diff}");
            assert!(!fused.equal(&start), "{what}: the weights moved");
            let pruned = fused.masked_select(&masks.eq(0.0));
            assert_eq!(
                pruned.abs().sum(Kind::Float).double_value(&[]),
                0.0,
                "{what}"
            );
            for (a, b) in one_pass.state.iter().zip(&operations.state) {
                let diff = (a - b).abs().max().double_value(&[]);
                let scale = b.abs().max().double_value(&[]);
                assert!(diff <= 1e-5 * scale, "{what}: state differs by {diff}");
            }
        }
    }
}
