//! The bad-input corpus: every folder of `tests/bad_inputs/` holds one malformed input (data
//! files, a config, command-line arguments or a run dir) and `case.toml` with the exact error
//! line `lth` must print. The test builds a working folder from good data written here plus the
//! case's files, runs `lth`, and checks: exactly that line on stderr, a non-zero exit, no panic,
//! and an existing run dir left byte for byte as it was.
//!
//! Run with `LTH_CORPUS_PRINT=1` to print every case's actual error instead of checking.

use crate::common;

use std::path::{Path, PathBuf};

use common::{lth, snapshot_all, write_cifar, write_dataset};

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

/// Runs one case in a fresh working folder; returns (stderr, exit success, run dir changed).
fn run_case(dir: &Path, case: &toml::Table) -> (String, bool, bool) {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let data = work.join("data");
    match case.get("data").and_then(|v| v.as_str()) {
        Some("idx") => write_dataset(&data, 300, 60, false),
        Some("cifar") => write_cifar(&data, 9, 9),
        _ => {}
    }
    copy_tree(dir, work);
    for rel in case
        .get("remove")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        std::fs::remove_file(work.join(rel.as_str().unwrap())).unwrap();
    }
    if let Some(other) = case.get("other_config").and_then(|v| v.as_table()) {
        // A run dir made by the same config with these keys changed.
        let sets: Vec<String> = other.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["config", "--config", "exp.toml"];
        for s in &sets {
            args.extend(["--set", s.as_str()]);
        }
        let out = lth(work, &args);
        let text = String::from_utf8_lossy(&out.stdout);
        let toml: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(work.join("run/config.toml"), toml).unwrap();
    }
    let run = work.join("run");
    let before = run.exists().then(|| snapshot_all(&run));
    let args: Vec<String> = case["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let out = lth(work, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let changed = before.is_some_and(|b| b != snapshot_all(&run));
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
        changed,
    )
}

#[test]
fn every_bad_input_gets_its_exact_error_line() {
    let root = common::repo_root().join("tests/bad_inputs");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.toml").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 25, "at least 25 cases ({} found)", dirs.len());
    let print = std::env::var_os("LTH_CORPUS_PRINT").is_some();
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let case: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.join("case.toml")).unwrap()).unwrap();
        if case.get("requires_no_cuda").and_then(|v| v.as_bool()) == Some(true)
            && tch::Cuda::is_available()
        {
            continue; // `--device cuda` is valid where CUDA exists.
        }
        let (stderr, success, changed) = run_case(dir, &case);
        if print {
            println!("{name}: {}", stderr.trim_end());
            continue;
        }
        let expected = case["error"].as_str().unwrap();
        let lines: Vec<&str> = stderr.lines().collect();
        if success || lines != [expected] || stderr.contains("panicked") || changed {
            failures.push(format!(
                "{name}: expected {expected:?} and a failure, got {:?} (success {success}, run dir changed {changed})",
                stderr.trim_end()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
