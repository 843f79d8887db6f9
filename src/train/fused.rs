//! Optimizer updates as one pass over memory on the CPU. libtorch's element-wise operations
//! make one pass per operation (masking, two moment updates, square root, division, update:
//! eight passes for Adam); these loops read each weight, gradient, mask and state entry once
//! and write each once. The arithmetic is plain IEEE float32 (Rust never fuses a multiply
//! and an add), so the results are the same bits on every x86-64 CPU, with or without AVX2,
//! and for every replica whatever its neighbours. Denormal numbers (below 1.2e-38) count as
//! zero inside these loops: the moments of weights that receive no gradient (dead ReLU
//! units) decay into that range, where each operation would take a slow microcode path (it
//! cost dense LeNet steps 8%).

use std::ops::Range;

use crate::model::sparse::team;

/// Adam's constants for one step.
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    /// `1 - beta1`.
    pub w1: f32,
    /// `1 - beta2`.
    pub w2: f32,
    /// `eps * sqrt(1 - beta2^t)`.
    pub eps: f32,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f32,
}

/// SGD's constants for one step.
#[derive(Debug, Clone, Copy)]
pub struct SgdStep {
    /// Momentum (0: none, the buffer is not touched).
    pub momentum: f32,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f32,
}

/// The tensors of one update, `[R, P]` row after row.
pub struct Slices<'a> {
    /// Weights, updated.
    pub params: &'a mut [f32],
    /// Gradients.
    pub grad: &'a [f32],
    /// 0/1 masks.
    pub masks: &'a [f32],
}

/// One Adam step: with `g = grad * mask + weight_decay * w`, `m += w1 (g - m)`,
/// `v += w2 (g² - v)`, `w += scale_r * m / (sqrt(v + f32::MIN_POSITIVE) + eps)`, where
/// `scale[r]` is replica r's `-lr * sqrt(1 - beta2^t) / (1 - beta1^t)`. A pruned weight (mask
/// 0, weight 0, moments 0) stays exactly 0.
pub fn adam(t: Slices<'_>, m: &mut [f32], v: &mut [f32], scale: &[f32], k: AdamStep) {
    check(&t, &[m.len(), v.len()], scale.len());
    let _flush = FlushDenormals::on();
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { adam_avx2(t, m, v, scale, k) };
        return;
    }
    adam_rows(t, m, v, scale, k);
}

/// One SGD step: with `g = grad * mask + weight_decay * w`, `b = momentum * b + g` (when
/// momentum is on) and `w += -lr_r * b` (or `-lr_r * g`). `neg_lr[r]` is `-lr` of replica r.
pub fn sgd(t: Slices<'_>, buffer: &mut [f32], neg_lr: &[f32], k: SgdStep) {
    check(&t, &[buffer.len()], neg_lr.len());
    let _flush = FlushDenormals::on();
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { sgd_avx2(t, buffer, neg_lr, k) };
        return;
    }
    sgd_rows(t, buffer, neg_lr, k);
}

/// [`adam`] where some rows are updated at given positions only: `kept[r]`, when given, lists
/// (ascending) every position of row r whose mask is not zero; the others are left as they
/// are. Where a row's gradient, weights and moments are zero at the positions left out
/// (the pruned weights of a sparse replica), this gives the bits of [`adam`] at the kept
/// positions and zeros at the others (which keep their sign, where [`adam`] may turn a -0.0
/// into 0.0), at a cost that follows the kept positions instead of the row.
pub fn adam_kept(
    t: Slices<'_>,
    m: &mut [f32],
    v: &mut [f32],
    scale: &[f32],
    k: AdamStep,
    kept: &[Option<&[u32]>],
) {
    check(&t, &[m.len(), v.len()], scale.len());
    assert_eq!(kept.len(), scale.len(), "one entry per row");
    let _flush = FlushDenormals::on();
    let row = t.params.len() / scale.len();
    for (r, positions) in kept.iter().enumerate() {
        let at = r * row..(r + 1) * row;
        let (w, g, mask) = (
            &mut t.params[at.clone()],
            &t.grad[at.clone()],
            &t.masks[at.clone()],
        );
        let (m, v) = (&mut m[at.clone()], &mut v[at]);
        match positions {
            Some(positions) => adam_at(w, g, m, v, scale[r], k, positions),
            None => {
                let slices = Slices {
                    params: w,
                    grad: g,
                    masks: mask,
                };
                adam(slices, m, v, &scale[r..=r], k);
            }
        }
    }
}

/// Kept positions per part of a sparse row's update split over the team's threads (below,
/// waking them costs more than it saves).
const POSITIONS_PER_PART: usize = 4096;

/// Adam at `positions` of one row (scale `s`), their mask 1 (so not read), split over the
/// team's threads: each position's update is the same whoever computes it.
fn adam_at(
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    s: f32,
    k: AdamStep,
    positions: &[u32],
) {
    let len = w.len();
    assert!(m.len() == len && v.len() == len && g.len() == len);
    assert!(
        positions.last().is_none_or(|&i| (i as usize) < len),
        "positions in the row"
    );
    let (w, m, v) = (
        Shared(w.as_mut_ptr()),
        Shared(m.as_mut_ptr()),
        Shared(v.as_mut_ptr()),
    );
    let parts = (positions.len() / POSITIONS_PER_PART).clamp(1, team::threads());
    team::run(parts, &|p, parts| {
        let _flush = FlushDenormals::on();
        for &i in &positions[team::share(positions.len(), p, parts)] {
            let i = i as usize;
            // SAFETY: `i` is inside the row (the positions ascend and the last is checked),
            // and each position belongs to one part only, so no two threads touch one entry.
            unsafe { adam_one(&mut *w.at(i), g[i], 1.0, &mut *m.at(i), &mut *v.at(i), s, k) };
        }
    });
}

/// A buffer whose entries the parts of [`adam_at`] update at disjoint positions.
#[derive(Clone, Copy)]
struct Shared(*mut f32);

// SAFETY: only used to reach disjoint entries from different threads (see `adam_at`).
unsafe impl Sync for Shared {}

impl Shared {
    /// # Safety
    /// `i` is inside the buffer and no other thread uses that entry meanwhile.
    unsafe fn at(self, i: usize) -> *mut f32 {
        // SAFETY: by the caller's promise.
        unsafe { self.0.add(i) }
    }
}

/// One weight's Adam update (see [`adam`]).
#[inline(always)]
fn adam_one(w: &mut f32, g: f32, mask: f32, m: &mut f32, v: &mut f32, s: f32, k: AdamStep) {
    let g = decayed(g * mask, *w, k.weight_decay);
    *m += k.w1 * (g - *m);
    *v += k.w2 * (g * g - *v);
    *w += s * *m / ((*v + f32::MIN_POSITIVE).sqrt() + k.eps);
}

/// While alive, this thread's SSE/AVX arithmetic treats denormal inputs and results as zero
/// (MXCSR's DAZ and FTZ bits); the previous setting returns when it is dropped.
struct FlushDenormals(#[allow(dead_code)] u32);

impl FlushDenormals {
    fn on() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let mut csr = 0u32;
            // SAFETY: reads and writes this thread's MXCSR only; DAZ (bit 6) and FTZ (bit 15)
            // change how denormals are treated, nothing else.
            unsafe {
                std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
                let flushing = csr | (1 << 6) | (1 << 15);
                std::arch::asm!("ldmxcsr [{}]", in(reg) &flushing, options(nostack));
            }
            Self(csr)
        }
        #[cfg(not(target_arch = "x86_64"))]
        Self(0)
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: restores the MXCSR value read in `on`.
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &self.0, options(nostack));
        }
    }
}

fn check(t: &Slices<'_>, states: &[usize], rows: usize) {
    let n = t.params.len();
    assert!(
        t.grad.len() == n && t.masks.len() == n && states.iter().all(|&s| s == n),
        "optimizer tensors of one size"
    );
    assert!(rows > 0 && n.is_multiple_of(rows), "whole rows");
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn adam_avx2(t: Slices<'_>, m: &mut [f32], v: &mut [f32], scale: &[f32], k: AdamStep) {
    adam_rows(t, m, v, scale, k);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sgd_avx2(t: Slices<'_>, buffer: &mut [f32], neg_lr: &[f32], k: SgdStep) {
    sgd_rows(t, buffer, neg_lr, k);
}

/// The masked gradient `g` with weight decay added (nothing added at 0, so an infinite
/// weight does not become NaN through `inf * 0`).
#[inline(always)]
fn decayed(g: f32, w: f32, weight_decay: f32) -> f32 {
    if weight_decay != 0.0 {
        g + w * weight_decay
    } else {
        g
    }
}

/// Calls `update(w, g, mask, s, at)` once per replica: `w`, `g` and `mask` are that replica's
/// row of the weights, gradients and masks, `s` its entry of `per_row`, and `at` the row's
/// positions, for the caller's optimizer state.
#[inline(always)]
fn for_each_row(
    t: Slices<'_>,
    per_row: &[f32],
    mut update: impl FnMut(&mut [f32], &[f32], &[f32], f32, Range<usize>),
) {
    let row = t.params.len() / per_row.len();
    let rows = t
        .params
        .chunks_exact_mut(row)
        .zip(t.grad.chunks_exact(row))
        .zip(t.masks.chunks_exact(row))
        .zip(per_row);
    for (r, (((w, g), mask), &s)) in rows.enumerate() {
        update(w, g, mask, s, r * row..(r + 1) * row);
    }
}

#[inline(always)]
fn adam_rows(t: Slices<'_>, m: &mut [f32], v: &mut [f32], scale: &[f32], k: AdamStep) {
    for_each_row(t, scale, |w, g, mask, s, at| {
        let (m, v) = (&mut m[at.clone()], &mut v[at]);
        for ((((w, &g), &mask), m), v) in w.iter_mut().zip(g).zip(mask).zip(m).zip(v) {
            adam_one(w, g, mask, m, v, s, k);
        }
    });
}

#[inline(always)]
fn sgd_rows(t: Slices<'_>, buffer: &mut [f32], neg_lr: &[f32], k: SgdStep) {
    for_each_row(t, neg_lr, |w, g, mask, s, at| {
        for (((w, &g), &mask), b) in w.iter_mut().zip(g).zip(mask).zip(&mut buffer[at]) {
            let g = decayed(g * mask, *w, k.weight_decay);
            if k.momentum > 0.0 {
                *b = k.momentum * *b + g;
                *w += s * *b;
            } else {
                *w += s * g;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denormal_moments_count_as_zero_and_the_setting_is_restored() {
        let current = || FlushDenormals::on().0;
        let before = current();
        let tiny = 1e-39_f32; // a denormal
        assert!(tiny > 0.0 && !tiny.is_normal());
        let (mut w, g, mask) = ([0.5_f32; 4], [0.0_f32; 4], [1.0_f32; 4]);
        let (mut m, mut v) = ([tiny; 4], [0.0_f32; 4]);
        let k = AdamStep {
            w1: 0.1,
            w2: 0.001,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let slices = Slices {
            params: &mut w,
            grad: &g,
            masks: &mask,
        };
        adam(slices, &mut m, &mut v, &[-0.01], k);
        assert_eq!(m, [0.0; 4], "a denormal moment is flushed");
        assert_eq!(w, [0.5; 4], "no gradient, no move");
        assert_eq!(current(), before, "MXCSR as it was");
        // Outside the update, denormals are what they always are.
        assert!(std::hint::black_box(tiny) * 0.5 > 0.0);
    }

    #[test]
    fn adam_at_kept_positions_gives_the_bits_of_the_whole_row() {
        // Enough kept positions (~17,000 in row 1) to split them over the team's threads,
        // with denormal moments and no gradient here and there (each thread must flush them as
        // this one does; the team is started first, so that its threads do not inherit this
        // thread's flushing setting when they are created).
        crate::model::sparse::team::run(2, &|_, _| {});
        let n = 40_000;
        let mask: Vec<f32> = (0..2 * n)
            .map(|i| f32::from(i % 3 == 0 || i % 7 == 0))
            .collect();
        let init = |seed: f32| -> Vec<f32> {
            (0..2 * n)
                .map(|i| (i as f32 * seed).sin() * mask[i])
                .collect()
        };
        // Dead units: at every 11th kept position no weight and no gradient (so no decay
        // either) and denormal moments.
        let dead = |i: usize| i.is_multiple_of(11) && mask[i] != 0.0;
        let set_dead = |mut xs: Vec<f32>, value: f32| {
            for i in (0..xs.len()).filter(|&i| dead(i)) {
                xs[i] = value;
            }
            xs
        };
        let (w0, grad, m0, v0) = (
            set_dead(init(0.7), 0.0),
            set_dead(init(1.3), 0.0),
            set_dead(init(2.1), 1e-39),
            set_dead(init(0.9).iter().map(|x| x * x).collect(), 1e-39),
        );
        let k = AdamStep {
            w1: 0.1,
            w2: 0.001,
            eps: 1e-8,
            weight_decay: 1e-4,
        };
        let scale = [-0.01, -0.02];
        let (mut w1, mut m1, mut v1) = (w0.clone(), m0.clone(), v0.clone());
        adam(
            Slices {
                params: &mut w1,
                grad: &grad,
                masks: &mask,
            },
            &mut m1,
            &mut v1,
            &scale,
            k,
        );
        let kept: Vec<u32> = (0..n as u32)
            .filter(|&i| mask[n + i as usize] != 0.0)
            .collect();
        let (mut w2, mut m2, mut v2) = (w0.clone(), m0.clone(), v0.clone());
        adam_kept(
            Slices {
                params: &mut w2,
                grad: &grad,
                masks: &mask,
            },
            &mut m2,
            &mut v2,
            &scale,
            k,
            &[None, Some(&kept)],
        );
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&w1[..n]),
            bits(&w2[..n]),
            "a whole row is the same code"
        );
        for i in n..2 * n {
            if mask[i] != 0.0 {
                assert_eq!(w1[i].to_bits(), w2[i].to_bits(), "kept position {i}");
                assert_eq!(
                    (m1[i].to_bits(), v1[i].to_bits()),
                    (m2[i].to_bits(), v2[i].to_bits())
                );
            } else {
                assert!(
                    w1[i] == 0.0 && w2[i] == 0.0 && m2[i] == 0.0 && v2[i] == 0.0,
                    "pruned {i}"
                );
            }
        }
        assert_ne!(bits(&w1), bits(&w0), "the step moved the kept weights");
    }
}
