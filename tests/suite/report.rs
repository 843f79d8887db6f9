//! `lth report` on a hand-made fixture run: summary statistics equal values computed by hand,
//! every arm appears in every figure, the SVG is byte-stable (twice the same bytes, and the
//! committed snapshot), partial runs are named, and pandas reads every tidy file with no
//! options.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{lth, read_csv};
use lth::config::{ArmConfig, ArmKind, Experiment};
use lth::record::{CURVES, LAYERS, ROUNDS};

/// Test accuracies by (arm, round) for seeds 0, 1, 2: mean, std, min, max are easy by hand.
fn accuracy(arm: &str, round: u32, seed: u64) -> f64 {
    let base = if arm == "rewind" { 0.80 } else { 0.70 };
    base + 0.01 * f64::from(round) + 0.1 * seed as f64
}

/// Writes a run dir of 2 arms x 3 seeds x rounds 0..=2 (of 3 configured: partial).
fn fixture(root: &Path, name: &str, strategy: &str) -> PathBuf {
    let mut exp = Experiment {
        name: name.into(),
        seeds: vec![0, 1, 2],
        ..Default::default()
    };
    exp.prune.rounds = 3;
    exp.prune.scope = if strategy == "global" {
        lth::config::PruneScope::Global
    } else {
        lth::config::PruneScope::Layerwise
    };
    let mut reinit = ArmConfig::new("reinit", ArmKind::Reinit);
    reinit.sibling = Some("rewind".into());
    exp.arms = vec![ArmConfig::new("rewind", ArmKind::Rewind), reinit];
    let dir = root.join(format!("{name}-fixture"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), exp.to_toml()).unwrap();
    std::fs::write(dir.join("progress.toml"), "rounds_completed = 3\n").unwrap();
    let mut rounds = csv::Writer::from_path(dir.join("rounds.csv")).unwrap();
    let mut curves = csv::Writer::from_path(dir.join("curves.csv")).unwrap();
    let mut layers = csv::Writer::from_path(dir.join("layers.csv")).unwrap();
    rounds.write_record(ROUNDS).unwrap();
    curves.write_record(CURVES).unwrap();
    layers.write_record(LAYERS).unwrap();
    for arm in ["rewind", "reinit"] {
        for round in 0..3u32 {
            let remaining = [1000u64, 800, 640][round as usize];
            let pct = remaining as f64 / 10.0;
            for seed in 0..3u64 {
                let acc = accuracy(arm, round, seed);
                let es_it = 100 * (3 - round as u64) + 10 * seed;
                let row: Vec<String> = vec![
                    arm.into(),
                    seed.to_string(),
                    round.to_string(),
                    remaining.to_string(),
                    "1000".into(),
                    format!("{pct}"),
                    String::new(),
                    "0.5".into(),
                    format!("{acc}"),
                    "0.6".into(),
                    format!("{acc}"),
                    es_it.to_string(),
                    "0.4".into(),
                    format!("{acc}"),
                    format!("{}", acc + 0.01),
                    String::new(),
                    // units, parameters, multiply-adds (one per weight) and their percent;
                    // training multiply-adds (the round's, and all it needed).
                    String::new(),
                    remaining.to_string(),
                    remaining.to_string(),
                    format!("{pct}"),
                    (remaining * 1000).to_string(),
                    (remaining * 1000).to_string(),
                ];
                rounds.write_record(&row).unwrap();
                for it in [0u64, 100, 200, 300] {
                    let a = acc * (0.5 + it as f64 / 600.0);
                    curves
                        .write_record([
                            arm.to_string(),
                            seed.to_string(),
                            round.to_string(),
                            format!("{pct}"),
                            it.to_string(),
                            if it == 0 { String::new() } else { "0.7".into() },
                            "0.5".into(),
                            format!("{a}"),
                            "0.6".into(),
                            format!("{a}"),
                        ])
                        .unwrap();
                }
                for (layer, total) in [("fc1.weight", 900u64), ("fc2.weight", 100)] {
                    let kept = total * remaining / 1000;
                    layers
                        .write_record([
                            arm.to_string(),
                            seed.to_string(),
                            round.to_string(),
                            layer.to_string(),
                            kept.to_string(),
                            total.to_string(),
                            format!("{}", 100.0 * kept as f64 / total as f64),
                        ])
                        .unwrap();
                }
            }
        }
    }
    dir
}

fn report(root: &Path, runs: &[&Path], name: &str) -> String {
    let mut args = vec!["report".to_string()];
    args.extend(runs.iter().map(|r| r.display().to_string()));
    args.extend([
        "--name".into(),
        name.into(),
        "--data-dir".into(),
        "nb".into(),
        "--plots-dir".into(),
        "pl".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lth(root, &args);
    common::assert_success(&out, "lth report");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn summary_statistics_match_values_computed_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let run = fixture(tmp.path(), "fx", "layerwise");
    report(tmp.path(), &[&run], "one");
    let (header, rows) = read_csv(&tmp.path().join("nb/one/summary.csv"));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let find = |arm: &str, round: &str, metric: &str| {
        rows.iter()
            .find(|r| {
                r[col("arm")] == arm && r[col("round")] == round && r[col("metric")] == metric
            })
            .unwrap_or_else(|| panic!("summary row {arm} {round} {metric}"))
            .clone()
    };
    let num = |r: &Vec<String>, c: &str| r[col(c)].parse::<f64>().unwrap();
    // rewind, round 1: accuracies 0.81, 0.91, 1.01 -> mean 0.91, std 0.1, min 0.81, max 1.01.
    let r = find("rewind", "1", "test_accuracy");
    assert_eq!(r[col("n")], "3");
    assert!((num(&r, "mean") - 0.91).abs() < 1e-12);
    assert!((num(&r, "std") - 0.1).abs() < 1e-12);
    assert!((num(&r, "min") - 0.81).abs() < 1e-12);
    assert!((num(&r, "max") - 1.01).abs() < 1e-12);
    assert_eq!(num(&r, "weights_remaining_pct"), 80.0);
    // reinit, round 2, early-stop iteration: 100, 110, 120 -> mean 110, std 10.
    let r = find("reinit", "2", "early_stop_iteration");
    assert_eq!(
        (
            num(&r, "mean"),
            num(&r, "std"),
            num(&r, "min"),
            num(&r, "max")
        ),
        (110.0, 10.0, 100.0, 120.0)
    );
    // The early-stop accuracy is the test accuracy + 0.01: reinit round 2 has 0.72, 0.82,
    // 0.92 + 0.01, mean 0.83.
    assert!((num(&find("reinit", "2", "early_stop_test_accuracy"), "mean") - 0.83).abs() < 1e-12);
    // train_loss is empty in every row: no summary row for it.
    assert!(!rows.iter().any(|r| r[col("metric")] == "train_loss"));
    // rounds.csv carries config keys and the row's arm settings.
    let (h, rows) = read_csv(&tmp.path().join("nb/one/rounds.csv"));
    for key in [
        "run",
        "experiment",
        "train.lr",
        "prune.strategy",
        "arm.kind",
        "arm.sibling",
    ] {
        assert!(h.iter().any(|c| c == key), "rounds.csv has column {key}");
    }
    let sib = h.iter().position(|c| c == "arm.sibling").unwrap();
    let arm = h.iter().position(|c| c == "arm").unwrap();
    assert!(rows
        .iter()
        .all(|r| (r[arm] == "reinit") == (r[sib] == "rewind")));
    // Settings are the ones the arm trains with: defaults filled in where the config leaves
    // them unset, empty where the kind does not take them.
    let cell = |name: &str, key: &str| {
        let c = h.iter().position(|c| c == key).unwrap();
        rows.iter().find(|r| r[arm] == name).unwrap()[c].clone()
    };
    let lr = cell("rewind", "train.lr");
    assert_eq!(cell("reinit", "arm.start_at"), "init");
    assert_eq!(cell("reinit", "arm.lr"), lr);
    assert_eq!(cell("reinit", "arm.rewind_iteration"), "");
    assert_eq!(cell("rewind", "arm.rewind_iteration"), "0");
    assert_eq!(cell("rewind", "arm.start_at"), "");
}

#[test]
fn every_arm_is_in_every_figure_and_svg_bytes_are_stable() {
    let tmp = tempfile::tempdir().unwrap();
    let run = fixture(tmp.path(), "fx", "layerwise");
    report(tmp.path(), &[&run], "a");
    report(tmp.path(), &[&run], "b");
    for figure in ["accuracy", "early_stop_iteration", "curves", "layers"] {
        let a = std::fs::read_to_string(tmp.path().join(format!("pl/a/{figure}.svg"))).unwrap();
        let b = std::fs::read_to_string(tmp.path().join(format!("pl/b/{figure}.svg"))).unwrap();
        assert_eq!(a, b, "{figure}.svg is byte-stable");
        for arm in ["rewind", "reinit"] {
            let named = a
                .lines()
                .filter(|l| !l.trim_start().starts_with('<'))
                .any(|l| {
                    l.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
                        .any(|w| w == arm)
                });
            assert!(named, "{arm} appears as text in {figure}.svg");
        }
        let png = std::fs::read(tmp.path().join(format!("pl/a/{figure}.png"))).unwrap();
        assert_eq!(&png[..4], b"\x89PNG");
    }
    // The committed snapshot (regenerate with UPDATE_SNAPSHOTS=1 after a deliberate change).
    let snapshot = common::repo_root().join("tests/snapshots/report_accuracy.svg");
    let now = std::fs::read_to_string(tmp.path().join("pl/a/accuracy.svg")).unwrap();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, &now).unwrap();
    }
    let expected =
        std::fs::read_to_string(&snapshot).expect("snapshot exists (UPDATE_SNAPSHOTS=1 makes it)");
    assert!(
        expected == now,
        "accuracy.svg differs from tests/snapshots/report_accuracy.svg"
    );
}

#[test]
fn several_runs_get_a_comparison_labelled_by_their_differences_and_partials_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let a = fixture(tmp.path(), "layerwise", "layerwise");
    let b = fixture(tmp.path(), "global", "global");
    std::fs::write(b.join("progress.toml"), "rounds_completed = 2\n").unwrap();
    let stdout = report(tmp.path(), &[&a, &b], "both");
    assert!(
        stdout.contains("partial run global-fixture: 2 of 4 rounds complete"),
        "{stdout}"
    );
    assert!(
        stdout.contains("partial run layerwise-fixture: 3 of 4 rounds complete"),
        "{stdout}"
    );
    let svg = std::fs::read_to_string(tmp.path().join("pl/both/accuracy_across_runs.svg")).unwrap();
    assert!(
        svg.contains("prune.strategy=global") && svg.contains("prune.strategy=layerwise"),
        "labels name the difference"
    );
    for run in ["layerwise-fixture", "global-fixture"] {
        assert!(tmp
            .path()
            .join(format!("pl/both/{run}/accuracy.svg"))
            .exists());
    }
    // Every row counts its multiply-adds: the same comparison against FLOPs remaining.
    let flops = tmp.path().join("pl/both/accuracy_vs_flops_across_runs.svg");
    let svg = std::fs::read_to_string(&flops).unwrap();
    assert!(svg.contains("multiply-adds remaining (%)"));
    // A run whose rows lack them (an older lth, or VGG / ResNet) gets none.
    let rows = std::fs::read_to_string(b.join("rounds.csv")).unwrap();
    let cut: String = rows
        .lines()
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            format!("{}\n", cells[..cells.len() - 4].join(","))
        })
        .collect();
    std::fs::write(b.join("rounds.csv"), cut).unwrap();
    report(tmp.path(), &[&a, &b], "older");
    assert!(tmp
        .path()
        .join("pl/older/accuracy_across_runs.svg")
        .exists());
    assert!(!tmp
        .path()
        .join("pl/older/accuracy_vs_flops_across_runs.svg")
        .exists());
    let (_, runs) = read_csv(&tmp.path().join("nb/both/runs.csv"));
    assert_eq!(runs.len(), 2);
    let (_, rounds) = read_csv(&tmp.path().join("nb/both/rounds.csv"));
    assert_eq!(rounds.len(), 2 * 2 * 3 * 3, "both runs' rows");
}

#[test]
fn pandas_reads_every_tidy_file_without_options() {
    let tmp = tempfile::tempdir().unwrap();
    let run = fixture(tmp.path(), "fx", "layerwise");
    report(tmp.path(), &[&run], "pd");
    let py = std::env::var_os("LTH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join(".venv/bin/python"));
    let script = r#"
import sys, pandas as pd
d = sys.argv[1]
expect = {"runs.csv": 1, "rounds.csv": 18, "summary.csv": 2 * 3 * 9, "curves.csv": 72, "layers.csv": 36}
numeric = {"rounds.csv": ["seed", "round", "weights_remaining_pct", "test_accuracy", "train.lr"],
           "summary.csv": ["round", "n", "mean", "std", "min", "max"],
           "curves.csv": ["iteration", "test_accuracy", "train_loss"],
           "layers.csv": ["remaining", "remaining_pct"],
           "runs.csv": ["rounds_completed", "rounds_expected"]}
for name, n in expect.items():
    df = pd.read_csv(f"{d}/{name}")
    assert len(df) == n, (name, len(df))
    for c in numeric[name]:
        assert pd.api.types.is_numeric_dtype(df[c]), (name, c, df[c].dtype)
assert pd.read_csv(f"{d}/runs.csv")["partial"].dtype == bool
print("ok")
"#;
    let out = Command::new(&py)
        .arg("-c")
        .arg(script)
        .arg(tmp.path().join("nb/pd"))
        .output()
        .unwrap();
    common::assert_success(&out, "pandas");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn report_errors_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    common::assert_one_line_error(
        &lth(tmp.path(), &["report", "nowhere"]),
        "nowhere is not an lth run dir",
    );
    let run = fixture(tmp.path(), "fx", "layerwise");
    let r = run.display().to_string();
    common::assert_one_line_error(&lth(tmp.path(), &["report", &r, &r]), "is given twice");
    // Another run dir of the same name would mix two runs' rows under one label.
    let twin = fixture(&tmp.path().join("elsewhere"), "fx", "layerwise");
    let t = twin.display().to_string();
    common::assert_one_line_error(
        &lth(tmp.path(), &["report", &r, &t]),
        "have the same name `fx-fixture`",
    );
    common::assert_one_line_error(
        &lth(tmp.path(), &["report", &r, "--rounds", "0,9"]),
        "`--rounds` asks for round 9, but the runs' rounds are 0 to 3",
    );
    // A name that is not one folder name would write outside --data-dir / --plots-dir.
    for name in ["../x", "a/b", "..", ""] {
        common::assert_one_line_error(
            &lth(tmp.path(), &["report", &r, "--name", name]),
            "must be one folder name",
        );
    }
    assert!(!tmp.path().join("x").exists());
    assert!(
        !tmp.path().join("notebooks-data").exists() && !tmp.path().join("plots").exists(),
        "nothing is written for a refused report"
    );
}

#[test]
fn early_stop_steps_count_from_the_rounds_start_and_are_summarised() {
    let tmp = tempfile::tempdir().unwrap();
    let run = fixture(tmp.path(), "fx", "layerwise");
    // Rewind to θ_50: pruned rounds of `rewind` train from iteration 50; `reinit` from 0.
    let mut exp = Experiment::from_saved(&run.join("config.toml")).unwrap();
    exp.arms[0].rewind_iteration = 50;
    std::fs::write(run.join("config.toml"), exp.to_toml()).unwrap();
    report(tmp.path(), &[&run], "steps");
    let (h, rows) = read_csv(&tmp.path().join("nb/steps/rounds.csv"));
    let c = |n: &str| h.iter().position(|x| x == n).unwrap();
    for row in &rows {
        let (round, seed): (u64, u64) = (
            row[c("round")].parse().unwrap(),
            row[c("seed")].parse().unwrap(),
        );
        let start = if row[c("arm")] == "rewind" && round > 0 {
            50
        } else {
            0
        };
        let stop = 100 * (3 - round) + 10 * seed; // as the fixture writes it
        assert_eq!(row[c("early_stop_iteration")], stop.to_string());
        assert_eq!(row[c("start_iteration")], start.to_string(), "{row:?}");
        assert_eq!(
            row[c("early_stop_steps")],
            (stop - start).to_string(),
            "{row:?}"
        );
    }
    let (h, rows) = read_csv(&tmp.path().join("nb/steps/summary.csv"));
    let c = |n: &str| h.iter().position(|x| x == n).unwrap();
    let mean = |arm: &str, round: &str| -> f64 {
        rows.iter()
            .find(|r| {
                r[c("arm")] == arm && r[c("round")] == round && r[c("metric")] == "early_stop_steps"
            })
            .unwrap()[c("mean")]
        .parse()
        .unwrap()
    };
    // Round 1 stops at 200, 210, 220: rewind trained 150-170 of them, reinit all.
    assert_eq!(mean("rewind", "1"), 160.0);
    assert_eq!(mean("reinit", "1"), 210.0);
    assert_eq!(mean("rewind", "0"), 310.0);
}
