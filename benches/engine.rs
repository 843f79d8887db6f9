//! Replica-steps per second of the population engine on LeNet-300-100 / Fashion-MNIST, dense
//! and with half the weights pruned, evaluation off. Run: `make bench` (or
//! `cargo bench --bench engine -- [R ...]`).

use std::time::Instant;

use lth::config::{PruneConfig, PruneStrategy, TrainConfig};
use lth::data::Dataset;
use lth::model::{Lenet, Network, State};
use lth::prune::{groups, magnitude_prune};
use lth::train::{EvalPoint, LrPlan, Observer, Replicas, Span, Trainer};
use tch::Device;

struct Silent;

impl Observer for Silent {
    fn steps(&mut self, _: u64) {}
    fn evaluated(&mut self, _: &EvalPoint) {}
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1, 2, 4, 8]
    } else {
        sizes
    };
    let device = Device::cuda_if_available();
    let data =
        Dataset::load(&lth::config::DataConfig::default(), device).expect("run `make data` first");
    let net = Lenet::new(784, 10);
    let steps = 1000u64;
    println!("| replicas | mask | replica-steps/s |");
    println!("|---:|---|---:|");
    for &r in &sizes {
        for pruned in [false, true] {
            let seeds: Vec<u64> = (0..r as u64).collect();
            let state = State::init(net.layout(), &seeds, device);
            let theta = state.params.shallow_clone();
            let masks = if pruned {
                let cfg = PruneConfig {
                    strategy: PruneStrategy::Global,
                    fraction: 0.5,
                    ..PruneConfig::default()
                };
                magnitude_prune(
                    &theta,
                    &theta.ones_like(),
                    net.layout(),
                    &groups(net.layout(), &cfg).unwrap(),
                )
            } else {
                theta.ones_like()
            };
            let cfg = TrainConfig {
                iterations: steps,
                eval_every: steps * 10,
                ..TrainConfig::default()
            };
            let trainer = Trainer {
                net: &net,
                data: &data,
                cfg: &cfg,
                augment: None,
                device,
            };
            let labels: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
            let lrs = vec![
                LrPlan {
                    base: cfg.lr,
                    scheduled: true
                };
                r
            ];
            let replicas = Replicas {
                start: &state,
                masks: &masks,
                seeds: &seeds,
                lrs: &lrs,
                optimizer: None,
                labels: &labels,
            };
            let span = Span {
                start: 0,
                end: steps,
                eval_every: steps * 10,
                snapshots: vec![],
                mask_updates: vec![],
            };
            let started = Instant::now();
            trainer.train(&replicas, &span, &mut Silent, None).unwrap();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "| {r} | {} | {:.0} |",
                if pruned { "50% pruned" } else { "dense" },
                (r as u64 * steps) as f64 / secs
            );
        }
    }
}
