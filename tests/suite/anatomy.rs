//! Ticket anatomy (Zhou et al. 2019): the mask criteria over (w_i, w_f) against a hand
//! computation; `large-final` keeps exactly what `magnitude` keeps (the same mask bytes), and
//! `large-final-same-sign` never keeps a weight whose sign flipped.

use crate::common::{assert_success, experiment_dir, run_in, run_quietly, small_config};

use lth::config::PruneCriterion;
use lth::model::{Lenet, Network};
use lth::prune::init_final::init_final_scores;
use lth::record::RunDir;
use tch::{Kind, Tensor};

#[test]
fn each_criterion_over_init_and_final_weights_scores_as_written() {
    let wi = Tensor::from_slice(&[0.5f32, -0.2, 0.1, -0.4]).unsqueeze(0);
    let wf = Tensor::from_slice(&[0.3f32, 0.6, -0.05, -0.1]).unsqueeze(0);
    let flip = |f: f64| -1.0 / (1.0 + f);
    for (rule, expect) in [
        (PruneCriterion::LargeFinal, [0.3, 0.6, 0.05, 0.1]),
        (PruneCriterion::SmallFinal, [-0.3, -0.6, -0.05, -0.1]),
        (PruneCriterion::LargeInit, [0.5, 0.2, 0.1, 0.4]),
        (PruneCriterion::LargeInitLargeFinal, [0.3, 0.2, 0.05, 0.1]),
        (
            PruneCriterion::SmallInitSmallFinal,
            [-0.5, -0.6, -0.1, -0.4],
        ),
        (PruneCriterion::MagnitudeIncrease, [-0.2, 0.4, -0.05, -0.3]),
        (PruneCriterion::Movement, [0.2, 0.8, 0.15, 0.3]),
        (
            PruneCriterion::LargeFinalSameSign,
            [0.3, flip(0.6), flip(0.05), 0.1],
        ),
    ] {
        let got = Vec::<f64>::try_from(&init_final_scores(rule, &wi, &wf).get(0)).unwrap();
        for (g, e) in got.iter().zip(expect) {
            assert!(
                (g - e).abs() < 1e-6,
                "{}: {got:?} vs {expect:?}",
                rule.name()
            );
        }
    }
}

#[test]
fn large_final_keeps_the_magnitude_masks_and_same_sign_never_keeps_a_flipped_weight() {
    let tmp = experiment_dir(|data| small_config(data, ""));
    let root = tmp.path();
    for (dir, criterion) in [
        ("magnitude", "magnitude"),
        ("large-final", "large-final"),
        ("same-sign", "large-final-same-sign"),
    ] {
        let out = run_in(root, dir)
            .args(["--quiet", "--threads", "1"])
            .args(["--set", &format!("prune.criterion=\"{criterion}\"")])
            .output()
            .unwrap();
        assert_success(&out, criterion);
    }
    for seed in [0, 1] {
        for round in [1, 2] {
            let f = format!("seed_{seed}/rewind/round_{round:02}/mask.safetensors");
            let read = |d: &str| std::fs::read(root.join(d).join(&f)).unwrap();
            assert_eq!(read("magnitude"), read("large-final"), "{f}");
        }
    }
    let net = Lenet::new(784, 10);
    let layout = net.layout();
    let dir = RunDir::at(root.join("same-sign"));
    for seed in [0, 1] {
        let theta0 = dir.load_theta(seed, 0, layout).unwrap().params;
        let mut previous = dir.load_mask("rewind", seed, 0, layout).unwrap();
        for round in [1u32, 2] {
            // Round r ranks the weights round r - 1 trained, against θ₀.
            let trained = dir
                .load_weights("rewind", seed, round - 1, layout)
                .unwrap()
                .params;
            let mask = dir.load_mask("rewind", seed, round, layout).unwrap();
            let flipped = (theta0.sign() * trained.sign()).lt(0.0).get(0);
            let mut kept_flipped = 0i64;
            let mut dropped_same = 0i64;
            let mut flipped_before = 0i64;
            for i in layout.prunable() {
                let seg = |t: &Tensor| layout.segment(&t.unsqueeze(0), i).get(0);
                let (m, f, p) = (
                    seg(&mask),
                    seg(&flipped.to_kind(Kind::Float)),
                    seg(&previous),
                );
                kept_flipped += (&m * &f).sum(Kind::Int64).int64_value(&[]);
                flipped_before += (&p * &f).sum(Kind::Int64).int64_value(&[]);
                dropped_same += ((&p - &m) * f.eq(0.0).to_kind(Kind::Float))
                    .sum(Kind::Int64)
                    .int64_value(&[]);
            }
            assert!(
                flipped_before > 0,
                "seed {seed} round {round}: some weights flipped"
            );
            assert_eq!(
                kept_flipped, 0,
                "seed {seed} round {round}: a flipped weight kept"
            );
            assert!(
                dropped_same > 0,
                "seed {seed} round {round}: same-sign weights went too"
            );
            previous = mask;
        }
    }
}

#[test]
fn mask1_actions_reshuffle_keep_a_constant_or_keep_the_signs_of_the_kept_initial_weights() {
    let arms = "[[arms]]\nname = \"rewind\"\nkind = \"rewind\"\n[[arms]]\nname = \"reshuffle\"\nkind = \"rewind\"\nmask1 = \"reshuffle\"\n[[arms]]\nname = \"constant\"\nkind = \"rewind\"\nmask1 = \"constant\"\n[[arms]]\nname = \"sign\"\nkind = \"rewind\"\nmask1 = \"sign\"\n";
    let tmp = experiment_dir(|data| small_config(data, arms));
    let root = tmp.path();
    run_quietly(root, "a", &[], "the mask-1 run");
    let net = Lenet::new(784, 10);
    let layout = net.layout();
    let dir = RunDir::at(root.join("a"));
    let start = |arm: &str, seed: u64, round: u32| -> Tensor {
        let named = Tensor::read_safetensors(root.join(format!(
            "a/seed_{seed}/{arm}/round_{round:02}/start.safetensors"
        )))
        .unwrap();
        let parts: Vec<Tensor> = layout
            .specs()
            .iter()
            .map(|s| {
                named
                    .iter()
                    .find(|(n, _)| *n == s.name)
                    .unwrap()
                    .1
                    .reshape([-1])
            })
            .collect();
        Tensor::cat(&parts, 0)
    };
    let sorted = |t: &Tensor| Vec::<f32>::try_from(&t.sort(0, false).0).unwrap();
    for seed in [0u64, 1] {
        let theta0 = dir.load_theta(seed, 0, layout).unwrap().params.get(0);
        for round in [1u32, 2] {
            for i in layout.prunable() {
                let seg = |t: &Tensor| layout.segment(&t.unsqueeze(0), i).get(0);
                let mask = seg(&dir.load_mask("reshuffle", seed, round, layout).unwrap());
                let kept = mask.gt(0.5);
                let init = seg(&theta0);
                let w0 = init.masked_select(&kept);
                let what = format!("seed {seed} round {round} tensor {i}");
                // Reshuffle: the same multiset of kept initial values, other positions.
                let s = seg(&start("reshuffle", seed, round));
                assert_eq!(sorted(&s.masked_select(&kept)), sorted(&w0), "{what}");
                assert!(!s.masked_select(&kept).equal(&w0), "{what}: moved");
                assert_eq!(
                    s.masked_select(&kept.logical_not())
                        .abs()
                        .sum(Kind::Double)
                        .double_value(&[]),
                    0.0
                );
                // Constant: one absolute value per tensor (the std of its θ₀), θ₀'s signs.
                let mask = seg(&dir.load_mask("constant", seed, round, layout).unwrap());
                let kept = mask.gt(0.5);
                let c = seg(&start("constant", seed, round)).masked_select(&kept);
                let alpha = init.std(false).double_value(&[]);
                let values = Vec::<f32>::try_from(&c.abs()).unwrap();
                assert!(
                    values.iter().all(|&v| (f64::from(v) - alpha).abs() < 1e-6),
                    "{what}"
                );
                assert!(c.sign().equal(&init.masked_select(&kept).sign()), "{what}");
                // Sign: θ₀'s signs, other magnitudes.
                let mask = seg(&dir.load_mask("sign", seed, round, layout).unwrap());
                let kept = mask.gt(0.5);
                let g = seg(&start("sign", seed, round)).masked_select(&kept);
                let w0 = init.masked_select(&kept);
                assert!(g.sign().equal(&w0.sign()), "{what}");
                assert!(!g.abs().equal(&w0.abs()), "{what}");
            }
        }
    }
}

#[test]
fn mask_overlap_is_one_for_a_copied_mask_zero_for_disjoint_ones_and_random_where_drawn() {
    use lth::analysis::overlap::{overlap_counts, random_jaccard};
    // Disjoint masks: 0; a mask with itself: 1.
    let a = Tensor::from_slice(&[true, true, false, false]);
    let b = Tensor::from_slice(&[false, false, true, true]);
    let jaccard = |c: [f64; 5]| c[3] / c[4];
    assert_eq!(jaccard(overlap_counts(&a, &b)), 0.0);
    assert_eq!(jaccard(overlap_counts(&a, &a)), 1.0);
    // The random expectation against random masks drawn many times.
    tch::manual_seed(5);
    let n = 2000;
    let draws: Vec<f64> = (0..200)
        .map(|_| {
            let x = Tensor::randperm(n, (Kind::Int64, tch::Device::Cpu)).lt(600);
            let y = Tensor::randperm(n, (Kind::Int64, tch::Device::Cpu)).lt(900);
            jaccard(overlap_counts(&x, &y))
        })
        .collect();
    let mean = draws.iter().sum::<f64>() / draws.len() as f64;
    let expect = random_jaccard(600.0, 900.0, n as f64);
    assert!((mean - expect).abs() < 0.005, "{mean} vs {expect}");

    // A run: reinit copies rewind's mask (Jaccard 1), random-prune draws its own (about the
    // random expectation), and rewind's masks are nested round to round.
    let arms = "[[arms]]\nname = \"rewind\"\nkind = \"rewind\"\n[[arms]]\nname = \"reinit\"\nkind = \"reinit\"\nsibling = \"rewind\"\n[[arms]]\nname = \"random\"\nkind = \"random-prune\"\nsibling = \"rewind\"\n";
    let tmp = experiment_dir(|data| small_config(data, arms));
    let root = tmp.path();
    run_quietly(root, "a", &[], "the run");
    let out = crate::common::lth(
        root,
        &[
            "masks",
            "compare",
            "a",
            "--name",
            "m",
            "--data-dir",
            "out",
            "--plots-dir",
            "out",
        ],
    );
    assert_success(&out, "lth masks compare");
    assert!(root.join("out/m/mask_overlap.png").exists());
    let (header, rows) = crate::common::read_csv(&root.join("out/m/mask_overlap.csv"));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let find = |round: &str, a: &str, b: &str, layer: &str| {
        rows.iter()
            .find(|r| {
                r[col("round")] == round
                    && r[col("a")] == a
                    && r[col("b")] == b
                    && r[col("layer")] == layer
            })
            .unwrap_or_else(|| panic!("no row {round} {a} {b} {layer}"))
    };
    for round in ["1", "2"] {
        for seed in [0, 1] {
            let copy = find(
                round,
                &format!("a:rewind:{seed}"),
                &format!("a:reinit:{seed}"),
                "all",
            );
            assert_eq!(copy[col("jaccard")], "1");
            assert_eq!(copy[col("pair")], "arms");
        }
    }
    let random = find("1", "a:rewind:0", "a:random:0", "fc1.weight");
    let (j, r): (f64, f64) = (
        random[col("jaccard")].parse().unwrap(),
        random[col("random_jaccard")].parse().unwrap(),
    );
    assert!(
        (j - r).abs() < 0.01,
        "random-prune against rewind: {j} vs {r}"
    );
    let seeds = find("1", "a:rewind:0", "a:rewind:1", "all");
    assert_eq!(seeds[col("pair")], "seeds");
    // A heatmap of pairs x layers per round: the copied mask's row holds 1 in every column,
    // the last row the random expectation.
    for round in ["01", "02"] {
        let svg =
            std::fs::read_to_string(root.join(format!("out/m/mask_overlap_round_{round}.svg")))
                .unwrap();
        assert!(root
            .join(format!("out/m/mask_overlap_round_{round}.png"))
            .exists());
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .filter_map(|t| t.split('>').nth(1)?.split('<').next())
            .map(str::trim)
            .collect();
        let at = texts
            .iter()
            .position(|t| *t == "arms · rewind / reinit")
            .unwrap();
        let last = texts
            .iter()
            .position(|t| *t == "random masks (expected)")
            .unwrap();
        // Row label, then its cells: fc1, fc2, fc3 and all.
        assert_eq!(
            texts[at + 1..at + 5],
            ["1.00", "1.00", "1.00", "1.00"],
            "{round}"
        );
        assert!(last > at);
    }
    let (header, rows) = crate::common::read_csv(&root.join("out/m/mask_survival.csv"));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let nested = rows
        .iter()
        .find(|r| {
            r[col("mask")] == "a:rewind:0" && r[col("round")] == "1" && r[col("layer")] == "all"
        })
        .unwrap();
    assert_eq!(
        nested[col("survived")],
        nested[col("kept_next")],
        "nested masks"
    );
}

#[test]
fn supermasks_of_the_dense_round_give_the_untrained_networks_logged_accuracy() {
    let tmp = experiment_dir(|data| small_config(data, ""));
    let root = tmp.path();
    run_quietly(root, "a", &[], "the run");
    let out = crate::common::lth(
        root,
        &[
            "supermask",
            "a",
            "--constant",
            "--device",
            "cpu",
            "--name",
            "sm",
            "--data-dir",
            "out",
            "--plots-dir",
            "out",
        ],
    );
    assert_success(&out, "lth supermask");
    assert!(root.join("out/sm/supermask_rewind.png").exists());
    let (header, rows) = crate::common::read_csv(&root.join("out/sm/supermask_rewind.csv"));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    assert_eq!(rows.len(), 3 * 2 * 2, "rounds x starts x seeds");
    let (ch, curves) = crate::common::read_csv(&root.join("a/curves.csv"));
    let cc = |n: &str| ch.iter().position(|h| h == n).unwrap();
    let (rh, rounds) = crate::common::read_csv(&root.join("a/rounds.csv"));
    let rc = |n: &str| rh.iter().position(|h| h == n).unwrap();
    for seed in ["0", "1"] {
        // The dense mask on θ₀ is the untrained network: round 0's evaluation at iteration 0.
        let untrained = curves
            .iter()
            .find(|r| r[cc("round")] == "0" && r[cc("seed")] == seed && r[cc("iteration")] == "0")
            .unwrap();
        let dense = rows
            .iter()
            .find(|r| {
                r[col("round")] == "0" && r[col("seed")] == seed && r[col("start")] == "theta0"
            })
            .unwrap();
        assert_eq!(dense[col("test_accuracy")], untrained[cc("test_accuracy")]);
        assert_eq!(dense[col("val_loss")], untrained[cc("val_loss")]);
        // Each round's masks keep what rounds.csv says.
        for round in ["1", "2"] {
            let logged = rounds
                .iter()
                .find(|r| {
                    r[rc("round")] == round && r[rc("seed")] == seed && r[rc("arm")] == "rewind"
                })
                .unwrap();
            let ours = rows
                .iter()
                .find(|r| r[col("round")] == round && r[col("seed")] == seed)
                .unwrap();
            let (a, b): (f64, f64) = (
                ours[col("weights_remaining_pct")].parse().unwrap(),
                logged[rc("weights_remaining_pct")].parse().unwrap(),
            );
            assert!((a - b).abs() < 1e-9, "round {round}: {a} vs {b}");
        }
    }
    // Masks a criterion cuts one-shot from the dense network: round 1 of an iterative run
    // is that cut by magnitude, so `large-final` gives round 1's own masks, row for row;
    // `large-init` keeps other weights at the same counts.
    let args = [
        "supermask",
        "a",
        "--criteria",
        "large-final,large-init",
        "--rounds",
        "1,2",
        "--device",
        "cpu",
        "--name",
        "cut",
        "--data-dir",
        "out",
        "--plots-dir",
        "out",
    ];
    assert_success(&crate::common::lth(root, &args), "lth supermask --criteria");
    let (header, rows) = crate::common::read_csv(&root.join("out/cut/supermask_rewind.csv"));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    assert_eq!(rows.len(), 2 * 3 * 2, "rounds x mask sources x seeds");
    let of = |round: &str, criterion: &str, seed: &str| -> Vec<String> {
        let row = rows
            .iter()
            .find(|r| {
                r[col("round")] == round
                    && r[col("criterion")] == criterion
                    && r[col("seed")] == seed
            })
            .unwrap();
        row[col("weights_remaining_pct")..].to_vec()
    };
    for seed in ["0", "1"] {
        assert_eq!(of("1", "large-final", seed), of("1", "", seed));
        let (a, b) = (of("1", "large-init", seed), of("1", "", seed));
        assert_eq!(a[0], b[0], "the same counts");
        assert_ne!(a[1..], b[1..], "other weights kept");
    }
    let out = crate::common::lth(
        root,
        &["supermask", "a", "--rounds", "0,5", "--device", "cpu"],
    );
    crate::common::assert_one_line_error(&out, "`--rounds` asks for round 5, but");
}

#[test]
fn mask0_actions_freeze_the_pruned_weights_at_init_or_toward_zero_and_never_move_them() {
    let arms = "[[arms]]\nname = \"rewind\"\nkind = \"rewind\"\n[[arms]]\nname = \"init\"\nkind = \"rewind\"\nmask0 = \"freeze-init\"\n[[arms]]\nname = \"toward\"\nkind = \"rewind\"\nmask0 = \"freeze-toward-zero\"\n";
    let tmp = experiment_dir(|data| small_config(data, arms));
    let root = tmp.path();
    run_quietly(root, "a", &[], "the mask-0 run");
    let net = Lenet::new(784, 10);
    let layout = net.layout();
    let dir = RunDir::at(root.join("a"));
    let prunable: Vec<usize> = layout.prunable().collect();
    for seed in [0u64, 1] {
        let theta0 = dir.load_theta(seed, 0, layout).unwrap().params.get(0);
        for round in [1u32, 2] {
            // w_f: the weights the round pruned (the arm's previous round, iterative).
            let trained = |arm: &str| {
                let arm = if round == 1 { "" } else { arm };
                dir.load_weights(arm, seed, round - 1, layout)
                    .unwrap()
                    .params
                    .get(0)
            };
            let plain = dir
                .load_weights("rewind", seed, round, layout)
                .unwrap()
                .params
                .get(0);
            for arm in ["init", "toward"] {
                let mask = dir.load_mask(arm, seed, round, layout).unwrap();
                let weights = dir
                    .load_weights(arm, seed, round, layout)
                    .unwrap()
                    .params
                    .get(0);
                let w_f = trained(arm);
                for &i in &prunable {
                    let seg = |t: &Tensor| layout.segment(&t.unsqueeze(0), i).get(0);
                    let pruned = seg(&mask).lt(0.5);
                    assert!(pruned.sum(Kind::Int64).int64_value(&[]) > 0);
                    let (w_i, w) = (seg(&theta0), seg(&weights));
                    let want = match arm {
                        "init" => w_i.shallow_clone(),
                        _ => {
                            let away = seg(&w_f).abs().ge_tensor(&w_i.abs());
                            w_i.where_self(&away, &w_i.zeros_like())
                        }
                    };
                    // Frozen exactly: the pruned positions end where they started.
                    let diff = (w.masked_select(&pruned) - want.masked_select(&pruned)).abs();
                    assert_eq!(
                        diff.max().double_value(&[]),
                        0.0,
                        "{arm} {seed} {round} {i}"
                    );
                    if arm == "toward" {
                        let zeros = want.masked_select(&pruned).eq(0.0).sum(Kind::Int64);
                        let n = zeros.int64_value(&[]);
                        assert!(n > 0 && n < pruned.sum(Kind::Int64).int64_value(&[]));
                    }
                }
                // The frozen weights take part: the kept ones train to other values than
                // the plain ticket's.
                let kept = mask.gt(0.5);
                let moved = (weights.masked_select(&kept) - plain.masked_select(&kept)).abs();
                assert!(
                    moved.max().double_value(&[]) > 0.0,
                    "{arm} trains otherwise"
                );
            }
        }
    }
    let out = run_in(root, "b")
        .args([
            "--set",
            "arms=[{name=\"f\",kind=\"finetune\",mask0=\"freeze-init\"}]",
        ])
        .output()
        .unwrap();
    crate::common::assert_one_line_error(
        &out,
        "arm `f` of kind \"finetune\" does not take `mask0`",
    );
}
