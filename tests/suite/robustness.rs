//! Promises under attack: one writer per run dir (a second run is refused and does not disturb
//! the first; a lock left by a killed run is taken over), a failed write (file-size limit, as a
//! full disk) stops the run naming the path and a rerun completes with the same bytes, and a
//! diverging replica is marked while the rest of its population goes on unaffected.

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{assert_one_line_error, experiment_dir, read_csv, run_in, small_config, snapshot};

/// A temp dir with data and `exp.toml` (the small config plus `extra`).
fn setup(extra: &str, iterations: u64) -> tempfile::TempDir {
    experiment_dir(|data| {
        small_config(data, extra).replace("iterations = 120", &format!("iterations = {iterations}"))
    })
}

fn run_ok(root: &Path, dir: &str) {
    let out = run_in(root, dir).output().unwrap();
    common::assert_success(&out, "lth run");
}

/// A finished run `run` beside the same run `reference`, to damage the one and compare.
fn finished_twice() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = setup("", 120);
    run_ok(tmp.path(), "reference");
    run_ok(tmp.path(), "run");
    let run = tmp.path().join("run");
    (tmp, run)
}

fn wait_for_lock(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if std::fs::read_to_string(dir.join(".lock")).is_ok_and(|s| !s.trim().is_empty()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the first run never took its lock");
}

#[test]
fn a_second_run_on_a_busy_run_dir_is_refused_and_the_first_is_undisturbed() {
    let tmp = setup("", 200);
    run_ok(tmp.path(), "reference");
    let mut first = run_in(tmp.path(), "run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lock(&tmp.path().join("run"));
    let second = run_in(tmp.path(), "run").output().unwrap();
    assert_one_line_error(
        &second,
        &format!("run dir run is in use by process {}", first.id()),
    );
    let status = first.wait().unwrap();
    assert!(status.success(), "the first run finished");
    assert!(
        snapshot(&tmp.path().join("run")) == snapshot(&tmp.path().join("reference")),
        "the first run's results are those of an undisturbed run"
    );
}

#[test]
fn a_lock_left_by_a_killed_run_is_taken_over() {
    let tmp = setup("", 200);
    run_ok(tmp.path(), "reference");
    let mut first = run_in(tmp.path(), "run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_lock(&tmp.path().join("run"));
    let pid = first.id();
    first.kill().unwrap();
    first.wait().unwrap();
    let stale = std::fs::read_to_string(tmp.path().join("run/.lock")).unwrap();
    assert_eq!(
        stale.trim(),
        pid.to_string(),
        "the killed run's lock is still on disk"
    );
    run_ok(tmp.path(), "run");
    assert!(snapshot(&tmp.path().join("run")) == snapshot(&tmp.path().join("reference")));
}

#[cfg(unix)]
#[test]
fn a_failed_write_stops_the_run_naming_the_path_and_a_rerun_completes_with_the_same_bytes() {
    use std::os::unix::process::CommandExt;
    let tmp = setup("", 120);
    run_ok(tmp.path(), "reference");
    let mut cmd = run_in(tmp.path(), "run");
    // A 100 KB file-size limit: the first weights file (about 1 MB) cannot be written, as on a
    // full disk. lth ignores SIGXFSZ, so the write fails with EFBIG instead of killing it.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 100_000,
                rlim_max: 100_000,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_one_line_error(&out, "cannot write run/seed_0/theta_0.safetensors");
    assert!(String::from_utf8_lossy(&out.stderr).contains("File too large"));
    assert!(
        !tmp.path()
            .join("run/seed_0/.tmp-theta_0.safetensors")
            .exists(),
        "the partial temporary is removed, not left holding the space"
    );
    run_ok(tmp.path(), "run");
    assert!(snapshot(&tmp.path().join("run")) == snapshot(&tmp.path().join("reference")));
}

#[test]
fn a_diverging_replica_is_marked_and_the_others_go_on_unaffected() {
    // SGD; the arm `hot` has a learning rate 10^5 times too large and trains in the same
    // cohort (same span) as `rewind`, i.e. in the same batched population.
    let sgd = "[train]\noptimizer = \"sgd\"\nlr = 0.05\n";
    let arms = "[[arms]]\nname = \"rewind\"\nkind = \"rewind\"\n[[arms]]\nname = \"hot\"\nkind = \"rewind\"\nlr = 5000.0\n";
    let tmp = setup("", 120);
    let base = std::fs::read_to_string(tmp.path().join("exp.toml")).unwrap();
    let with_sgd = base.replace("[train]\n", "[train]\noptimizer = \"sgd\"\nlr = 0.05\n");
    assert!(with_sgd.contains(sgd));
    std::fs::write(tmp.path().join("exp.toml"), format!("{with_sgd}{arms}")).unwrap();
    let out = run_in(tmp.path(), "both").output().unwrap();
    common::assert_success(&out, "the run with a diverging replica");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: arm hot seed 0 (round 1) diverged"),
        "{stderr}"
    );
    std::fs::write(
        tmp.path().join("exp.toml"),
        format!("{with_sgd}[[arms]]\nname = \"rewind\"\nkind = \"rewind\"\n"),
    )
    .unwrap();
    run_ok(tmp.path(), "alone");
    let (header, both) = read_csv(&tmp.path().join("both/rounds.csv"));
    let (_, alone) = read_csv(&tmp.path().join("alone/rounds.csv"));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    for row in both
        .iter()
        .filter(|r| r[col("arm")] == "hot" && r[col("round")] == "1")
    {
        assert!(
            !row[col("diverged_iteration")].is_empty(),
            "hot is marked diverged: {row:?}"
        );
    }
    let rewind: Vec<&Vec<String>> = both.iter().filter(|r| r[col("arm")] == "rewind").collect();
    assert_eq!(rewind.len(), alone.len());
    for (a, b) in rewind.iter().zip(&alone) {
        assert!(a[col("diverged_iteration")].is_empty());
        for metric in ["test_accuracy", "val_loss", "early_stop_test_accuracy"] {
            let (x, y): (f64, f64) = (
                a[col(metric)].parse().unwrap(),
                b[col(metric)].parse().unwrap(),
            );
            assert!(
                x.is_finite() && (x - y).abs() <= 1e-6 * y.abs().max(1.0),
                "rewind {metric}: {x} beside a diverging replica vs {y} alone"
            );
        }
    }
}

#[test]
fn a_torn_csv_tail_is_repaired_on_resume_never_duplicated() {
    let (tmp, run) = finished_twice();
    // Pretend the run stopped after round 1 while a copy of rounds.csv gained a torn line and
    // the rows of round 2.
    std::fs::write(run.join("progress.toml"), "rounds_completed = 2\n").unwrap();
    let mut rounds = std::fs::read_to_string(run.join("rounds.csv")).unwrap();
    rounds.push_str("rewind,0,2,1702");
    std::fs::write(run.join("rounds.csv"), rounds).unwrap();
    run_ok(tmp.path(), "run");
    let text = std::fs::read_to_string(run.join("rounds.csv")).unwrap();
    assert_eq!(
        text,
        std::fs::read_to_string(tmp.path().join("reference/rounds.csv")).unwrap()
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("rewind,0,2,"))
            .count(),
        1,
        "round 2 once"
    );
}

#[test]
fn a_complete_run_whose_rounds_csv_lost_rows_redoes_those_rounds_and_report_refuses_it() {
    let (tmp, run) = finished_twice();
    // progress.toml says every round is complete, but the last row was cut short afterwards
    // (the reader drops a torn line), so round 2 lacks seed 1's row.
    let rounds = std::fs::read_to_string(run.join("rounds.csv")).unwrap();
    let cut = rounds.trim_end().rfind(',').unwrap();
    std::fs::write(run.join("rounds.csv"), &rounds[..cut - 10]).unwrap();
    let out = common::lth(
        tmp.path(),
        &["report", "run", "--data-dir", "nb", "--plots-dir", "plots"],
    );
    assert_one_line_error(
        &out,
        "run: rounds.csv lacks (or repeats) rows of round 2, which progress.toml counts as complete",
    );
    assert!(
        !tmp.path().join("nb").exists(),
        "no tidy data from a damaged run"
    );

    let out = run_in(tmp.path(), "run").output().unwrap();
    common::assert_success(&out, "lth run");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("rounds.csv lacks (or repeats) rows of round 2"),
        "the rerun says why it trains again"
    );
    let reference = snapshot(&tmp.path().join("reference"));
    assert!(
        snapshot(&run) == reference,
        "the redone round wrote the same bytes as the uninterrupted run"
    );

    // The other tables count too, and a repeated row is as wrong as a missing one (a summary
    // would count it twice): each is refused by the report and redone by the run.
    let report = |tmp: &Path| {
        common::lth(
            tmp,
            &["report", "run", "--data-dir", "nb", "--plots-dir", "plots"],
        )
    };
    let last_row = rounds.trim_end().rsplit('\n').next().unwrap().to_string();
    type Damage = Box<dyn Fn(&Path)>;
    let damages: [(&str, Damage, &str); 2] = [
        (
            "layers.csv",
            Box::new(|run: &Path| std::fs::remove_file(run.join("layers.csv")).unwrap()),
            "layers.csv lacks (or repeats) rows of round 0",
        ),
        (
            "rounds.csv",
            Box::new(move |run: &Path| {
                let text = std::fs::read_to_string(run.join("rounds.csv")).unwrap();
                std::fs::write(run.join("rounds.csv"), format!("{text}{last_row}\n")).unwrap();
            }),
            "rounds.csv lacks (or repeats) rows of round 2",
        ),
    ];
    for (file, damage, said) in damages {
        damage(&run);
        assert_one_line_error(&report(tmp.path()), said);
        let out = run_in(tmp.path(), "run").output().unwrap();
        common::assert_success(&out, "lth run");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(said),
            "{file}"
        );
        assert!(
            snapshot(&run) == reference,
            "{file}: redone to the same bytes"
        );
    }

    // A config.toml cut at a line end still parses, to other values (the keys cut off take
    // their defaults): refused by both, as its first line records the SHA-256 of its text.
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.starts_with("# written by lth; sha256 of the lines below: "));
    let cut = config.find("\n[prune]").expect("a [prune] table");
    std::fs::write(run.join("config.toml"), &config[..cut + 1]).unwrap();
    assert_one_line_error(
        &report(tmp.path()),
        "config.toml was changed after the run wrote it",
    );
    let out = run_in(tmp.path(), "run").output().unwrap();
    assert_one_line_error(&out, "config.toml was changed after the run wrote it");
    std::fs::write(run.join("config.toml"), &config).unwrap();

    // A damaged line with rows after it is refused by both, and nothing is rewritten: dropping
    // the rows after it would lose rows of finished rounds.
    let curves = std::fs::read_to_string(run.join("curves.csv")).unwrap();
    let mut lines: Vec<&str> = curves.lines().collect();
    lines[3] = "x,y,zz";
    std::fs::write(run.join("curves.csv"), lines.join("\n") + "\n").unwrap();
    let damaged = snapshot(&run);
    assert_one_line_error(&report(tmp.path()), "curves.csv line 4 is damaged");
    let out = run_in(tmp.path(), "run").output().unwrap();
    assert_one_line_error(&out, "curves.csv line 4 is damaged");
    assert!(snapshot(&run) == damaged, "nothing on disk changed");
}

#[test]
fn a_cpu_run_beside_another_lth_process_says_how_to_share_the_cores() {
    let tmp = setup("", 20);
    // A stand-in process called `lth` (a copy of `sleep`), as another run would be.
    let fake = tmp.path().join("lth");
    std::fs::copy("/bin/sleep", &fake).unwrap();
    // Another test's child forked while the copy was open for writing holds that descriptor
    // until it execs, and exec of the copy meanwhile fails with "Text file busy": retry.
    let mut spawned = std::process::Command::new(&fake).arg("60").spawn();
    for _ in 0..100 {
        match &spawned {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(20));
                spawned = std::process::Command::new(&fake).arg("60").spawn();
            }
            _ => break,
        }
    }
    let mut other = spawned.unwrap();
    let advice = "other lth process(es) running on this machine: give each run `--threads`";
    let out = run_in(tmp.path(), "default-threads")
        .args(["--set", "train.eval_every=10", "--set", "prune.rounds=1"])
        .output()
        .unwrap();
    let with_threads = run_in(tmp.path(), "one-thread")
        .args([
            "--set",
            "train.eval_every=10",
            "--set",
            "prune.rounds=1",
            "--threads",
            "1",
        ])
        .output()
        .unwrap();
    other.kill().unwrap();
    other.wait().unwrap();
    common::assert_success(&out, "lth run");
    common::assert_success(&with_threads, "lth run --threads 1");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(advice), "{text}");
    let text = String::from_utf8_lossy(&with_threads.stdout);
    assert!(!text.contains(advice), "--threads given: no advice: {text}");
}
