//! Same config and seed on CPU give the same bytes: two runs of the `smoke` preset produce
//! byte-identical CSVs, masks and weights, and a run killed with SIGKILL (during round 0 and
//! again mid-way through later rounds) and rerun ends with the same bytes as an
//! uninterrupted run. Uses the real Fashion-MNIST files (`make data`). A run pinned to one
//! thread (`--threads 1`) says so and repeats its bytes.

use crate::common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{different_files, fashion_mnist_dir, read_csv, snapshot};
use lth::prune::prune_count;

fn smoke_args(run_dir: &Path, data: &Path) -> Vec<String> {
    vec![
        "run".into(),
        "--preset".into(),
        "smoke".into(),
        "--device".into(),
        "cpu".into(),
        "--run-dir".into(),
        run_dir.display().to_string(),
        "--plots-dir".into(),
        run_dir.with_extension("plots").display().to_string(),
        "--set".into(),
        format!("data.dir={}", data.display()),
    ]
}

fn run_smoke(run_dir: &Path, data: &Path) {
    let out = common::lth_command()
        .args(smoke_args(run_dir, data))
        .output()
        .unwrap();
    common::assert_success(&out, "smoke run");
}

fn spawn_smoke(run_dir: &Path, data: &Path) -> Child {
    common::lth_command()
        .args(smoke_args(run_dir, data))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn rounds_completed(run_dir: &Path) -> u32 {
    std::fs::read_to_string(run_dir.join("progress.toml"))
        .ok()
        .and_then(|t| {
            t.trim()
                .strip_prefix("rounds_completed = ")
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Starts a run, waits until `rounds` rounds are complete plus `extra`, then SIGKILLs it.
/// Returns whether it was still running when killed.
fn kill_after(run_dir: &Path, data: &Path, rounds: u32, extra: Duration) -> bool {
    let mut child = spawn_smoke(run_dir, data);
    let deadline = Instant::now() + Duration::from_secs(300);
    while rounds_completed(run_dir) < rounds && Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(extra);
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    running
}

#[test]
fn smoke_runs_are_byte_identical_and_survive_sigkill() {
    let data = fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );

    run_smoke(&a, &data);
    run_smoke(&b, &data);
    let reference = snapshot(&a);
    assert!(
        reference.contains_key("rounds.csv")
            && reference.contains_key("seed_1/rewind/round_03/mask.safetensors")
    );
    assert!(reference == snapshot(&b), "two runs of smoke differ");

    // Killed in round 0 (after start-up, while training), then mid-way through round 2.
    let killed_early = kill_after(&c, &data, 0, Duration::from_millis(2500));
    let killed_late = kill_after(&c, &data, 2, Duration::from_millis(700));
    assert!(
        killed_early || killed_late,
        "at least one kill hit a running process"
    );
    assert!(
        rounds_completed(&c) < 4,
        "the run was interrupted before finishing"
    );
    run_smoke(&c, &data);
    let differing = different_files(&reference, &snapshot(&c));
    assert!(
        differing.is_empty(),
        "resumed run differs from uninterrupted one in {differing:?}"
    );

    check_rows(&a);
}

/// One row per arm x seed x round; `weights_remaining` follows the per-layer count rule.
fn check_rows(run: &Path) {
    let (header, rows) = read_csv(&run.join("rounds.csv"));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    assert_eq!(rows.len(), 2 * 4, "2 seeds x rounds 0..=3, one arm");
    let mut layers = [235_200u64, 30_000, 1_000];
    for round in 0..4u32 {
        let total: u64 = layers.iter().sum();
        for row in rows.iter().filter(|r| r[col("round")] == round.to_string()) {
            assert_eq!(
                row[col("weights_remaining")],
                total.to_string(),
                "round {round}"
            );
            let pct: f64 = row[col("weights_remaining_pct")].parse().unwrap();
            assert_eq!(pct, 100.0 * total as f64 / 266_200.0);
            let acc: f64 = row[col("test_accuracy")].parse().unwrap();
            assert!(acc > 0.7 && acc <= 1.0, "smoke learns Fashion-MNIST: {acc}");
        }
        layers = [
            layers[0] - prune_count(layers[0], 0.2),
            layers[1] - prune_count(layers[1], 0.2),
            layers[2] - prune_count(layers[2], 0.1),
        ];
    }
}

#[test]
fn a_run_given_its_thread_count_says_so_and_repeats_its_bytes() {
    // CPU results depend on libtorch's thread count (MKL splits a matrix product's sums
    // differently), so `--threads N` is how a run's bytes are reproduced on another machine.
    let tmp = common::experiment_dir(|data| common::small_config(data, ""));
    let run = |dir: &str| {
        let out = common::run_in(tmp.path(), dir)
            .args(["--threads", "1"])
            .output()
            .unwrap();
        common::assert_success(&out, "lth run --threads 1");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run("a");
    assert!(
        first.lines().next().unwrap().contains("on cpu (1 thread)"),
        "the banner names the thread count: {first}"
    );
    run("b");
    let (a, b) = (
        snapshot(&tmp.path().join("a")),
        snapshot(&tmp.path().join("b")),
    );
    assert!(
        a == b,
        "two one-thread runs differ: {:?}",
        different_files(&a, &b)
    );
}
