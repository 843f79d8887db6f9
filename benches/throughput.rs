//! Replica-steps per second of the population engine against PyTorch eager, measured in the
//! same invocation on the same machine (see BENCHMARKS.md).
//!
//! ```text
//! cargo bench --bench throughput -- [--device cpu|cuda] [--models lenet,conv2]
//!     [--sizes 1,4,8,16] [--conv-sizes 1,4,8] [--steps 1000] [--conv-steps 100]
//!     [--eval-every 100] [--python .venv/bin/python] [--data-dir data/fashion-mnist] [--tf32]
//! ```
//!
//! `--help` lists the options and each device's defaults; an unknown option is an error.
//!
//! Every measurement runs in its own process (this binary re-invoked with `--one`), so its peak
//! memory is its own: CPU peak resident set size, GPU peak allocated by PyTorch's reference
//! (the engine's GPU figure is the device's used memory at the end of the run, from
//! `nvidia-smi`, CUDA context included). A measurement that fails shows NaN in its row.
//! Workload: Fashion-MNIST, batch 60, Adam, half the weights of every prunable tensor pruned by
//! magnitude (masked gradients), validation (5,000) and test (10,000) evaluated at the start
//! and every `--eval-every` steps. The reference is `benches/pytorch_reference.py`. Both
//! engines compute in IEEE float32 on GPUs unless `--tf32` allows TensorFloat-32 in both.

use std::process::Command;
use std::time::Instant;

use clap::{Parser, ValueEnum};

use lth::config::{DataConfig, LrPlan, ModelConfig, PruneConfig, PruneScope, TrainConfig};
use lth::data::Dataset;
use lth::model::{self, State};
use lth::prune::{groups, prune_round, Magnitude};
use lth::train::{EvalPoint, Observer, Replicas, Span, Trainer};
use tch::Device;

struct Silent;

impl Observer for Silent {
    fn steps(&mut self, _: u64) {}
    fn evaluated(&mut self, _: &EvalPoint) {}
}

/// Command-line options. Sizes and step counts left out take the device's defaults.
#[derive(Parser)]
#[command(
    name = "throughput",
    about = "Replica-steps/s of lth's population engine against PyTorch eager, in one invocation"
)]
struct Args {
    /// Where both engines train.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// Models to measure, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [ModelArg::Lenet, ModelArg::Conv2])]
    models: Vec<ModelArg>,
    /// LeNet population sizes [CPU: 1,4,8,16; GPU: 1,8,32,128,512].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    sizes: Option<Vec<u32>>,
    /// Conv-2 population sizes [CPU: 1,4,8; GPU: 1,4,16,32].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    conv_sizes: Option<Vec<u32>>,
    /// Timed LeNet steps per measurement [CPU: 1000; GPU: 2000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    steps: Option<u64>,
    /// Timed Conv-2 steps per measurement [CPU: 50; GPU: 500].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    conv_steps: Option<u64>,
    /// Evaluate the validation and test sets every this many steps (and at start and end).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    eval_every: u64,
    /// Python with torch 2.11.0 for the PyTorch eager reference.
    #[arg(long, default_value = ".venv/bin/python")]
    python: String,
    /// Folder holding the four Fashion-MNIST files [default: the config's data dir].
    #[arg(long)]
    data_dir: Option<String>,
    /// Allow TensorFloat-32 matrix products on GPUs (both engines).
    #[arg(long)]
    tf32: bool,
    /// Internal: one measurement, MODEL REPLICAS MASKED(1|0), printed as one JSON line.
    #[arg(long, num_args = 3, value_names = ["MODEL", "REPLICAS", "MASKED"], hide = true)]
    one: Option<Vec<String>>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum ModelArg {
    Lenet,
    Conv2,
}

/// Options with the device's defaults filled in.
struct Opts {
    device: String,
    models: Vec<String>,
    sizes: Vec<usize>,
    conv_sizes: Vec<usize>,
    steps: u64,
    conv_steps: u64,
    eval_every: u64,
    python: String,
    /// Folder holding the four Fashion-MNIST files.
    data_dir: String,
    /// Allow TF32 on GPUs (both engines).
    tf32: bool,
}

/// Parses the command line; a bad or unknown option ends the process with clap's one-line
/// error and exit status 2 (`--help` lists the options).
fn parse() -> (Opts, Option<Vec<String>>) {
    let args = Args::parse();
    let gpu = args.device == DeviceArg::Cuda;
    let sizes = |given: Option<Vec<u32>>, cpu: &[usize], gpu_sizes: &[usize]| match given {
        Some(list) => list.into_iter().map(|r| r as usize).collect(),
        None if gpu => gpu_sizes.to_vec(),
        None => cpu.to_vec(),
    };
    let opts = Opts {
        device: if gpu { "cuda" } else { "cpu" }.into(),
        models: args
            .models
            .iter()
            .map(|m| match m {
                ModelArg::Lenet => "lenet".to_string(),
                ModelArg::Conv2 => "conv2".to_string(),
            })
            .collect(),
        sizes: sizes(args.sizes, &[1, 4, 8, 16], &[1, 8, 32, 128, 512]),
        conv_sizes: sizes(args.conv_sizes, &[1, 4, 8], &[1, 4, 16, 32]),
        steps: args.steps.unwrap_or(if gpu { 2000 } else { 1000 }),
        conv_steps: args.conv_steps.unwrap_or(if gpu { 500 } else { 50 }),
        eval_every: args.eval_every,
        python: args.python,
        data_dir: args.data_dir.unwrap_or_else(|| DataConfig::default().dir),
        tf32: args.tf32,
    };
    (opts, args.one)
}

/// Peak resident set size of this process (bytes), from /proc.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// One measurement: `model`, `replicas`, `masked` ("1"/"0"). Prints one JSON line.
fn measure(opts: &Opts, one: &[String]) {
    let (model_name, replicas, masked) = (
        one[0].as_str(),
        one[1].parse::<usize>().unwrap(),
        one[2] == "1",
    );
    let device = if opts.device == "cuda" {
        Device::Cuda(0)
    } else {
        Device::Cpu
    };
    let data_cfg = DataConfig {
        dir: opts.data_dir.clone(),
        ..DataConfig::default()
    };
    let data = Dataset::load(&data_cfg, device).expect("Fashion-MNIST in --data-dir (make data)");
    let arch = if model_name == "conv2" {
        "conv-2"
    } else {
        "lenet-300-100"
    };
    let model_cfg: ModelConfig = toml::from_str(&format!("arch = \"{arch}\"")).unwrap();
    let net = model::build(&model_cfg, data.input_shape, data.num_classes).unwrap();
    let layout = net.layout();
    let seeds: Vec<u64> = (0..replicas as u64).collect();
    let state = State::init(layout, &seeds, device);
    let masks = if masked {
        let cfg = PruneConfig {
            scope: PruneScope::Layerwise,
            fraction: 0.5,
            ..PruneConfig::default()
        };
        prune_round(
            &mut Magnitude,
            &state.params,
            &state.params.ones_like(),
            layout,
            &groups(layout, &cfg).unwrap(),
        )
    } else {
        state.params.ones_like()
    };
    let steps = if model_name == "conv2" {
        opts.conv_steps
    } else {
        opts.steps
    };
    let lr = if model_name == "conv2" { 2e-4 } else { 1.2e-3 };
    let cfg = TrainConfig {
        lr,
        iterations: steps,
        eval_every: opts.eval_every,
        tf32: opts.tf32,
        ..TrainConfig::default()
    };
    let trainer = Trainer {
        net: net.as_ref(),
        data: &data,
        cfg: &cfg,
        augment: None,
        device,
    };
    let labels: Vec<String> = seeds.iter().map(|s| format!("replica {s}")).collect();
    let lrs = vec![
        LrPlan {
            base: lr,
            scheduled: true
        };
        replicas
    ];
    let replicas_arg = Replicas {
        frozen: None,
        start: &state,
        masks: &masks,
        seeds: &seeds,
        lrs: &lrs,
        labels: &labels,
        optimizer: None,
    };
    // Warm-up: 20 steps, no evaluation.
    let warm = Span::new(0, 20, 1_000_000);
    let warm_cfg = TrainConfig {
        iterations: 20,
        ..cfg.clone()
    };
    Trainer {
        cfg: &warm_cfg,
        ..Trainer {
            net: net.as_ref(),
            data: &data,
            cfg: &cfg,
            augment: None,
            device,
        }
    }
    .train(&replicas_arg, &warm, &mut Silent, None)
    .unwrap();
    let span = Span::new(0, steps, opts.eval_every);
    let started = Instant::now();
    let result = trainer
        .train(&replicas_arg, &span, &mut Silent, None)
        .unwrap();
    if let Device::Cuda(_) = device {
        tch::Cuda::synchronize(0);
    }
    let seconds = started.elapsed().as_secs_f64();
    // On a GPU: the device's used memory with the run's tensors still alive (tch has no
    // allocator statistics), CUDA context included; on the CPU: peak resident set size.
    let memory = match device {
        Device::Cuda(_) => gpu_memory_used(),
        _ => peak_rss() as f64,
    };
    drop(result);
    println!(
        "{{\"engine\": \"lth\", \"model\": \"{model_name}\", \"replicas\": {replicas}, \"masked\": {masked}, \"steps\": {steps}, \"seconds\": {seconds}, \"replica_steps_per_second\": {}, \"peak_memory_bytes\": {memory}}}",
        (replicas as u64 * steps) as f64 / seconds,
    );
}

/// Memory in use on GPU 0 (bytes) as `nvidia-smi` reports it; NaN without it.
fn gpu_memory_used() -> f64 {
    Command::new("nvidia-smi")
        .args([
            "--query-gpu=memory.used",
            "--format=csv,noheader,nounits",
            "--id=0",
        ])
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .map_or(f64::NAN, |mib| mib * 1048576.0)
}

/// Runs a command and returns the last line of its stdout that parses as JSON-ish `{...}`.
/// A measurement that fails is reported on stderr and gives `{}` (its row shows NaN), so the
/// other rows of the table still come out.
fn run_json(cmd: &mut Command) -> String {
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("benchmark process {cmd:?} did not start: {e}");
            return "{}".into();
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "benchmark process {cmd:?} failed: {}",
            stderr.lines().last().unwrap_or("")
        );
        return "{}".into();
    }
    stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("{}")
        .to_string()
}

/// A rate with three significant digits.
fn rate_text(rate: f64) -> String {
    if rate >= 100.0 {
        format!("{rate:.0}")
    } else if rate >= 10.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.2}")
    }
}

fn field(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\": ");
    json.find(&pat)
        .map(|i| &json[i + pat.len()..])
        .and_then(|rest| rest.split([',', '}']).next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn main() {
    lth::platform::tune_allocator();
    let (opts, one) = parse();
    if let Some(one) = one {
        measure(&opts, &one);
        return;
    }
    let me = std::env::current_exe().expect("bench binary path");
    println!(
        "device: {}, threads: {}, steps: LeNet {} / Conv-2 {}, evaluation every {} steps, TF32 {}",
        opts.device,
        tch::get_num_threads(),
        opts.steps,
        opts.conv_steps,
        opts.eval_every,
        if opts.tf32 { "allowed" } else { "off" }
    );
    let tf32_flag: &[&str] = if opts.tf32 { &["--tf32"] } else { &[] };
    println!();
    println!("| model | engine | replicas | masked | replica-steps/s | x PyTorch eager | x lth R=1 | peak memory (MiB) |");
    println!("|---|---|---:|---|---:|---:|---:|---:|");
    for model in &opts.models {
        let steps = if model == "conv2" {
            opts.conv_steps
        } else {
            opts.steps
        };
        let reference = run_json(
            Command::new(&opts.python)
                .arg("benches/pytorch_reference.py")
                .args(["--model", model, "--device", &opts.device, "--masked"])
                .args(["--data", &opts.data_dir])
                .args([
                    "--steps",
                    &steps.to_string(),
                    "--eval-every",
                    &opts.eval_every.to_string(),
                ])
                .args(tf32_flag),
        );
        let eager = field(&reference, "steps_per_second");
        println!(
            "| {model} | PyTorch eager | 1 | yes | {} | 1.00 | | {:.0} |",
            rate_text(eager),
            field(&reference, "peak_memory_bytes") / 1048576.0
        );
        let sizes = if model == "conv2" {
            &opts.conv_sizes
        } else {
            &opts.sizes
        };
        let mut base = f64::NAN;
        let mut runs: Vec<(usize, bool)> = sizes.iter().map(|&r| (r, true)).collect();
        runs.insert(1.min(runs.len()), (1, false));
        for (r, masked) in runs {
            let json = run_json(
                Command::new(&me)
                    .args([
                        "--device",
                        &opts.device,
                        "--steps",
                        &opts.steps.to_string(),
                        "--conv-steps",
                        &opts.conv_steps.to_string(),
                        "--eval-every",
                        &opts.eval_every.to_string(),
                        "--data-dir",
                        &opts.data_dir,
                        "--one",
                        model,
                        &r.to_string(),
                        if masked { "1" } else { "0" },
                    ])
                    .args(tf32_flag),
            );
            let rate = field(&json, "replica_steps_per_second");
            if r == 1 && masked {
                base = rate;
            }
            println!(
                "| {model} | lth | {r} | {} | {} | {:.2} | {:.2} | {:.0} |",
                if masked { "yes" } else { "no" },
                rate_text(rate),
                rate / eager,
                rate / base,
                field(&json, "peak_memory_bytes") / 1048576.0
            );
        }
    }
}
