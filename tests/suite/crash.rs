//! Crash anywhere: a run is stopped at many points (SIGKILL at moments spread over the run, and
//! aborts injected right after an atomic write or between writing a temporary file and
//! renaming it: while CSVs, masks and weights are being written), rerun each time, and must
//! end with every CSV, mask and weights file byte-identical to an uninterrupted run, with no
//! temporary file left. Checkpoints are taken at every evaluation point, so most stops resume
//! mid-round from a checkpoint. CI runs 6 points; `LTH_CRASH_POINTS=24 cargo test --release
//! --test suite crash::` runs more.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{different_files, experiment_dir, run_in, small_config, snapshot};

const ARMS: &str = "[[arms]]\nname = \"rewind\"\nkind = \"rewind\"\n[[arms]]\nname = \"reinit\"\nkind = \"reinit\"\nsibling = \"rewind\"\n";

/// A quiet run into `dir` taking a checkpoint at every evaluation point.
fn command(root: &Path, dir: &str) -> Command {
    let mut cmd = run_in(root, dir);
    cmd.args(["--quiet", "--checkpoint-minutes", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// The uninterrupted run `reference` in `root`: its files and the log of its atomic writes.
fn reference_run(root: &Path) -> (BTreeMap<String, Vec<u8>>, PathBuf) {
    let log = root.join("writes.log");
    let status = command(root, "reference")
        .env("LTH_WRITE_LOG", &log)
        .status()
        .unwrap();
    assert!(status.success());
    (snapshot(&root.join("reference")), log)
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

/// Stops a run into `dir` with the fault `spec` (`after:N`, `before-rename:N`).
fn stop_with(root: &Path, dir: &str, spec: &str) {
    let status = command(root, dir)
        .env("LTH_FAULT_INJECT", spec)
        .status()
        .unwrap();
    assert!(
        !status.success(),
        "{dir}: the injected fault {spec} stopped the run"
    );
}

/// Reruns `dir` with the default checkpoint interval and its output shown; what it printed.
fn rerun_shown(root: &Path, dir: &str) -> String {
    let out = run_in(root, dir).output().unwrap();
    assert!(out.status.success(), "{dir}: the rerun completes");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that `dir` ended with the reference's files, byte for byte.
fn assert_same_files(reference: &BTreeMap<String, Vec<u8>>, root: &Path, dir: &str, how: &str) {
    let differing = different_files(reference, &snapshot(&root.join(dir)));
    assert!(
        differing.is_empty(),
        "{dir}, after {how}: files differ from the uninterrupted run: {differing:?}"
    );
}

#[test]
fn runs_stopped_anywhere_and_rerun_end_with_the_same_bytes() {
    let points: usize = std::env::var("LTH_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let tmp = experiment_dir(|data| small_config(data, ARMS));
    let root = tmp.path();

    // The uninterrupted reference, counting its atomic writes and timing it.
    let started = Instant::now();
    let (reference, log) = reference_run(root);
    let duration = started.elapsed();
    let writes = std::fs::read_to_string(&log).unwrap().lines().count() as u64;
    assert!(
        writes > 40,
        "the run writes CSVs, masks and weights ({writes} writes)"
    );

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
                stop_with(root, &dir, &format!("{kind}:{n}"));
                format!("abort {kind} write {n} of {writes}")
            }
        };
        let status = command(root, &dir).status().unwrap();
        assert!(status.success(), "rerun after {how}");
        assert_same_files(&reference, root, &dir, &how);
    }
}

#[test]
fn a_run_stopped_mid_round_continues_from_its_checkpoint_with_the_same_bytes() {
    let tmp = experiment_dir(|data| small_config(data, ARMS));
    let root = tmp.path();
    let (reference, log) = reference_run(root);
    assert!(
        !root.join("reference/checkpoints").exists(),
        "a finished run keeps no checkpoints"
    );

    // Stop right after the second checkpoint of round 1 (iteration 80 of 120).
    let round1 = write_numbers(&log, "checkpoints/round_01/");
    assert_eq!(round1.len(), 2, "checkpoints at iterations 40 and 80");
    let stop = format!("after:{}", round1[1]);
    stop_with(root, "stopped", &stop);
    assert!(command(root, "stopped").status().unwrap().success());

    // The same stop again, rerun with its output shown (and the default checkpoint interval):
    // it says where it continues.
    stop_with(root, "shown", &stop);
    let text = rerun_shown(root, "shown");
    assert!(
        text.contains("round 1/2 continues from its checkpoint at iteration 80"),
        "the rerun continues mid-round: {text}"
    );
    for dir in ["stopped", "shown"] {
        assert_same_files(&reference, root, dir, &stop);
    }
}

#[test]
fn a_gradual_run_stopped_mid_way_continues_from_its_checkpoint_with_the_same_bytes() {
    // Pruning steps at 20, 50, 80 over 120 iterations, evaluated there and every 40:
    // checkpoints at 20, 40, 50 and 80.
    let gradual = "[[arms]]\nname = \"gmp\"\nkind = \"gradual\"\n";
    let tmp = experiment_dir(|data| {
        small_config(data, gradual).replace(
            "rounds = 2\n",
            "schedule = \"gradual\"\ngradual = { initial_sparsity = 0.1, final_sparsity = 0.8, start = 20, end = 80, every = 30 }\n",
        )
    });
    let root = tmp.path();
    let (reference, log) = reference_run(root);
    assert!(reference.contains_key("seed_0/gmp/round_03/mask.safetensors"));
    assert!(!reference.contains_key("seed_0/gmp/round_04/mask.safetensors"));

    // Stop right after the checkpoint at iteration 40, between two pruning steps: the
    // stretch ending at 20 is on disk, the one ending at 50 is not.
    let checkpoint_writes = write_numbers(&log, "checkpoints/round_00/gradual");
    assert_eq!(checkpoint_writes.len(), 4, "checkpoints at 20, 40, 50, 80");
    let stop = format!("after:{}", checkpoint_writes[1]);
    stop_with(root, "stopped", &stop);
    let text = rerun_shown(root, "stopped");
    assert!(
        text.contains("continues from its checkpoint at iteration 40"),
        "the rerun continues mid-way: {text}"
    );
    assert_same_files(&reference, root, "stopped", &stop);
}

#[test]
fn late_rewinding_with_restored_optimizer_state_continues_from_checkpoints_with_the_same_bytes() {
    // Rewind to iteration 40 with the optimizer state saved there: round 0's checkpoint at 80
    // holds the snapshot at 40 (weights and optimizer state), round 1 trains 40..120.
    let late = "[[arms]]\nname = \"late\"\nkind = \"rewind\"\nrewind_iteration = 40\nrestore_optimizer = true\n";
    let tmp = experiment_dir(|data| small_config(data, late));
    let root = tmp.path();
    let (reference, log) = reference_run(root);
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
        let stop = format!("after:{write}");
        stop_with(root, dir, &stop);
        let text = rerun_shown(root, dir);
        assert!(
            text.contains(line),
            "{dir}: the rerun continues mid-round: {text}"
        );
        assert_same_files(&reference, root, dir, &stop);
    }
}

#[test]
fn runs_pruned_by_obs_and_at_initialization_continue_after_a_stop_with_the_same_bytes() {
    // obs moves the weights the finetune arm starts round 1 from (its start.safetensors); the
    // at-init arm scores θ₀ by SNIP every round.
    let arms = "criterion = \"obs\"\nscore_examples = 60\n[[arms]]\nname = \"finetune\"\nkind = \"finetune\"\niterations = 80\n[[arms]]\nname = \"snip\"\nkind = \"at-init\"\ncriterion = \"snip\"\n";
    // One round: obs's first pass, where every row is dense, needs one inverse per layer
    // (later ones one per row of fc1, seconds each).
    let tmp = experiment_dir(|data| small_config(data, arms).replace("rounds = 2", "rounds = 1"));
    let root = tmp.path();
    let (reference, log) = reference_run(root);
    assert!(reference.contains_key("seed_0/finetune/round_01/start.safetensors"));

    let starts = write_numbers(&log, "finetune/round_01/start");
    let round1 = write_numbers(&log, "checkpoints/round_01/");
    assert!(!starts.is_empty() && !round1.is_empty());
    for (dir, write) in [
        ("after-start", starts[0]),
        ("mid-round", *round1.last().unwrap()),
    ] {
        let stop = format!("after:{write}");
        stop_with(root, dir, &stop);
        assert!(command(root, dir).status().unwrap().success());
        assert_same_files(&reference, root, dir, &stop);
    }
}

#[test]
fn set_rigl_snfs_and_frozen_arms_stopped_mid_training_continue_with_the_same_bytes() {
    // Topology updates at 20, 40, 60 and 80; checkpoints at the evaluation points 40 and 80.
    let arms = "[[arms]]\nname = \"rewind\"\nkind = \"rewind\"\n[[arms]]\nname = \"set\"\nkind = \"sparse\"\nmethod = \"set\"\nupdate_every = 20\n[[arms]]\nname = \"rigl\"\nkind = \"sparse\"\nmethod = \"rigl\"\nupdate_every = 20\n[[arms]]\nname = \"snfs\"\nkind = \"sparse\"\nmethod = \"snfs\"\nupdate_every = 20\n[[arms]]\nname = \"frozen\"\nkind = \"rewind\"\nmask0 = \"freeze-toward-zero\"\n";
    let tmp = experiment_dir(|data| {
        small_config(data, arms).replace(
            "rounds = 2\n",
            "schedule = \"one-shot\"\ntargets = [10.0]\n",
        )
    });
    let root = tmp.path();
    let (reference, log) = reference_run(root);
    let pruned = write_numbers(&log, "checkpoints/round_01/from_0_to_120.safetensors");
    let written = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        pruned.len(),
        2,
        "round 1: checkpoints at 40 and 80: {written}"
    );
    let stop = format!("after:{}", pruned[0]);
    stop_with(root, "stopped", &stop);
    let text = rerun_shown(root, "stopped");
    assert!(
        text.contains("continues from its checkpoint at iteration 40"),
        "the rerun continues mid-way: {text}"
    );
    assert_same_files(&reference, root, "stopped", &stop);
}
