//! Bad input gets one clear error line and a non-zero exit, never a panic, and leaves an
//! existing run dir byte for byte as it was: corrupt or truncated IDX files, wrong label
//! counts, unknown config keys, invalid values, a run dir of another config.

use crate::common;

use std::path::{Path, PathBuf};

use common::{assert_one_line_error, lth, small_config, snapshot_all, write_dataset, write_gz};

/// A finished small run to protect, plus the good data it used.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    good_data: PathBuf,
    run_dir: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let good_data = root.join("good");
    write_dataset(&good_data, 300, 60, true);
    std::fs::write(root.join("small.toml"), small_config(&good_data, "")).unwrap();
    let out = lth(
        &root,
        &[
            "run",
            "--config",
            "small.toml",
            "--run-dir",
            "run",
            "--set",
            "train.iterations=40",
            "--set",
            "prune.rounds=1",
            "--set",
            "data.validation_size=50",
        ],
    );
    common::assert_success(&out, "fixture run");
    Fixture {
        run_dir: root.join("run"),
        _tmp: tmp,
        root,
        good_data,
    }
}

impl Fixture {
    /// Runs with the fixture's config (plus `sets`) on `data` into the protected run dir and
    /// checks the one-line error and that nothing in the run dir changed.
    fn expect_error(&self, data: &Path, sets: &[&str], needle: &str) {
        let before = snapshot_all(&self.run_dir);
        let mut args: Vec<String> = vec![
            "run".into(),
            "--config".into(),
            "small.toml".into(),
            "--run-dir".into(),
            "run".into(),
            "--set".into(),
            "train.iterations=40".into(),
            "--set".into(),
            "prune.rounds=1".into(),
            "--set".into(),
            "data.validation_size=50".into(),
            "--set".into(),
            format!("data.dir={}", data.display()),
        ];
        for s in sets {
            args.push("--set".into());
            args.push(s.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = lth(&self.root, &args);
        assert_one_line_error(&out, needle);
        assert!(
            before == snapshot_all(&self.run_dir),
            "run dir changed after: {needle}"
        );
    }

    /// A copy of the good data with `file` replaced by `bytes` (written raw, without `.gz`).
    fn data_with(&self, name: &str, file: &str, bytes: Option<Vec<u8>>) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&self.good_data).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
        std::fs::remove_file(dir.join(format!("{file}.gz"))).unwrap();
        if let Some(bytes) = bytes {
            std::fs::write(dir.join(file), bytes).unwrap();
        }
        dir
    }

    fn good_bytes(&self, file: &str) -> Vec<u8> {
        lth::data::idx::read_maybe_gz(&self.good_data.join(format!("{file}.gz"))).unwrap()
    }
}

const TRAIN_X: &str = "train-images-idx3-ubyte";
const TRAIN_Y: &str = "train-labels-idx1-ubyte";
const TEST_Y: &str = "t10k-labels-idx1-ubyte";

#[test]
fn corrupt_data_files_are_rejected_with_one_line_and_the_run_dir_untouched() {
    let f = fixture();
    // Wrong magic number (type byte 0x09).
    let mut bytes = f.good_bytes(TRAIN_X);
    bytes[2] = 0x09;
    f.expect_error(
        &f.data_with("magic", TRAIN_X, Some(bytes)),
        &[],
        "magic number 0x00000903",
    );
    // Images file with a 1-dimension header.
    let bytes = lth::data::idx::encode(&[300 * 784], &f.good_bytes(TRAIN_X)[16..]);
    f.expect_error(
        &f.data_with("dims", TRAIN_X, Some(bytes)),
        &[],
        "expected 0x00000803",
    );
    // Truncated body.
    let bytes = f.good_bytes(TRAIN_X);
    let cut = bytes[..bytes.len() - 100].to_vec();
    f.expect_error(
        &f.data_with("truncated", TRAIN_X, Some(cut)),
        &[],
        "is truncated",
    );
    // Truncated header.
    f.expect_error(
        &f.data_with("header", TRAIN_X, Some(bytes[..10].to_vec())),
        &[],
        "header needs 16 bytes",
    );
    // Trailing garbage.
    let mut long = bytes.clone();
    long.extend_from_slice(&[1, 2, 3]);
    f.expect_error(
        &f.data_with("trailing", TRAIN_X, Some(long)),
        &[],
        "3 byte(s) after",
    );
    // Empty file.
    f.expect_error(
        &f.data_with("empty", TRAIN_Y, Some(Vec::new())),
        &[],
        "is empty",
    );
    // Missing file.
    f.expect_error(
        &f.data_with("missing", TEST_Y, None),
        &[],
        "missing data file",
    );
    // Fewer labels than images.
    let labels = f.good_bytes(TRAIN_Y);
    let fewer = lth::data::idx::encode(&[299], &labels[8..8 + 299]);
    f.expect_error(
        &f.data_with("count", TRAIN_Y, Some(fewer)),
        &[],
        "holds 300 images but",
    );
    // A label out of range.
    let mut bad = labels.clone();
    bad[8 + 17] = 10;
    f.expect_error(
        &f.data_with("label", TRAIN_Y, Some(bad)),
        &[],
        "label 10 at index 17 is out of range",
    );
    // Corrupt gzip: valid header, garbage deflate stream.
    let dir = f.data_with("gzip", TRAIN_X, None);
    let mut gz = std::fs::read(f.good_data.join(format!("{TRAIN_X}.gz"))).unwrap();
    let mid = gz.len() / 2;
    for b in &mut gz[20..mid] {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(dir.join(format!("{TRAIN_X}.gz")), gz).unwrap();
    f.expect_error(&dir, &[], "not a valid gzip stream");
    // Truncated gzip.
    let dir = f.data_with("gzcut", TRAIN_X, None);
    let gz = std::fs::read(f.good_data.join(format!("{TRAIN_X}.gz"))).unwrap();
    write_gz(&dir.join("unused"), b"");
    std::fs::write(dir.join(format!("{TRAIN_X}.gz")), &gz[..gz.len() / 2]).unwrap();
    f.expect_error(&dir, &[], "not a valid gzip stream");
    // Not a folder at all.
    f.expect_error(&f.root.join("nowhere"), &[], "is not a folder");
}

#[test]
fn bad_config_values_are_rejected_with_one_line_and_the_run_dir_untouched() {
    let f = fixture();
    let data = f.good_data.clone();
    let cases: &[(&str, &str)] = &[
        ("train.iteratons=5", "train.iteratons"),
        ("bogus=1", "unknown field `bogus`"),
        ("train.iterations=abc", "key `train.iterations`"),
        ("train.iterations=0", "`train.iterations` must be >= 1"),
        ("train.eval_every=0", "`train.eval_every` must be >= 1"),
        ("train.batch_size=0", "`train.batch_size` must be >= 1"),
        ("train.lr=0", "`train.lr` must be > 0"),
        ("train.lr=-0.1", "`train.lr` must be > 0"),
        ("prune.fraction=1.5", "`prune.fraction` must be in (0, 1)"),
        ("prune.fraction=0", "`prune.fraction` must be in (0, 1)"),
        ("prune.rounds=0", "`prune.rounds` must be >= 1"),
        ("prune.rounds=-2", "key `prune.rounds`"),
        ("seeds=[]", "`seeds` must list at least one seed"),
        ("seeds=[1,1]", "lists seed 1 twice"),
        ("seeds=[-1]", "key `seeds"),
        ("model.arch=resnet-9000", "key `model.arch`"),
        (
            "arms.0.rewind_iteration=40",
            "must be below `train.iterations`",
        ),
        ("arms.0.kind=mystery", "key `arms"),
        ("prune.exclude=[\"fc7.weight\"]", "fc7.weight"),
        ("train", "is not of the form key=value"),
        (
            "stability.copies=1",
            "`stability.copies` must be at least 2",
        ),
        (
            "stability.points=1",
            "`stability.points` must be at least 2",
        ),
        (
            "stability.ks=[0,100000]",
            "`stability.ks`: k = 100000 is not before the schedule's end",
        ),
        ("stability.rounds=[0,0]", "`stability.rounds` names 0 twice"),
        (
            "stability.bn_batches=0",
            "`stability.bn_batches` must be at least 1",
        ),
        ("stability.k=[0]", "unknown field `k`"),
        ("prune.granularity=\"blob\"", "key `prune.granularity`"),
    ];
    for (set, needle) in cases {
        f.expect_error(&data, &[set], needle);
    }
    // Structured pruning with what ranks single weights.
    for (set, needle) in [
        (
            "prune.criterion=\"taylor\"",
            "units are ranked by `prune.structured_criterion`",
        ),
        (
            "arms=[{name=\"r\",kind=\"rewind\"},{name=\"p\",kind=\"at-init\",criterion=\"snip\"}]",
            "arm `p` (at-init) chooses single weights of the initial network",
        ),
    ] {
        f.expect_error(&data, &["prune.granularity=\"neuron\"", set], needle);
    }
}

#[test]
fn values_checked_against_the_data_are_rejected_before_a_run_dir_is_made() {
    let f = fixture();
    for (sets, needle) in [
        (
            &["train.batch_size=100000"][..],
            "exceeds the 100 training examples",
        ),
        (
            &["data.validation_size=300"][..],
            "must be below the 300 training examples",
        ),
        (
            &["prune.granularity=\"filter\""][..],
            "the model has no convolution filters that lth can remove",
        ),
        (
            // Taylor unit scores read more batches than the training split holds.
            &[
                "prune.granularity=\"neuron\"",
                "prune.structured_criterion=\"taylor\"",
                "prune.score_batches=1000",
            ][..],
            "exceeds the 100 training examples",
        ),
    ] {
        let mut args = vec!["run", "--config", "small.toml", "--run-dir", "fresh"];
        for set in sets {
            args.extend(["--set", set]);
        }
        let out = lth(&f.root, &args);
        assert_one_line_error(&out, needle);
        assert!(!f.root.join("fresh").exists(), "no run dir for {sets:?}");
    }
}

#[test]
fn a_run_dir_of_another_config_is_refused_and_untouched() {
    let f = fixture();
    let data = f.good_data.clone();
    f.expect_error(
        &data,
        &["train.eval_every=20"],
        "belongs to another config (`train.eval_every` is 40 there, 20 here)",
    );
    f.expect_error(&data, &["seeds=[0,1,2]"], "belongs to another config");
}

#[test]
fn unknown_keys_in_a_config_file_and_unknown_presets_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("bad.toml"),
        "seeds = [0]\n[train]\nlearning_rate = 0.1\n",
    )
    .unwrap();
    let out = lth(tmp.path(), &["run", "--config", "bad.toml"]);
    assert_one_line_error(&out, "train.learning_rate");
    std::fs::write(tmp.path().join("broken.toml"), "seeds = [0\n").unwrap();
    let out = lth(tmp.path(), &["run", "--config", "broken.toml"]);
    assert_one_line_error(&out, "is not valid TOML");
    let out = lth(tmp.path(), &["run", "--preset", "nope"]);
    let available = lth::config::preset_names().join(", ");
    assert_one_line_error(
        &out,
        &format!("unknown preset `nope` (available: {available})"),
    );
    let out = lth(tmp.path(), &["run", "--config", "absent.toml"]);
    assert_one_line_error(&out, "cannot read config file absent.toml");
    assert!(
        !tmp.path().join("runs").exists(),
        "no run dir is made for a bad config"
    );
}

#[test]
fn cuda_asked_for_where_none_exists_is_an_error() {
    if tch::Cuda::is_available() {
        return; // Only meaningful on a machine without CUDA (CI's).
    }
    let f = fixture();
    let before = snapshot_all(&f.run_dir);
    let out = lth(
        &f.root,
        &[
            "run",
            "--config",
            "small.toml",
            "--run-dir",
            "run",
            "--device",
            "cuda",
        ],
    );
    assert_one_line_error(&out, "no CUDA device is available");
    assert!(before == snapshot_all(&f.run_dir));
}

/// Runs `cmd` with its stdout a pipe whose reader is already gone (as in `lth ... | head -1`
/// once `head` has exited): every write to stdout fails with EPIPE.
fn into_closed_pipe(cmd: &mut std::process::Command) -> std::process::Output {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `pipe` fills `fds` with two new descriptors; each is owned by exactly one of the
    // `File` / `Stdio` values made from it below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    let (reader, writer) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::process::Stdio::from_raw_fd(fds[1]),
        )
    };
    drop(reader);
    cmd.stdout(writer).output().expect("lth starts")
}

/// `lth` with `args`, to run in `cwd`.
fn lth_command(cwd: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = common::lth_command();
    cmd.args(args).current_dir(cwd);
    cmd
}

#[test]
fn a_closed_stdout_neither_panics_nor_stops_a_run() {
    let tmp = common::experiment_dir(|data| small_config(data, ""));
    let out = into_closed_pipe(&mut lth_command(tmp.path(), &["presets"]));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "`lth presets | head -0`: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let config = ["config", "--config", "exp.toml"];
    let out = into_closed_pipe(&mut lth_command(tmp.path(), &config));
    assert!(out.status.success(), "`lth config | head -0`");

    let out = into_closed_pipe(common::run_in(tmp.path(), "run").args([
        "--set",
        "train.iterations=20",
        "--set",
        "train.eval_every=10",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the run stopped: {stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
    let progress = std::fs::read_to_string(tmp.path().join("run/progress.toml")).unwrap();
    assert!(
        progress.contains("rounds_completed = 3"),
        "every round ran: {progress}"
    );
}

#[test]
fn a_missing_argument_is_named_in_the_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    for command in ["run", "config"] {
        let out = lth(tmp.path(), &[command]);
        assert_one_line_error(&out, "--preset <PRESET>|--config <CONFIG>");
    }
    let out = lth(tmp.path(), &["export", "runs/x", "--arm", "rewind"]);
    assert_one_line_error(&out, "--seed <SEED> --round <ROUND> --out <OUT>");
    let out = lth(tmp.path(), &["run", "--preset", "smoke", "--device", "gpu"]);
    assert_one_line_error(&out, "[possible values: auto, cpu, cuda]");
    let out = lth(
        tmp.path(),
        &["run", "--preset", "smoke", "--checkpoint-minutes", "-1"],
    );
    assert_one_line_error(&out, "`-1` is not a number of minutes");
    assert!(!tmp.path().join("runs").exists());
}

#[test]
fn a_plots_dir_that_cannot_be_made_is_an_error_before_any_training() {
    let tmp = common::experiment_dir(|data| small_config(data, ""));
    std::fs::write(tmp.path().join("a-file"), "not a folder").unwrap();
    let out = common::run_in(tmp.path(), "run")
        .args(["--plots-dir", "a-file"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "cannot create a-file/run");
    assert!(
        !tmp.path().join("run").exists(),
        "no run dir is made, no round is trained"
    );
}
