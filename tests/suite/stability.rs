//! Instability analysis (`lth stability`): the dense networks trained again to k are the run's
//! own θ_k, bit for bit; the tidy files and figures repeat their bytes, also when the study is
//! stopped as by `kill -9` and run again, and their paths end at the copies' own errors; the
//! summary agrees with the barriers; requests it cannot serve are one-line errors with nothing
//! written.

use crate::common::{
    assert_one_line_error, assert_success, experiment_dir, lth, lth_command, read_csv, run_in,
    small_config,
};

use lth::analysis::batchnorm::{recompute_statistics, StatisticsBatches};
use lth::analysis::interpolation::{alphas, barrier, distance, evaluate_path};
use lth::analysis::saved::SavedRound;
use lth::analysis::stability::{dense_at, train_copies, Copies};
use lth::config::{ModelConfig, TrainConfig};
use lth::data::{Dataset, Split};
use lth::model::State;
use lth::record::RunDir;
use lth::train::{Span, Trainer};
use tch::{Device, Kind, Tensor};

/// A finished small run whose late-rewinding arm saved θ_40 of each seed, made with
/// `threads` libtorch threads.
fn late_run(threads: i32) -> tempfile::TempDir {
    let arms = "[[arms]]\nname = \"late\"\nkind = \"rewind\"\nrewind_iteration = 40\n";
    let tmp = experiment_dir(|data| small_config(data, arms).replace("rounds = 2", "rounds = 1"));
    let threads = threads.to_string();
    let out = run_in(tmp.path(), "run")
        .args(["--quiet", "--threads", &threads])
        .output()
        .unwrap();
    assert_success(&out, "the run");
    tmp
}

#[test]
fn the_dense_networks_trained_again_to_k_are_the_runs_own_theta_k() {
    // The run is made with this test process's thread count (CPU bits depend on it).
    let tmp = late_run(tch::get_num_threads());
    let run = tmp.path().join("run");
    let saved = SavedRound::load(&run, 0, None, Device::Cpu).unwrap();
    let layout = saved.net.layout();
    let dir = RunDir::at(&run);
    let theta0 = State::stack(
        &saved
            .exp
            .seeds
            .iter()
            .map(|&s| dir.load_theta(s, 0, layout).unwrap())
            .collect::<Vec<_>>(),
    );
    let trainer = Trainer {
        net: saved.net.as_ref(),
        data: &saved.data,
        cfg: &saved.exp.train,
        augment: None,
        device: Device::Cpu,
    };
    let at = dense_at(
        &trainer,
        &theta0,
        &saved.exp.seeds,
        &[0, 40],
        &mut crate::common::Silent,
    )
    .unwrap();
    for (r, &seed) in saved.exp.seeds.iter().enumerate() {
        let theta40 = dir.load_theta(seed, 40, layout).unwrap();
        assert!(
            at[&40].0.params.get(r as i64).equal(&theta40.params.get(0)),
            "seed {seed}: θ_40 trained again is the run's"
        );
        assert!(at[&40].1.is_some(), "with the optimizer state at 40");
        assert!(at[&0]
            .0
            .params
            .get(r as i64)
            .equal(&theta0.params.get(r as i64)));
    }
}

#[test]
fn stability_files_repeat_their_bytes_and_paths_end_at_the_copies_errors() {
    let tmp = late_run(1);
    let root = tmp.path();
    let args = |name: &str| -> Vec<String> {
        [
            "stability",
            "run",
            "--k",
            "0,40",
            "--rounds",
            "0,1",
            "--points",
            "5",
            "--name",
            name,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |name: &str, env: Option<(&str, String)>| {
        let words = args(name);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let mut cmd = lth_command();
        cmd.current_dir(root).args(&words);
        if let Some((key, value)) = env {
            cmd.env(key, value);
        }
        cmd.output().unwrap()
    };
    let log = root.join("writes.log");
    let whole = run("a", Some(("LTH_WRITE_LOG", log.display().to_string())));
    assert_success(&whole, "lth stability");
    // Stopped as by `kill -9` (an abort, no clean-up) once k = 0's rows are kept, then run
    // again: it keeps k = 0, measures k = 40, and writes what the whole run wrote.
    let writes = std::fs::read_to_string(&log).unwrap();
    let kept = 1 + writes
        .lines()
        .position(|w| w.ends_with("k-0.barriers.csv"))
        .expect("k = 0's rows are kept as a piece");
    let stopped = run("b", Some(("LTH_FAULT_INJECT", format!("after:{kept}"))));
    assert!(!stopped.status.success(), "the injected fault stopped it");
    let b = root.join("notebooks-data/b");
    assert!(b.join(".partial/k-0.barriers.csv").exists());
    assert!(
        !b.join("stability.csv").exists(),
        "stopped before the outputs"
    );
    let resumed = run("b", None);
    assert_success(&resumed, "lth stability, continued");
    let said = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        said.contains("k = 0 done by an earlier invocation, kept"),
        "{said}"
    );
    assert!(
        !b.join(".partial").exists(),
        "the pieces are removed once done"
    );
    for (folder, files) in [
        (
            "notebooks-data",
            &["stability.csv", "barriers.csv", "instability.csv"][..],
        ),
        (
            "plots",
            &[
                "stability_paths.svg",
                "stability_paths.png",
                "instability.svg",
                "instability.png",
            ][..],
        ),
    ] {
        for file in files {
            let read = |name: &str| std::fs::read(root.join(folder).join(name).join(file)).unwrap();
            assert_eq!(
                read("a"),
                read("b"),
                "{file}: a run stopped and continued gives the same bytes"
            );
        }
    }
    let (header, rows) = read_csv(&root.join("notebooks-data/a/stability.csv"));
    // 2 ks x 2 rounds x 2 seeds x 1 pair x 5 points.
    assert_eq!(rows.len(), 40);
    let (bheader, barriers) = read_csv(&root.join("notebooks-data/a/barriers.csv"));
    assert_eq!(barriers.len(), 8);
    let col = |h: &[String], n: &str| h.iter().position(|c| c == n).unwrap();
    for b in &barriers {
        let key = |row: &[String], h: &[String]| {
            ["round", "seed", "k", "pair"].map(|n| row[col(h, n)].clone())
        };
        let path: Vec<&Vec<String>> = rows
            .iter()
            .filter(|r| key(r, &header) == key(b, &bheader))
            .collect();
        assert_eq!(path.len(), 5);
        let error = |r: &Vec<String>| r[col(&header, "test_error")].clone();
        assert_eq!(error(path[0]), b[col(&bheader, "test_error_first")]);
        assert_eq!(error(path[4]), b[col(&bheader, "test_error_second")]);
        let barrier: f64 = b[col(&bheader, "test_barrier")].parse().unwrap();
        assert!(barrier >= 0.0);
    }

    // The summary: per round and k, the mean barrier of its pairs, the mean accuracy of its
    // copies (the paths' ends), and stable / matching read off them.
    let (sheader, summary) = read_csv(&root.join("notebooks-data/a/instability.csv"));
    assert_eq!(summary.len(), 4, "2 rounds x 2 ks");
    let num = |row: &[String], h: &[String], n: &str| -> f64 { row[col(h, n)].parse().unwrap() };
    for s in &summary {
        let of: Vec<&Vec<String>> = barriers
            .iter()
            .filter(|b| {
                ["round", "k"]
                    .iter()
                    .all(|n| b[col(&bheader, n)] == s[col(&sheader, n)])
            })
            .collect();
        assert_eq!(of.len(), 2, "2 seeds x 1 pair");
        let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
        let barrier = mean(
            of.iter()
                .map(|b| num(b, &bheader, "test_barrier"))
                .collect(),
        );
        assert!((num(s, &sheader, "test_barrier_mean") - barrier).abs() < 1e-12);
        let accuracy = mean(
            of.iter()
                .flat_map(|b| {
                    ["test_error_first", "test_error_second"].map(|n| 1.0 - num(b, &bheader, n))
                })
                .collect(),
        );
        assert!((num(s, &sheader, "test_accuracy_mean") - accuracy).abs() < 1e-12);
        assert_eq!(s[col(&sheader, "stable")], (barrier < 0.02).to_string());
        let dense = num(s, &sheader, "dense_test_accuracy_mean");
        assert_eq!(
            s[col(&sheader, "matching")],
            (accuracy >= dense - 0.002).to_string()
        );
        let remaining = num(s, &sheader, "weights_remaining_pct");
        match s[col(&sheader, "round")].as_str() {
            "0" => assert_eq!(remaining, 100.0),
            _ => assert!(remaining < 90.0 && remaining > 70.0, "{remaining}"),
        }
    }
}

#[test]
fn stability_requests_it_cannot_serve_are_one_line_errors() {
    let tmp = late_run(1);
    let root = tmp.path();
    let before = crate::common::snapshot_all(&root.join("run"));
    for (extra, needle) in [
        (vec!["--copies", "1"], "--copies must be at least 2"),
        (vec!["--points", "1"], "--points must be at least 2"),
        (
            vec!["--k", "120"],
            "k = 120 is not before the schedule's end",
        ),
        (vec!["--rounds", "5"], "run has no round 5"),
        (vec!["--k", "0,40,0"], "--k names 0 twice"),
        (vec!["--rounds", "1,1"], "--rounds names 1 twice"),
        (vec!["--name", "../x"], "must be one folder name"),
        (vec!["--bn-batches", "0"], "--bn-batches must be at least 1"),
    ] {
        let mut words = vec!["stability", "run"];
        words.extend(extra);
        let out = lth(root, &words);
        assert_one_line_error(&out, needle);
    }
    // Not a run dir at all.
    std::fs::create_dir(root.join("elsewhere")).unwrap();
    let out = lth(root, &["stability", "elsewhere"]);
    assert_one_line_error(&out, "is not an lth run dir");
    assert!(!root.join("notebooks-data").exists(), "nothing written");
    assert_eq!(
        before,
        crate::common::snapshot_all(&root.join("run")),
        "the run dir as it was"
    );
}

#[test]
fn paths_of_a_resnet_have_their_batchnorm_statistics_recomputed() {
    let tmp = crate::common::tiny_resnet_run("");
    let root = tmp.path();
    let before = crate::common::snapshot_all(&root.join("run"));
    let out = lth(
        root,
        &[
            "stability",
            "run",
            "--k",
            "0,2",
            "--rounds",
            "0,1",
            "--points",
            "3",
            "--bn-batches",
            "2",
            "--quiet",
        ],
    );
    assert_success(&out, "lth stability of a resnet");
    let (_, rows) = read_csv(&root.join("notebooks-data/run/stability.csv"));
    assert_eq!(rows.len(), 2 * 2 * 3, "2 ks x 2 rounds x 1 seed x 3 points");
    assert_eq!(before, crate::common::snapshot_all(&root.join("run")));

    // The first BatchNorm's statistics, by hand: the mean over the batches of each batch's
    // per-channel mean and unbiased variance of the first convolution's output.
    let saved = SavedRound::load(&root.join("run"), 0, None, Device::Cpu).unwrap();
    let layout = saved.net.layout();
    assert_eq!(layout.buffers()[0].name, "bn.running_mean");
    assert_eq!(layout.buffers()[1].name, "bn.running_var");
    let w = saved.state.params.get(0);
    let params = Tensor::stack(&[&w, &(&w * 0.5)], 0);
    let train = &saved.data.train;
    let on = StatisticsBatches {
        split: train,
        batches: 2,
        batch_size: 4,
    };
    let buffers = recompute_statistics(saved.net.as_ref(), &params, on);
    let first_conv = layout.views(&params).at(0).shallow_clone();
    for a in 0..2 {
        let (mut mean, mut var) = (
            Tensor::zeros([16], (Kind::Double, Device::Cpu)),
            Tensor::zeros([16], (Kind::Double, Device::Cpu)),
        );
        for b in 0..2 {
            let x = train.images.narrow(0, 4 * b, 4);
            let y = x
                .conv2d(
                    &first_conv.get(a),
                    None::<Tensor>,
                    [1, 1],
                    [1, 1],
                    [1, 1],
                    1,
                )
                .to_kind(Kind::Double);
            mean += y.mean_dim(&[0i64, 2, 3][..], false, Kind::Double) / 2.0;
            var += y.var_dim(&[0i64, 2, 3][..], true, false) / 2.0;
        }
        let got = |i: usize| buffers[i].get(a).to_kind(Kind::Double);
        assert!(
            got(0).allclose(&mean, 1e-4, 1e-6, false),
            "network {a}: means"
        );
        assert!(
            got(1).allclose(&var, 1e-4, 1e-6, false),
            "network {a}: variances"
        );
    }
}

fn split(n: i64) -> Split {
    Split {
        images: Tensor::rand([n, 1, 28, 28], (Kind::Float, Device::Cpu)),
        labels: Tensor::randint(10, [n], (Kind::Int64, Device::Cpu)),
    }
}

#[test]
fn copies_with_one_noise_seed_agree_and_a_copy_alone_is_the_copy_in_the_population() {
    tch::manual_seed(3);
    let data = Dataset {
        train: split(120),
        validation: split(30),
        test: split(40),
        input_shape: [1, 28, 28],
        black: vec![0.0],
        num_classes: 10,
    };
    let net = lth::model::build(&ModelConfig::default(), [1, 28, 28], 10).unwrap();
    let cfg = TrainConfig {
        iterations: 30,
        eval_every: 30,
        batch_size: 10,
        ..TrainConfig::default()
    };
    let trainer = Trainer {
        net: net.as_ref(),
        data: &data,
        cfg: &cfg,
        augment: None,
        device: Device::Cpu,
    };
    let start = State::init(net.layout(), &[0, 1], Device::Cpu);
    let masks = Tensor::ones_like(&start.params);
    let span = Span::new(10, 30, 10);
    let noise = [vec![5, 5], vec![5, 6]];
    let copies = Copies {
        start: &start,
        masks: &masks,
        noise: &noise,
        optimizer: None,
    };
    let trained = train_copies(&trainer, &copies, &span, &mut crate::common::Silent).unwrap();
    let w = |r: i64| trained.state.params.get(r);
    assert!(w(0).equal(&w(1)), "one noise seed, one network");
    let a = alphas(5);
    let path = evaluate_path(
        net.as_ref(),
        (&w(0), &w(1)),
        &masks.get(0),
        &a,
        &data.test,
        None,
    )
    .unwrap();
    let errors: Vec<f64> = path.iter().map(|(_, acc)| 1.0 - acc).collect();
    assert_eq!(barrier(&a, &errors), 0.0);
    assert!(distance(&w(2), &w(3)) > 0.0, "other noise, other weights");

    // Network 1's copy with noise seed 6, trained alone.
    let one = State {
        params: start.params.get(1).unsqueeze(0),
        buffers: Vec::new(),
    };
    let alone = train_copies(
        &trainer,
        &Copies {
            start: &one,
            masks: &masks.get(1).unsqueeze(0),
            noise: &[vec![6]],
            optimizer: None,
        },
        &span,
        &mut crate::common::Silent,
    )
    .unwrap();
    assert!(
        alone.state.params.get(0).equal(&w(3)),
        "alone = in the population"
    );
}
