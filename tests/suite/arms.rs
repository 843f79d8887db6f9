//! Retraining strategies in one population (CPU, small data written by the test): every arm
//! gets rows for every seed and round with the same per-layer counts; rewinding to k starts
//! from θ_k bit for bit; fine-tuning starts from the previous round's trained weights bit for
//! bit; reinit reuses its sibling's mask with different weights; random-prune matches its
//! sibling's per-layer counts with a different mask; controls with `start_at = "rewind"` train
//! from their late-rewinding sibling's k (random-prune from θ_k); one-shot hits each target exactly; the
//! gradual schedule follows the cubic formula to within one weight per layer.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{lth, read_csv, small_config, write_dataset};
use lth::config::GradualConfig;
use lth::prune::targets::keep_after_rounds;
use tch::{Kind, Tensor};

const ARMS: &str = r#"
[[arms]]
name = "rewind"
kind = "rewind"

[[arms]]
name = "late"
kind = "rewind"
rewind_iteration = 40
restore_optimizer = true

[[arms]]
name = "finetune"
kind = "finetune"
iterations = 60

[[arms]]
name = "lr-rewind"
kind = "lr-rewind"
iterations = 80

[[arms]]
name = "reinit"
kind = "reinit"
sibling = "rewind"

[[arms]]
name = "random"
kind = "random-prune"
sibling = "rewind"

[[arms]]
name = "random-fresh"
kind = "random-prune"
sibling = "finetune"
init = "fresh"

[[arms]]
name = "reinit-late"
kind = "reinit"
sibling = "late"
start_at = "rewind"

[[arms]]
name = "random-late"
kind = "random-prune"
sibling = "late"
start_at = "rewind"
"#;

/// Runs the small config plus `extra` in `dir`; returns the run dir.
fn run_in(dir: &Path, extra: &str, sets: &[&str]) -> PathBuf {
    let data = dir.join("data");
    write_dataset(&data, 500, 100, false);
    std::fs::write(dir.join("exp.toml"), small_config(&data, extra)).unwrap();
    let mut args = vec![
        "run",
        "--config",
        "exp.toml",
        "--run-dir",
        "run",
        "--device",
        "cpu",
    ];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let out = lth(dir, &args);
    common::assert_success(&out, "lth run");
    dir.join("run")
}

/// Runs the small config plus `extra` in a fresh temp dir.
fn run_exp(extra: &str, sets: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_in(tmp.path(), extra, sets);
    (tmp, run)
}

/// The run with every arm, made once and shared by the tests that only read it.
fn all_arms() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("arms-all");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        run_in(&dir, ARMS, &[])
    })
}

fn load(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect()
}

fn file(run: &Path, seed: u64, arm: &str, round: u32, what: &str) -> PathBuf {
    if round == 0 {
        run.join(format!("seed_{seed}/round_00/{what}.safetensors"))
    } else {
        run.join(format!(
            "seed_{seed}/{arm}/round_{round:02}/{what}.safetensors"
        ))
    }
}

/// Per-layer remaining counts from layers.csv: (arm, seed, round) -> [(layer, remaining)].
fn layer_counts(run: &Path) -> BTreeMap<(String, String, String), Vec<(String, String)>> {
    let (_, rows) = read_csv(&run.join("layers.csv"));
    let mut out: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for r in rows {
        out.entry((r[0].clone(), r[1].clone(), r[2].clone()))
            .or_default()
            .push((r[3].clone(), r[4].clone()));
    }
    out
}

fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.equal(b)
}

#[test]
fn every_arm_has_rows_and_the_same_layer_counts_each_round() {
    let run = all_arms();
    let (header, rows) = read_csv(&run.join("rounds.csv"));
    assert_eq!(rows.len(), 9 * 2 * 3, "9 arms x 2 seeds x rounds 0..=2");
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    for round in ["0", "1", "2"] {
        let remaining: Vec<&String> = rows
            .iter()
            .filter(|r| r[col("round")] == round)
            .map(|r| &r[col("weights_remaining")])
            .collect();
        assert_eq!(remaining.len(), 18);
        assert!(
            remaining.iter().all(|v| *v == remaining[0]),
            "round {round}: {remaining:?}"
        );
    }
    let counts = layer_counts(run);
    for round in ["0", "1", "2"] {
        let reference = &counts[&("rewind".to_string(), "0".to_string(), round.to_string())];
        for ((_, _, r), layers) in &counts {
            if r == round {
                assert_eq!(layers, reference, "round {round}");
            }
        }
    }
    // Finetune trains 120..180, lr-rewind 40..120, late rewind 40..120 and so do the controls
    // that start at its rewind point; the other controls train 0..120.
    let (ch, curves) = read_csv(&run.join("curves.csv"));
    let first_iteration = |arm: &str| {
        curves
            .iter()
            .find(|r| r[0] == arm && r[2] == "1")
            .map(|r| r[ch.iter().position(|h| h == "iteration").unwrap()].clone())
            .unwrap()
    };
    assert_eq!(first_iteration("finetune"), "120");
    assert_eq!(first_iteration("lr-rewind"), "40");
    assert_eq!(first_iteration("late"), "40");
    assert_eq!(first_iteration("rewind"), "0");
    assert_eq!(first_iteration("reinit-late"), "40");
    assert_eq!(first_iteration("random-late"), "40");
    assert_eq!(first_iteration("reinit"), "0");
    assert_eq!(first_iteration("random"), "0");
}

#[test]
fn resets_start_from_the_weights_their_definitions_name() {
    let run = all_arms();
    for seed in [0u64, 1] {
        let theta0 = load(&run.join(format!("seed_{seed}/theta_0.safetensors")));
        let theta40 = load(&run.join(format!("seed_{seed}/theta_40.safetensors")));
        assert!(run
            .join(format!("seed_{seed}/optimizer_40.safetensors"))
            .exists());
        for round in [1u32, 2] {
            let masks = |arm: &str| load(&file(run, seed, arm, round, "mask"));
            let start = |arm: &str| load(&file(run, seed, arm, round, "start"));
            for (arm, theta) in [("rewind", &theta0), ("late", &theta40)] {
                let (m, s) = (masks(arm), start(arm));
                for (name, mask) in &m {
                    let kept = mask.gt(0.5);
                    assert!(
                        same_bits(
                            &s[name].masked_select(&kept),
                            &theta[name].masked_select(&kept)
                        ),
                        "{arm} round {round}: survivors of {name} equal theta bit for bit"
                    );
                    let pruned = s[name].masked_select(&kept.logical_not());
                    assert!(pruned.numel() > 0 && pruned.abs().max().double_value(&[]) == 0.0);
                }
            }
            // Fine-tuning and lr-rewinding start from their previous round's trained weights.
            for arm in ["finetune", "lr-rewind"] {
                let prev = load(&file(run, seed, arm, round - 1, "weights"));
                let (m, s) = (masks(arm), start(arm));
                for (name, mask) in &m {
                    let expected = &prev[name] * mask;
                    assert!(
                        same_bits(&s[name], &expected),
                        "{arm} round {round}: {name}"
                    );
                }
                assert!(
                    same_bits(&s["fc1.bias"], &prev["fc1.bias"]),
                    "biases carried over"
                );
            }
            // Reinit: exactly the sibling's mask, different weights.
            let (rm, rs) = (masks("reinit"), start("reinit"));
            let (sm, ss) = (masks("rewind"), start("rewind"));
            for (name, mask) in &rm {
                assert!(
                    same_bits(mask, &sm[name]),
                    "reinit {name} mask == sibling's"
                );
                let kept = mask.gt(0.5);
                let differ = rs[name]
                    .masked_select(&kept)
                    .ne_tensor(&ss[name].masked_select(&kept))
                    .to_kind(Kind::Float)
                    .mean(Kind::Float)
                    .double_value(&[]);
                assert!(differ > 0.99, "reinit {name}: fresh weights ({differ})");
            }
            // Random-prune: the sibling's per-layer counts, a different mask.
            for (arm, sibling) in [("random", "rewind"), ("random-fresh", "finetune")] {
                let (pm, qm) = (masks(arm), masks(sibling));
                for (name, mask) in &pm {
                    let count = |t: &Tensor| t.sum(Kind::Float).double_value(&[]);
                    assert_eq!(count(mask), count(&qm[name]), "{arm} {name} count");
                    let overlap =
                        (mask * &qm[name]).sum(Kind::Float).double_value(&[]) / count(mask);
                    assert!(overlap < 0.95, "{arm} {name}: a random mask ({overlap})");
                }
            }
            // random starts from theta_0, random-fresh from a fresh draw.
            let (pm, ps) = (masks("random"), start("random"));
            for (name, mask) in &pm {
                assert!(
                    same_bits(&ps[name], &(&theta0[name] * mask)),
                    "random {name} from theta_0"
                );
            }
            // The controls starting at the late sibling's rewind point: its mask with fresh
            // weights, and a random mask of its counts on theta_40.
            let (lm, rl) = (masks("late"), start("reinit-late"));
            for (name, mask) in &masks("reinit-late") {
                assert!(same_bits(mask, &lm[name]), "reinit-late {name} mask");
                let kept = mask.gt(0.5);
                assert!(!same_bits(
                    &rl[name].masked_select(&kept),
                    &theta40[name].masked_select(&kept)
                ));
            }
            let (qm, qs) = (masks("random-late"), start("random-late"));
            for (name, mask) in &qm {
                assert!(
                    same_bits(&qs[name], &(&theta40[name] * mask)),
                    "random-late {name} from theta_40"
                );
                assert!(
                    !same_bits(mask, &lm[name]),
                    "random-late {name}: a random mask"
                );
            }
            let fs = start("random-fresh");
            assert!(!same_bits(
                &fs["fc1.weight"],
                &(&theta0["fc1.weight"] * &masks("random-fresh")["fc1.weight"])
            ));
        }
    }
}

#[test]
fn random_prune_masks_are_nested_across_rounds() {
    let run = all_arms();
    let r1 = load(&file(run, 0, "random", 1, "mask"));
    let r2 = load(&file(run, 0, "random", 2, "mask"));
    for (name, m2) in &r2 {
        let outside = (m2 - &r1[name]).gt(0.5).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(
            outside, 0,
            "{name}: round 2 keeps only weights round 1 kept"
        );
    }
}

#[test]
fn one_shot_reaches_each_target_exactly() {
    let (_tmp, run) = run_exp(
        ARMS,
        &["prune.schedule=\"one-shot\"", "prune.targets=[50.0, 10.0]"],
    );
    let counts = layer_counts(&run);
    // fc1, fc2 at the default 20% keep the target; fc3 (10%) keeps target^(ln 0.9 / ln 0.8).
    let expo = 0.9f64.ln() / 0.8f64.ln();
    for (round, target) in [(1u32, 0.5f64), (2, 0.1)] {
        let expected = [
            ("fc1.weight", (235_200.0 * target).round() as u64),
            ("fc2.weight", (30_000.0 * target).round() as u64),
            ("fc3.weight", (1000.0 * target.powf(expo)).round() as u64),
        ];
        for ((arm, _, r), layers) in &counts {
            if r != &round.to_string() {
                continue;
            }
            for (layer, n) in expected {
                let got = layers.iter().find(|(l, _)| l == layer).unwrap();
                assert_eq!(got.1, n.to_string(), "{arm} round {round} {layer}");
            }
        }
        // One-shot prunes the dense trained weights: finetune starts from round 0's weights.
        let dense = load(&file(&run, 0, "", 0, "weights"));
        let start = load(&file(&run, 0, "finetune", round, "start"));
        let mask = load(&file(&run, 0, "finetune", round, "mask"));
        assert!(same_bits(
            &start["fc2.weight"],
            &(&dense["fc2.weight"] * &mask["fc2.weight"])
        ));
    }
    // Without targets one-shot uses the iterative schedule's counts.
    let (_tmp2, run2) = run_exp(ARMS, &["prune.schedule=\"one-shot\""]);
    let counts2 = layer_counts(&run2);
    let fc1 = &counts2[&("rewind".to_string(), "0".to_string(), "2".to_string())][0];
    assert_eq!(fc1.1, keep_after_rounds(235_200, 0.2, 2).to_string());
}

#[test]
fn gradual_schedule_follows_the_cubic_formula() {
    let extra = r#"
[[arms]]
name = "gmp"
kind = "gradual"
"#;
    let (_tmp, run) = run_exp(
        extra,
        &[
            "prune.schedule=\"gradual\"",
            "prune.layer_fractions={}",
            "prune.gradual={ initial_sparsity = 0.1, final_sparsity = 0.85, start = 20, end = 100, every = 20 }",
        ],
    );
    let cfg = GradualConfig {
        initial_sparsity: 0.1,
        final_sparsity: 0.85,
        start: 20,
        end: 100,
        every: 20,
    };
    let steps = cfg.steps();
    assert_eq!(steps, vec![20, 40, 60, 80, 100]);
    let counts = layer_counts(&run);
    let sizes = [
        ("fc1.weight", 235_200f64),
        ("fc2.weight", 30_000.0),
        ("fc3.weight", 1000.0),
    ];
    for (i, &t) in steps.iter().enumerate() {
        // s(t) = s_f + (s_0 - s_f) (1 - (t - t0) / (t1 - t0))^3
        let s = 0.85 + (0.1 - 0.85) * (1.0 - (t - 20) as f64 / 80.0).powi(3);
        for seed in ["0", "1"] {
            let layers = &counts[&("gmp".to_string(), seed.to_string(), (i + 1).to_string())];
            for (layer, size) in sizes {
                let got: f64 = layers
                    .iter()
                    .find(|(l, _)| l == layer)
                    .unwrap()
                    .1
                    .parse()
                    .unwrap();
                let expected = size * (1.0 - s);
                assert!(
                    (got - expected).abs() <= 1.0,
                    "step {t} {layer}: {got} vs {expected}"
                );
            }
        }
    }
    // Masks only ever grow sparser.
    for round in 2..=5u32 {
        let a = load(&file(&run, 1, "gmp", round - 1, "mask"));
        let b = load(&file(&run, 1, "gmp", round, "mask"));
        for (name, m) in &b {
            assert_eq!(
                (m - &a[name]).gt(0.5).sum(Kind::Int64).int64_value(&[]),
                0,
                "{name}"
            );
        }
    }
    // Pruned weights are zero in the final weights of each stretch.
    let w = load(&file(&run, 0, "gmp", 5, "weights"));
    let m = load(&file(&run, 0, "gmp", 5, "mask"));
    assert_eq!(
        w["fc1.weight"]
            .masked_select(&m["fc1.weight"].lt(0.5))
            .abs()
            .max()
            .double_value(&[]),
        0.0
    );
    // The run's figure does not call round 0, the stretch before the first pruning step, a
    // trained dense network.
    let svg = std::fs::read_to_string(run.join("accuracy_vs_weights.svg")).unwrap();
    assert!(svg.contains("round 0: dense stretch before pruning starts"));
    assert!(!svg.contains("dense network"));
}

#[test]
fn arm_settings_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 300, 50, false);
    let cases = [
        ("[[arms]]\nname = \"r\"\nkind = \"reinit\"\nsibling = \"nobody\"\n", "names sibling `nobody`, which is not an arm"),
        ("[[arms]]\nname = \"r\"\nkind = \"reinit\"\n", "needs `sibling`"),
        ("[[arms]]\nname = \"a\"\nkind = \"rewind\"\n[[arms]]\nname = \"r\"\nkind = \"random-prune\"\nsibling = \"r\"\n", "does not prune its own weights"),
        ("[[arms]]\nname = \"a\"\nkind = \"rewind\"\ninit = \"fresh\"\n", "does not take `init`"),
        ("[[arms]]\nname = \"a\"\nkind = \"finetune\"\nrewind_iteration = 5\n", "does not take `rewind_iteration`"),
        ("[[arms]]\nname = \"a\"\nkind = \"lr-rewind\"\niterations = 500\n", "must be at most `train.iterations`"),
        ("[[arms]]\nname = \"a\"\nkind = \"gradual\"\n", "need `prune.schedule = \"gradual\"`"),
        ("[[arms]]\nname = \"a\"\nkind = \"rewind\"\nstart_at = \"rewind\"\n", "does not take `start_at`"),
        ("[[arms]]\nname = \"f\"\nkind = \"finetune\"\n[[arms]]\nname = \"r\"\nkind = \"reinit\"\nsibling = \"f\"\nstart_at = \"rewind\"\n", "its sibling `f` is a \"finetune\" arm, which has no rewind point"),
        ("[[arms]]\nname = \"a\"\nkind = \"rewind\"\n[[arms]]\nname = \"r\"\nkind = \"reinit\"\nsibling = \"a\"\nstart_at = \"end\"\n", "start_at"),
    ];
    for (arms, needle) in cases {
        std::fs::write(tmp.path().join("exp.toml"), small_config(&data, arms)).unwrap();
        let out = lth(
            tmp.path(),
            &["run", "--config", "exp.toml", "--run-dir", "run"],
        );
        common::assert_one_line_error(&out, needle);
    }
}
