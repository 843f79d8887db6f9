//! Convolutional networks in the population engine (CPU): a batched population of 3 replicas
//! gives the same outputs and BatchNorm running statistics as each replica alone (to 1e-4 of
//! the largest value) and the same gradients (to 2e-3 of the largest value: grouped and plain
//! convolutions round differently, and BatchNorm's backward amplifies it; mixing replicas up
//! would differ by order 1); pruned
//! conv weights stay exactly zero under SGD with momentum and weight decay; the CIFAR-10 reader
//! reads files the test writes and rejects broken ones; augmentation and dropout depend only on
//! (seed, iteration).

use crate::common;

use std::path::Path;

use common::{assert_one_line_error, lth, randn};
use lth::config::{
    DataConfig, LrPlan, ModelConfig, OptimizerKind, PruneConfig, PruneScope, TrainConfig,
};
use lth::data::{augment, cifar, Dataset};
use lth::model::layers::dropout;
use lth::model::{self, DropoutKeys, Input, Network, Pass, ResNet, State};
use lth::prune::{groups, prune_round, Magnitude};
use lth::train::{Checkpointing, Replicas, Span, Trainer};
use tch::{Device, Kind, Tensor};

/// Outputs, parameter gradients and updated buffers of a training-mode forward pass.
fn run(net: &dyn Network, state: &State, x: &Tensor) -> (Tensor, Tensor, Vec<Tensor>) {
    let params = state.params.detach().set_requires_grad(true);
    let buffers: Vec<Tensor> = state.buffers.iter().map(|b| b.copy()).collect();
    let pass = Pass {
        params: &params,
        buffers: &buffers,
        train: true,
        dropout: None,
    };
    let out = net.forward(&pass, Input::PerReplica(x));
    // A fixed, replica-separable loss: sum of squares of every replica's outputs.
    let grad = Tensor::run_backward(&[out.square().sum(Kind::Float)], &[&params], false, false)
        .pop()
        .unwrap();
    (out.detach(), grad, buffers)
}

fn close(a: &Tensor, b: &Tensor, what: &str) {
    close_to(a, b, what, 1e-4);
}

fn close_to(a: &Tensor, b: &Tensor, what: &str, tolerance: f64) {
    let scale = a.abs().max().double_value(&[]).max(1e-6);
    let diff = (a - b).abs().max().double_value(&[]);
    assert!(
        diff / scale < tolerance,
        "{what}: batched vs alone differ by {diff} (scale {scale})"
    );
}

/// Runs 3 replicas together and each alone; compares outputs, gradients and buffers.
fn population_matches_alone(net: &dyn Network, input: [i64; 3]) {
    let state = State::init(net.layout(), &[7, 8, 9], Device::Cpu);
    let x = randn(&[3, 4, input[0], input[1], input[2]], 0);
    let (out, grad, buffers) = run(net, &state, &x);
    for r in 0..3usize {
        let (o, g, b) = run(net, &state.row(r), &x.narrow(0, r as i64, 1));
        close(
            &out.narrow(0, r as i64, 1),
            &o,
            &format!("replica {r} outputs"),
        );
        close_to(
            &grad.narrow(0, r as i64, 1),
            &g,
            &format!("replica {r} gradients"),
            2e-3,
        );
        for (i, (all, alone)) in buffers.iter().zip(&b).enumerate() {
            close(
                &all.narrow(0, r as i64, 1),
                alone,
                &format!("replica {r} buffer {i}"),
            );
        }
    }
    assert!(
        grad.abs().sum(Kind::Float).double_value(&[]) > 0.0,
        "gradients flow"
    );
}

fn cfg(arch: &str, depth: usize) -> ModelConfig {
    let mut m: ModelConfig = toml::from_str(&format!("arch = \"{arch}\"")).unwrap();
    m.depth = depth;
    m
}

#[test]
fn conv_population_matches_each_replica_alone() {
    let net = model::build(&cfg("conv-4", 20), [1, 12, 12], 10).unwrap();
    population_matches_alone(net.as_ref(), [1, 12, 12]);
}

#[test]
fn replica_by_replica_cpu_path_matches_the_grouped_path() {
    // On the CPU convolutional replicas run one after another (forward_population); on GPUs
    // as one grouped convolution (Network::forward). Both must agree, BatchNorm included.
    let net = ResNet::new(8, [3, 16, 16], 10);
    let state = State::init(net.layout(), &[3, 4, 5], Device::Cpu);
    let x = randn(&[3, 4, 3, 16, 16], 2);
    let (grouped_buffers, looped_buffers) = (state.copy().buffers, state.copy().buffers);
    fn pass<'a>(params: &'a Tensor, buffers: &'a [Tensor]) -> Pass<'a> {
        Pass {
            params,
            buffers,
            train: true,
            dropout: None,
        }
    }
    let grouped = net.forward(
        &pass(&state.params, &grouped_buffers),
        Input::PerReplica(&x),
    );
    let looped = model::forward_population(
        &net,
        &pass(&state.params, &looped_buffers),
        Input::PerReplica(&x),
    );
    close(&grouped, &looped, "outputs");
    for (a, b) in grouped_buffers.iter().zip(&looped_buffers) {
        close(a, b, "running statistics");
    }
}

#[test]
fn batchnorm_population_matches_each_replica_alone() {
    let net = model::build(&cfg("vgg-11", 20), [3, 32, 32], 10).unwrap();
    assert!(
        !net.layout().buffers().is_empty(),
        "VGG has BatchNorm buffers"
    );
    population_matches_alone(net.as_ref(), [3, 32, 32]);
}

#[test]
fn residual_network_and_block_match_each_replica_alone() {
    let net = ResNet::new(8, [3, 16, 16], 10);
    population_matches_alone(&net, [3, 16, 16]);
    // One residual block with a projection shortcut (block 1 of ResNet-8 changes 16 -> 32).
    let state = State::init(net.layout(), &[1, 2, 3], Device::Cpu);
    let x = randn(&[5, 3 * 16, 8, 8], 1);
    let block = |s: &State, x: &Tensor| {
        let pass = Pass {
            params: &s.params,
            buffers: &s.buffers,
            train: true,
            dropout: None,
        };
        net.block(&pass, 1, x)
    };
    let together = block(&state.copy(), &x);
    assert_eq!(
        together.size(),
        vec![5, 3 * 32, 4, 4],
        "stride 2, 32 channels per replica"
    );
    for r in 0..3i64 {
        let alone = block(&state.row(r as usize).copy(), &x.narrow(1, 16 * r, 16));
        close(
            &together.narrow(1, 32 * r, 32),
            &alone,
            &format!("block, replica {r}"),
        );
    }
}

#[test]
fn parameter_names_and_shapes_follow_pytorch() {
    let names = |arch: &str, depth: usize, input: [usize; 3]| -> Vec<(String, Vec<i64>)> {
        let net = model::build(&cfg(arch, depth), input, 10).unwrap();
        let l = net.layout();
        l.specs()
            .iter()
            .map(|s| (s.name.clone(), s.shape.clone()))
            .chain(
                l.buffers()
                    .iter()
                    .map(|b| (b.name.clone(), b.shape.clone())),
            )
            .collect()
    };
    let conv2 = names("conv-2", 20, [1, 28, 28]);
    assert_eq!(conv2[0], ("conv1.weight".into(), vec![64, 1, 3, 3]));
    assert!(conv2.contains(&("fc1.weight".into(), vec![256, 64 * 14 * 14])));
    let resnet = names("resnet", 20, [3, 32, 32]);
    assert_eq!(
        resnet
            .iter()
            .filter(|(n, _)| n.ends_with("conv1.weight"))
            .count(),
        9,
        "ResNet-20: 9 blocks"
    );
    assert!(resnet.contains(&("blocks.3.shortcut.0.weight".into(), vec![32, 16, 1, 1])));
    assert!(resnet.contains(&("blocks.3.shortcut.1.running_var".into(), vec![32])));
    assert!(resnet.contains(&("fc.weight".into(), vec![10, 64])));
    assert_eq!(
        names("resnet", 56, [3, 32, 32])
            .iter()
            .filter(|(n, _)| n.ends_with("conv2.weight"))
            .count(),
        27
    );
    let vgg16 = names("vgg-16", 20, [3, 32, 32]);
    assert_eq!(
        vgg16
            .iter()
            .filter(|(n, _)| n.ends_with("conv.weight"))
            .count(),
        13
    );
    assert!(model::build(&cfg("resnet", 21), [3, 32, 32], 10).is_err());
    assert!(
        model::build(&cfg("vgg-16", 20), [1, 28, 28], 10).is_err(),
        "VGG needs 32x32"
    );
}

#[test]
fn pruned_conv_weights_stay_zero_under_sgd_with_momentum_and_weight_decay_and_resume_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_cifar(tmp.path(), 40, 40);
    let data_cfg = DataConfig {
        dir: tmp.path().display().to_string(),
        validation_size: 40,
        augment: true,
        ..Default::default()
    };
    let data = Dataset::load(&data_cfg, Device::Cpu).unwrap();
    let net = model::build(&cfg("resnet", 8), data.input_shape, 10).unwrap();
    let layout = net.layout();
    let state = State::init(layout, &[0, 1], Device::Cpu);
    let prune_cfg = PruneConfig {
        scope: PruneScope::Global,
        fraction: 0.6,
        ..PruneConfig::default()
    };
    let masks = prune_round(
        &mut Magnitude,
        &state.params,
        &state.params.ones_like(),
        layout,
        &groups(layout, &prune_cfg).unwrap(),
    );
    let train = TrainConfig {
        optimizer: OptimizerKind::Sgd,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        batch_size: 16,
        iterations: 12,
        eval_every: 6,
        warmup_iterations: 3,
        ..TrainConfig::default()
    };
    let trainer = Trainer {
        net: net.as_ref(),
        data: &data,
        cfg: &train,
        augment: Some(4),
        device: Device::Cpu,
    };
    let lrs = [LrPlan {
        base: train.lr,
        scheduled: true,
    }; 2];
    let labels = ["a".to_string(), "b".to_string()];
    let replicas = Replicas {
        frozen: None,
        start: &state,
        masks: &masks,
        seeds: &[0, 1],
        lrs: &lrs,
        labels: &labels,
        optimizer: None,
    };
    let span = Span::new(0, 12, 6);
    let result = trainer
        .train(&replicas, &span, &mut crate::common::Silent, None)
        .unwrap();
    let pruned = result.state.params.masked_select(&masks.eq(0.0));
    // ResNet-8 on 3 channels has 77,360 prunable weights; 60% of them, in each of 2 replicas.
    assert_eq!(
        pruned.numel(),
        2 * 46_416,
        "60% of the prunable weights are pruned"
    );
    assert_eq!(
        pruned.abs().max().double_value(&[]),
        0.0,
        "pruned conv weights are exactly zero"
    );
    let moved = (&result.state.params - &state.params)
        .abs()
        .masked_select(&masks.gt(0.5));
    assert!(moved.max().double_value(&[]) > 0.0);
    let var = &result.state.buffers[1];
    assert!(
        (var - 1.0).abs().max().double_value(&[]) > 0.0,
        "running statistics were updated"
    );

    // With a checkpoint at 6, the same span run again continues from it and ends with the
    // same weights and BatchNorm statistics, bit for bit (augmentation and warmup included).
    let checkpointed = Span {
        checkpoint: Some(Checkpointing {
            store: std::rc::Rc::new(lth::record::CheckpointFile::at(
                tmp.path().join("span.safetensors"),
            )),
            every: std::time::Duration::ZERO,
        }),
        ..Span::new(0, 12, 6)
    };
    let first = trainer
        .train(&replicas, &checkpointed, &mut crate::common::Silent, None)
        .unwrap();
    let mut resumed = common::Resumed(None);
    let second = trainer
        .train(&replicas, &checkpointed, &mut resumed, None)
        .unwrap();
    assert_eq!(resumed.0, Some(6), "continued from the checkpoint");
    assert!(first.state.params.equal(&result.state.params));
    assert!(second.state.params.equal(&first.state.params));
    for (a, b) in first.state.buffers.iter().zip(&second.state.buffers) {
        assert!(a.equal(b), "same BatchNorm buffers");
    }
}

#[test]
fn cifar_reader_reads_written_files_and_standardises_per_channel() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10-batches-bin");
    common::write_cifar(&dir, 30, 20);
    // data.dir may name the folder or its parent (the tarball's layout).
    let cfg = DataConfig {
        dir: tmp.path().display().to_string(),
        validation_size: 50,
        ..Default::default()
    };
    let data = Dataset::load(&cfg, Device::Cpu).unwrap();
    assert_eq!(data.input_shape, [3, 32, 32]);
    assert_eq!(
        (data.train.len(), data.validation.len(), data.test.len()),
        (100, 50, 20)
    );
    let mean = data
        .train
        .images
        .mean_dim(&[0i64, 2, 3][..], false, Kind::Float);
    let std = data.train.images.std_dim(&[0i64, 2, 3][..], true, false);
    assert!(
        mean.abs().max().double_value(&[]) < 1e-4,
        "per-channel mean 0"
    );
    assert!(
        (std - 1.0).abs().max().double_value(&[]) < 1e-3,
        "per-channel std 1"
    );
    let labels = Vec::<i64>::try_from(&data.test.labels).unwrap();
    assert_eq!(
        labels[..4],
        [9, 2, 5, 8],
        "test labels in file order: (3i + 99) mod 10"
    );
}

#[test]
fn broken_cifar_files_give_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let config = |dir: &Path| {
        format!(
            "seeds = [0]\n[data]\ndir = \"{}\"\nvalidation_size = 10\n[model]\narch = \"conv-2\"\n[train]\niterations = 2\neval_every = 2\nbatch_size = 4\n[prune]\nrounds = 1\n",
            dir.display()
        )
    };
    type Damage = fn(&Path);
    let cases: [(&str, Damage, &str); 4] = [
        ("truncated", |d| {
            let p = d.join("data_batch_3.bin");
            let b = std::fs::read(&p).unwrap();
            std::fs::write(&p, &b[..b.len() - 100]).unwrap();
        }, "data_batch_3.bin is truncated: 27557 bytes is not a whole number of 3073-byte records (8 whole, 2973 bytes left over)"),
        ("label", |d| {
            let p = d.join("test_batch.bin");
            let mut b = std::fs::read(&p).unwrap();
            b[3 * cifar::RECORD] = 11;
            std::fs::write(&p, b).unwrap();
        }, "test_batch.bin: label 11 of record 3 is out of range 0..10"),
        ("empty", |d| std::fs::write(d.join("data_batch_5.bin"), b"").unwrap(), "data_batch_5.bin is empty"),
        ("missing", |d| std::fs::remove_file(d.join("test_batch.bin")).unwrap(), "missing CIFAR-10 file"),
    ];
    for (name, damage, needle) in cases {
        let dir = tmp.path().join(name);
        common::write_cifar(&dir, 9, 9);
        damage(&dir);
        std::fs::write(tmp.path().join(format!("{name}.toml")), config(&dir)).unwrap();
        let run_dir = format!("{name}-run");
        let out = lth(
            tmp.path(),
            &[
                "run",
                "--config",
                &format!("{name}.toml"),
                "--run-dir",
                &run_dir,
            ],
        );
        assert_one_line_error(&out, needle);
    }
}

/// `x` cropped and flipped as `draws` say, with zero padding (4 pixels) unless `fill` is
/// given.
fn crop(x: &Tensor, draws: &[(i64, i64, bool)], fill: &[f64]) -> Tensor {
    let crops = augment::Crops::new(4, fill, x.size()[1] as usize, Device::Cpu);
    crops.apply(x, &augment::draws_tensor(draws))
}

#[test]
fn augmentation_depends_only_on_seed_and_iteration() {
    let x = randn(&[6, 3, 8, 8], 3);
    let a = augment::draws(&[5, 6], 17, 3, 4);
    let b = augment::draws(&[5, 6], 17, 3, 4);
    assert_eq!(a, b, "same seeds and iteration, same draws");
    assert!(crop(&x, &a, &[]).equal(&crop(&x, &b, &[])));
    let other_seed = augment::draws(&[7, 6], 17, 3, 4);
    assert_ne!(a[..3], other_seed[..3], "another seed draws differently");
    assert_eq!(a[3..], other_seed[3..], "the other replica is unaffected");
    assert_ne!(
        a,
        augment::draws(&[5, 6], 18, 3, 4),
        "another iteration draws differently"
    );
    // A chunk of draws holds each iteration's draws in order.
    let chunk = augment::draw_chunk(&[5, 6], 16, 3, 3, 4, Device::Cpu);
    assert_eq!(chunk.size(), [3, 6, 3]);
    assert!(chunk.get(1).equal(&augment::draws_tensor(&a)));
    // Offsets (padding, padding) without flip are the identity; with flip, a mirror image.
    let centre = vec![(4, 4, false); 6];
    assert!(crop(&x, &centre, &[]).equal(&x));
    let mirrored = vec![(4, 4, true); 6];
    assert!(crop(&x, &mirrored, &[]).equal(&x.flip([3])));
    // A shifted crop moves pixels and brings in zero padding.
    let shifted = crop(&x, &[(0, 0, false); 6], &[]);
    assert!(shifted
        .narrow(2, 4, 4)
        .narrow(3, 4, 4)
        .equal(&x.narrow(2, 0, 4).narrow(3, 0, 4)));
    assert_eq!(
        shifted
            .narrow(2, 0, 4)
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );
    // Each example follows its own draw: a shift and flip of one example is the mirror of
    // its shifted copy, the others untouched.
    let mut mixed = centre.clone();
    mixed[2] = (1, 6, true);
    let out = crop(&x, &mixed, &[]);
    let one = crop(&x.narrow(0, 2, 1), &[(1, 6, false)], &[]).flip([3]);
    assert!(
        out.narrow(0, 2, 1).equal(&one),
        "example 2 shifted and flipped"
    );
    assert!(out.narrow(0, 0, 2).equal(&x.narrow(0, 0, 2)));
    assert!(out.narrow(0, 3, 3).equal(&x.narrow(0, 3, 3)));
    // The padding takes each channel's black value (after normalisation).
    let tinted = crop(&x, &[(0, 0, false); 6], &[-1.0, -2.0, -3.0]);
    for (ch, v) in [-1.0, -2.0, -3.0].into_iter().enumerate() {
        let border = tinted.narrow(1, ch as i64, 1).narrow(2, 0, 4);
        assert!(
            border.eq(v).all().int64_value(&[]) == 1,
            "channel {ch} padded with {v}"
        );
    }
}

#[test]
fn dropout_masks_depend_only_on_seed_and_iteration() {
    let x = Tensor::ones([3, 50, 40], (Kind::Float, Device::Cpu));
    let seeds = Tensor::from_slice(&[11i64, 12, 13]);
    fn keys(seeds: &Tensor, iteration: u64) -> DropoutKeys<'_> {
        DropoutKeys { seeds, iteration }
    }
    let a = dropout(&x, 0.5, Some(keys(&seeds, 3)), 1);
    let b = dropout(&x, 0.5, Some(keys(&seeds, 3)), 1);
    assert!(a.equal(&b));
    let alone = dropout(
        &x.narrow(0, 1, 1),
        0.5,
        Some(keys(&Tensor::from_slice(&[12i64]), 3)),
        1,
    );
    assert!(
        alone.equal(&a.narrow(0, 1, 1)),
        "seed 12's mask alone == inside the population"
    );
    assert!(!a.get(0).equal(&a.get(1)), "seeds differ");
    assert!(
        !a.equal(&dropout(&x, 0.5, Some(keys(&seeds, 4)), 1)),
        "iterations differ"
    );
    let kept = a
        .gt(0.0)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    assert!((kept - 0.5).abs() < 0.03, "about half kept ({kept})");
    assert!(
        (a.mean(Kind::Float).double_value(&[]) - 1.0).abs() < 0.06,
        "inverted scaling keeps the mean"
    );
    assert!(
        dropout(&x, 0.5, None, 1).equal(&x),
        "no keys: evaluation, identity"
    );
}

#[test]
fn a_short_resnet20_run_completes_a_round_with_batchnorm_state_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar");
    common::write_cifar(&data, 20, 30);
    let config = format!(
        r#"seeds = [0, 1]
[data]
dir = "{}"
validation_size = 20
augment = true
[model]
arch = "resnet"
depth = 20
[train]
optimizer = "sgd"
lr = 0.05
momentum = 0.9
weight_decay = 1e-4
batch_size = 16
iterations = 8
eval_every = 4
warmup_iterations = 2
[prune]
strategy = "global"
fraction = 0.2
exclude = ["fc.weight"]
rounds = 1
[[arms]]
name = "late"
kind = "rewind"
rewind_iteration = 2
"#,
        data.display()
    );
    std::fs::write(tmp.path().join("r.toml"), config).unwrap();
    let out = lth(
        tmp.path(),
        &["run", "--config", "r.toml", "--run-dir", "run"],
    );
    common::assert_success(&out, "lth run");
    let (_, rows) = common::read_csv(&tmp.path().join("run/rounds.csv"));
    assert_eq!(rows.len(), 4, "2 seeds x rounds 0..=1");
    let weights: Vec<String> = Tensor::read_safetensors(
        tmp.path()
            .join("run/seed_1/late/round_01/weights.safetensors"),
    )
    .unwrap()
    .into_iter()
    .map(|(n, _)| n)
    .collect();
    assert!(
        weights.iter().any(|n| n == "bn.running_mean")
            && weights
                .iter()
                .any(|n| n == "blocks.3.shortcut.1.running_var")
    );
    let theta2 =
        Tensor::read_safetensors(tmp.path().join("run/seed_1/theta_2.safetensors")).unwrap();
    let start = Tensor::read_safetensors(
        tmp.path()
            .join("run/seed_1/late/round_01/start.safetensors"),
    )
    .unwrap();
    let get =
        |v: &[(String, Tensor)], n: &str| v.iter().find(|(k, _)| k == n).unwrap().1.shallow_clone();
    assert!(
        get(&theta2, "bn.running_var").equal(&get(&start, "bn.running_var")),
        "rewinding restores BatchNorm statistics of iteration 2"
    );
    let out = lth(
        tmp.path(),
        &[
            "export",
            "run",
            "--arm",
            "late",
            "--seed",
            "0",
            "--round",
            "1",
            "--out",
            "t.safetensors",
        ],
    );
    common::assert_success(&out, "lth export");
    let exported = Tensor::read_safetensors(tmp.path().join("t.safetensors")).unwrap();
    assert_eq!(
        get(&exported, "conv.weight").size(),
        vec![16, 3, 3, 3],
        "PyTorch layout [out, in, kh, kw]"
    );
    assert!(exported
        .iter()
        .any(|(n, _)| n == "blocks.0.conv1.weight_mask"));
    let fc_mask = get(&exported, "fc.weight_mask");
    assert_eq!(
        fc_mask.sum(Kind::Float).double_value(&[]),
        640.0,
        "the excluded layer stays dense"
    );
}
