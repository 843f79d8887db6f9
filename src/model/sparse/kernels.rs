//! The three products of a sparse fully connected layer, on activations stored feature-major
//! (`[features, n]`: row f holds feature f of the n examples, so that one weight touches one
//! contiguous row). Each runs in a fixed order on one thread, every multiply-add fused (one
//! rounding, IEEE 754's fusedMultiplyAdd): the same bits with FMA instructions or without
//! (`f32::mul_add` is correctly rounded in software too), at any vector width and whatever the
//! thread count. Work is proportional to the surviving weights times n.

use super::csr::SparseWeights;
use super::team;

/// `y[o] = bias[o] + sum over row o's entries k of w[pos_k] * x[col_k]` for every output o
/// (rows of n values). `w` is the row-major `[rows, cols]` weight matrix (only surviving
/// positions are read), `x` is `[cols, n]`, `y` is `[rows, n]`.
pub fn forward(sw: &SparseWeights, w: &[f32], bias: &[f32], x: &[f32], n: usize, y: &mut [f32]) {
    check(sw, w, x.len(), y.len(), n);
    assert_eq!(bias.len(), sw.rows(), "one bias per row");
    let out = Disjoint::new(y);
    team::run(parts_for(sw, n), &|p, parts| {
        let rows = team::share(sw.rows(), p, parts);
        // SAFETY: the parts' row ranges do not overlap.
        let y = unsafe { out.range(rows.start * n..rows.end * n) };
        forward_on(Isa::best(), sw, w, bias, x, n, y, rows.start);
    });
}

/// `gw[pos_k] = dot(g[o], x[col_k])` for every surviving entry k (row o): the weight gradient
/// at surviving positions only (others are left as they are). `g` is `[rows, n]`, `x` is
/// `[cols, n]`, `gw` the row-major `[rows, cols]` gradient.
pub fn weight_grad(sw: &SparseWeights, g: &[f32], x: &[f32], n: usize, gw: &mut [f32]) {
    check(sw, gw, x.len(), g.len(), n);
    let cols = sw.cols();
    let out = Disjoint::new(gw);
    team::run(parts_for(sw, n), &|p, parts| {
        let rows = team::share(sw.rows(), p, parts);
        // SAFETY: the parts' row ranges, and so their positions, do not overlap.
        let gw = unsafe { out.range(rows.start * cols..rows.end * cols) };
        weight_grad_on(Isa::best(), sw, g, x, n, gw, rows);
    });
}

/// `gx[c] = sum over column c's entries (row o) of w[pos] * g[o]`: the gradient with respect
/// to the layer's input, `[cols, n]`, from `g` `[rows, n]`.
pub fn input_grad(sw: &SparseWeights, w: &[f32], g: &[f32], n: usize, gx: &mut [f32]) {
    check(sw, w, gx.len(), g.len(), n);
    let out = Disjoint::new(gx);
    team::run(parts_for(sw, n), &|p, parts| {
        let cols = team::share(sw.cols(), p, parts);
        // SAFETY: the parts' column ranges do not overlap.
        let gx = unsafe { out.range(cols.start * n..cols.end * n) };
        input_grad_on(Isa::best(), sw, w, g, n, gx, cols.start);
    });
}

/// Products of at least this many multiply-adds are split over the team's threads (below,
/// waking them costs more than it saves).
const PARALLEL_WORK: usize = 200_000;

fn parts_for(sw: &SparseWeights, n: usize) -> usize {
    if sw.nnz() * n >= PARALLEL_WORK {
        team::threads()
    } else {
        1
    }
}

/// An output buffer whose disjoint ranges the parts of one kernel write at once.
struct Disjoint {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: only used to hand out non-overlapping ranges (see `range`).
unsafe impl Sync for Disjoint {}

impl Disjoint {
    fn new(buffer: &mut [f32]) -> Self {
        Self {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
        }
    }

    /// # Safety
    /// No two live ranges may overlap, and the buffer outlives them.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, range: std::ops::Range<usize>) -> &mut [f32] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: within the buffer (checked); exclusive by the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

fn check(sw: &SparseWeights, matrix: &[f32], inputs: usize, outputs: usize, n: usize) {
    assert_eq!(matrix.len(), sw.rows() * sw.cols(), "a [rows, cols] matrix");
    assert_eq!(inputs, sw.cols() * n, "inputs [cols, n]");
    assert_eq!(outputs, sw.rows() * n, "outputs [rows, n]");
}

/// The instruction sets a kernel body can be compiled for. The bits are the same on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// The target's baseline (on x86-64, SSE2, with `f32::mul_add` done in software: slow).
    Baseline,
    /// AVX2 with FMA (every x86-64 CPU since 2013-2015). AVX-512 was measured no faster:
    /// the products wait on the L2 cache, not on arithmetic.
    Avx2,
}

impl Isa {
    /// The best this CPU has.
    pub fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
        Isa::Baseline
    }
}

/// `fn $name(isa: Isa, args)`: calls the `#[inline(always)]` `$body(args)` compiled for `isa`
/// (which must be [`Isa::Baseline`] or what [`Isa::best`] says).
macro_rules! compiled_for {
    ($name:ident => $body:ident($($arg:ident: $ty:ty),*)) => {
        #[allow(clippy::too_many_arguments)] // the body's arguments and the instruction set
        fn $name(isa: Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx2 {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                // SAFETY: the caller promises the CPU has AVX2 and FMA.
                return unsafe { avx2($($arg),*) };
            }
            let _ = isa;
            $body($($arg),*)
        }
    };
}

compiled_for!(forward_on => forward_body(
    sw: &SparseWeights, w: &[f32], bias: &[f32], x: &[f32], n: usize, y: &mut [f32], first: usize
));
compiled_for!(weight_grad_on => weight_grad_body(
    sw: &SparseWeights, g: &[f32], x: &[f32], n: usize, gw: &mut [f32], rows: std::ops::Range<usize>
));
compiled_for!(input_grad_on => input_grad_body(
    sw: &SparseWeights, w: &[f32], g: &[f32], n: usize, gx: &mut [f32], first: usize
));

/// Dot product in a fixed order: eight partial sums over positions `j mod 8` (multiply-adds
/// fused), added pairwise.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (a, b) in ca.zip(cb) {
        for j in 0..8 {
            lanes[j] = a[j].mul_add(b[j], lanes[j]);
        }
    }
    for (j, (a, b)) in ra.iter().zip(rb).enumerate() {
        lanes[j] = a.mul_add(*b, lanes[j]);
    }
    ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
        + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
}

/// Examples per register tile of [`combine`]: eight AVX2 registers of partial sums, as many
/// as keep both FMA units busy through the FMA latency. Callers that can pad n to a multiple
/// of it ([`super::mlp`] does) never take the slower remainder path.
pub const TILE: usize = 64;

/// `out = init + sum over (row, weight) of weight * src[row]`, over rows of n values of `src`
/// (`[*, n]`), the terms added in the order given, one fused multiply-add each, so every
/// element's bits are the same whichever tile it falls in.
#[inline(always)]
fn combine(
    init: f32,
    terms: impl Iterator<Item = (usize, f32)> + Clone,
    src: &[f32],
    n: usize,
    out: &mut [f32],
) {
    let mut start = 0;
    // Whole tiles: the sums stay in registers while every term adds in.
    while start + TILE <= n {
        let mut acc = [init; TILE];
        for (row, wv) in terms.clone() {
            let from = row * n + start;
            let xs: &[f32; TILE] = src[from..from + TILE].try_into().expect("a tile");
            for j in 0..TILE {
                acc[j] = wv.mul_add(xs[j], acc[j]);
            }
        }
        out[start..start + TILE].copy_from_slice(&acc);
        start += TILE;
    }
    if start < n {
        let rest = &mut out[start..n];
        rest.fill(init);
        for (row, wv) in terms {
            let from = row * n + start;
            for (acc, &x) in rest.iter_mut().zip(&src[from..from + (n - start)]) {
                *acc = wv.mul_add(x, *acc);
            }
        }
    }
}

#[inline(always)]
fn forward_body(
    sw: &SparseWeights,
    w: &[f32],
    bias: &[f32],
    x: &[f32],
    n: usize,
    y: &mut [f32],
    first: usize,
) {
    for (i, out) in y.chunks_exact_mut(n).enumerate() {
        let o = first + i;
        let (cols, pos) = sw.row(o);
        let terms = cols
            .iter()
            .zip(pos)
            .map(|(&c, &p)| (c as usize, w[p as usize]));
        combine(bias[o], terms, x, n, out);
    }
}

/// `gw` holds the positions of `rows` only (row `rows.start` first).
#[inline(always)]
fn weight_grad_body(
    sw: &SparseWeights,
    g: &[f32],
    x: &[f32],
    n: usize,
    gw: &mut [f32],
    rows: std::ops::Range<usize>,
) {
    let base = rows.start * sw.cols();
    for o in rows {
        let go = &g[o * n..(o + 1) * n];
        let (cols, pos) = sw.row(o);
        for (&c, &p) in cols.iter().zip(pos) {
            let c = c as usize;
            gw[p as usize - base] = dot(go, &x[c * n..(c + 1) * n]);
        }
    }
}

#[inline(always)]
fn input_grad_body(
    sw: &SparseWeights,
    w: &[f32],
    g: &[f32],
    n: usize,
    gx: &mut [f32],
    first: usize,
) {
    for (i, out) in gx.chunks_exact_mut(n).enumerate() {
        let c = first + i;
        let (rows, pos) = sw.col(c);
        let terms = rows
            .iter()
            .zip(pos)
            .map(|(&o, &p)| (o as usize, w[p as usize]));
        combine(0.0, terms, g, n, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3 x 4 matrix with 6 surviving weights, 2 examples.
    fn example() -> (SparseWeights, Vec<f32>, Vec<f32>) {
        let mask = [1., 0., 1., 0., 0., 1., 1., 1., 1., 0., 0., 0.];
        let w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.0) * 0.5 * mask[i]).collect();
        let x: Vec<f32> = (0..8).map(|i| i as f32 * 0.25 - 1.0).collect(); // [4, 2]
        (SparseWeights::from_mask(&mask, 3, 4), w, x)
    }

    #[test]
    fn the_three_products_match_their_dense_definitions() {
        let (sw, w, x) = example();
        let (rows, cols, n) = (3, 4, 2);
        let bias = [0.5, -1.0, 2.0];
        let mut y = vec![0.0; rows * n];
        forward(&sw, &w, &bias, &x, n, &mut y);
        let g: Vec<f32> = (0..rows * n).map(|i| 1.0 - i as f32 * 0.3).collect();
        let mut gw = vec![7.0; rows * cols];
        weight_grad(&sw, &g, &x, n, &mut gw);
        let mut gx = vec![9.0; cols * n];
        input_grad(&sw, &w, &g, n, &mut gx);
        for o in 0..rows {
            for b in 0..n {
                let want: f32 = bias[o]
                    + (0..cols)
                        .map(|c| w[o * cols + c] * x[c * n + b])
                        .sum::<f32>();
                assert!((y[o * n + b] - want).abs() < 1e-6, "y[{o},{b}]");
            }
            for c in 0..cols {
                let got = gw[o * cols + c];
                if sw.row(o).0.contains(&(c as u32)) {
                    let want: f32 = (0..n).map(|b| g[o * n + b] * x[c * n + b]).sum();
                    assert!((got - want).abs() < 1e-6, "gw[{o},{c}]");
                } else {
                    assert_eq!(got, 7.0, "a pruned position is not written");
                }
            }
        }
        for c in 0..cols {
            for b in 0..n {
                let want: f32 = (0..rows).map(|o| w[o * cols + c] * g[o * n + b]).sum();
                assert!((gx[c * n + b] - want).abs() < 1e-6, "gx[{c},{b}]");
            }
        }
    }

    #[test]
    fn every_instruction_set_and_tiling_gives_the_same_bits() {
        // 150 examples: two whole tiles and a remainder; a 37 x 53 matrix, ~30% kept.
        let (rows, cols, n) = (37, 53, 150);
        let value = |i: usize| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.37;
        let mask: Vec<f32> = (0..rows * cols)
            .map(|i| f32::from(i * 31 % 10 < 3))
            .collect();
        let sw = SparseWeights::from_mask(&mask, rows, cols);
        let w: Vec<f32> = (0..rows * cols).map(value).collect();
        let x: Vec<f32> = (0..cols * n).map(|i| value(i + 3)).collect();
        let g: Vec<f32> = (0..rows * n).map(|i| value(i + 11)).collect();
        let bias: Vec<f32> = (0..rows).map(|i| value(i + 5)).collect();
        let run = |isa: Isa| {
            let mut y = vec![0.0; rows * n];
            forward_on(isa, &sw, &w, &bias, &x, n, &mut y, 0);
            let mut gw = vec![0.0; rows * cols];
            weight_grad_on(isa, &sw, &g, &x, n, &mut gw, 0..rows);
            let mut gx = vec![0.0; cols * n];
            input_grad_on(isa, &sw, &w, &g, n, &mut gx, 0);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            (bits(&y), bits(&gw), bits(&gx))
        };
        assert_eq!(run(Isa::Baseline), run(Isa::best()), "{:?}", Isa::best());
        // An element's bits do not depend on the tile it falls in: computed again from an input
        // without its first 22 examples (two whole tiles, no remainder), every element is the
        // same, those that were in the remainder included.
        let shift = n - 2 * TILE;
        let tail: Vec<f32> = (0..cols)
            .flat_map(|c| x[c * n + shift..(c + 1) * n].to_vec())
            .collect();
        let m = n - shift;
        let (mut whole, mut part) = (vec![0.0; rows * n], vec![0.0; rows * m]);
        forward(&sw, &w, &bias, &x, n, &mut whole);
        forward(&sw, &w, &bias, &tail, m, &mut part);
        for o in 0..rows {
            for b in 0..m {
                assert_eq!(
                    whole[o * n + shift + b].to_bits(),
                    part[o * m + b].to_bits()
                );
            }
        }
    }

    #[test]
    fn the_dot_product_sums_in_its_fixed_order() {
        let a: Vec<f32> = (0..19).map(|i| 1.0 + i as f32 * 1e-3).collect();
        let b: Vec<f32> = (0..19).map(|i| 1e4 - i as f32).collect();
        let mut lanes = [0.0f32; 8];
        for i in 0..19 {
            lanes[i % 8] = a[i].mul_add(b[i], lanes[i % 8]);
        }
        let want = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
            + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
        assert_eq!(dot(&a, &b).to_bits(), want.to_bits());
    }
}
