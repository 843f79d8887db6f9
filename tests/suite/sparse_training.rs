//! Sparse training from scratch (`kind = "sparse"` arms): the uniform, ER and ERK layer
//! densities against the formula on LeNet-300-100 and Conv-2, with exact totals; a static
//! arm's mask has the round's count spread that way, never changes during training, keeps
//! pruned weights at zero, starts from θ₀ and is the same alone or in a population; bad
//! settings are refused with one line.

use crate::common::{
    assert_one_line_error, assert_success, experiment_dir, read_csv, run_in, run_quietly,
    small_config,
};

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
    run_quietly(root, "a", &[], "the run with a sparse arm");
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
    run_quietly(root, "b", &["--set", "seeds=[1]"], "seed 1 alone");
    for what in ["mask", "weights", "start"] {
        let f = format!("seed_1/static/round_01/{what}.safetensors");
        let read = |d: &str| std::fs::read(root.join(d).join(&f)).unwrap();
        assert_eq!(read("a"), read("b"), "{f}");
    }

    // Bad settings: one line each, no run dir.
    for (set, needle) in [
        (
            "arms=[{name=\"s\",kind=\"sparse\",method=\"magic\"}]",
            "unknown variant `magic`, expected one of `static`, `set`, `rigl`",
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

#[test]
fn one_update_drops_the_smallest_weights_and_regrows_by_gradient_or_at_random() {
    use lth::prune::topology::{drop_and_grow, Grow};
    // Active at 0, 1, 2, 4 (and 7); inactive at 3, 5, 6.
    let w = [0.5f32, -0.1, 0.3, 0.0, 0.2, 0.0, 0.0, 0.2];
    let mask0 = [1.0f32, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0];
    // RigL: round(0.4 x 5) = 2 dropped, |w| smallest first, equal |w| (0.2 at 4 and 7) in
    // position order: 1 and 4. Grown: largest |g| among 3, 5, 6; 3 and 6 tie, 3 first.
    let g = [9.0f32, 9.0, 9.0, 0.7, 9.0, -0.9, 0.7, 9.0];
    let mut mask = mask0;
    let u = drop_and_grow(&w, &mut mask, 0.4, Grow::Gradient(&g));
    assert_eq!(mask, [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
    assert_eq!((u.active, u.dropped, u.grown), (5, 2, 2));
    // SET: the same drops, the grown ones drawn from the stream: the same stream, the same
    // positions; the count kept.
    let draw = |seed: u64| {
        let mut rng = lth::rng::stream(seed, lth::rng::Purpose::RandomMask, 3);
        let mut mask = mask0;
        drop_and_grow(&w, &mut mask, 0.4, Grow::Random(&mut rng));
        mask
    };
    let (a, b) = (draw(1), draw(1));
    assert_eq!(a, b);
    assert_eq!(a.iter().sum::<f32>(), 5.0);
    assert_eq!(
        (a[1], a[4]),
        (0.0, 0.0),
        "the smallest two dropped, not regrown at once"
    );
    // Fewer inactive positions than would be dropped: only that many move.
    let mut full = [1.0f32, 1.0, 1.0, 1.0, 0.0];
    let u = drop_and_grow(
        &[1.0, 2.0, 3.0, 4.0, 0.0],
        &mut full,
        0.9,
        Grow::Gradient(&[0.0; 5]),
    );
    assert_eq!((u.dropped, u.grown), (1, 1));
    assert_eq!(full, [0.0, 1.0, 1.0, 1.0, 1.0]);
}

#[test]
fn update_steps_stop_at_end_fraction_and_the_drop_fraction_anneals_by_cosine() {
    let mut arm = lth::config::ArmConfig::new("rigl", lth::config::ArmKind::Sparse);
    arm.method = Some(lth::config::SparseMethod::Rigl);
    arm.update_every = Some(20);
    assert_eq!(arm.topology_updates(120), vec![20, 40, 60, 80]);
    arm.end_fraction = Some(1.0);
    assert_eq!(arm.topology_updates(120), vec![20, 40, 60, 80, 100]);
    arm.end_fraction = Some(0.5);
    let f = |t| arm.drop_fraction_at(t, 120);
    assert!((f(0) - 0.3).abs() < 1e-12);
    assert!((f(30) - 0.15).abs() < 1e-12, "half-way: half the fraction");
    assert!(f(60).abs() < 1e-12);
    arm.method = Some(lth::config::SparseMethod::Static);
    assert!(
        arm.topology_updates(120).is_empty(),
        "a static mask never changes"
    );
}

#[test]
fn set_rigl_and_snfs_arms_keep_each_layers_count_while_their_topology_moves() {
    let arms = "\n[[arms]]\nname = \"rewind\"\nkind = \"rewind\"\n\n[[arms]]\nname = \"set\"\nkind = \"sparse\"\nmethod = \"set\"\nupdate_every = 20\n\n[[arms]]\nname = \"rigl\"\nkind = \"sparse\"\nmethod = \"rigl\"\nupdate_every = 20\ndrop_anneal = \"constant\"\n\n[[arms]]\nname = \"snfs\"\nkind = \"sparse\"\nmethod = \"snfs\"\nupdate_every = 20\n";
    let tmp = experiment_dir(|data| {
        small_config(data, "").replace("rounds = 2", "schedule = \"one-shot\"\ntargets = [10.0]")
            + arms
    });
    let root = tmp.path();
    run_quietly(root, "a", &[], "the run with set and rigl arms");
    let net = Lenet::new(784, 10);
    let layout = net.layout();
    let dir = RunDir::at(root.join("a"));
    let index: Vec<usize> = prunable(&net).iter().map(|(i, _)| *i).collect();
    let count = |m: &tch::Tensor, i: usize| {
        layout
            .segment(&m.unsqueeze(0), i)
            .sum(tch::Kind::Int64)
            .int64_value(&[])
    };
    for arm in ["set", "rigl", "snfs"] {
        for seed in [0u64, 1] {
            let end = dir.load_mask(arm, seed, 1, layout).unwrap();
            // The initial mask: where the start (θ₀ masked) is not zero.
            let start = tch::Tensor::read_safetensors(
                root.join(format!("a/seed_{seed}/{arm}/round_01/start.safetensors")),
            )
            .unwrap();
            let weights = dir.load_weights(arm, seed, 1, layout).unwrap().params;
            for &i in &index {
                let name = &layout.specs()[i].name;
                let begin = start.iter().find(|(n, _)| n == name).unwrap().1.ne(0.0);
                let last = layout.view(&end.unsqueeze(0), i).get(0).gt(0.5);
                let moved = begin
                    .logical_xor(&last)
                    .sum(tch::Kind::Int64)
                    .int64_value(&[]);
                assert_eq!(
                    begin.sum(tch::Kind::Int64).int64_value(&[]),
                    count(&end, i),
                    "{arm} seed {seed} {name}: the same count at the end"
                );
                // (A dense tensor, as ERK leaves fc3 here, has nothing to regrow into.)
                if count(&end, i) < layout.specs()[i].numel() as i64 {
                    assert!(moved > 0, "{arm} seed {seed} {name}: the topology moved");
                } else {
                    assert_eq!(moved, 0, "{arm} seed {seed} {name}: dense stays dense");
                }
            }
            let pruned: tch::Tensor = end.unsqueeze(0).eq(0.0).to_kind(tch::Kind::Float);
            let outside = (weights.abs() * pruned)
                .sum(tch::Kind::Double)
                .double_value(&[]);
            assert_eq!(outside, 0.0, "{arm} seed {seed}: inactive weights are zero");
        }
    }
    // topology.csv: a row per update (20, 40, 60, 80: before 0.75 x 120), replica and tensor;
    // the active count is the mask's; RigL's constant fraction moves round(0.3 x active)
    // (fewer where fewer positions are free); the last update's churn is the share of
    // positions whose mask differs between the start and the end.
    let (header, rows) = read_csv(&root.join("a/topology.csv"));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(
        rows.len(),
        3 * 2 * 4 * index.len(),
        "arms x seeds x updates x tensors"
    );
    for row in &rows {
        let (arm, seed) = (&row[col("arm")], row[col("seed")].parse::<u64>().unwrap());
        let i = index[index
            .iter()
            .position(|&i| layout.specs()[i].name == row[col("layer")])
            .unwrap()];
        let end = dir.load_mask(arm, seed, 1, layout).unwrap();
        let int = |c: &str| row[col(c)].parse::<i64>().unwrap();
        let active = count(&end, i);
        assert_eq!(int("active"), active, "{row:?}");
        assert_eq!(int("dropped"), int("grown"), "{row:?}");
        let free = layout.specs()[i].numel() as i64 - active;
        if arm == "rigl" {
            let expect = ((0.3 * active as f64).round() as i64).min(free);
            assert_eq!(int("dropped"), expect, "{row:?}");
        }
        if row[col("iteration")] == "80" {
            let start = tch::Tensor::read_safetensors(
                root.join(format!("a/seed_{seed}/{arm}/round_01/start.safetensors")),
            )
            .unwrap();
            let name = &layout.specs()[i].name;
            let begin = start.iter().find(|(n, _)| n == name).unwrap().1.ne(0.0);
            let last = layout.view(&end.unsqueeze(0), i).get(0).gt(0.5);
            let changed = begin
                .logical_xor(&last)
                .sum(tch::Kind::Int64)
                .int64_value(&[]);
            let churn: f64 = row[col("churn")].parse().unwrap();
            assert_eq!(
                churn,
                changed as f64 / layout.specs()[i].numel() as f64,
                "{row:?}"
            );
        }
    }
    // A deleted topology.csv: the run redoes the rounds whose rows it held, to the same bytes.
    let written = std::fs::read(root.join("a/topology.csv")).unwrap();
    std::fs::remove_file(root.join("a/topology.csv")).unwrap();
    run_quietly(root, "a", &[], "the run after topology.csv was deleted");
    assert_eq!(std::fs::read(root.join("a/topology.csv")).unwrap(), written);
    // A seed alone: the same bytes (SET's draws and RigL's batches come from the seed).
    run_quietly(root, "b", &["--set", "seeds=[1]"], "seed 1 alone");
    for arm in ["set", "rigl", "snfs"] {
        for what in ["mask", "weights"] {
            let f = format!("seed_1/{arm}/round_01/{what}.safetensors");
            let read = |d: &str| std::fs::read(root.join(d).join(&f)).unwrap();
            assert_eq!(read("a"), read("b"), "{f}");
        }
    }
    // The rewind arm trained beside them is the rewind arm trained alone: topology updates
    // add no evaluation point to its cohort.
    let out = run_in(root, "c")
        .args(["--quiet", "--threads", "1"])
        .args(["--set", "arms=[{name=\"rewind\",kind=\"rewind\"}]"])
        .output()
        .unwrap();
    assert_success(&out, "the rewind arm alone");
    assert!(
        !root.join("c/topology.csv").exists(),
        "no dynamic arm, no topology.csv"
    );
    let rewind_rows = |d: &str| -> Vec<String> {
        std::fs::read_to_string(root.join(d).join("curves.csv"))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("rewind,"))
            .map(String::from)
            .collect()
    };
    assert!(rewind_rows("a").len() > 4);
    assert_eq!(rewind_rows("a"), rewind_rows("c"));
    let f = "seed_0/rewind/round_01/weights.safetensors";
    assert_eq!(
        std::fs::read(root.join("a").join(f)).unwrap(),
        std::fs::read(root.join("c").join(f)).unwrap()
    );
    // Topology settings: in range, and only with a method that moves the topology.
    for (set, needle) in [
        (
            "arms=[{name=\"s\",kind=\"sparse\",update_every=20}]",
            "`update_every` needs `method = \"set\"`, `\"rigl\"` or `\"snfs\"`",
        ),
        (
            "arms=[{name=\"s\",kind=\"sparse\",method=\"set\",update_every=0}]",
            "`update_every` must be >= 1 (got 0)",
        ),
        (
            "arms=[{name=\"s\",kind=\"sparse\",method=\"rigl\",drop_fraction=1.0}]",
            "`drop_fraction` must be in [0, 1) (got 1)",
        ),
        (
            "arms=[{name=\"s\",kind=\"sparse\",method=\"rigl\",end_fraction=0.0}]",
            "`end_fraction` must be in (0, 1] (got 0)",
        ),
    ] {
        let out = run_in(root, "fresh").args(["--set", set]).output().unwrap();
        assert_one_line_error(&out, needle);
        assert!(!root.join("fresh").exists(), "{set}");
    }
}

#[test]
fn rigls_dense_gradient_is_the_loss_gradient_at_the_masked_weights_pruned_positions_included() {
    use tch::{Device, Kind, Tensor};
    let net = Lenet::with_widths(&[6, 4, 3, 2]);
    let layout = net.layout();
    let state = lth::model::State::init(layout, &[0, 1], Device::Cpu);
    tch::manual_seed(3);
    let masks = Tensor::rand([2, layout.total() as i64], (Kind::Float, Device::Cpu))
        .gt(0.5)
        .to_kind(Kind::Float);
    let split = lth::data::Split {
        images: Tensor::rand([40, 1, 2, 3], (Kind::Float, Device::Cpu)) - 0.5,
        labels: Tensor::randint(2, [40], (Kind::Int64, Device::Cpu)),
    };
    let data = lth::prune::ScoreData {
        net: &net,
        train: &split,
        seeds: vec![0, 1],
        index: 7,
    };
    let g = data.dense_gradient(&state, &masks, 8);
    for r in 0..2i64 {
        let index = Tensor::from_slice(&data.examples(r as usize, 8));
        let x = split.images.index_select(0, &index).view([8, 6]);
        let y = split.labels.index_select(0, &index);
        let p: Vec<Tensor> = (0..6)
            .map(|i| {
                (layout.view(&state.params, i).get(r) * layout.view(&masks, i).get(r))
                    .detach()
                    .set_requires_grad(true)
            })
            .collect();
        let loss = crate::common::lenet_loss_by_hand(&p, &x, &y);
        let hand = Tensor::run_backward(&[loss], &p.iter().collect::<Vec<_>>(), false, false);
        for (i, h) in hand.iter().enumerate() {
            let got = layout.view(&g, i).get(r);
            assert!(got.allclose(h, 1e-5, 1e-7, false), "replica {r} param {i}");
        }
        // Nonzero where the mask is zero too: what RigL regrows by.
        let pruned = masks.get(r).eq(0.0).to_kind(Kind::Float);
        let at_pruned = g.get(r).abs() * pruned;
        assert!(at_pruned.sum(Kind::Double).double_value(&[]) > 0.0);
    }
}

#[test]
fn regrown_weights_start_at_zero_or_at_theta0_as_grow_init_says() {
    // A learning rate far below every weight's last bit: training leaves the weights where
    // they are, so what each position holds at the end is where it started.
    let arm = |name: &str, extra: &str| {
        format!("\n[[arms]]\nname = \"{name}\"\nkind = \"sparse\"\nmethod = \"set\"\nupdate_every = 20\nlr = 1e-30\n{extra}")
    };
    let arms = arm("zeros", "") + &arm("init", "grow_init = \"init\"\n");
    let tmp = experiment_dir(|data| {
        small_config(data, "").replace("rounds = 2", "schedule = \"one-shot\"\ntargets = [10.0]")
            + &arms
    });
    let root = tmp.path();
    run_quietly(root, "a", &[], "the run with both grow_init values");
    let net = Lenet::new(784, 10);
    let layout = net.layout();
    let dir = RunDir::at(root.join("a"));
    for seed in [0u64, 1] {
        let theta0 = dir.load_theta(seed, 0, layout).unwrap().params;
        for (name, grown_at_theta0) in [("zeros", false), ("init", true)] {
            let file = root.join(format!("a/seed_{seed}/{name}/round_01/start.safetensors"));
            let named = lth::record::NamedTensors::read(&file).unwrap();
            let start = lth::record::tensors::state_from(&named, layout)
                .unwrap()
                .params;
            let begin = start.ne(0.0).to_kind(tch::Kind::Float);
            let end = dir.load_mask(name, seed, 1, layout).unwrap().unsqueeze(0);
            let weights = dir.load_weights(name, seed, 1, layout).unwrap().params;
            let grown: tch::Tensor = &end * (1.0 - &begin);
            let regrown = grown.sum(tch::Kind::Int64).int64_value(&[]);
            assert!(regrown > 100, "{name} seed {seed}: {regrown} regrown");
            let kept: tch::Tensor = &end * &begin;
            let diff = |a: &tch::Tensor, b: &tch::Tensor| (a - b).abs().max().double_value(&[]);
            // Inactive positions are zero. A position active at both ends may have been
            // dropped and regrown between, so under `zeros` it holds θ₀ or (about) zero, under
            // `init` θ₀; a position grown since the start holds (about) zero, or θ₀. (The
            // rate moves a zero weight by ~1e-29, a weight of θ₀'s size not at all.)
            let tiny = 1e-20;
            assert_eq!(diff(&(&weights * (1.0 - &end)), &weights.zeros_like()), 0.0);
            let active_theta0 = &theta0 * &end;
            match grown_at_theta0 {
                true => assert!(diff(&weights, &active_theta0) < tiny, "{name} seed {seed}"),
                false => {
                    let off = (&weights - &active_theta0).abs().minimum(&weights.abs());
                    assert!(off.max().double_value(&[]) < tiny, "{name} seed {seed}");
                    let at_grown = &weights * &grown;
                    assert!(
                        diff(&at_grown, &weights.zeros_like()) < tiny,
                        "{name} {seed}"
                    );
                    let kept_theta0 = (&weights * &kept).abs().gt(tiny).sum(tch::Kind::Int64);
                    assert!(kept_theta0.int64_value(&[]) > 1000, "most kept hold θ₀");
                }
            }
        }
    }
}

/// A mask schedule that asks for the dense momentum and keeps what it is given at its
/// update, leaving the masks as they are.
struct KeepMomentum {
    seen: Option<tch::Tensor>,
}

impl lth::train::MaskSchedule for KeepMomentum {
    fn update(
        &mut self,
        _: u64,
        _: &lth::model::State,
        masks: &tch::Tensor,
        dense_momentum: Option<&tch::Tensor>,
    ) -> tch::Tensor {
        self.seen = dense_momentum.map(|m| m.copy());
        masks.shallow_clone()
    }

    fn dense_momentum(&self) -> Option<f64> {
        Some(0.9)
    }
}

#[test]
fn snfs_momentum_is_the_smoothed_dense_gradient_pruned_positions_included() {
    use lth::config::{OptimizerKind, SparseKernels, TrainConfig};
    use lth::train::Span;
    use tch::{Device, Kind, Tensor};
    // Every batch is the whole training split and the rate is zero, so every step's dense
    // gradient g is the same (up to the order of a sum): after three steps the momentum
    // m <- 0.9 m + g is (1 + 0.9 + 0.81) g.
    let (_tmp, data) = crate::common::tiny_data();
    let net = Lenet::with_widths(&[784, 6, 5, 10]);
    let layout = net.layout();
    let state = lth::model::State::init(layout, &[0, 1], Device::Cpu);
    let masks = crate::common::rand_uniform(&[2, layout.total() as i64], 5)
        .gt(0.5)
        .to_kind(Kind::Float);
    let n = data.train.len();
    for kernels in [SparseKernels::Off, SparseKernels::On] {
        let cfg = TrainConfig {
            optimizer: OptimizerKind::Sgd,
            lr: 0.0,
            momentum: 0.0,
            iterations: 4,
            eval_every: 4,
            batch_size: n,
            sparse_kernels: kernels,
            ..TrainConfig::default()
        };
        let mut span = Span::new(0, 4, 4);
        span.mask_updates = vec![3];
        let mut schedule = KeepMomentum { seen: None };
        let parts = (&net as &dyn lth::model::Network, &data, &cfg);
        crate::common::train_pair(parts, (&state, &masks, None), &span, Some(&mut schedule));
        let seen = schedule.seen.expect("the update saw a momentum");
        let score = lth::prune::ScoreData {
            net: &net,
            train: &data.train,
            seeds: vec![0, 1],
            index: 0,
        };
        let g = score.dense_gradient(&state, &masks, n);
        let want = &g * (1.0 + 0.9 + 0.81);
        assert!(seen.allclose(&want, 1e-4, 1e-6, false), "{kernels:?}");
        let pruned: Tensor = masks.eq(0.0).to_kind(Kind::Float);
        let at_pruned = (seen.abs() * pruned).sum(Kind::Double).double_value(&[]);
        assert!(
            at_pruned > 0.0,
            "nonzero where the mask is zero: what SNFS grows by"
        );
    }
}

#[test]
fn snfs_redistribution_moves_counts_between_tensors_and_keeps_the_total() {
    let arms = "\n[[arms]]\nname = \"snfs\"\nkind = \"sparse\"\nmethod = \"snfs\"\nupdate_every = 20\n\n[[arms]]\nname = \"moving\"\nkind = \"sparse\"\nmethod = \"snfs\"\nupdate_every = 20\nredistribute = true\n";
    let tmp = experiment_dir(|data| {
        small_config(data, "").replace("rounds = 2", "schedule = \"one-shot\"\ntargets = [10.0]")
            + arms
    });
    let root = tmp.path();
    run_quietly(root, "a", &[], "the run with SNFS redistributing");
    // layers.csv: the counts each arm ends with; the same total, other per-tensor counts.
    let (header, rows) = read_csv(&root.join("a/layers.csv"));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let counts = |arm: &str, seed: &str| -> Vec<u64> {
        rows.iter()
            .filter(|r| r[col("arm")] == arm && r[col("seed")] == seed && r[col("round")] == "1")
            .map(|r| r[col("remaining")].parse().unwrap())
            .collect()
    };
    let net = Lenet::new(784, 10);
    let layout = net.layout();
    let dir = RunDir::at(root.join("a"));
    for seed in ["0", "1"] {
        let (fixed, moving) = (counts("snfs", seed), counts("moving", seed));
        assert_eq!(
            fixed.iter().sum::<u64>(),
            moving.iter().sum::<u64>(),
            "seed {seed}"
        );
        assert_ne!(fixed, moving, "seed {seed}: counts moved between tensors");
        // They are the final mask's counts.
        let mask = dir
            .load_mask("moving", seed.parse().unwrap(), 1, layout)
            .unwrap();
        let from_mask: Vec<u64> = layout
            .prunable()
            .map(|i| {
                layout
                    .segment(&mask.unsqueeze(0), i)
                    .sum(tch::Kind::Int64)
                    .int64_value(&[]) as u64
            })
            .collect();
        assert_eq!(from_mask, moving);
    }
    // topology.csv: every update drops and regrows as many in all, not per tensor.
    let (header, rows) = read_csv(&root.join("a/topology.csv"));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mut per_update: std::collections::BTreeMap<(String, String), (i64, i64)> =
        Default::default();
    let mut unequal = 0;
    for r in rows.iter().filter(|r| r[col("arm")] == "moving") {
        let (d, g): (i64, i64) = (
            r[col("dropped")].parse().unwrap(),
            r[col("grown")].parse().unwrap(),
        );
        unequal += usize::from(d != g);
        let e = per_update
            .entry((r[col("seed")].clone(), r[col("iteration")].clone()))
            .or_default();
        e.0 += d;
        e.1 += g;
    }
    assert!(unequal > 0, "some tensor grows other than it drops");
    for (key, (d, g)) in per_update {
        assert_eq!(d, g, "{key:?}");
    }
    let out = run_in(root, "b")
        .args([
            "--set",
            "arms=[{name=\"s\",kind=\"sparse\",method=\"set\",redistribute=true}]",
        ])
        .output()
        .unwrap();
    assert_one_line_error(&out, "`redistribute` needs `method = \"snfs\"`");
}
