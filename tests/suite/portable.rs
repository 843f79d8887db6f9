//! `reproducibility = "portable"`: a small LeNet run repeats its bytes, also resumed after a
//! stop, with a replica alone, and at another thread count, and matches the SHA-256 list
//! committed in `tests/portable/lenet-small.sha256`, made on one machine (its header names
//! the CPU; `LTH_WRITE_PORTABLE_REFERENCE=1` rewrites it, for a change that means to change
//! portable bytes). CI runs on different machines over time, so this is the cross-machine
//! check: when it fails on a new CPU, that is a finding to fix, not a reference to regenerate.
//! Machine mode keeps its hash and saved config; a switch of mode on resume, an unknown mode
//! and a network portable mode does not cover are refused with one line.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::common::{
    assert_one_line_error, assert_success, different_files, experiment_dir, lth, repo_root, run_in,
    small_config, snapshot,
};

/// The committed reference, relative to the repository.
const REFERENCE: &str = "tests/portable/lenet-small.sha256";

/// `small_config` in portable mode.
fn portable_config(data: &Path) -> String {
    small_config(data, "").replace(
        "seeds = [0, 1]\n",
        "seeds = [0, 1]\nreproducibility = \"portable\"\n",
    )
}

/// SHA-256 of each result file of a run dir (its CSVs but `timings.csv`, and its tensors),
/// by relative path.
fn result_digests(dir: &Path) -> BTreeMap<String, String> {
    snapshot(dir)
        .into_iter()
        .filter(|(path, _)| {
            (path.ends_with(".csv") && !path.ends_with("timings.csv"))
                || path.ends_with(".safetensors")
        })
        .map(|(path, bytes)| {
            let hex: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            (path, hex)
        })
        .collect()
}

/// The reference list's entries (`<sha256>  <path>` lines; `#` lines are comments).
fn read_reference(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (hex, file) = l.split_once("  ").expect("`<sha256>  <path>`");
            (file.to_string(), hex.to_string())
        })
        .collect()
}

/// This machine's CPU model as `/proc/cpuinfo` names it, and whether it has AVX-512.
fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| "an unknown CPU".into());
    let avx512 = field("flags").is_some_and(|f| f.split(' ').any(|x| x == "avx512f"));
    format!(
        "{model} ({} cores, {})",
        info.lines().filter(|l| l.starts_with("processor")).count(),
        if avx512 { "AVX-512" } else { "no AVX-512" }
    )
}

#[test]
fn a_portable_run_repeats_its_bytes_resumed_alone_and_threaded_and_matches_the_committed_reference()
{
    let tmp = experiment_dir(portable_config);
    let root = tmp.path();
    let run = |dir: &str, extra: &[&str], fault: Option<&str>| {
        let mut cmd = run_in(root, dir);
        cmd.arg("--quiet").args(extra);
        if let Some(spec) = fault {
            cmd.env("LTH_FAULT_INJECT", spec);
        }
        cmd.output().unwrap()
    };
    assert_success(&run("a", &[], None), "the portable run");
    let saved = std::fs::read_to_string(root.join("a/config.toml")).unwrap();
    assert!(saved.contains("reproducibility = \"portable\""), "{saved}");

    // The committed reference, made on one machine.
    let digests = result_digests(&root.join("a"));
    let reference_path = repo_root().join(REFERENCE);
    if std::env::var_os("LTH_WRITE_PORTABLE_REFERENCE").is_some() {
        let mut text = format!(
            "# lth portable-mode reference: tests/suite/portable.rs's small LeNet run (its own IDX data)\n# made on: {}\n",
            cpu_model()
        );
        for (file, hex) in &digests {
            text.push_str(&format!("{hex}  {file}\n"));
        }
        std::fs::write(&reference_path, text).unwrap();
    }
    let reference = read_reference(&reference_path);
    let differ: Vec<&String> = reference
        .keys()
        .chain(digests.keys())
        .filter(|f| reference.get(*f) != digests.get(*f))
        .collect();
    assert!(
        differ.is_empty(),
        "portable mode on {} wrote other bytes than {REFERENCE} in {} of {} files: {differ:?}",
        cpu_model(),
        differ.len(),
        reference.len()
    );

    // Two threads asked for: portable mode runs one, the same bytes.
    assert_success(&run("b", &["--threads", "2"], None), "the two-thread run");
    assert_eq!(
        different_files(&snapshot(&root.join("a")), &snapshot(&root.join("b"))),
        Vec::<String>::new()
    );
    // Stopped after its 15th file write, then resumed: the same bytes.
    let stopped = run("c", &[], Some("after:15"));
    assert!(!stopped.status.success(), "the injected stop");
    assert_success(&run("c", &[], None), "the resumed run");
    assert_eq!(
        different_files(&snapshot(&root.join("a")), &snapshot(&root.join("c"))),
        Vec::<String>::new()
    );
    // What portable mode pins is what it sets: a machine-mode run under the same environment
    // and one thread writes the same results.
    let mut pinned = run_in(root, "e");
    pinned.args([
        "--quiet",
        "--threads",
        "1",
        "--set",
        "reproducibility=\"machine\"",
    ]);
    for (k, v) in lth::portable::PINNED {
        pinned.env(k, v);
    }
    assert_success(&pinned.output().unwrap(), "the pinned machine-mode run");
    assert_eq!(result_digests(&root.join("e")), digests);
    // A study of a portable run computes in portable mode as well.
    let curve = |out: &str, pin: bool| {
        let mut cmd = crate::common::lth_command();
        cmd.current_dir(root).args([
            "prune-curve",
            "a",
            "--sparsities",
            "50,90",
            "--criteria",
            "magnitude,taylor",
            "--score-batches",
            "2",
            "--score-examples",
            "100",
            "--name",
            "pc",
            "--data-dir",
            out,
            "--plots-dir",
            out,
        ]);
        if pin {
            for (k, v) in lth::portable::PINNED {
                cmd.env(k, v);
            }
        }
        assert_success(&cmd.output().unwrap(), "lth prune-curve");
        snapshot(&root.join(out).join("pc"))
    };
    assert_eq!(curve("curve", false), curve("curve-pinned", true));
    // Seed 1 alone: its files are the population's.
    assert_success(&run("d", &["--set", "seeds=[1]"], None), "seed 1 alone");
    let alone = result_digests(&root.join("d"));
    for (file, hex) in alone.iter().filter(|(f, _)| f.starts_with("seed_1/")) {
        assert_eq!(Some(hex), digests.get(file), "{file}");
    }
}

#[test]
fn machine_mode_keeps_its_hash_and_a_mode_switch_or_an_uncovered_network_is_refused() {
    let tmp = experiment_dir(|data| small_config(data, ""));
    let root = tmp.path();
    let first_line = |sets: &[&str]| {
        let mut args = vec!["config", "--config", "exp.toml"];
        for s in sets {
            args.extend(["--set", s]);
        }
        let out = lth(root, &args);
        assert_success(&out, "lth config");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // `machine` is the default: naming it changes neither the hash nor the printed config.
    let plain = first_line(&[]);
    assert_eq!(first_line(&["reproducibility=\"machine\""]), plain);
    let portable = first_line(&["reproducibility=\"portable\""]);
    assert_ne!(
        portable.lines().next(),
        plain.lines().next(),
        "another hash"
    );
    assert!(portable.contains("reproducibility = \"portable\""));

    // A machine-mode run dir resumed in portable mode: one line, nothing changed.
    let out = run_in(root, "run").arg("--quiet").output().unwrap();
    assert_success(&out, "the machine-mode run");
    let before = snapshot(&root.join("run"));
    let out = run_in(root, "run")
        .args(["--quiet", "--set", "reproducibility=\"portable\""])
        .output()
        .unwrap();
    assert_one_line_error(&out, "belongs to another config");
    assert_eq!(before, snapshot(&root.join("run")));

    for (sets, needle) in [
        (
            &["reproducibility=\"exact\""][..],
            "unknown variant `exact`, expected `machine` or `portable`",
        ),
        (
            &["reproducibility=\"portable\"", "model.arch=\"conv-2\""][..],
            "`reproducibility = \"portable\"` covers LeNet-300-100 so far",
        ),
    ] {
        let mut cmd = run_in(root, "fresh");
        for s in sets {
            cmd.args(["--set", s]);
        }
        assert_one_line_error(&cmd.output().unwrap(), needle);
        assert!(!root.join("fresh").exists(), "no run dir for {sets:?}");
    }
    let out = lth(
        root,
        &[
            "run",
            "--config",
            "exp.toml",
            "--run-dir",
            "fresh",
            "--device",
            "cuda",
            "--set",
            "reproducibility=\"portable\"",
        ],
    );
    assert_one_line_error(&out, "runs on the CPU");
    assert!(!root.join("fresh").exists());
    // A sweep runs in one mode: an axis over it is refused.
    std::fs::write(
        root.join("mixed.toml"),
        "config = \"exp.toml\"\n[grid]\nreproducibility = [\"machine\", \"portable\"]\n",
    )
    .unwrap();
    let out = lth(root, &["sweep", "plan", "mixed.toml"]);
    assert_one_line_error(&out, "a sweep runs in one mode");
}
