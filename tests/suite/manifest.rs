//! The SHA-256 manifest of a run dir (`manifest.sha256`, `manifest.toml`): a complete run lists
//! its config, tensor files and CSVs in a form `sha256sum -c` checks; a changed or missing file
//! of a completed round is refused by `lth report`, `lth export`, `lth prune-curve` and `lth run`
//! with one line, nothing on disk changed; runs stopped around the manifest's write, or made
//! before manifests, end with the bytes of an uninterrupted run; rows of an arm or seed the
//! config lacks are refused.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{
    assert_one_line_error, assert_success, different_files, experiment_dir, lth, run_in,
    small_config, snapshot, snapshot_all,
};

/// The small config (arm `rewind`, seeds 0 and 1, rounds 0..=2) run to completion in `run`.
fn finished() -> (tempfile::TempDir, PathBuf) {
    let tmp = experiment_dir(|data| small_config(data, ""));
    let out = run_in(tmp.path(), "run").output().unwrap();
    assert_success(&out, "lth run");
    let run = tmp.path().join("run");
    (tmp, run)
}

/// Every file of a run dir, bytes included, but its lock (which a refused `lth run` takes).
fn untouched(run: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = snapshot_all(run);
    files.remove(".lock");
    files
}

/// `lth report RUN` into `nb/` and `plots/`.
fn report(root: &Path, run: &str) -> std::process::Output {
    lth(
        root,
        &["report", run, "--data-dir", "nb", "--plots-dir", "plots"],
    )
}

#[test]
fn a_complete_run_lists_its_files_in_a_manifest_that_sha256sum_checks() {
    let (_tmp, run) = finished();
    let text = std::fs::read_to_string(run.join("manifest.sha256")).unwrap();
    let paths: Vec<String> = text
        .lines()
        .map(|line| {
            let (hash, path) = line.split_once("  ").unwrap();
            assert_eq!(hash.len(), 64, "{line}");
            path.to_string()
        })
        .collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "sorted by path");
    let left_out = [
        "timings.csv",
        "progress.toml",
        "manifest.sha256",
        "manifest.toml",
        ".lock",
    ];
    let expected: BTreeSet<String> = snapshot_all(&run)
        .into_keys()
        .filter(|p| !left_out.contains(&p.as_str()) && !p.ends_with(".png") && !p.ends_with(".svg"))
        .collect();
    assert_eq!(paths.iter().cloned().collect::<BTreeSet<_>>(), expected);
    for listed in [
        "config.toml",
        "rounds.csv",
        "curves.csv",
        "layers.csv",
        "seed_0/theta_0.safetensors",
        "seed_1/round_00/start.safetensors",
        "seed_1/rewind/round_02/weights.safetensors",
        "seed_0/rewind/round_01/mask.safetensors",
    ] {
        assert!(paths.iter().any(|p| p == listed), "{listed} is listed");
    }
    match Command::new("sha256sum")
        .args(["--check", "--strict", "--quiet", "manifest.sha256"])
        .current_dir(&run)
        .output()
    {
        Ok(out) => assert_success(&out, "sha256sum -c manifest.sha256"),
        Err(e) => eprintln!("sha256sum not run ({e})"),
    }
    // Each CSV's last prefix is the whole file.
    let prefixes: toml::Table =
        toml::from_str(&std::fs::read_to_string(run.join("manifest.toml")).unwrap()).unwrap();
    for csv in ["rounds.csv", "curves.csv", "layers.csv"] {
        let bytes = prefixes[csv]["bytes"].as_array().unwrap();
        assert_eq!(bytes.len(), 3, "{csv}: one prefix per round");
        let len = std::fs::metadata(run.join(csv)).unwrap().len();
        assert_eq!(bytes[2].as_integer(), Some(len as i64), "{csv}");
    }
}

/// Asserts that `lth report`, `lth export` (of `arm`, `seed`, `round`), `lth prune-curve` (of
/// that round) and `lth run` refuse
/// the run dir `run` in `root` with one line holding `needle`, writing nothing.
fn assert_refused_everywhere(root: &Path, (arm, seed, round): (&str, &str, &str), needle: &str) {
    let run = root.join("run");
    let before = untouched(&run);
    assert_one_line_error(&report(root, "run"), needle);
    assert!(!root.join("nb").exists(), "no tidy data from a damaged run");
    let export = [
        "export",
        "run",
        "--arm",
        arm,
        "--seed",
        seed,
        "--round",
        round,
        "--out",
        "x.safetensors",
    ];
    assert_one_line_error(&lth(root, &export), needle);
    assert!(!root.join("x.safetensors").exists(), "nothing exported");
    let mut study = vec!["prune-curve", "run", "--round", round, "--data-dir", "nb"];
    if round != "0" {
        study.extend(["--arm", arm]);
    }
    study.extend(["--plots-dir", "plots", "--device", "cpu", "--threads", "1"]);
    assert_one_line_error(&lth(root, &study), needle);
    assert!(!root.join("nb").exists(), "no prune curve of a damaged run");
    assert_one_line_error(&run_in(root, "run").output().unwrap(), needle);
    assert!(before == untouched(&run), "nothing in the run dir changed");
}

#[test]
fn a_changed_or_missing_file_of_a_completed_round_is_refused_by_report_export_and_run() {
    let (tmp, run) = finished();
    let root = tmp.path();
    // One flipped bit in the middle of round 1's weights: the file still reads as tensors.
    let weights = run.join("seed_0/rewind/round_01/weights.safetensors");
    let good = std::fs::read(&weights).unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 1;
    std::fs::write(&weights, &bad).unwrap();
    assert_refused_everywhere(
        root,
        ("rewind", "0", "1"),
        "error: run/seed_0/rewind/round_01/weights.safetensors does not match its SHA-256 in run/manifest.sha256 (changed since its round completed): restore it from a copy, or remove the run dir to start over",
    );
    std::fs::write(&weights, &good).unwrap();

    // A listed file that is missing.
    let mask = run.join("seed_1/round_00/mask.safetensors");
    let saved = std::fs::read(&mask).unwrap();
    std::fs::remove_file(&mask).unwrap();
    assert_refused_everywhere(
        root,
        ("rewind", "1", "0"),
        "error: run/seed_1/round_00/mask.safetensors is missing, but run/manifest.sha256 lists it",
    );
    std::fs::write(&mask, saved).unwrap();

    // A changed value in a row of a completed round: the report checks rounds.csv whole, the
    // run its rows of the completed rounds.
    let rounds = std::fs::read_to_string(run.join("rounds.csv")).unwrap();
    let dot = rounds.find("0.").unwrap() + 2;
    let digit = if &rounds[dot..=dot] == "1" { "2" } else { "1" };
    let changed = format!("{}{digit}{}", &rounds[..dot], &rounds[dot + 1..]);
    std::fs::write(run.join("rounds.csv"), changed).unwrap();
    let before = untouched(&run);
    assert_one_line_error(
        &report(root, "run"),
        "error: run/rounds.csv does not match its SHA-256 in run/manifest.sha256",
    );
    assert_one_line_error(
        &run_in(root, "run").output().unwrap(),
        "error: run/rounds.csv does not match its SHA-256 in run/manifest.toml (its rows of rounds 0..=2 changed since they were written): restore it from a copy, or delete it",
    );
    assert!(before == untouched(&run), "nothing in the run dir changed");
    std::fs::write(run.join("rounds.csv"), rounds).unwrap();
    assert_success(&report(root, "run"), "lth report of the restored run");
}

/// A quiet `lth run` into `dir` under `root`.
fn quiet_run(root: &Path, dir: &str) -> Command {
    let mut cmd = run_in(root, dir);
    cmd.arg("--quiet")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

#[test]
fn runs_stopped_around_the_manifest_or_made_before_manifests_end_with_the_same_bytes() {
    let tmp = experiment_dir(|data| small_config(data, ""));
    let root = tmp.path();
    let log = root.join("writes.log");
    let status = quiet_run(root, "reference")
        .env("LTH_WRITE_LOG", &log)
        .status()
        .unwrap();
    assert!(status.success());
    let reference = snapshot(&root.join("reference"));
    let writes = std::fs::read_to_string(&log).unwrap();
    // The atomic write (numbered from 1) of `file` after round 1.
    let round1 = |file: &str| {
        let numbers: Vec<usize> = writes
            .lines()
            .enumerate()
            .filter(|(_, w)| w.ends_with(&format!("reference/{file}")))
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(numbers.len(), 3, "{file} written once per round");
        numbers[1]
    };
    assert!(round1("manifest.toml") < round1("manifest.sha256"));
    assert!(round1("manifest.sha256") < round1("progress.toml"));
    let cases = [
        ("toml-only", round1("manifest.toml"), false),
        ("before-progress", round1("manifest.sha256"), false),
        ("made-before-manifests", round1("progress.toml"), true),
    ];
    for (dir, write, legacy) in cases {
        let status = quiet_run(root, dir)
            .env("LTH_FAULT_INJECT", format!("after:{write}"))
            .status()
            .unwrap();
        assert!(!status.success(), "{dir}: stopped after write {write}");
        if legacy {
            for file in ["manifest.sha256", "manifest.toml"] {
                std::fs::remove_file(root.join(dir).join(file)).unwrap();
            }
        }
        assert!(quiet_run(root, dir).status().unwrap().success(), "{dir}");
        let differing = different_files(&reference, &snapshot(&root.join(dir)));
        assert!(differing.is_empty(), "{dir}: {differing:?}");
    }

    // A complete run dir without a manifest is read as it is; `lth run` writes its manifest.
    let dir = root.join("toml-only");
    for file in ["manifest.sha256", "manifest.toml"] {
        std::fs::remove_file(dir.join(file)).unwrap();
    }
    assert_success(&report(root, "toml-only"), "lth report without a manifest");
    assert!(quiet_run(root, "toml-only").status().unwrap().success());
    assert!(different_files(&reference, &snapshot(&dir)).is_empty());
}

#[test]
fn rows_of_an_arm_or_seed_the_config_lacks_are_refused_by_report_and_run() {
    let (tmp, run) = finished();
    let root = tmp.path();
    let rounds = std::fs::read_to_string(run.join("rounds.csv")).unwrap();
    let last = rounds.lines().last().unwrap();
    let mut fields: Vec<&str> = last.split(',').collect();
    fields[0] = "ghost";
    let ghost = fields.join(",");
    fields[0] = "rewind";
    fields[1] = "7";
    let seven = fields.join(",");
    for (row, needle) in [
        (ghost, "error: run/rounds.csv holds rows of arm `ghost`, which the run's config.toml does not have (arms: rewind)"),
        (seven, "error: run/rounds.csv holds rows of seed 7, which the run's config.toml does not have (seeds: 0, 1)"),
    ] {
        std::fs::write(run.join("rounds.csv"), format!("{rounds}{row}\n")).unwrap();
        let before = untouched(&run);
        assert_one_line_error(&report(root, "run"), needle);
        assert_one_line_error(&run_in(root, "run").output().unwrap(), needle);
        assert!(before == untouched(&run), "nothing in the run dir changed");
    }
}
