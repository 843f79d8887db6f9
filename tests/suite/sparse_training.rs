//! Sparse training from scratch (`kind = "sparse"` arms): the uniform, ER and ERK layer
//! densities against the formula on LeNet-300-100 and Conv-2, with exact totals; a static
//! arm's mask has the round's count spread that way, never changes during training, keeps
//! pruned weights at zero, starts from θ₀ and is the same alone or in a population; bad
//! settings are refused with one line.

use crate::common::{assert_one_line_error, assert_success, experiment_dir, run_in, small_config};

use lth::config::Distribution;
use lth::model::{ConvNet, Lenet, Network};
use lth::prune::distribution::layer_counts;
use lth::record::RunDir;

/// The pruned tensors of `net` (its prunable ones) and their shapes.
fn prunable(net: &dyn Network) -> Vec<(usize, Vec<i64>)> {
    let layout = net.layout();
    layout
        .prunable()
        .map(|i| (i, layout.specs()[i].shape.clone()))
        .collect()
}

/// Raw density of a tensor by the formulas of Mocanu et al. (ER) and Evci et al. (ERK).
fn raw(dist: Distribution, shape: &[i64]) -> f64 {
    let f: Vec<f64> = shape.iter().map(|&d| d as f64).collect();
    let numel: f64 = f.iter().product();
    match (dist, f.len()) {
        (Distribution::Uniform, _) => 1.0,
        (Distribution::Er, _) | (Distribution::Erk, 2) => (f[0] + f[1]) / (f[0] * f[1]),
        (Distribution::Erk, _) => f.iter().sum::<f64>() / numel,
    }
}

#[test]
fn layer_densities_follow_the_er_and_erk_formulas_and_add_up_to_the_target() {
    let lenet = Lenet::new(784, 10);
    let conv2 = ConvNet::new(&[64, 64], [1, 28, 28], 10, 0.0).unwrap();
    for net in [&lenet as &dyn Network, &conv2] {
        let tensors = prunable(net);
        let index: Vec<usize> = tensors.iter().map(|(i, _)| *i).collect();
        let sizes: Vec<f64> = tensors
            .iter()
            .map(|(_, s)| s.iter().product::<i64>() as f64)
            .collect();
        let all: f64 = sizes.iter().sum();
        for keep in [0.2, 0.1, 0.02] {
            let total = (all * keep).round() as u64;
            for dist in [Distribution::Uniform, Distribution::Er, Distribution::Erk] {
                let counts = layer_counts(dist, net.layout(), &index, total);
                assert_eq!(counts.iter().sum::<u64>(), total, "{dist:?} at {keep}");
                // The common factor over the tensors that are not dense: each count is
                // eps * raw * size to within one weight; dense ones are exactly whole, and
                // only a tensor whose eps * raw passes 1 is.
                let dense: Vec<bool> = counts
                    .iter()
                    .zip(&sizes)
                    .map(|(&c, &s)| c as f64 == s)
                    .collect();
                let rest: f64 = (0..sizes.len())
                    .filter(|&k| !dense[k])
                    .map(|k| raw(dist, &tensors[k].1) * sizes[k])
                    .sum();
                let fixed: f64 = (0..sizes.len())
                    .filter(|&k| dense[k])
                    .map(|k| sizes[k])
                    .sum();
                let eps = (total as f64 - fixed) / rest;
                for k in 0..sizes.len() {
                    let r = raw(dist, &tensors[k].1);
                    if dense[k] {
                        assert!(
                            eps * r >= 1.0 - 1e-9,
                            "{dist:?} tensor {k} dense: {}",
                            eps * r
                        );
                    } else {
                        let expect = eps * r * sizes[k];
                        assert!(
                            (counts[k] as f64 - expect).abs() < 1.0,
                            "{dist:?} at {keep}, tensor {k}: {} vs {expect}",
                            counts[k]
                        );
                    }
                }
            }
        }
    }
    // LeNet at 10% under ERK: fc3's (100 + 10) / 1000 would pass 1, so it stays dense.
    let index: Vec<usize> = prunable(&lenet).iter().map(|(i, _)| *i).collect();
    let counts = layer_counts(Distribution::Erk, lenet.layout(), &index, 26_620);
    assert_eq!(counts[2], 1000);
}

#[test]
fn a_static_sparse_arm_trains_its_random_erk_mask_unchanged_from_theta0() {
    let arms = "\n[[arms]]\nname = \"rewind\"\nkind = \"rewind\"\n\n[[arms]]\nname = \"static\"\nkind = \"sparse\"\nmethod = \"static\"\ndistribution = \"erk\"\n";
    let tmp = experiment_dir(|data| {
        small_config(data, "").replace("rounds = 2", "schedule = \"one-shot\"\ntargets = [10.0]")
            + arms
    });
    let root = tmp.path();
    let out = run_in(root, "a")
        .args(["--quiet", "--threads", "1"])
        .output()
        .unwrap();
    assert_success(&out, "the run with a sparse arm");
    let net = Lenet::new(784, 10);
    let layout = net.layout();
    let dir = RunDir::at(root.join("a"));
    let index: Vec<usize> = prunable(&net).iter().map(|(i, _)| *i).collect();
    let rewind = dir.load_mask("rewind", 0, 1, layout).unwrap();
    let total: u64 = index
        .iter()
        .map(|&i| {
            let kept = layout
                .segment(&rewind.unsqueeze(0), i)
                .sum(tch::Kind::Int64);
            kept.int64_value(&[]) as u64
        })
        .sum();
    let erk = layer_counts(Distribution::Erk, layout, &index, total);
    for seed in [0, 1] {
        let mask = dir.load_mask("static", seed, 1, layout).unwrap();
        // The round's total (the rewind arm's), spread by ERK.
        for (k, &i) in index.iter().enumerate() {
            let kept = layout.segment(&mask.unsqueeze(0), i).sum(tch::Kind::Int64);
            assert_eq!(
                kept.int64_value(&[]) as u64,
                erk[k],
                "seed {seed} tensor {i}"
            );
        }
        // Trained from θ₀ under that mask: it starts at θ₀ masked, and its trained weights
        // are zero exactly where the mask is.
        let theta0 = dir.load_theta(seed, 0, layout).unwrap().params;
        let start = tch::Tensor::read_safetensors(
            root.join(format!("a/seed_{seed}/static/round_01/start.safetensors")),
        )
        .unwrap();
        let fc1 = layout.index_of("fc1.weight").unwrap();
        let start_fc1 = &start.iter().find(|(n, _)| n == "fc1.weight").unwrap().1;
        let expect = layout.view(&(theta0 * mask.unsqueeze(0)), fc1).get(0);
        assert!(start_fc1.equal(&expect), "seed {seed}: start = θ₀ masked");
        let weights = dir.load_weights("static", seed, 1, layout).unwrap().params;
        let pruned: tch::Tensor = mask.unsqueeze(0).eq(0.0).to_kind(tch::Kind::Float);
        let outside = (weights.abs() * pruned)
            .sum(tch::Kind::Double)
            .double_value(&[]);
        assert_eq!(outside, 0.0, "seed {seed}: pruned weights stay zero");
    }
    // The two seeds draw different masks; a seed alone draws and trains the same bytes.
    let m0 = dir.load_mask("static", 0, 1, layout).unwrap();
    let m1 = dir.load_mask("static", 1, 1, layout).unwrap();
    assert!(!m0.equal(&m1));
    let out = run_in(root, "b")
        .args(["--quiet", "--threads", "1", "--set", "seeds=[1]"])
        .output()
        .unwrap();
    assert_success(&out, "seed 1 alone");
    for what in ["mask", "weights", "start"] {
        let f = format!("seed_1/static/round_01/{what}.safetensors");
        let read = |d: &str| std::fs::read(root.join(d).join(&f)).unwrap();
        assert_eq!(read("a"), read("b"), "{f}");
    }

    // Bad settings: one line each, no run dir.
    for (set, needle) in [
        (
            "arms=[{name=\"s\",kind=\"sparse\",method=\"magic\"}]",
            "unknown variant `magic`, expected `static`",
        ),
        (
            "arms=[{name=\"s\",kind=\"sparse\",distribution=\"blob\"}]",
            "unknown variant `blob`, expected one of `uniform`, `er`, `erk`",
        ),
        (
            "arms=[{name=\"r\",kind=\"rewind\",distribution=\"erk\"}]",
            "arm `r` of kind \"rewind\" does not take `distribution`",
        ),
    ] {
        let out = run_in(root, "fresh").args(["--set", set]).output().unwrap();
        assert_one_line_error(&out, needle);
        assert!(!root.join("fresh").exists(), "{set}");
    }
}
