//! Instability analysis (Frankle et al. 2020): copies of a network trained from the same
//! weights with different data orders, all in one population, and the error barrier on the
//! straight line between each pair of copies ([`super::interpolation`]).

use anyhow::Result;
use tch::Tensor;

use crate::config::LrPlan;
use crate::model::State;
use crate::train::{Observer, Replicas, Span, SpanResult, Trainer};

/// The networks to copy and how: their weights at the rewind point, masks, and each copy's
/// noise seed (its batch order, augmentation and dropout draws).
pub struct Copies<'a> {
    /// Weights (and buffers) of the N networks at iteration `span.start`, `[N, P]`.
    pub start: &'a State,
    /// Their masks `[N, P]`.
    pub masks: &'a Tensor,
    /// `noise[n]`: the noise seeds of network n's copies (the same count for every network).
    pub noise: &'a [Vec<u64>],
}

/// Trains every copy of every network over `span` as one population (network n's copies at
/// rows `n * copies ..`), each from its network's weights with its own noise seed, at the
/// config's learning rate and schedule.
pub fn train_copies(
    trainer: &Trainer<'_>,
    copies: &Copies<'_>,
    span: &Span,
    observer: &mut dyn Observer,
) -> Result<SpanResult> {
    let per = copies.noise.first().map_or(0, Vec::len) as i64;
    let rows: Vec<i64> = (0..copies.noise.len() as i64)
        .flat_map(|n| std::iter::repeat_n(n, per as usize))
        .collect();
    let index = Tensor::from_slice(&rows).to_device(copies.masks.device());
    let start = State {
        params: copies.start.params.index_select(0, &index),
        buffers: copies
            .start
            .buffers
            .iter()
            .map(|b| b.index_select(0, &index))
            .collect(),
    };
    let masks = copies.masks.index_select(0, &index);
    let seeds: Vec<u64> = copies.noise.iter().flatten().copied().collect();
    let lrs = vec![
        LrPlan {
            base: trainer.cfg.lr,
            scheduled: true,
        };
        seeds.len()
    ];
    let labels: Vec<String> = copies
        .noise
        .iter()
        .enumerate()
        .flat_map(|(n, seeds)| {
            seeds
                .iter()
                .map(move |s| format!("network {n} copy (noise seed {s})"))
        })
        .collect();
    let replicas = Replicas {
        start: &start,
        masks: &masks,
        seeds: &seeds,
        lrs: &lrs,
        labels: &labels,
        optimizer: None,
    };
    trainer.train(&replicas, span, observer, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::interpolation::{alphas, barrier, distance, evaluate_path};
    use crate::config::{ModelConfig, TrainConfig};
    use crate::data::{Dataset, Split};
    use crate::train::EvalPoint;
    use tch::{Device, Kind};

    struct Quiet;
    impl Observer for Quiet {
        fn steps(&mut self, _: u64) {}
        fn evaluated(&mut self, _: &EvalPoint) {}
    }

    fn split(n: i64) -> Split {
        Split {
            images: Tensor::rand([n, 1, 28, 28], (Kind::Float, Device::Cpu)),
            labels: Tensor::randint(10, [n], (Kind::Int64, Device::Cpu)),
        }
    }

    #[test]
    fn copies_with_one_noise_seed_agree_and_a_copy_alone_is_the_copy_in_the_population() {
        tch::manual_seed(3);
        let data = Dataset {
            train: split(120),
            validation: split(30),
            test: split(40),
            input_shape: [1, 28, 28],
            black: vec![0.0],
            num_classes: 10,
        };
        let net = crate::model::build(&ModelConfig::default(), [1, 28, 28], 10).unwrap();
        let cfg = TrainConfig {
            iterations: 30,
            eval_every: 30,
            batch_size: 10,
            ..TrainConfig::default()
        };
        let trainer = Trainer {
            net: net.as_ref(),
            data: &data,
            cfg: &cfg,
            augment: None,
            device: Device::Cpu,
        };
        let start = State::init(net.layout(), &[0, 1], Device::Cpu);
        let masks = Tensor::ones_like(&start.params);
        let span = Span::new(10, 30, 10);
        let noise = [vec![5, 5], vec![5, 6]];
        let copies = Copies {
            start: &start,
            masks: &masks,
            noise: &noise,
        };
        let trained = train_copies(&trainer, &copies, &span, &mut Quiet).unwrap();
        let w = |r: i64| trained.state.params.get(r);
        assert!(w(0).equal(&w(1)), "one noise seed, one network");
        let a = alphas(5);
        let path =
            evaluate_path(net.as_ref(), (&w(0), &w(1)), &masks.get(0), &a, &data.test).unwrap();
        let errors: Vec<f64> = path.iter().map(|(_, acc)| 1.0 - acc).collect();
        assert_eq!(barrier(&a, &errors), 0.0);
        assert!(distance(&w(2), &w(3)) > 0.0, "other noise, other weights");

        // Network 1's copy with noise seed 6, trained alone.
        let one = State {
            params: start.params.get(1).unsqueeze(0),
            buffers: Vec::new(),
        };
        let alone = train_copies(
            &trainer,
            &Copies {
                start: &one,
                masks: &masks.get(1).unsqueeze(0),
                noise: &[vec![6]],
            },
            &span,
            &mut Quiet,
        )
        .unwrap();
        assert!(
            alone.state.params.get(0).equal(&w(3)),
            "alone = in the population"
        );
    }
}
