//! Sweeps (`lth sweep`): a grid of configs x seed shards, planned, checked before anything
//! runs, and run on this machine; a config split into seed shards gives the rows of the same
//! config run whole, byte for byte (on the CPU a seed trains to the same bits alone or in any
//! population).

use std::path::Path;

use crate::common::{assert_one_line_error, assert_success, experiment_dir, lth, small_config};

/// A sweep file over `exp.toml` (the small config) with `body` after the base.
fn write_sweep(root: &Path, name: &str, body: &str) {
    std::fs::write(root.join(name), format!("config = \"exp.toml\"\n{body}")).unwrap();
}

/// The task lines of `lth sweep plan` (those after the header), split at ` | `.
fn plan_rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("task |"))
        .skip(1)
        .take_while(|l| !l.starts_with("total:"))
        .map(|l| l.split(" | ").map(String::from).collect())
        .collect()
}

#[test]
fn a_plan_lists_every_point_and_seed_shard_with_the_run_dir_lth_config_names() {
    let tmp = experiment_dir(|data| small_config(data, ""));
    let root = tmp.path();
    write_sweep(
        root,
        "grid.toml",
        "seeds_per_task = 1\nset = { \"train.iterations\" = 60 }\n[grid]\n\"train.lr\" = [1e-3, 3e-3]\nprune.fraction = [0.2, 0.5]\n",
    );
    let out = lth(root, &["sweep", "plan", "grid.toml"]);
    assert_success(&out, "sweep plan");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows = plan_rows(&stdout);
    // Axes in key order, the first slowest; two shards of one seed within each point.
    let points: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(
        points,
        [
            "prune.fraction=0.2 train.lr=0.001",
            "prune.fraction=0.2 train.lr=0.001",
            "prune.fraction=0.2 train.lr=0.003",
            "prune.fraction=0.2 train.lr=0.003",
            "prune.fraction=0.5 train.lr=0.001",
            "prune.fraction=0.5 train.lr=0.001",
            "prune.fraction=0.5 train.lr=0.003",
            "prune.fraction=0.5 train.lr=0.003",
        ]
    );
    let seeds: Vec<&str> = rows.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(seeds, ["[0]", "[1]"].repeat(4));
    // 60 iterations in round 0 and in each of 2 pruned rounds (one arm), one seed.
    assert!(rows.iter().all(|r| r[3] == "180"), "{stdout}");
    assert!(
        stdout.contains("total: 8 task(s), 1440 replica-steps"),
        "{stdout}"
    );
    // Task 5's run dir is the one `lth config` names for the same settings, under runs/grid.
    let config = lth(
        root,
        &[
            "config",
            "--config",
            "exp.toml",
            "--set",
            "train.iterations=60",
            "--set",
            "prune.fraction=0.5",
            "--set",
            "train.lr=0.001",
            "--set",
            "seeds=[1]",
        ],
    );
    assert_success(&config, "lth config");
    let first = String::from_utf8_lossy(&config.stdout);
    let name = first
        .lines()
        .next()
        .and_then(|l| l.split("runs/").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    assert_eq!(rows[5][4], format!("runs/grid/{name}"));
    assert!(!root.join("runs").exists(), "planning writes nothing");
}

#[test]
fn seed_shards_run_by_a_sweep_give_the_whole_configs_rows_byte_for_byte() {
    let tmp = experiment_dir(|data| small_config(data, ""));
    let root = tmp.path();
    write_sweep(root, "shards.toml", "seeds_per_task = 1\n");
    let out = lth(
        root,
        &["sweep", "run", "shards.toml", "--quiet", "--threads", "1"],
    );
    assert_success(&out, "sweep run");
    let whole = lth(
        root,
        &[
            "run",
            "--config",
            "exp.toml",
            "--run-dir",
            "whole",
            "--quiet",
            "--threads",
            "1",
        ],
    );
    assert_success(&whole, "whole run");

    let mut dirs: Vec<_> = std::fs::read_dir(root.join("runs/shards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.toml").exists())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 2, "one run dir per shard");
    for file in ["rounds.csv", "layers.csv", "curves.csv"] {
        let lines = |path: &Path| -> Vec<String> {
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(String::from)
                .collect()
        };
        let want = lines(&root.join("whole").join(file));
        let mut got: Vec<String> = vec![want[0].clone()];
        for dir in &dirs {
            let shard = lines(&dir.join(file));
            assert_eq!(shard[0], want[0], "{file}: the same header");
            got.extend(shard[1..].iter().cloned());
        }
        let (mut got_sorted, mut want_sorted) = (got.clone(), want.clone());
        got_sorted.sort();
        want_sorted.sort();
        assert_eq!(
            got_sorted, want_sorted,
            "{file}: the shards' rows are the whole run's"
        );
    }

    // A report of the sweep merges the shards into one run with the whole run's tidy rows,
    // in the same order: only the run's label differs.
    let merged = lth(root, &["report", "shards.toml", "--name", "merged"]);
    assert_success(&merged, "report of the sweep");
    assert!(
        String::from_utf8_lossy(&merged.stdout).contains("point-0: (base) (seeds [0, 1])"),
        "{}",
        String::from_utf8_lossy(&merged.stdout)
    );
    let single = lth(root, &["report", "whole", "--name", "single"]);
    assert_success(&single, "report of the whole run");
    for file in ["rounds.csv", "summary.csv", "curves.csv", "layers.csv"] {
        let without_label = |report: &str| -> Vec<String> {
            let text = std::fs::read_to_string(root.join("notebooks-data").join(report).join(file))
                .unwrap();
            text.lines()
                .map(|l| l.split_once(',').unwrap().1.to_string())
                .collect()
        };
        assert_eq!(
            without_label("merged"),
            without_label("single"),
            "{file}: the merged shards' tidy rows are the whole run's"
        );
    }

    // Run again: every task is complete, nothing changes.
    let before = crate::common::snapshot(&root.join("runs/shards"));
    let again = lth(root, &["sweep", "run", "shards.toml", "--threads", "1"]);
    assert_success(&again, "second sweep run");
    let text = String::from_utf8_lossy(&again.stdout);
    assert_eq!(text.matches("(already complete)").count(), 2, "{text}");
    assert!(text.contains("all 2 task(s) complete"), "{text}");
    let after = crate::common::snapshot(&root.join("runs/shards"));
    let mut changed = crate::common::different_files(&before, &after);
    changed.retain(|f| !f.ends_with("/.lock")); // the pid of the last process that ran it
    assert!(
        changed.is_empty(),
        "a complete sweep run again changed {changed:?}"
    );

    // One task by index resumes nothing and says it is complete, too.
    let task = lth(root, &["sweep", "task", "shards.toml", "--index", "1"]);
    assert_success(&task, "sweep task");
    let out = lth(root, &["sweep", "task", "shards.toml", "--index", "2"]);
    assert_one_line_error(
        &out,
        "the sweep has 2 task(s), numbered 0 to 1; there is no task 2",
    );
}

#[test]
fn bad_sweep_files_are_refused_in_one_line_before_anything_is_written() {
    let tmp = experiment_dir(|data| small_config(data, ""));
    let root = tmp.path();
    let cases: &[(&str, &str)] = &[
        (
            "config = \"exp.toml\"\nseeds_per_tsk = 1\n",
            "unknown field `seeds_per_tsk`",
        ),
        (
            "config = \"exp.toml\"\n[grid]\n\"train.lrr\" = [1e-3]\n",
            "grid axis `train.lrr` = 0.001",
        ),
        (
            "config = \"exp.toml\"\n[grid]\n\"train.lr\" = []\n",
            "grid axis `train.lr` has no values",
        ),
        (
            "config = \"exp.toml\"\n[grid]\n\"train.lr\" = 1e-3\n",
            "grid axis `train.lr` must be a list",
        ),
        (
            "config = \"exp.toml\"\n[grid]\n\"train.lr\" = [1e-3, -1.0]\n",
            "grid axis `train.lr` = -1.0",
        ),
        (
            "config = \"exp.toml\"\n[grid]\n\"train.lr\" = [1e-3]\n[grid.train]\nlr = [2e-3]\n",
            "two grid axes set `train.lr`",
        ),
        (
            "config = \"exp.toml\"\n[grid]\nseeds = [[0], [1]]\n",
            "seeds are not an axis",
        ),
        (
            "config = \"exp.toml\"\nset = { \"train.lr\" = 1e-3 }\n[grid]\n\"train.lr\" = [2e-3]\n",
            "both in `set` and a grid axis",
        ),
        (
            "config = \"exp.toml\"\nseeds_per_task = 0\n",
            "`seeds_per_task` must be at least 1",
        ),
        ("seeds_per_task = 1\n", "give the base config"),
        ("config = \"exp.toml\"\npreset = \"smoke\"\n", "not both"),
        ("config = \"absent.toml\"\n", "cannot read config file"),
        ("preset = \"nope\"\n", "unknown preset `nope`"),
        (
            "config = \"exp.toml\"\nset = { \"train.iterations\" = 0 }\n",
            "the base config",
        ),
        (
            "config = \"exp.toml\"\n[grid]\n\"train.lr\" = [1e-3, 1e-3]\n",
            "lists 0.001 twice",
        ),
        (
            "config = \"exp.toml\"\nname = \"../up\"\n",
            "`name` must be a folder name",
        ),
        (
            "config = \"exp.toml\"\n[slurm]\ncpus_per_task = 0\n",
            "`slurm.cpus_per_task` must be at least 1",
        ),
        (
            "config = \"exp.toml\"\n[slurm]\ntime = \"one hour\"\n",
            "`slurm.time` must be one word",
        ),
        (
            "config = \"exp.toml\"\n[slurm]\nextra = [\"account=lab\"]\n",
            "`slurm.extra` entries are sbatch options",
        ),
        (
            "config = \"exp.toml\"\n[slurm]\nqueue = \"x\"\n",
            "unknown field `queue`",
        ),
        ("config = \"exp.toml\"\n[grid\n", "invalid sweep file"),
        (
            "config = \"exp.toml\"\n[grid]\n\"data.dir\" = [\"nowhere\"]\n",
            "task 0 (data.dir=\"nowhere\")",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let name = format!("bad{i}.toml");
        std::fs::write(root.join(&name), text).unwrap();
        // `run` checks as `plan` does (it shares the loading): a few cases show it.
        let commands: &[&str] = if i % 6 == 5 {
            &["plan", "run"]
        } else {
            &["plan"]
        };
        for command in commands {
            let out = lth(root, &["sweep", command, &name]);
            assert_one_line_error(&out, needle);
        }
    }
    let out = lth(root, &["sweep", "plan", "missing.toml"]);
    assert_one_line_error(&out, "cannot read sweep file missing.toml");
    // Slurm options on the command line are checked as the file's are, before submitting,
    // and refused without the Slurm executor.
    std::fs::write(root.join("good.toml"), "config = \"exp.toml\"\n").unwrap();
    let out = lth(
        root,
        &[
            "sweep",
            "run",
            "good.toml",
            "--executor",
            "slurm",
            "--cpus-per-task",
            "0",
        ],
    );
    assert_one_line_error(&out, "`slurm.cpus_per_task` must be at least 1");
    let out = lth(root, &["sweep", "run", "good.toml", "--partition", "gpu"]);
    assert_one_line_error(&out, "are for `--executor slurm`");
    assert!(!root.join("runs").exists(), "nothing written");
    assert!(!root.join("plots").exists(), "nothing written");
}

#[test]
fn parallel_tasks_log_to_their_files_and_status_names_a_failed_one_with_its_error_line() {
    let tmp = experiment_dir(|data| small_config(data, "").replace("rounds = 2", "rounds = 1"));
    let root = tmp.path();
    write_sweep(
        root,
        "par.toml",
        "seeds_per_task = 1\n[grid]\n\"prune.fraction\" = [0.2, 0.5]\n",
    );
    let status = |root: &Path| {
        let out = lth(root, &["sweep", "status", "par.toml"]);
        assert_success(&out, "sweep status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(status(root).contains("4 task(s) in runs/par: 4 not started"));
    // Task 2's run dir holds another config's run: its run is refused, the others go on.
    let plan = lth(root, &["sweep", "plan", "par.toml"]);
    let rows = plan_rows(&String::from_utf8_lossy(&plan.stdout));
    let foreign = root.join(&rows[2][4]);
    let made = lth(
        root,
        &[
            "run",
            "--config",
            "exp.toml",
            "--set",
            "train.iterations=30",
            "--set",
            "prune.rounds=1",
            "--run-dir",
            foreign.to_str().unwrap(),
            "--quiet",
        ],
    );
    assert_success(&made, "the foreign run");

    let out = lth(
        root,
        &["sweep", "run", "par.toml", "--jobs", "2", "--quiet"],
    );
    assert_one_line_error(&out, "1 of 4 task(s) failed: task 2: ");
    let text = status(root);
    assert!(
        text.contains("4 task(s) in runs/par: 3 done, 1 failed"),
        "{text}"
    );
    let failed: Vec<&str> = text.lines().filter(|l| l.contains("| failed")).collect();
    assert_eq!(failed.len(), 1, "{text}");
    assert!(
        failed[0].starts_with(
            "2 | prune.fraction=0.5 | [0] | failed (runs/par/logs/task-2.log): error: "
        ),
        "{text}"
    );
    let log = std::fs::read_to_string(root.join("runs/par/logs/task-2.log")).unwrap();
    assert!(
        log.contains("belongs to another config"),
        "the log holds the task's error: {log}"
    );
    // The tasks that ran wrote what `lth sweep task` alone writes: rerunning one is complete.
    let again = lth(root, &["sweep", "task", "par.toml", "--index", "3"]);
    assert_success(&again, "sweep task");
    assert!(String::from_utf8_lossy(&again.stdout).contains("(already complete)"));
}

/// Starts the one-node Slurm cluster of `tests/slurm/cluster.sh` (installing it when missing,
/// as root) and returns its `SLURM_CONF`.
pub(crate) fn slurm_conf() -> String {
    let out = std::process::Command::new("bash")
        .arg(crate::common::repo_root().join("tests/slurm/cluster.sh"))
        .arg("start")
        .output()
        .expect("bash runs");
    assert_success(&out, "tests/slurm/cluster.sh start");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("SLURM_CONF="))
        .expect("the script names SLURM_CONF")
        .to_string()
}

/// `lth` with `args` in `cwd` talking to the cluster of `conf`.
fn lth_slurm(cwd: &Path, conf: &str, args: &[&str]) -> std::process::Output {
    crate::common::lth_command()
        .args(args)
        .current_dir(cwd)
        .env("SLURM_CONF", conf)
        .output()
        .expect("lth starts")
}

#[test]
fn a_sweep_submitted_to_slurm_ends_with_the_local_executors_bytes_and_is_not_submitted_twice() {
    let conf = slurm_conf();
    let tmp = experiment_dir(|data| small_config(data, "").replace("rounds = 2", "rounds = 1"));
    let root = tmp.path();
    // A job name of its own: other sweeps may share the cluster.
    let job = format!("lth-test-{}", std::process::id());
    write_sweep(
        root,
        "s.toml",
        &format!("seeds_per_task = 1\nset = {{ \"train.iterations\" = 60 }}\n[grid]\n\"prune.fraction\" = [0.2, 0.5]\n\"train.lr\" = [1e-3, 3e-3]\n[slurm]\njob_name = \"{job}\"\ncpus_per_task = 1\ntime = \"10\"\n"),
    );
    // The command line's --time is taken over the file's `time = "10"`.
    let out = lth_slurm(
        root,
        &conf,
        &[
            "sweep",
            "run",
            "s.toml",
            "--executor",
            "slurm",
            "--time",
            "12",
        ],
    );
    assert_success(&out, "sweep run --executor slurm");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("8 task(s) (0-7)"), "{said}");
    let script = std::fs::read_to_string(root.join("runs/s/sweep.sbatch")).unwrap();
    for line in [
        format!("#SBATCH --job-name={job}"),
        "#SBATCH --array=0-7".to_string(),
        "#SBATCH --cpus-per-task=1".to_string(),
        "#SBATCH --time=12".to_string(),
        "--threads 1 --index \"$SLURM_ARRAY_TASK_ID\" &".to_string(),
    ] {
        assert!(script.contains(&line), "{line} in {script}");
    }
    // Submitting again while they are queued or running submits nothing.
    let again = lth_slurm(
        root,
        &conf,
        &["sweep", "run", "s.toml", "--executor", "slurm"],
    );
    assert_success(&again, "second submission");
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to submit"));

    let start = std::time::Instant::now();
    let status = loop {
        let out = lth_slurm(root, &conf, &["sweep", "status", "s.toml"]);
        assert_success(&out, "sweep status");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("8 task(s) in runs/s: 8 done") {
            break text;
        }
        assert!(
            start.elapsed().as_secs() < 300,
            "the Slurm tasks finish within 5 minutes: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_eq!(status.lines().filter(|l| l.ends_with("| done")).count(), 8);

    // The same sweep here, one task after another, writes the same bytes.
    let local = lth(
        root,
        &[
            "sweep",
            "run",
            "s.toml",
            "--runs-dir",
            "local",
            "--threads",
            "1",
            "--quiet",
        ],
    );
    assert_success(&local, "local sweep");
    let slurm_files = sweep_results(&root.join("runs/s"));
    let local_files = sweep_results(&root.join("local/s"));
    assert!(slurm_files.keys().any(|k| k.ends_with("rounds.csv")));
    let differing = crate::common::different_files(&slurm_files, &local_files);
    assert!(differing.is_empty(), "Slurm vs local: {differing:?}");

    // Their reports (each point's two shards merged, the axes as columns) are the same bytes,
    // but for the folder runs.csv names.
    for (runs, name) in [("runs", "slurm"), ("local", "local")] {
        let out = lth(
            root,
            &["report", "s.toml", "--runs-dir", runs, "--name", name],
        );
        assert_success(&out, "report of the sweep");
    }
    let tidy = |name: &str| crate::common::snapshot(&root.join("notebooks-data").join(name));
    let (from_slurm, from_local) = (tidy("slurm"), tidy("local"));
    assert_eq!(from_slurm.len(), 5, "the five tidy files");
    for (file, bytes) in &from_slurm {
        let text = String::from_utf8_lossy(bytes);
        let want = String::from_utf8_lossy(&from_local[file]);
        if file == "runs.csv" {
            assert_eq!(text.replace("runs/s", "local/s"), want, "runs.csv");
        } else {
            assert_eq!(text, want, "{file}: Slurm vs local");
        }
    }
    let summary = String::from_utf8_lossy(&from_slurm["summary.csv"]).into_owned();
    assert!(
        summary.starts_with("run,experiment,prune.fraction,train.lr,arm,"),
        "the axes are columns: {summary}"
    );
    assert!(
        summary
            .lines()
            .any(|l| l.starts_with("point-3,small,0.5,0.003,")),
        "point 3 is prune.fraction=0.5, train.lr=0.003: {summary}"
    );

    let last = lth_slurm(
        root,
        &conf,
        &["sweep", "run", "s.toml", "--executor", "slurm"],
    );
    assert_success(&last, "third submission");
    assert!(String::from_utf8_lossy(&last.stdout).contains("nothing to submit: 8 task(s)"));
}

/// The files of the sweep folder `dir` that a run's results are (not its logs, script, locks
/// and timings).
fn sweep_results(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = crate::common::snapshot(dir);
    files.retain(|k, _| {
        !k.starts_with("logs/")
            && k != "sweep.sbatch"
            && !k.ends_with("/.lock")
            && !k.ends_with("/timings.csv")
    });
    files
}

/// Polls `done` every 200 ms until it holds, for at most `seconds`; panics naming `what`.
fn wait_for(seconds: u64, what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed().as_secs() < seconds,
            "{what} within {seconds} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A Slurm command of the cluster of `conf`; its stdout.
fn slurm_tool(conf: &str, tool: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(tool)
        .args(args)
        .env("SLURM_CONF", conf)
        .output()
        .expect("the Slurm tools are installed");
    assert_success(&out, tool);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The iteration in `lth: stopped by SIGNAL at iteration N: ...` of `log`.
fn stopped_at(log: &str, signal: &str) -> u64 {
    let prefix = format!("lth: stopped by {signal} at iteration ");
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the log says the task stopped on {signal}: {log}"));
    line.split(':').next().unwrap().parse().unwrap()
}

#[test]
fn slurm_tasks_stopped_by_preemption_or_scancel_continue_from_their_checkpoints_with_the_same_bytes(
) {
    let conf = slurm_conf();
    let tmp = experiment_dir(|data| small_config(data, ""));
    let root = tmp.path();
    let job_name = format!("lth-preempt-{}", std::process::id());
    // Rounds of 1,500 iterations (a few seconds each), a checkpoint at every evaluation point:
    // the first one of round 1 says the task is training there.
    write_sweep(
        root,
        "p.toml",
        &format!("seeds_per_task = 1\nset = {{ \"train.iterations\" = 1500, \"train.eval_every\" = 100, \"prune.rounds\" = 1 }}\n[slurm]\njob_name = \"{job_name}\"\ncpus_per_task = 1\ntime = \"10\"\n"),
    );
    let submit = || {
        let out = lth_slurm(
            root,
            &conf,
            &[
                "sweep",
                "run",
                "p.toml",
                "--executor",
                "slurm",
                "--checkpoint-minutes",
                "0",
            ],
        );
        assert_success(&out, "sweep run --executor slurm");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = submit();
    let job = said
        .split("submitted job ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .unwrap_or_else(|| panic!("the job id is said: {said}"))
        .to_string();
    let script = std::fs::read_to_string(root.join("runs/p/sweep.sbatch")).unwrap();
    for line in [
        "#SBATCH --signal=B:USR1@120",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
    ] {
        assert!(script.contains(line), "{line} in {script}");
    }
    let plan = lth(root, &["sweep", "plan", "p.toml"]);
    let rows = plan_rows(&String::from_utf8_lossy(&plan.stdout));
    let in_round_1 = |i: usize| root.join(&rows[i][4]).join("checkpoints/round_01").exists();
    wait_for(120, "both tasks training round 1", || {
        in_round_1(0) && in_round_1(1)
    });

    // Task 0: Slurm's warning signal, to the batch script only (as `--signal=B:USR1@120`
    // sends it): the script passes it on, lth checkpoints, the script requeues the task.
    // Task 1: cancelled (SIGTERM to every process of the job): it stays stopped.
    let task = |i: usize| format!("{job}_{i}");
    slurm_tool(&conf, "scancel", &["--signal=USR1", "--batch", &task(0)]);
    slurm_tool(&conf, "scancel", &[&task(1)]);
    let log = |i: usize| {
        std::fs::read_to_string(root.join(format!("runs/p/logs/task-{i}.log"))).unwrap_or_default()
    };
    wait_for(60, "task 0 requeued", || log(0).contains("requeued"));
    // A requeued job waits the credential lifetime before it starts again: 10 s on the test
    // cluster (`AuthInfo=cred_expire=10` in tests/slurm/cluster.sh), two minutes by default.
    let pending =
        || slurm_tool(&conf, "squeue", &["-h", "-j", &task(0), "-o", "%T"]).trim() == "PENDING";
    wait_for(60, "task 0 back in the queue", pending);
    let status = || {
        let out = lth_slurm(root, &conf, &["sweep", "status", "p.toml"]);
        assert_success(&out, "sweep status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut text = String::new();
    let settled = std::time::Instant::now();
    while !(text.contains("0 | (base) | [0] | done")
        && text.contains("1 | (base) | [1] | stopped (1 of 2 rounds complete)"))
    {
        if settled.elapsed().as_secs() >= 150 {
            let job = std::process::Command::new("scontrol")
                .args(["show", "job", &task(0)])
                .env("SLURM_CONF", &conf)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            panic!(
                "task 0 done and task 1 stopped within 150 s: {text}\ntask 0's log:\n{}\nscontrol show job:\n{job}",
                log(0)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        text = status();
    }
    let usr1 = stopped_at(&log(0), "SIGUSR1");
    assert!(
        log(0).contains(&format!(
            "round 1/1 continues from its checkpoint at iteration {usr1}"
        )),
        "the requeued task continues where it stopped: {}",
        log(0)
    );

    // Submitted again, only the stopped task runs, from its checkpoint.
    let said = submit();
    assert!(said.contains("1 task(s) (1)"), "{said}");
    wait_for(120, "both tasks done", || {
        status().contains("2 task(s) in runs/p: 2 done")
    });
    let term = stopped_at(&log(1), "SIGTERM");
    assert!(
        log(1).contains(&format!(
            "round 1/1 continues from its checkpoint at iteration {term}"
        )),
        "the resubmitted task continues where it stopped: {}",
        log(1)
    );

    // The same sweep run here without a stop writes the same bytes.
    let local = lth(
        root,
        &[
            "sweep",
            "run",
            "p.toml",
            "--runs-dir",
            "local",
            "--threads",
            "1",
            "--quiet",
        ],
    );
    assert_success(&local, "local sweep");
    let slurm_files = sweep_results(&root.join("runs/p"));
    let local_files = sweep_results(&root.join("local/p"));
    assert!(slurm_files.keys().any(|k| k.ends_with("rounds.csv")));
    let differing = crate::common::different_files(&slurm_files, &local_files);
    assert!(
        differing.is_empty(),
        "stopped vs uninterrupted: {differing:?}"
    );
}

#[test]
fn a_parallel_sweep_sent_sigterm_stops_its_tasks_at_checkpoints_and_continues_with_the_same_bytes()
{
    let tmp = experiment_dir(|data| small_config(data, ""));
    let root = tmp.path();
    write_sweep(
        root,
        "t.toml",
        "seeds_per_task = 1\nset = { \"train.iterations\" = 1500, \"train.eval_every\" = 100, \"prune.rounds\" = 1 }\n",
    );
    let args = |runs: &str| -> Vec<String> {
        [
            "sweep",
            "run",
            "t.toml",
            "--runs-dir",
            runs,
            "--threads",
            "1",
            "--quiet",
        ]
        .iter()
        .map(|w| w.to_string())
        .collect()
    };
    let mut sweep = crate::common::lth_command();
    sweep
        .args(args("runs"))
        .args(["--jobs", "2", "--checkpoint-minutes", "0"])
        .current_dir(root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = sweep.spawn().unwrap();
    let plan = lth(root, &["sweep", "plan", "t.toml"]);
    let rows = plan_rows(&String::from_utf8_lossy(&plan.stdout));
    let in_round_1 = |i: usize| root.join(&rows[i][4]).join("checkpoints/round_01").exists();
    wait_for(120, "both tasks training round 1", || {
        in_round_1(0) && in_round_1(1)
    });
    // SAFETY: sends SIGTERM to the child process this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(75),
        "the exit status of a checkpointed stop"
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("lth: stopped by SIGTERM (passed on to task(s) 0, 1"),
        "{said}"
    );
    let status = lth(root, &["sweep", "status", "t.toml"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(
        text.matches("| stopped (1 of 2 rounds complete)").count(),
        2,
        "{text}"
    );
    for i in 0..2 {
        let log = std::fs::read_to_string(root.join(format!("runs/t/logs/task-{i}.log"))).unwrap();
        stopped_at(&log, "SIGTERM");
    }

    let again = lth(
        root,
        &args("runs").iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_success(&again, "the sweep run again");
    let whole = lth(
        root,
        &args("whole").iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_success(&whole, "an uninterrupted sweep");
    let differing = crate::common::different_files(
        &sweep_results(&root.join("runs/t")),
        &sweep_results(&root.join("whole/t")),
    );
    assert!(
        differing.is_empty(),
        "stopped vs uninterrupted: {differing:?}"
    );
}

#[test]
fn a_slurm_task_whose_data_went_bad_is_shown_failed_with_its_error_line() {
    let conf = slurm_conf();
    let tmp = experiment_dir(|data| small_config(data, "").replace("rounds = 2", "rounds = 1"));
    let root = tmp.path();
    let job_name = format!("lth-bad-data-{}", std::process::id());
    write_sweep(
        root,
        "b.toml",
        &format!("[slurm]\njob_name = \"{job_name}\"\ncpus_per_task = 1\n"),
    );
    // Checked at submission, the data are fine; the task may start 3 s later, by when its
    // training images are cut short.
    let out = lth_slurm(
        root,
        &conf,
        &[
            "sweep",
            "run",
            "b.toml",
            "--executor",
            "slurm",
            "--sbatch=--begin=now+3",
        ],
    );
    assert_success(&out, "sweep run --executor slurm");
    let script = std::fs::read_to_string(root.join("runs/b/sweep.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --begin=now+3"), "{script}");
    let images = root.join("data/train-images-idx3-ubyte");
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() / 2]).unwrap();

    let mut text = String::new();
    wait_for(120, "the task failed", || {
        let out = lth_slurm(root, &conf, &["sweep", "status", "b.toml"]);
        assert_success(&out, "sweep status");
        text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("1 task(s) in runs/b: 1 failed")
    });
    let line = text.lines().next().unwrap();
    assert!(
        line.starts_with("0 | (base) | [0, 1] | failed (runs/b/logs/task-0.log): error: ")
            && line.contains("train-images-idx3-ubyte"),
        "the failed task names its log and its error line: {text}"
    );
}
