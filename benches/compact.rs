//! Forward passes of a structured ticket's compact network against the masked full-size one
//! (see BENCHMARKS.md, "Structured pruning: compact networks"): LeNet-300-100 with 50% and 80%
//! of its hidden neurons removed, Conv-2 with 50% and 80% of its filters removed, each
//! evaluated on the 10,000 Fashion-MNIST test images through lth's own evaluation (the masked
//! network as a run evaluates it, the compact one as `lth export --compact` shapes it).
//!
//! ```text
//! cargo bench --bench compact -- [--repeats 5] [--data-dir data/fashion-mnist] [--threads N]
//! ```

use std::time::Instant;

use clap::Parser;

use lth::config::DataConfig;
use lth::data::Dataset;
use lth::model::{ConvNet, Lenet, Network, State};
use lth::train::eval::evaluate;
use tch::{Device, Kind, Tensor};

/// Command-line options.
#[derive(Parser)]
#[command(
    name = "compact",
    about = "Compact against masked forward passes, on the CPU"
)]
struct Args {
    /// Timed evaluations of the test set per network (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Fashion-MNIST folder.
    #[arg(long)]
    data_dir: Option<String>,
    /// libtorch CPU threads (default: its own choice).
    #[arg(long)]
    threads: Option<i32>,
    /// Accepted for `cargo bench` (ignored).
    #[arg(long, hide = true)]
    bench: bool,
}

/// A measured pair: its name, the full network, the compact one, the units each unit layer
/// keeps.
struct Case {
    name: &'static str,
    full: Box<dyn Network>,
    small: Box<dyn Network>,
    kept: Vec<i64>,
}

/// Median seconds of `repeats` evaluations of `state` on the test set (one warm-up first).
fn seconds(net: &dyn Network, state: &State, data: &Dataset, repeats: usize) -> f64 {
    let _ = evaluate(net, state, &data.test).double_value(&[0, 0]);
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            let _ = evaluate(net, state, &data.test).double_value(&[0, 0]);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The full network's masks with units `kept` of each unit layer (the first ones) left.
fn masks_keeping(net: &dyn Network, kept: &[i64]) -> Tensor {
    let layout = net.layout();
    let mut masks = Tensor::ones([1, layout.total() as i64], (Kind::Float, Device::Cpu));
    for (layer, &k) in net.unit_layers().iter().zip(kept) {
        let units = layer.units(layout);
        let keep = Tensor::cat(
            &[
                Tensor::ones([1, k], (Kind::Float, Device::Cpu)),
                Tensor::zeros([1, units - k], (Kind::Float, Device::Cpu)),
            ],
            1,
        );
        layer.apply(layout, &mut masks, &keep);
    }
    masks
}

fn main() {
    let args = Args::parse();
    if let Some(t) = args.threads {
        tch::set_num_threads(t);
    }
    let cfg = DataConfig {
        dir: args.data_dir.unwrap_or_else(|| DataConfig::default().dir),
        ..DataConfig::default()
    };
    let data = Dataset::load(&cfg, Device::Cpu).expect("Fashion-MNIST (make data)");
    println!(
        "| network | units removed | masked full size (s) | compact (s) | speed-up |\n|---|---|---|---|---|"
    );
    for removed in [0.5, 0.8] {
        let keep = |n: i64| ((1.0 - removed) * n as f64).round() as i64;
        let cases = [
            Case {
                name: "LeNet-300-100 (neurons)",
                full: Box::new(Lenet::new(784, 10)),
                small: Box::new(Lenet::with_widths(&[
                    784,
                    keep(300) as usize,
                    keep(100) as usize,
                    10,
                ])),
                kept: vec![keep(300), keep(100)],
            },
            Case {
                name: "Conv-2 (filters)",
                full: Box::new(ConvNet::new(&[64, 64], [1, 28, 28], 10, 0.0).unwrap()),
                small: Box::new(
                    ConvNet::new(
                        &[keep(64) as usize, keep(64) as usize],
                        [1, 28, 28],
                        10,
                        0.0,
                    )
                    .unwrap(),
                ),
                kept: vec![keep(64), keep(64)],
            },
        ];
        for Case {
            name,
            full,
            small,
            kept,
        } in cases
        {
            // Only the filters are pruned in Conv-2: fc1 and fc2 keep their 256 neurons.
            let full_state = State::init(full.layout(), &[0], Device::Cpu);
            let masks = masks_keeping(full.as_ref(), &kept);
            let masked = full_state.masked(&masks);
            let compact = State::init(small.layout(), &[0], Device::Cpu);
            let (a, b) = (
                seconds(full.as_ref(), &masked, &data, args.repeats),
                seconds(small.as_ref(), &compact, &data, args.repeats),
            );
            println!(
                "| {name} | {:.0}% | {a:.3} | {b:.3} | {:.2}x |",
                removed * 100.0,
                a / b
            );
        }
    }
}
