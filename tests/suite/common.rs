//! Helpers shared by the integration tests: small IDX data sets written by the test itself,
//! config files, running the `lth` binary, and comparing run dirs byte for byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lth::data::cifar;
use lth::data::idx::encode;
use lth::train::{EvalPoint, Observer};

/// An observer that reports nothing.
pub struct Silent;

impl Observer for Silent {
    fn steps(&mut self, _: u64) {}
    fn evaluated(&mut self, _: &EvalPoint) {}
}

/// An observer that notes where the training loop continued from a checkpoint.
pub struct Resumed(pub Option<u64>);

impl Observer for Resumed {
    fn steps(&mut self, _: u64) {}
    fn evaluated(&mut self, _: &EvalPoint) {}
    fn resumed(&mut self, iteration: u64) {
        self.0 = Some(iteration);
    }
}

/// Path of the built `lth` binary.
pub fn lth_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lth"))
}

/// A command running the built `lth` with one libtorch thread (`OMP_NUM_THREADS=1`) unless
/// its arguments give `--threads`. The suite runs two tests at once on two cores, and
/// libtorch's OpenMP threads spin while they wait: two 2-thread processes on 2 cores took 3x
/// as long as two 1-thread ones. Every test compares runs made under this same setting
/// (bytes depend on the thread count); `sparse::` runs 2 threads on purpose.
pub fn lth_command() -> Command {
    let mut cmd = Command::new(lth_bin());
    cmd.env("OMP_NUM_THREADS", "1");
    cmd
}

/// Runs [`run_in`] `dir` quietly on one thread with `args` more, and asserts that it
/// succeeded (`what` names it in the failure).
#[track_caller]
pub fn run_quietly(root: &Path, dir: &str, args: &[&str], what: &str) {
    let out = run_in(root, dir)
        .args(["--quiet", "--threads", "1"])
        .args(args)
        .output()
        .unwrap();
    assert_success(&out, what);
}

/// `lth run --config exp.toml --run-dir DIR --device cpu`, to run in `root`.
pub fn run_in(root: &Path, dir: &str) -> Command {
    let mut cmd = lth_command();
    cmd.args([
        "run",
        "--config",
        "exp.toml",
        "--run-dir",
        dir,
        "--device",
        "cpu",
    ])
    .current_dir(root);
    cmd
}

/// A temp dir holding a finished one-round ResNet-20 run in `run/` (one seed, 4 iterations)
/// on a tiny CIFAR-10 set written to `data/`, named by its full path (tests read the run
/// too); `prune_extra` adds lines to its `[prune]` table.
pub fn tiny_resnet_run(prune_extra: &str) -> tempfile::TempDir {
    tiny_cifar_run("arch = \"resnet\"\ndepth = 20", prune_extra)
}

/// [`tiny_resnet_run`] of another network: `model` is the `[model]` table's lines.
pub fn tiny_cifar_run(model: &str, prune_extra: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_cifar(&root.join("data"), 9, 9);
    let config = format!(
        "seeds = [0]\n[data]\ndir = \"{}\"\nformat = \"cifar10\"\nvalidation_size = 9\n[model]\n{model}\n[train]\niterations = 4\neval_every = 2\nbatch_size = 9\n[prune]\nrounds = 1\n{prune_extra}",
        root.join("data").display()
    );
    std::fs::write(root.join("exp.toml"), config).unwrap();
    let out = run_in(root, "run").arg("--quiet").output().unwrap();
    assert_success(&out, "the tiny resnet run");
    tmp
}

/// A temp dir holding a small IDX data set in `data/` (500 training, 100 test examples) and
/// the `exp.toml` that `config` writes for that data folder.
pub fn experiment_dir(config: impl FnOnce(&Path) -> String) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 500, 100, false);
    std::fs::write(tmp.path().join("exp.toml"), config(&data)).unwrap();
    tmp
}

/// Asserts that a finished command succeeded, printing `what` and its stderr if it did not.
#[track_caller]
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `lth` with `args` in `cwd`.
pub fn lth(cwd: &Path, args: &[&str]) -> Output {
    lth_command()
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("lth starts")
}

/// The repository root (where `data/` and `configs/` live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real Fashion-MNIST folder set up by `make data`; fails loudly when it is missing.
pub fn fashion_mnist_dir() -> PathBuf {
    let dir = repo_root().join("data/fashion-mnist");
    assert!(
        dir.join("train-images-idx3-ubyte.gz").exists(),
        "Fashion-MNIST is missing at {}: run `make data` (make test does it)",
        dir.display()
    );
    dir
}

/// Pixel `(row, col)` of a synthetic image of `class`: a bright 7x7 block whose place depends
/// on the class, over deterministic low noise, so a small network learns it in a few hundred
/// steps.
fn pixel(class: usize, index: usize, row: usize, col: usize) -> u8 {
    let (br, bc) = (3 + 7 * (class / 4), 3 + 7 * (class % 4));
    let noise = ((index * 7919 + row * 104_729 + col * 1_299_709) % 61) as u8;
    if (br..br + 7).contains(&row) && (bc..bc + 7).contains(&col) {
        190 + noise
    } else {
        noise
    }
}

/// Images and labels of `n` synthetic examples (labels cycle through 10 classes).
pub fn synthetic(n: usize, offset: usize) -> (Vec<u8>, Vec<u8>) {
    let mut images = Vec::with_capacity(n * 784);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i * 7 + offset) % 10;
        labels.push(class as u8);
        for r in 0..28 {
            for c in 0..28 {
                images.push(pixel(class, i + offset, r, c));
            }
        }
    }
    (images, labels)
}

/// Writes a small MNIST-format data set (raw IDX, or gzipped when `gz`) into `dir`.
pub fn write_dataset(dir: &Path, train: usize, test: usize, gz: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let (xi, yi) = synthetic(train, 0);
    let (xt, yt) = synthetic(test, 100_000);
    let files = [
        ("train-images-idx3-ubyte", encode(&[train, 28, 28], &xi)),
        ("train-labels-idx1-ubyte", encode(&[train], &yi)),
        ("t10k-images-idx3-ubyte", encode(&[test, 28, 28], &xt)),
        ("t10k-labels-idx1-ubyte", encode(&[test], &yt)),
    ];
    for (name, bytes) in files {
        if gz {
            write_gz(&dir.join(format!("{name}.gz")), &bytes);
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

/// Writes a small CIFAR-10 data set: `per_file` records in each training file, `test` in the
/// test file; class-dependent colour blocks.
pub fn write_cifar(dir: &Path, per_file: usize, test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let make = |n: usize, offset: usize| {
        let mut images = Vec::with_capacity(n * cifar::PIXELS);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let class = (i * 3 + offset) % 10;
            labels.push(class as u8);
            for ch in 0..3 {
                for y in 0..32 {
                    for x in 0..32 {
                        let block = (y / 8) * 4 + x / 8 == class;
                        let noise = ((i * 31 + ch * 7 + y * 13 + x * 3 + offset) % 50) as u8;
                        images.push(if block {
                            180 + noise
                        } else {
                            noise + 20 * ch as u8
                        });
                    }
                }
            }
        }
        cifar::encode(&images, &labels)
    };
    for (k, name) in cifar::TRAIN_FILES.iter().enumerate() {
        std::fs::write(dir.join(name), make(per_file, k)).unwrap();
    }
    std::fs::write(dir.join(cifar::TEST_FILE), make(test, 99)).unwrap();
}

/// Gzips `bytes` into `path`.
pub fn write_gz(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    std::fs::write(path, enc.finish().unwrap()).unwrap();
}

/// A small experiment on the synthetic data in `data_dir`: `extra` is appended TOML.
pub fn small_config(data_dir: &Path, extra: &str) -> String {
    format!(
        r#"name = "small"
seeds = [0, 1]

[data]
dir = "{}"
validation_size = 200

[train]
iterations = 120
eval_every = 40
batch_size = 30

[prune]
strategy = "layerwise"
fraction = 0.2
layer_fractions = {{ "fc3.weight" = 0.1 }}
rounds = 2
{extra}"#,
        data_dir.display()
    )
}

/// Every file under `dir` (relative path -> bytes), skipping `timings.csv` (wall clock) and
/// the figures.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(root, &path, out);
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "timings.csv" || rel == ".lock" || rel.ends_with(".png") || rel.ends_with(".svg")
        {
            continue;
        }
        out.insert(rel, std::fs::read(&path).unwrap());
    }
}

/// Relative paths whose bytes differ between two snapshots (or exist in one only).
pub fn different_files(
    a: &BTreeMap<String, Vec<u8>>,
    b: &BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// Every file under `dir` with its bytes, figures and timings included (for "untouched").
pub fn snapshot_all(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn all(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                all(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    all(dir, dir, &mut out);
    out
}

/// Asserts that a failed run printed exactly one `error:` line naming `needle`, no panic, and
/// exited non-zero.
pub fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    assert!(
        lines[0].starts_with("error:"),
        "error line starts with `error:`: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    assert!(
        lines[0].contains(needle),
        "error line should mention {needle:?}: {stderr}"
    );
}

/// Parses a CSV file into rows of strings (header excluded).
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

/// 600 training and 100 test examples written as IDX files (in the returned folder), 100 of
/// them held out for validation, loaded on the CPU.
pub fn tiny_data() -> (tempfile::TempDir, lth::data::Dataset) {
    let tmp = tempfile::tempdir().unwrap();
    write_dataset(tmp.path(), 600, 100, false);
    let cfg = lth::config::DataConfig {
        dir: tmp.path().display().to_string(),
        validation_size: 100,
        ..Default::default()
    };
    let data = lth::data::Dataset::load(&cfg, tch::Device::Cpu).unwrap();
    (tmp, data)
}

/// Standard-normal tensor from a local seeded stream (not torch's global generator, which
/// tests running in parallel share: a draw there can land between another test's seeding and
/// its draw).
pub fn randn(shape: &[i64], seed: u64) -> tch::Tensor {
    use rand_distr::Distribution;
    seeded(shape, seed, |rng| rand_distr::StandardNormal.sample(rng))
}

/// Uniform [0, 1) tensor from a local seeded stream (see [`randn`]).
pub fn rand_uniform(shape: &[i64], seed: u64) -> tch::Tensor {
    use rand::Rng;
    seeded(shape, seed, |rng| rng.random::<f32>())
}

fn seeded(
    shape: &[i64],
    seed: u64,
    draw: impl FnMut(&mut rand_chacha::ChaCha8Rng) -> f32,
) -> tch::Tensor {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut draw = draw;
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| draw(&mut rng)).collect();
    tch::Tensor::from_slice(&values).view(shape)
}

/// Runs `lth run` in `root` on the small config (data in `root/data`) with `extra` appended and
/// asserts one error line naming `needle`, and no run dir made.
pub fn assert_small_config_refused(root: &Path, extra: &str, needle: &str) {
    let config = root.join("bad.toml");
    std::fs::write(&config, small_config(&root.join("data"), extra)).unwrap();
    let out = lth(
        root,
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--run-dir",
            "bad",
        ],
    );
    assert_one_line_error(&out, needle);
    assert!(!root.join("bad").exists(), "{extra}: no run dir made");
}

/// Trains two replicas (seeds 0 and 1, labelled `a` and `b`, at `cfg.lr` under its schedule) of
/// `net` on `data` from `start` under `masks` (pruned positions holding `frozen` where given)
/// over `span`, with `schedule`, quietly.
pub fn train_pair(
    (net, data, cfg): (
        &dyn lth::model::Network,
        &lth::data::Dataset,
        &lth::config::TrainConfig,
    ),
    (start, masks, frozen): (&lth::model::State, &tch::Tensor, Option<&tch::Tensor>),
    span: &lth::train::Span,
    schedule: Option<&mut dyn lth::train::MaskSchedule>,
) -> lth::train::SpanResult {
    let trainer = lth::train::Trainer {
        net,
        data,
        cfg,
        augment: None,
        device: tch::Device::Cpu,
    };
    let lrs = [lth::config::LrPlan::scheduled(cfg.lr); 2];
    let labels = ["a".to_string(), "b".to_string()];
    let replicas = lth::train::Replicas {
        frozen,
        start,
        masks,
        seeds: &[0, 1],
        lrs: &lrs,
        optimizer: None,
        labels: &labels,
    };
    trainer
        .train(&replicas, span, &mut Silent, schedule)
        .expect("the pair trains")
}

/// The mean cross-entropy of LeNet (two ReLU hidden layers, then the output) written out by
/// hand: `p` its weights and biases in layout order, `x` `[B, inputs]`, `y` `[B]`.
pub fn lenet_loss_by_hand(p: &[tch::Tensor], x: &tch::Tensor, y: &tch::Tensor) -> tch::Tensor {
    let h1 = x.linear(&p[0], Some(&p[1])).relu();
    let h2 = h1.linear(&p[2], Some(&p[3])).relu();
    h2.linear(&p[4], Some(&p[5])).cross_entropy_for_logits(y)
}
