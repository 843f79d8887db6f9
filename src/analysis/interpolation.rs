//! Linear paths between two networks (Frankle et al. 2020, "Linear Mode Connectivity and the
//! Lottery Ticket Hypothesis"): the networks (1 - a) w1 + a w2 along a in [0, 1], made as one
//! population so that every point of every path is evaluated in one batched pass, and the
//! error barrier along a path, the paper's instability.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::batchnorm::{recompute_statistics, StatisticsBatches};
use crate::data::Split;
use crate::model::{Network, State};
use crate::train::eval::evaluate;

/// `points` values of a evenly spaced from 0 to 1, both ends included (`points` >= 2).
pub fn alphas(points: usize) -> Vec<f64> {
    assert!(points >= 2, "a path has at least its two ends");
    let last = (points - 1) as f64;
    (0..points).map(|i| i as f64 / last).collect()
}

/// The networks on the straight line from `w1` to `w2` (flat weights `[P]`) at each a of
/// `alphas`, masked by `mask` (`[P]`, 0 at pruned weights), as one population `[A, P]`.
///
/// The point at a is computed from the nearer end, w1 + a (w2 - w1) for a <= 1/2 and
/// w2 + (1 - a) (w1 - w2) above, so that a = 0 and a = 1 give the ends bit for bit and two
/// equal networks give that network at every a: their barrier is exactly 0.
pub fn interpolate(w1: &Tensor, w2: &Tensor, mask: &Tensor, alphas: &[f64]) -> Tensor {
    let rows: Vec<Tensor> = alphas
        .iter()
        .map(|&a| {
            let point = if a <= 0.5 {
                w1 + (w2 - w1) * a
            } else {
                w2 + (w1 - w2) * (1.0 - a)
            };
            point * mask
        })
        .collect();
    Tensor::stack(&rows, 0).to_kind(w1.kind())
}

/// The error barrier of a path: the most the error at a rises above the straight line between
/// the ends' errors, max over a of err(a) - ((1 - a) err(0) + a err(1)); 0 when it never does
/// (the ends themselves give 0).
pub fn barrier(alphas: &[f64], errors: &[f64]) -> f64 {
    assert_eq!(alphas.len(), errors.len(), "one error per point");
    let (first, last) = (errors[0], errors[errors.len() - 1]);
    alphas
        .iter()
        .zip(errors)
        .map(|(&a, &e)| e - ((1.0 - a) * first + a * last))
        .fold(0.0, f64::max)
}

/// The L2 distance between two networks' flat weights.
pub fn distance(w1: &Tensor, w2: &Tensor) -> f64 {
    (w1 - w2).to_kind(Kind::Double).norm().double_value(&[])
}

/// Each network of the path from `w1` to `w2` at `alphas` (masked by `mask`), evaluated on
/// `split` in one population: (mean loss, accuracy) per point, in order. A network with
/// BatchNorm has the running statistics of every point (the ends included) recomputed on
/// `statistics` ([`recompute_statistics`]); without them it is refused.
pub fn evaluate_path(
    net: &dyn Network,
    (w1, w2): (&Tensor, &Tensor),
    mask: &Tensor,
    alphas: &[f64],
    split: &Split,
    statistics: Option<StatisticsBatches<'_>>,
) -> Result<Vec<(f64, f64)>> {
    let params = interpolate(w1, w2, mask, alphas);
    let buffers = match (net.layout().buffers().is_empty(), statistics) {
        (true, _) => Vec::new(),
        (false, Some(on)) => recompute_statistics(net, &params, on),
        (false, None) => {
            bail!("a path between networks with BatchNorm needs batches to recompute their statistics on")
        }
    };
    let state = State { params, buffers };
    let sums = evaluate(net, &state, split).to_kind(Kind::Double);
    let n = split.len() as f64;
    let losses = Vec::<f64>::try_from(sums.get(0)).expect("losses");
    let hits = Vec::<f64>::try_from(sums.get(1)).expect("hits");
    Ok(losses
        .into_iter()
        .zip(hits)
        .map(|(l, h)| (l / n, h / n))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ends_are_the_networks_bit_for_bit_and_masked_weights_stay_zero() {
        tch::manual_seed(0);
        let w1 = Tensor::randn([50], (Kind::Float, tch::Device::Cpu)) * 1e3;
        let w2 = Tensor::randn([50], (Kind::Float, tch::Device::Cpu)) * 1e-3;
        let mask = Tensor::from_slice(&[1f32, 0.0]).repeat([25]);
        let a = alphas(7);
        assert_eq!(a.first(), Some(&0.0));
        assert_eq!(a.last(), Some(&1.0));
        let path = interpolate(&w1, &w2, &mask, &a);
        assert_eq!(path.size(), [7, 50]);
        assert!(path.get(0).equal(&(&w1 * &mask)), "a = 0 is w1");
        assert!(path.get(6).equal(&(&w2 * &mask)), "a = 1 is w2");
        let pruned = path.index_select(
            1,
            &Tensor::arange_start_step(1, 50, 2, (Kind::Int64, tch::Device::Cpu)),
        );
        assert_eq!(pruned.abs().sum(Kind::Double).double_value(&[]), 0.0);
        // Half-way is the mean, to rounding.
        let mid = interpolate(&w1, &w2, &mask, &[0.5]).get(0);
        let mean = (&w1 + &w2) * 0.5 * &mask;
        assert!(mid.allclose(&mean, 1e-5, 1e-3, false));
    }

    #[test]
    fn equal_networks_give_themselves_everywhere_and_a_barrier_of_zero() {
        tch::manual_seed(1);
        let w = Tensor::randn([40], (Kind::Float, tch::Device::Cpu));
        let mask = Tensor::ones([40], (Kind::Float, tch::Device::Cpu));
        let a = alphas(30);
        let path = interpolate(&w, &w, &mask, &a);
        for i in 0..30 {
            assert!(path.get(i).equal(&w), "point {i}");
        }
        assert_eq!(distance(&w, &w), 0.0);
        assert_eq!(barrier(&a, &[0.1; 30]), 0.0);
    }

    #[test]
    fn a_paths_ends_evaluate_as_the_two_networks_do() {
        let cpu = tch::Device::Cpu;
        let net =
            crate::model::build(&crate::config::ModelConfig::default(), [1, 28, 28], 10).unwrap();
        let layout = net.layout();
        let (s1, s2) = (
            State::init(layout, &[0], cpu),
            State::init(layout, &[1], cpu),
        );
        let (w1, w2) = (s1.params.get(0), s2.params.get(0));
        let mask = Tensor::ones_like(&w1);
        tch::manual_seed(2);
        let split = Split {
            images: Tensor::rand([64, 1, 28, 28], (Kind::Float, cpu)),
            labels: Tensor::randint(10, [64], (Kind::Int64, cpu)),
        };
        let path =
            evaluate_path(net.as_ref(), (&w1, &w2), &mask, &alphas(5), &split, None).unwrap();
        for (end, state) in [(0, &s1), (4, &s2)] {
            let sums = evaluate(net.as_ref(), state, &split).to_kind(Kind::Double);
            let loss = sums.get(0).get(0).double_value(&[]) / 64.0;
            let accuracy = sums.get(1).get(0).double_value(&[]) / 64.0;
            assert_eq!(path[end], (loss, accuracy), "end {end}");
        }
    }

    #[test]
    fn the_barrier_is_the_largest_rise_above_the_line_between_the_ends() {
        let a = alphas(5); // 0, 0.25, 0.5, 0.75, 1
                           // Ends 0.1 and 0.3: the line is 0.1, 0.15, 0.2, 0.25, 0.3.
        let errors = [0.1, 0.15, 0.5, 0.25, 0.3];
        assert!((barrier(&a, &errors) - 0.3).abs() < 1e-12);
        // Below the line everywhere: no barrier.
        assert_eq!(barrier(&a, &[0.1, 0.1, 0.1, 0.1, 0.3]), 0.0);
        assert!(
            (distance(
                &Tensor::from_slice(&[0f32, 3.0]),
                &Tensor::from_slice(&[4f32, 0.0])
            ) - 5.0)
                .abs()
                < 1e-12
        );
    }
}
