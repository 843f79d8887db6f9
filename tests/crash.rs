//! Crash anywhere: a run is stopped at many points (SIGKILL at moments spread over the run, and
//! aborts injected right after an atomic write or between writing a temporary file and
//! renaming it: while CSVs, masks and weights are being written), rerun each time, and must
//! end with every CSV, mask and weights file byte-identical to an uninterrupted run, with no
//! temporary file left. Checkpoints are taken at every evaluation point, so most stops resume
//! mid-round from a checkpoint. CI runs 6 points; `LTH_CRASH_POINTS=24 cargo test --release
//! --test crash` runs more.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{different_files, lth_bin, small_config, snapshot, write_dataset};

const ARMS: &str = "[[arms]]\nname = \"rewind\"\nkind = \"rewind\"\n[[arms]]\nname = \"reinit\"\nkind = \"reinit\"\nsibling = \"rewind\"\n";

fn command(root: &Path, dir: &str) -> Command {
    let mut cmd = Command::new(lth_bin());
    cmd.args([
        "run",
        "--config",
        "exp.toml",
        "--run-dir",
        dir,
        "--device",
        "cpu",
        "--quiet",
        "--checkpoint-minutes",
        "0",
    ])
    .current_dir(root)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

/// A folder holding a small IDX data set (`data/`) and `exp.toml`, the small config with the
/// rewind and reinit arms.
fn experiment_folder() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 500, 100, false);
    std::fs::write(tmp.path().join("exp.toml"), small_config(&data, ARMS)).unwrap();
    tmp
}

/// The numbers (from 1, as `LTH_FAULT_INJECT` counts them) of the atomic writes in the write
/// log `log` whose path contains `part`.
fn write_numbers(log: &Path, part: &str) -> Vec<usize> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, w)| w.contains(part))
        .map(|(i, _)| i + 1)
        .collect()
}

#[test]
fn runs_stopped_anywhere_and_rerun_end_with_the_same_bytes() {
    let points: usize = std::env::var("LTH_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let tmp = experiment_folder();
    let root = tmp.path();

    // The uninterrupted reference, counting its atomic writes and timing it.
    let log = root.join("writes.log");
    let started = Instant::now();
    let status = command(root, "reference")
        .env("LTH_WRITE_LOG", &log)
        .status()
        .unwrap();
    assert!(status.success());
    let duration = started.elapsed();
    let writes = std::fs::read_to_string(&log).unwrap().lines().count() as u64;
    assert!(
        writes > 40,
        "the run writes CSVs, masks and weights ({writes} writes)"
    );
    let reference = snapshot(&root.join("reference"));

    for i in 0..points {
        let dir = format!("crash{i}");
        let fraction = (i as f64 + 0.5) / points as f64;
        let how = match i % 3 {
            0 => {
                // SIGKILL at a moment spread over the run's duration.
                let mut child = command(root, &dir).spawn().unwrap();
                std::thread::sleep(duration.mul_f64(fraction));
                let _ = child.kill();
                child.wait().unwrap();
                format!("SIGKILL at {:.0}% of the run", fraction * 100.0)
            }
            k => {
                let n = ((writes as f64 * fraction) as u64).clamp(1, writes);
                let kind = if k == 1 { "after" } else { "before-rename" };
                let status = command(root, &dir)
                    .env("LTH_FAULT_INJECT", format!("{kind}:{n}"))
                    .status()
                    .unwrap();
                assert!(
                    !status.success(),
                    "the injected fault {kind}:{n} stopped the run"
                );
                format!("abort {kind} write {n} of {writes}")
            }
        };
        let status = command(root, &dir).status().unwrap();
        assert!(status.success(), "rerun after {how}");
        let differing = different_files(&reference, &snapshot(&root.join(&dir)));
        assert!(
            differing.is_empty(),
            "after {how}, files differ from the uninterrupted run: {differing:?}"
        );
    }
}

#[test]
fn a_run_stopped_mid_round_continues_from_its_checkpoint_with_the_same_bytes() {
    let tmp = experiment_folder();
    let root = tmp.path();
    let log = root.join("writes.log");
    let status = command(root, "reference")
        .env("LTH_WRITE_LOG", &log)
        .status()
        .unwrap();
    assert!(status.success());
    let reference = snapshot(&root.join("reference"));
    assert!(
        !root.join("reference/checkpoints").exists(),
        "a finished run keeps no checkpoints"
    );

    // Stop right after the second checkpoint of round 1 (iteration 80 of 120).
    let round1 = write_numbers(&log, "checkpoints/round_01/");
    assert_eq!(round1.len(), 2, "checkpoints at iterations 40 and 80");
    let status = command(root, "stopped")
        .env("LTH_FAULT_INJECT", format!("after:{}", round1[1]))
        .status()
        .unwrap();
    assert!(!status.success(), "the injected fault stopped the run");

    assert!(command(root, "stopped").status().unwrap().success());

    // The same stop again, rerun with its output shown (and the default checkpoint interval):
    // it says where it continues.
    let status = command(root, "shown")
        .env("LTH_FAULT_INJECT", format!("after:{}", round1[1]))
        .status()
        .unwrap();
    assert!(!status.success());
    let shown = Command::new(lth_bin())
        .args([
            "run",
            "--config",
            "exp.toml",
            "--run-dir",
            "shown",
            "--device",
            "cpu",
        ])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(shown.status.success());
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("round 1/2 continues from its checkpoint at iteration 80"),
        "the rerun continues mid-round: {text}"
    );
    for dir in ["stopped", "shown"] {
        let differing = different_files(&reference, &snapshot(&root.join(dir)));
        assert!(
            differing.is_empty(),
            "{dir}: files differ from the uninterrupted run: {differing:?}"
        );
    }
}

#[test]
fn a_gradual_run_stopped_mid_way_continues_from_its_checkpoint_with_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("data");
    write_dataset(&data, 500, 100, false);
    // Pruning steps at 20, 50, 80 over 120 iterations, evaluated there and every 40:
    // checkpoints at 20, 40, 50 and 80.
    let gradual = "[[arms]]\nname = \"gmp\"\nkind = \"gradual\"\n";
    let config = small_config(&data, gradual).replace(
        "rounds = 2\n",
        "schedule = \"gradual\"\ngradual = { initial_sparsity = 0.1, final_sparsity = 0.8, start = 20, end = 80, every = 30 }\n",
    );
    std::fs::write(root.join("exp.toml"), config).unwrap();
    let log = root.join("writes.log");
    let status = command(root, "reference")
        .env("LTH_WRITE_LOG", &log)
        .status()
        .unwrap();
    assert!(status.success());
    let reference = snapshot(&root.join("reference"));
    assert!(reference.contains_key("seed_0/gmp/round_03/mask.safetensors"));
    assert!(!reference.contains_key("seed_0/gmp/round_04/mask.safetensors"));

    // Stop right after the checkpoint at iteration 40, between two pruning steps: the
    // stretch ending at 20 is on disk, the one ending at 50 is not.
    let checkpoint_writes = write_numbers(&log, "checkpoints/round_00/gradual");
    assert_eq!(checkpoint_writes.len(), 4, "checkpoints at 20, 40, 50, 80");
    let status = command(root, "stopped")
        .env(
            "LTH_FAULT_INJECT",
            format!("after:{}", checkpoint_writes[1]),
        )
        .status()
        .unwrap();
    assert!(!status.success(), "the injected fault stopped the run");
    let rerun = Command::new(lth_bin())
        .args([
            "run",
            "--config",
            "exp.toml",
            "--run-dir",
            "stopped",
            "--device",
            "cpu",
        ])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(rerun.status.success());
    let text = String::from_utf8_lossy(&rerun.stdout);
    assert!(
        text.contains("continues from its checkpoint at iteration 40"),
        "the rerun continues mid-way: {text}"
    );
    let differing = different_files(&reference, &snapshot(&root.join("stopped")));
    assert!(
        differing.is_empty(),
        "files differ from the uninterrupted run: {differing:?}"
    );
}

#[test]
fn late_rewinding_with_restored_optimizer_state_continues_from_checkpoints_with_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("data");
    write_dataset(&data, 500, 100, false);
    // Rewind to iteration 40 with the optimizer state saved there: round 0's checkpoint at 80
    // holds the snapshot at 40 (weights and optimizer state), round 1 trains 40..120.
    let late = "[[arms]]\nname = \"late\"\nkind = \"rewind\"\nrewind_iteration = 40\nrestore_optimizer = true\n";
    std::fs::write(root.join("exp.toml"), small_config(&data, late)).unwrap();
    let log = root.join("writes.log");
    let status = command(root, "reference")
        .env("LTH_WRITE_LOG", &log)
        .status()
        .unwrap();
    assert!(status.success());
    let reference = snapshot(&root.join("reference"));
    assert!(reference.contains_key("seed_0/optimizer_40.safetensors"));

    let dense = write_numbers(&log, "checkpoints/round_00/dense");
    let pruned = write_numbers(&log, "checkpoints/round_01/from_40_to_120_optimizer_40");
    assert_eq!(dense.len(), 2, "round 0: checkpoints at 40 and 80");
    assert_eq!(pruned.len(), 1, "round 1: a checkpoint at 80");
    for (dir, write, line) in [
        (
            "dense",
            dense[1],
            "round 0/2 continues from its checkpoint at iteration 80",
        ),
        (
            "pruned",
            pruned[0],
            "round 1/2 continues from its checkpoint at iteration 80",
        ),
    ] {
        let status = command(root, dir)
            .env("LTH_FAULT_INJECT", format!("after:{write}"))
            .status()
            .unwrap();
        assert!(
            !status.success(),
            "{dir}: the injected fault stopped the run"
        );
        let rerun = Command::new(lth_bin())
            .args([
                "run",
                "--config",
                "exp.toml",
                "--run-dir",
                dir,
                "--device",
                "cpu",
            ])
            .current_dir(root)
            .output()
            .unwrap();
        assert!(rerun.status.success());
        let text = String::from_utf8_lossy(&rerun.stdout);
        assert!(
            text.contains(line),
            "{dir}: the rerun continues mid-round: {text}"
        );
        let differing = different_files(&reference, &snapshot(&root.join(dir)));
        assert!(
            differing.is_empty(),
            "{dir}: files differ from the uninterrupted run: {differing:?}"
        );
    }
}
