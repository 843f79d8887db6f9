//! The population engine: a seed's theta_0 and batch order do not depend on the population
//! around it, and pruned weights stay exactly zero through every optimizer step.

use crate::common::{self, tiny_data};

use lth::config::{LrPlan, OptimizerKind, PruneConfig, PruneScope, SparseKernels, TrainConfig};
use lth::data::{index_chunk, Dataset};
use lth::model::{Input, Lenet, Network, Pass, State};
use lth::prune::{groups, prune_round, Magnitude};
use lth::train::{EvalPoint, Replicas, Span, Trainer};
use tch::{Device, Kind, Tensor};

#[test]
fn theta_0_of_a_seed_is_identical_alone_and_inside_a_population() {
    let net = Lenet::new(784, 10);
    let alone = State::init(net.layout(), &[3], Device::Cpu).params;
    let crowd = State::init(net.layout(), &[1, 3, 5], Device::Cpu).params;
    assert!(
        alone.get(0).equal(&crowd.get(1)),
        "seed 3 alone == seed 3 among 1, 3, 5"
    );
    assert!(!crowd.get(0).equal(&crowd.get(1)), "different seeds differ");
    // Glorot normal: the std of fc1.weight is sqrt(2 / (784 + 300)) = 0.04296.
    let fc1 = net.layout().view(&alone, 0);
    let std = fc1.std(true).double_value(&[]);
    assert!((std - 0.04296).abs() < 0.001, "fc1 std {std}");
    let bias = net.layout().view(&alone, 1);
    assert_eq!(
        bias.abs().sum(Kind::Float).double_value(&[]),
        0.0,
        "biases start at zero"
    );
}

#[test]
fn batch_order_of_a_seed_is_identical_alone_and_inside_a_population() {
    use lth::data::BatchOrder;
    let orders = |seeds: &[u64]| -> Vec<BatchOrder> {
        seeds
            .iter()
            .map(|&s| BatchOrder::new(s, 1000, 32))
            .collect()
    };
    // Iterations 25..95 cross two epoch boundaries (31 full batches per epoch).
    let alone = index_chunk(&mut orders(&[7]), 25, 70, Device::Cpu);
    let crowd = index_chunk(&mut orders(&[2, 7, 9]), 25, 70, Device::Cpu);
    assert_eq!(crowd.size(), vec![70, 3, 32]);
    assert!(alone.select(1, 0).equal(&crowd.select(1, 1)));
    assert!(!crowd.select(1, 0).equal(&crowd.select(1, 1)));
}

/// Trains 3 replicas with half their weights pruned and checks the pruned ones are exactly
/// zero afterwards while the others moved.
fn pruned_weights_stay_zero(cfg: TrainConfig) {
    let (_tmp, data) = tiny_data();
    let net = Lenet::new(784, 10);
    let layout = net.layout();
    let state0 = State::init(layout, &[0, 1, 2], Device::Cpu);
    let theta0 = state0.params.shallow_clone();
    let prune_cfg = PruneConfig {
        scope: PruneScope::Global,
        fraction: 0.5,
        ..PruneConfig::default()
    };
    let masks = prune_round(
        &mut Magnitude,
        &theta0,
        &theta0.ones_like(),
        layout,
        &groups(layout, &prune_cfg).unwrap(),
    );
    let trainer = Trainer {
        net: &net,
        data: &data,
        cfg: &cfg,
        augment: None,
        device: Device::Cpu,
    };
    let span = Span::new(0, cfg.iterations, cfg.eval_every);
    let labels: Vec<String> = (0..3).map(|r| format!("replica {r}")).collect();
    let lrs = [LrPlan {
        base: cfg.lr,
        scheduled: true,
    }; 3];
    let replicas = Replicas {
        frozen: None,
        start: &state0,
        masks: &masks,
        seeds: &[0, 1, 2],
        lrs: &lrs,
        optimizer: None,
        labels: &labels,
    };
    let result = trainer
        .train(&replicas, &span, &mut crate::common::Silent, None)
        .unwrap();
    let pruned = masks.eq(0.0);
    let leaked = result.state.params.masked_select(&pruned);
    assert!(leaked.numel() > 100_000, "half of the weights are pruned");
    assert_eq!(
        leaked.abs().max().double_value(&[]),
        0.0,
        "pruned weights are exactly zero"
    );
    let moved = (&result.state.params - &theta0)
        .abs()
        .masked_select(&masks.gt(0.5));
    assert!(
        moved.max().double_value(&[]) > 0.0,
        "surviving weights trained"
    );
    let first = &result.evals[0];
    let last = result.evals.last().unwrap();
    assert!(
        last.val_loss.iter().sum::<f64>() < first.val_loss.iter().sum::<f64>(),
        "training lowered the validation loss"
    );
}

#[test]
fn pruned_weights_stay_exactly_zero_under_adam() {
    pruned_weights_stay_zero(TrainConfig {
        optimizer: OptimizerKind::Adam,
        lr: 1e-3,
        batch_size: 20,
        iterations: 60,
        eval_every: 30,
        weight_decay: 1e-4,
        ..TrainConfig::default()
    });
}

#[test]
fn pruned_weights_stay_exactly_zero_under_sgd_with_momentum_and_weight_decay() {
    pruned_weights_stay_zero(TrainConfig {
        optimizer: OptimizerKind::Sgd,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        batch_size: 20,
        iterations: 60,
        eval_every: 30,
        lr_milestones: vec![40],
        ..TrainConfig::default()
    });
}

#[test]
fn evaluation_points_cover_start_multiples_and_end() {
    let span = Span::new(30, 250, 100);
    assert_eq!(span.eval_points(), vec![30, 100, 200, 250]);
}

#[test]
fn population_forward_equals_each_replica_alone() {
    let net = Lenet::new(784, 10);
    let params = State::init(net.layout(), &[4, 5, 6], Device::Cpu).params;
    let x = Tensor::rand([3, 8, 1, 28, 28], (Kind::Float, Device::Cpu));
    let run = |p: &Tensor, input: Input<'_>| {
        let pass = Pass {
            params: p,
            buffers: &[],
            train: false,
            dropout: None,
        };
        net.forward(&pass, input)
    };
    let together = run(&params, Input::PerReplica(&x));
    let shared = run(&params, Input::Shared(&x.get(0)));
    for r in 0..3 {
        let p = params.narrow(0, r, 1);
        let alone = run(&p, Input::PerReplica(&x.narrow(0, r, 1)));
        let diff = (&together.narrow(0, r, 1) - &alone)
            .abs()
            .max()
            .double_value(&[]);
        assert!(
            diff < 1e-5,
            "replica {r}: batched vs alone differ by {diff}"
        );
        let alone_shared = run(&p, Input::PerReplica(&x.narrow(0, 0, 1)));
        let diff = (&shared.narrow(0, r, 1) - &alone_shared)
            .abs()
            .max()
            .double_value(&[]);
        assert!(
            diff < 1e-5,
            "replica {r}: shared-input evaluation differs by {diff}"
        );
    }
}

/// Trains `seeds` together for 40 steps (Adam, half the weights pruned) and returns the final
/// parameters and the last evaluation point.
fn train_population(seeds: &[u64], data: &Dataset) -> (Tensor, EvalPoint) {
    train_population_with(seeds, data, false)
}

/// As `train_population`, with `train.tf32` as given.
fn train_population_with(seeds: &[u64], data: &Dataset, tf32: bool) -> (Tensor, EvalPoint) {
    let net = Lenet::new(784, 10);
    let layout = net.layout();
    let state = State::init(layout, seeds, Device::Cpu);
    let cfg = PruneConfig {
        scope: PruneScope::Global,
        fraction: 0.5,
        ..PruneConfig::default()
    };
    let masks = prune_round(
        &mut Magnitude,
        &state.params,
        &state.params.ones_like(),
        layout,
        &groups(layout, &cfg).unwrap(),
    );
    let train = TrainConfig {
        batch_size: 20,
        iterations: 40,
        eval_every: 20,
        tf32,
        ..TrainConfig::default()
    };
    let trainer = Trainer {
        net: &net,
        data,
        cfg: &train,
        augment: None,
        device: Device::Cpu,
    };
    let lrs = vec![
        LrPlan {
            base: train.lr,
            scheduled: true
        };
        seeds.len()
    ];
    let labels: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
    let replicas = Replicas {
        frozen: None,
        start: &state,
        masks: &masks,
        seeds,
        lrs: &lrs,
        labels: &labels,
        optimizer: None,
    };
    let span = Span::new(0, 40, 20);
    let result = trainer
        .train(&replicas, &span, &mut crate::common::Silent, None)
        .unwrap();
    (result.state.params, result.evals.last().unwrap().clone())
}

#[test]
fn a_seed_trains_to_the_same_bits_alone_and_inside_a_population() {
    let (_tmp, data) = tiny_data();
    let (alone, alone_eval) = train_population(&[3], &data);
    let (crowd, crowd_eval) = train_population(&[1, 3, 5, 8], &data);
    assert!(
        alone.get(0).equal(&crowd.get(1)),
        "seed 3's trained weights, alone vs among 4"
    );
    assert_eq!(
        alone_eval.val_loss[0].to_bits(),
        crowd_eval.val_loss[1].to_bits()
    );
    assert_eq!(alone_eval.test_accuracy[0], crowd_eval.test_accuracy[1]);
}

/// Two unpruned LeNet replicas (seeds 4 and 9) trained by SGD with momentum over 60 steps,
/// evaluated every 20, checkpointing at every evaluation point into `ck/span.safetensors`.
struct CheckpointedPair {
    net: Lenet,
    seeds: [u64; 2],
    labels: [String; 2],
    state: State,
    masks: Tensor,
    train: TrainConfig,
    path: std::path::PathBuf,
}

impl CheckpointedPair {
    fn new(dir: &std::path::Path, weight_decay: f64) -> Self {
        let net = Lenet::new(784, 10);
        let seeds = [4u64, 9];
        let state = State::init(net.layout(), &seeds, Device::Cpu);
        let masks = state.params.ones_like();
        let train = TrainConfig {
            optimizer: OptimizerKind::Sgd,
            lr: 0.05,
            momentum: 0.9,
            weight_decay,
            batch_size: 20,
            iterations: 60,
            eval_every: 20,
            ..TrainConfig::default()
        };
        Self {
            net,
            seeds,
            labels: ["a".to_string(), "b".to_string()],
            state,
            masks,
            train,
            path: dir.join("ck/span.safetensors"),
        }
    }

    fn trainer<'a>(&'a self, data: &'a Dataset) -> Trainer<'a> {
        Trainer {
            net: &self.net,
            data,
            cfg: &self.train,
            augment: None,
            device: Device::Cpu,
        }
    }

    /// Both replicas from their initial weights, learning at `lrs`.
    fn replicas<'a>(&'a self, lrs: &'a [LrPlan]) -> Replicas<'a> {
        Replicas {
            frozen: None,
            start: &self.state,
            masks: &self.masks,
            seeds: &self.seeds,
            lrs,
            labels: &self.labels,
            optimizer: None,
        }
    }

    /// The span 0..60 with `snapshots` (and their optimizer state).
    fn span(&self, snapshots: Vec<u64>) -> Span {
        Span {
            snapshots,
            snapshot_optimizer: true,
            checkpoint: Some(lth::train::Checkpointing {
                store: std::rc::Rc::new(lth::record::CheckpointFile::at(&self.path)),
                every: std::time::Duration::ZERO,
            }),
            ..Span::new(0, 60, 20)
        }
    }
}

#[test]
fn a_replica_diverged_before_the_checkpoint_stays_diverged_after_the_resume() {
    let (tmp, data) = tiny_data();
    let pair = CheckpointedPair::new(tmp.path(), 0.0);
    let trainer = pair.trainer(&data);
    // Replica "b" learns at a rate that blows it up within the first 20 steps.
    let lrs = [
        LrPlan {
            base: pair.train.lr,
            scheduled: true,
        },
        LrPlan {
            base: 1e6,
            scheduled: true,
        },
    ];
    let replicas = pair.replicas(&lrs);
    let span = pair.span(Vec::new());
    let a = trainer
        .train(&replicas, &span, &mut common::Resumed(None), None)
        .unwrap();
    assert_eq!(a.diverged[0], None, "replica a trains normally");
    let stopped_at = a.diverged[1].expect("replica b diverged");
    assert!(stopped_at < 40, "before the last checkpoint (40)");

    let mut resumed = common::Resumed(None);
    let b = trainer.train(&replicas, &span, &mut resumed, None).unwrap();
    assert_eq!(resumed.0, Some(40), "continued from the checkpoint");
    assert_eq!(
        a.diverged, b.diverged,
        "b is not found diverging a second time"
    );
    // Bit for bit, NaNs included: compare the raw 32-bit patterns and the printed metrics.
    let raw = |t: &Tensor| t.view_dtype(Kind::Int);
    assert!(raw(&a.state.params).equal(&raw(&b.state.params)));
    assert_eq!(format!("{:?}", a.evals), format!("{:?}", b.evals));
    assert!(
        a.evals.last().unwrap().val_accuracy[0] > 0.3,
        "replica a still learned"
    );
}

#[test]
fn allowing_tf32_changes_no_bit_on_the_cpu() {
    // `train.tf32` is a GPU switch: CPU kernels (MKL, oneDNN) must not notice it. (The flag
    // is process-wide and the other tests here set it off as they start, so it is on for
    // most, not necessarily all, of the second run.)
    let (_tmp, data) = tiny_data();
    let (ieee, ieee_eval) = train_population_with(&[3], &data, false);
    let (tf32, tf32_eval) = train_population_with(&[3], &data, true);
    assert!(ieee.equal(&tf32), "trained weights");
    assert_eq!(ieee_eval, tf32_eval);
}

#[test]
fn a_span_continued_from_its_checkpoint_ends_with_the_same_bits_snapshots_included() {
    use lth::train::checkpoint::{self, CheckpointStore};
    let (tmp, data) = tiny_data();
    let pair = CheckpointedPair::new(tmp.path(), 1e-4);
    let (net, seeds, state, masks, path) =
        (&pair.net, pair.seeds, &pair.state, &pair.masks, &pair.path);
    let trainer = pair.trainer(&data);
    let lrs = [LrPlan {
        base: pair.train.lr,
        scheduled: true,
    }; 2];
    let replicas = pair.replicas(&lrs);
    let span = pair.span(vec![10]);
    let mut first = common::Resumed(None);
    let a = trainer.train(&replicas, &span, &mut first, None).unwrap();
    assert!(path.exists(), "a checkpoint was written (the last at 40)");
    assert_eq!(first.0, None);

    // The same span again finds the checkpoint at 40 and trains only 40..60.
    let mut second = common::Resumed(None);
    let b = trainer.train(&replicas, &span, &mut second, None).unwrap();
    assert_eq!(second.0, Some(40), "continued from the checkpoint");
    assert!(a.state.params.equal(&b.state.params), "same final weights");
    assert_eq!(a.evals, b.evals, "same evaluation points");
    assert_eq!(a.snapshots.len(), 1);
    assert_eq!(b.snapshots.len(), 1);
    assert!(a.snapshots[0]
        .state
        .params
        .equal(&b.snapshots[0].state.params));
    let (oa, ob) = (
        a.snapshots[0].optimizer.as_ref().unwrap(),
        b.snapshots[0].optimizer.as_ref().unwrap(),
    );
    assert_eq!(oa.steps, ob.steps);
    assert!(
        oa.tensors[0].1.equal(&ob.tensors[0].1),
        "same momentum at 10"
    );

    // A checkpoint of another span (other seeds) is not taken for this one.
    let other_seeds = [4u64, 10];
    let other = Replicas {
        frozen: None,
        seeds: &other_seeds,
        ..replicas
    };
    let mut third = common::Resumed(None);
    trainer.train(&other, &span, &mut third, None).unwrap();
    assert_eq!(
        third.0, None,
        "another population starts from the beginning"
    );

    // Nor one of a span of the same seeds and iterations that starts from other weights
    // (another round or arm, had a caller given both one path): it starts over and its
    // result is its own.
    let elsewhere = State::init(net.layout(), &[5, 6], Device::Cpu);
    let moved = Replicas {
        frozen: None,
        start: &elsewhere,
        ..replicas
    };
    let mut other_start = common::Resumed(None);
    let f = trainer
        .train(&moved, &span, &mut other_start, None)
        .unwrap();
    assert_eq!(other_start.0, None, "other starting weights start over");
    assert!(!a.state.params.equal(&f.state.params));

    // A damaged checkpoint is not used either: the span starts over, with the same result.
    std::fs::write(path, b"not a safetensors file").unwrap();
    let mut fourth = common::Resumed(None);
    let d = trainer.train(&replicas, &span, &mut fourth, None).unwrap();
    assert_eq!(fourth.0, None, "a damaged checkpoint is ignored");
    assert!(a.state.params.equal(&d.state.params));

    // Nor is a readable one of this span whose tensors do not fit it (here: masks in double
    // precision, as a foreign writer might leave them).
    let key = checkpoint::SpanKey {
        start: 0,
        end: 60,
        seeds: seeds.to_vec(),
        params: state.params.size()[1],
        origin: checkpoint::origin(state, (masks, None), None, &lrs),
    };
    let names = lth::train::Optimizer::state_names(OptimizerKind::Sgd);
    let file = lth::record::CheckpointFile::at(path);
    let mut ck = file
        .load(&key, names, Device::Cpu)
        .expect("the checkpoint at 40");
    assert_eq!(ck.iteration, 40);
    ck.masks = ck.masks.to_kind(Kind::Double);
    file.save(&key, &ck).unwrap();
    let mut fifth = common::Resumed(None);
    let e = trainer.train(&replicas, &span, &mut fifth, None).unwrap();
    assert_eq!(fifth.0, None, "a checkpoint that does not fit is ignored");
    assert!(a.state.params.equal(&e.state.params));

    // Nor one whose contents changed after it was written (one byte of tensor data, which
    // no header check sees): its checksum no longer matches.
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x5a;
    std::fs::write(path, &bytes).unwrap();
    let mut sixth = common::Resumed(None);
    let g = trainer.train(&replicas, &span, &mut sixth, None).unwrap();
    assert_eq!(
        sixth.0, None,
        "a checkpoint with changed contents is ignored"
    );
    assert!(a.state.params.equal(&g.state.params));
}

/// One SGD step of two half-pruned replicas with `train.l1 = l1` and the given kernels;
/// returns the start (masked), the masks and the weights after the step.
fn one_sgd_step(l1: f64, kernels: SparseKernels) -> (Tensor, Tensor, Tensor) {
    let (_tmp, data) = tiny_data();
    let net = Lenet::with_widths(&[784, 6, 5, 10]);
    let layout = net.layout();
    let state0 = State::init(layout, &[0, 1], Device::Cpu);
    let prune_cfg = PruneConfig {
        scope: PruneScope::Global,
        fraction: 0.5,
        ..PruneConfig::default()
    };
    let masks = prune_round(
        &mut Magnitude,
        &state0.params,
        &state0.params.ones_like(),
        layout,
        &groups(layout, &prune_cfg).unwrap(),
    );
    let cfg = TrainConfig {
        optimizer: OptimizerKind::Sgd,
        lr: 0.1,
        momentum: 0.0,
        iterations: 1,
        eval_every: 1,
        batch_size: 20,
        l1,
        sparse_kernels: kernels,
        ..TrainConfig::default()
    };
    let span = Span::new(0, 1, 1);
    let parts = (&net as &dyn lth::model::Network, &data, &cfg);
    let result = common::train_pair(parts, (&state0, &masks, None), &span, None);
    (&state0.params * &masks, masks, result.state.params)
}

#[test]
fn l1_adds_lambda_times_the_sign_to_the_prunable_weights_gradient_and_nothing_else() {
    let (l1, lr) = (0.01, 0.1);
    for kernels in [SparseKernels::Off, SparseKernels::On] {
        let (start, masks, plain) = one_sgd_step(0.0, kernels);
        let (_, _, with_l1) = one_sgd_step(l1, kernels);
        let layout = Lenet::with_widths(&[784, 6, 5, 10]).layout().clone();
        for (i, spec) in layout.specs().iter().enumerate() {
            let seg = |t: &Tensor| layout.segment(t, i);
            let step = seg(&with_l1) - seg(&plain);
            if spec.prunable {
                let kept = seg(&masks).gt(0.5);
                let want = seg(&start).sign() * (-lr * l1);
                let err = (&step - &want).masked_select(&kept).abs().max();
                assert!(
                    err.double_value(&[]) < 1e-6,
                    "{kernels:?} {}: the L1 step is -lr * l1 * sign(w)",
                    spec.name
                );
                let pruned = seg(&with_l1).masked_select(&kept.logical_not());
                assert_eq!(pruned.abs().sum(Kind::Double).double_value(&[]), 0.0);
            } else {
                assert!(
                    step.abs().max().double_value(&[]) == 0.0,
                    "{}: no L1 on biases",
                    spec.name
                );
            }
        }
    }
}

#[test]
fn frozen_pruned_weights_keep_their_values_and_get_no_optimizer_state() {
    let (_tmp, data) = tiny_data();
    let net = Lenet::with_widths(&[784, 6, 5, 10]);
    let layout = net.layout();
    let state0 = State::init(layout, &[0, 1], Device::Cpu);
    let masks = common::rand_uniform(&[2, layout.total() as i64], 9)
        .gt(0.5)
        .to_kind(Kind::Float);
    // Frozen values: a second draw of the weights, so they differ from the start's.
    let frozen = State::init(layout, &[7, 8], Device::Cpu).params;
    let cfg = TrainConfig {
        optimizer: OptimizerKind::Adam,
        lr: 1e-2,
        iterations: 5,
        eval_every: 5,
        batch_size: 20,
        ..TrainConfig::default()
    };
    let mut span = Span::new(0, 5, 5);
    span.snapshots = vec![5];
    span.snapshot_optimizer = true;
    let parts = (&net as &dyn lth::model::Network, &data, &cfg);
    let result = common::train_pair(parts, (&state0, &masks, Some(&frozen)), &span, None);
    let pruned = masks.eq(0.0);
    let kept = masks.gt(0.5);
    let end = &result.state.params;
    let at = |t: &Tensor, m: &Tensor| t.masked_select(m);
    assert!(
        at(end, &pruned).equal(&at(&frozen, &pruned)),
        "frozen exactly"
    );
    let moved = (at(end, &kept) - at(&state0.params, &kept)).abs().max();
    assert!(moved.double_value(&[]) > 0.0, "the kept weights train");
    let snapshot = &result.snapshots[0];
    let optimizer = snapshot.optimizer.as_ref().expect("optimizer snapshot");
    for (name, t) in &optimizer.tensors {
        let held = at(t, &pruned).abs().max().double_value(&[]);
        assert_eq!(held, 0.0, "{name}: no state for frozen weights");
        assert!(at(t, &kept).abs().max().double_value(&[]) > 0.0, "{name}");
    }
}
