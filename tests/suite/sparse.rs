//! `train.sparse_kernels`: the sparse path against the dense masked path on the same weights
//! and batch (loss, gradients, evaluation, one optimizer step, a whole span), its bytes run to
//! run, across thread counts and across a resumed round, and the density switch of `auto`
//! (dense rounds keep the bytes of `off`; the choice is logged in `timings.csv`).

use crate::common::{self, tiny_data};

use std::path::Path;

use common::{
    assert_one_line_error, assert_success, experiment_dir, rand_uniform, read_csv, run_in, snapshot,
};
use lth::config::{LrPlan, SparseKernels, TrainConfig};
use lth::data::Dataset;
use lth::model::sparse::SparseMlp;
use lth::model::{Input, Lenet, Network, Pass, State};
use lth::train::{EvalPoint, Replicas, Span, Trainer};
use tch::{Device, Kind, Tensor};

/// Masks `[R, P]` keeping a random `keep` fraction of every weight (biases kept).
fn random_masks(net: &Lenet, replicas: i64, keep: f64) -> Tensor {
    let layout = net.layout();
    let masks = Tensor::ones(
        [replicas, layout.total() as i64],
        (Kind::Float, Device::Cpu),
    );
    for (n, i) in layout.prunable().enumerate() {
        let mut seg = layout.segment(&masks, i);
        // A local seeded stream: the same masks at every call, whatever other tests draw.
        let kept = rand_uniform(seg.size().as_slice(), 11 + n as u64)
            .lt(keep)
            .to_kind(Kind::Float);
        seg.copy_(&kept);
    }
    masks
}

/// Largest |a - b| relative to max(|b|, floor), over `at` (a bool mask) or everywhere.
fn rel_diff(a: &Tensor, b: &Tensor, floor: f64) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(floor);
    (a - b).abs().max().double_value(&[]) / scale
}

#[test]
fn the_sparse_step_gives_the_dense_masked_loss_and_gradient() {
    let net = Lenet::new(784, 10);
    let masks = random_masks(&net, 2, 0.1);
    let params = State::init(net.layout(), &[3, 4], Device::Cpu).params * &masks;
    let plan = SparseMlp::plan(
        net.layout(),
        net.fully_connected().unwrap(),
        &masks,
        SparseKernels::On,
    )
    .expect("every replica runs sparse under `on`");
    tch::manual_seed(5);
    let x = rand_uniform(&[2, 60, 1, 28, 28], 5);
    let y = Tensor::randint(10, [2, 60], (Kind::Int64, Device::Cpu));
    for r in 0..2 {
        // Dense: autograd through the network on the masked weights, gradient masked.
        let leaf = params.get(r).unsqueeze(0).detach().set_requires_grad(true);
        let pass = Pass {
            params: &leaf,
            buffers: &[],
            train: true,
            dropout: None,
        };
        let logits = net.forward(&pass, Input::PerReplica(&x.narrow(0, r, 1)));
        let loss = logits
            .log_softmax(-1, Kind::Float)
            .gather(2, &y.narrow(0, r, 1).unsqueeze(-1), false)
            .mean(Kind::Float)
            .neg();
        let dense_grad =
            &Tensor::run_backward(&[&loss], &[&leaf], false, false)[0].get(0) * masks.get(r);
        // Sparse.
        let mut grad = params.get(r).zeros_like();
        let sparse_loss =
            plan.loss_and_grad(r as usize, &params.get(r), &x.get(r), &y.get(r), &mut grad);
        let dense_loss = loss.double_value(&[]);
        assert!(
            (f64::from(sparse_loss) - dense_loss).abs() <= 1e-6 * dense_loss.abs().max(1.0),
            "replica {r}: loss {sparse_loss} against {dense_loss}"
        );
        let d = rel_diff(&grad, &dense_grad, 1e-6);
        assert!(
            d < 1e-4,
            "replica {r}: gradients differ by {d} of the largest"
        );
        let pruned = masks.get(r).eq(0.0);
        assert_eq!(
            grad.masked_select(&pruned).abs().max().double_value(&[]),
            0.0,
            "no gradient at a pruned position"
        );
    }
}

#[test]
fn sparse_evaluation_gives_the_dense_loss_and_predictions() {
    let net = Lenet::new(784, 10);
    let masks = random_masks(&net, 1, 0.05);
    let params = State::init(net.layout(), &[8], Device::Cpu).params * &masks;
    let plan = SparseMlp::plan(
        net.layout(),
        net.fully_connected().unwrap(),
        &masks,
        SparseKernels::On,
    )
    .unwrap();
    tch::manual_seed(6);
    let x = rand_uniform(&[500, 1, 28, 28], 6);
    let labels = Tensor::randint(10, [500], (Kind::Int64, Device::Cpu));
    let pass = Pass {
        params: &params,
        buffers: &[],
        train: false,
        dropout: None,
    };
    let logits = net.forward(&pass, Input::Shared(&x)).get(0);
    let dense_loss = logits
        .log_softmax(-1, Kind::Float)
        .gather(1, &labels.unsqueeze(1), false)
        .neg()
        .sum(Kind::Double)
        .double_value(&[]);
    let dense_correct = logits
        .argmax(-1, false)
        .eq_tensor(&labels)
        .sum(Kind::Int64)
        .int64_value(&[]);
    let (loss, correct) = plan.evaluate(0, &params.get(0), &SparseMlp::blocks(&x, &labels));
    assert!(
        (loss - dense_loss).abs() <= 1e-5 * dense_loss.abs(),
        "loss {loss} against {dense_loss}"
    );
    assert_eq!(correct, dense_correct, "the same predictions");
}

/// Trains 2 replicas (10% of their weights kept) for `iterations` with `mode`.
fn train_span(
    data: &Dataset,
    iterations: u64,
    mode: SparseKernels,
) -> (Tensor, Tensor, Vec<EvalPoint>) {
    let masks = random_masks(&Lenet::new(784, 10), 2, 0.1);
    let (params, evals, sparse) = train_masked(data, iterations, mode, &masks);
    assert_eq!(sparse, if mode.is_off() { 0 } else { 2 });
    (params, masks, evals)
}

/// Trains 2 replicas under `masks` for `iterations` with `mode`: final weights, evaluation
/// points and how many replicas ran sparse.
fn train_masked(
    data: &Dataset,
    iterations: u64,
    mode: SparseKernels,
    masks: &Tensor,
) -> (Tensor, Vec<EvalPoint>, usize) {
    let net = Lenet::new(784, 10);
    let start = State::init(net.layout(), &[0, 1], Device::Cpu);
    let cfg = TrainConfig {
        lr: 1e-3,
        batch_size: 20,
        iterations,
        eval_every: iterations,
        sparse_kernels: mode,
        ..TrainConfig::default()
    };
    let trainer = Trainer {
        net: &net,
        data,
        cfg: &cfg,
        augment: None,
        device: Device::Cpu,
    };
    let labels: Vec<String> = (0..2).map(|r| format!("replica {r}")).collect();
    let lrs = [LrPlan {
        base: cfg.lr,
        scheduled: true,
    }; 2];
    let replicas = Replicas {
        frozen: None,
        start: &start,
        masks,
        seeds: &[0, 1],
        lrs: &lrs,
        labels: &labels,
        optimizer: None,
    };
    let span = Span::new(0, iterations, iterations);
    let out = trainer
        .train(&replicas, &span, &mut crate::common::Silent, None)
        .unwrap();
    (out.state.params, out.evals, out.sparse_replicas)
}

#[test]
fn a_dense_replica_beside_a_sparse_one_keeps_the_bits_of_the_dense_path() {
    let (_tmp, data) = tiny_data();
    let net = Lenet::new(784, 10);
    // Replica 0 keeps 10% of its weights (sparse under `auto`), replica 1 all of them.
    let masks = Tensor::cat(&[random_masks(&net, 1, 0.1), random_masks(&net, 1, 1.0)], 0);
    let (off, off_evals, _) = train_masked(&data, 40, SparseKernels::Off, &masks);
    let (auto, auto_evals, sparse) = train_masked(&data, 40, SparseKernels::Auto, &masks);
    assert_eq!(sparse, 1, "one replica ran sparse");
    assert!(
        auto.get(1).equal(&off.get(1)),
        "the dense replica's weights, bit for bit"
    );
    assert!(
        !auto.get(0).equal(&off.get(0)),
        "the sparse one rounds differently"
    );
    let (a, b) = (off_evals.last().unwrap(), auto_evals.last().unwrap());
    assert_eq!(
        a.val_loss[1].to_bits(),
        b.val_loss[1].to_bits(),
        "and its evaluation"
    );
}

#[test]
fn one_sparse_optimizer_step_matches_the_dense_one_and_keeps_pruned_weights_zero() {
    let (_tmp, data) = tiny_data();
    let (dense, masks, _) = train_span(&data, 1, SparseKernels::Off);
    let (sparse, _, _) = train_span(&data, 1, SparseKernels::On);
    // Adam's first step moves each weight by about lr = 1e-3; the two paths' gradients agree to
    // float32 rounding, so the weights agree far inside a hundredth of that step.
    let d = (&sparse - &dense).abs().max().double_value(&[]);
    assert!(d < 1e-5, "weights after one step differ by {d}");
    let pruned = masks.eq(0.0);
    assert_eq!(
        sparse.masked_select(&pruned).abs().max().double_value(&[]),
        0.0
    );
}

#[test]
fn a_sparse_span_ends_at_the_dense_accuracy_with_pruned_weights_still_zero() {
    let (_tmp, data) = tiny_data();
    let (dense, masks, dense_evals) = train_span(&data, 150, SparseKernels::Off);
    let (sparse, _, sparse_evals) = train_span(&data, 150, SparseKernels::On);
    let pruned = masks.eq(0.0);
    assert_eq!(
        sparse.masked_select(&pruned).abs().max().double_value(&[]),
        0.0
    );
    assert!(!sparse.equal(&dense), "the paths round differently");
    let (a, b) = (dense_evals.last().unwrap(), sparse_evals.last().unwrap());
    for r in 0..2 {
        assert!(
            b.val_accuracy[r] > 0.3,
            "replica {r} learned ({})",
            b.val_accuracy[r]
        );
        assert!(
            (a.val_accuracy[r] - b.val_accuracy[r]).abs() <= 0.05,
            "replica {r}: validation accuracy {} sparse against {} dense",
            b.val_accuracy[r],
            a.val_accuracy[r]
        );
    }
}

fn sparse_config(data: &Path, mode: &str) -> String {
    common::small_config(data, "")
        .replace("fraction = 0.2\n", "fraction = 0.6\n")
        .replace(
            "[train]\n",
            &format!("[train]\nsparse_kernels = \"{mode}\"\n"),
        )
}

#[test]
fn sparse_runs_repeat_their_bytes_across_runs_thread_counts_and_a_redone_round() {
    let tmp = experiment_dir(|data| sparse_config(data, "on"));
    let root = tmp.path();
    for (dir, threads) in [("a", "2"), ("b", "2"), ("c", "1")] {
        let out = run_in(root, dir)
            .args(["--quiet", "--threads", threads])
            .output()
            .unwrap();
        assert_success(&out, dir);
    }
    let a = snapshot(&root.join("a"));
    assert!(a.len() > 10, "a run's files");
    assert_eq!(a, snapshot(&root.join("b")), "run to run");
    assert_eq!(
        a,
        snapshot(&root.join("c")),
        "the sparse kernels' bits do not depend on --threads"
    );
    // Round 2 redone from the files of rounds 0 and 1.
    std::fs::write(root.join("a/progress.toml"), "rounds_completed = 2\n").unwrap();
    let out = run_in(root, "a")
        .args(["--quiet", "--threads", "2"])
        .output()
        .unwrap();
    assert_success(&out, "the resumed run");
    assert_eq!(
        a,
        snapshot(&root.join("a")),
        "a redone round writes the same bytes"
    );
    let (header, rows) = read_csv(&root.join("a/timings.csv"));
    let col = header.iter().position(|h| h == "sparse_replicas").unwrap();
    assert!(
        rows.iter().all(|r| r[col] == "2"),
        "every replica of every round ran sparse"
    );
}

#[test]
fn auto_runs_dense_rounds_with_the_bytes_of_off_and_sparse_rounds_below_its_density() {
    let tmp = experiment_dir(|data| sparse_config(data, "auto"));
    let root = tmp.path();
    let off_tmp = experiment_dir(|data| sparse_config(data, "off"));
    assert_success(
        &run_in(root, "auto").arg("--quiet").output().unwrap(),
        "auto",
    );
    let out = run_in(off_tmp.path(), "off")
        .arg("--quiet")
        .output()
        .unwrap();
    assert_success(&out, "off");
    let (header, rows) = read_csv(&root.join("auto/timings.csv"));
    let col = header.iter().position(|h| h == "sparse_replicas").unwrap();
    // Rounds keep 100%, 40% and 16% of the weights (fc3 a little more): only the last one is
    // at most 35% dense (`SparseKernels::AUTO_DENSITY`).
    let sparse: Vec<&str> = rows.iter().map(|r| r[col].as_str()).collect();
    assert_eq!(sparse, ["0", "0", "2"], "dense, dense, sparse");
    let (auto, off) = (
        snapshot(&root.join("auto")),
        snapshot(&off_tmp.path().join("off")),
    );
    let round_files = |files: &std::collections::BTreeMap<String, Vec<u8>>, round: &str| {
        files
            .iter()
            .filter(|(k, _)| k.contains(&format!("round_0{round}")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    for round in ["0", "1"] {
        let files = round_files(&auto, round);
        assert!(!files.is_empty(), "round {round} files");
        assert_eq!(
            files,
            round_files(&off, round),
            "round {round} ran dense, bit for bit"
        );
    }
    assert_ne!(
        round_files(&auto, "2"),
        round_files(&off, "2"),
        "round 2 ran sparse"
    );
}

#[test]
fn sparse_kernels_refuse_networks_they_have_no_kernels_for() {
    let tmp = experiment_dir(|data| {
        sparse_config(data, "on").replace("[train]\n", "[model]\narch = \"conv-2\"\n\n[train]\n")
    });
    let out = run_in(tmp.path(), "r").arg("--quiet").output().unwrap();
    assert_one_line_error(
        &out,
        "`train.sparse_kernels` has kernels for fully connected networks",
    );
    let tmp = experiment_dir(|data| {
        sparse_config(data, "on").replace("[train]\n", "[model]\ndropout = 0.2\n\n[train]\n")
    });
    let out = run_in(tmp.path(), "r").arg("--quiet").output().unwrap();
    assert_one_line_error(&out, "without dropout");
}
