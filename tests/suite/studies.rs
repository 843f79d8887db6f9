//! `lth prune-curve` and `lth sensitivity` prune a finished run's networks one-shot and
//! evaluate them without retraining. Reference: the magnitude points recomputed here from the
//! saved weights alone (a brute-force top-k per layer, a forward pass written out), and the
//! unpruned points against the run's own `rounds.csv`.

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::common::{
    assert_one_line_error, assert_success, experiment_dir, lth, read_csv, small_config,
    snapshot_all,
};

/// A finished run of the small config (LeNet-300-100, 2 seeds, layerwise 20% with fc3 10%)
/// in `root/run`.
fn finished_run(root: &Path) {
    let out = lth(
        root,
        &[
            "run",
            "--config",
            "exp.toml",
            "--run-dir",
            "run",
            "--quiet",
            "--threads",
            "1",
        ],
    );
    assert_success(&out, "the run");
}

/// `lth prune-curve` of `root/run` into `root/out` with `extra` arguments.
fn curve(root: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "prune-curve",
        "run",
        "--name",
        "pc",
        "--data-dir",
        "out/data",
        "--plots-dir",
        "out/plots",
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    lth(root, &args)
}

/// The small config's data set, as the run split it.
fn small_data(root: &Path) -> lth::data::Dataset {
    let cfg = lth::config::DataConfig {
        dir: root.join("data").display().to_string(),
        validation_size: 200,
        ..Default::default()
    };
    lth::data::Dataset::load(&cfg, Device::Cpu).unwrap()
}

/// Column `name` of every row.
fn column<'a>(header: &[String], rows: &'a [Vec<String>], name: &str) -> Vec<&'a str> {
    let i = header.iter().position(|h| h == name).unwrap();
    rows.iter().map(|r| r[i].as_str()).collect()
}

/// Test accuracy of one seed's saved round-0 weights pruned by magnitude to `keep` of each
/// layer's weights at the layerwise rule (fc3 at its own 10% rate), computed from the files.
fn brute_force_accuracy(run: &Path, seed: u64, keep: f64, test: &lth::data::Split) -> f64 {
    let fc3 = keep.powf((0.9f64).ln() / (0.8f64).ln());
    brute_force_layers(run, seed, [keep, keep, fc3], test)
}

/// Test accuracy of one seed's saved round-0 weights with layer l keeping the share
/// `keep[l - 1]` of its weights by |w| (ties by position), computed from the files.
fn brute_force_layers(run: &Path, seed: u64, keep: [f64; 3], test: &lth::data::Split) -> f64 {
    let tensors: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(run.join(format!("seed_{seed}/round_00/weights.safetensors")))
            .unwrap()
            .into_iter()
            .collect();
    let n = test.len() as i64;
    let mut h = test.images.view([n, 784]);
    for l in 1..=3 {
        let w = &tensors[&format!("fc{l}.weight")];
        let b = &tensors[&format!("fc{l}.bias")];
        let ratio = keep[l - 1];
        let size = w.numel() as f64;
        let k = (size * ratio).round() as usize;
        let values = Vec::<f32>::try_from(&w.view([-1])).unwrap();
        let mut order: Vec<usize> = (0..values.len()).collect();
        // Lowest |w| first, ties by position; the last k survive.
        order.sort_by(|&a, &b| values[a].abs().total_cmp(&values[b].abs()).then(a.cmp(&b)));
        let mut mask = vec![0f32; values.len()];
        for &i in &order[values.len() - k..] {
            mask[i] = 1.0;
        }
        let masked = w * Tensor::from_slice(&mask).view(w.size().as_slice());
        h = h.matmul(&masked.tr()) + b;
        if l < 3 {
            h = h.relu();
        }
    }
    let hits = h.argmax(-1, false).eq_tensor(&test.labels).sum(Kind::Int64);
    hits.int64_value(&[]) as f64 / n as f64
}

#[test]
fn a_prune_curve_prunes_exactly_evaluates_as_the_run_does_and_leaves_the_run_dir_alone() {
    let dir = experiment_dir(|data| small_config(data, ""));
    let root = dir.path();
    finished_run(root);
    let before = snapshot_all(&root.join("run"));
    let args = [
        "--criteria",
        "magnitude,obs",
        "--sparsities",
        "50,90",
        "--score-examples",
        "60",
    ];
    let out = curve(root, &args);
    assert_success(&out, "prune-curve");
    assert_eq!(
        before,
        snapshot_all(&root.join("run")),
        "the run dir is untouched"
    );
    let csv = root.join("out/data/pc/prune_curve_round_0.csv");
    let first = std::fs::read(&csv).unwrap();
    assert!(root.join("out/plots/pc/prune_curve_round_0.png").exists());
    assert!(root.join("out/plots/pc/prune_curve_round_0.svg").exists());
    // Again: the same bytes.
    assert_success(&curve(root, &args), "prune-curve again");
    assert_eq!(first, std::fs::read(&csv).unwrap(), "same bytes run to run");

    let (header, rows) = read_csv(&csv);
    assert_eq!(
        rows.len(),
        2 * (1 + 2 * 2),
        "2 seeds x (unpruned + 2 criteria x 2 sparsities)"
    );
    let criteria = column(&header, &rows, "criterion");
    let seeds = column(&header, &rows, "seed");
    let targets = column(&header, &rows, "target_weights_remaining_pct");
    let remaining = column(&header, &rows, "weights_remaining");
    let accuracy = column(&header, &rows, "test_accuracy");

    // Unpruned: the run's own final test accuracy of round 0.
    let (rh, rrows) = read_csv(&root.join("run/rounds.csv"));
    for (i, c) in criteria.iter().enumerate() {
        if *c != "none" {
            continue;
        }
        let row = rrows
            .iter()
            .find(|r| r[1] == seeds[i] && r[2] == "0")
            .expect("round 0 row of the seed");
        let want = &row[rh.iter().position(|h| h == "test_accuracy").unwrap()];
        assert_eq!(
            accuracy[i], want,
            "seed {}: unpruned accuracy as the run's",
            seeds[i]
        );
    }

    // Magnitude: exact counts and the brute-force accuracy.
    let data = small_data(root);
    let layer_keep = |size: f64, ratio: f64| (size * ratio).round() as u64;
    for (i, c) in criteria.iter().enumerate() {
        if *c == "none" {
            continue;
        }
        let keep = targets[i].parse::<f64>().unwrap() / 100.0;
        let want_remaining = layer_keep(235_200.0, keep)
            + layer_keep(30_000.0, keep)
            + layer_keep(1_000.0, keep.powf((0.9f64).ln() / (0.8f64).ln()));
        assert_eq!(
            remaining[i],
            want_remaining.to_string(),
            "{c} at {keep}: exact counts"
        );
        if *c == "magnitude" {
            let seed: u64 = seeds[i].parse().unwrap();
            let want = brute_force_accuracy(&root.join("run"), seed, keep, &data.test);
            let got: f64 = accuracy[i].parse().unwrap();
            assert!(
                (got - want).abs() <= 1.0 / data.test.len() as f64 + 1e-12,
                "seed {seed} at {keep}: accuracy {got} against the brute force {want}"
            );
        }
    }
    // Zhou et al.'s criteria over (θ₀, the trained weights): `large-final` keeps what
    // magnitude keeps (the same rows), `large-init` other weights at the same counts.
    let zhou = [
        "--criteria",
        "magnitude,large-final,large-init",
        "--sparsities",
        "50,90",
    ];
    assert_success(&curve(root, &zhou), "prune-curve with Zhou's criteria");
    let (header, rows) = read_csv(&csv);
    let c = header.iter().position(|h| h == "criterion").unwrap();
    let of = |name: &str| -> Vec<Vec<String>> {
        let picked = rows.iter().filter(|r| r[c] == name);
        picked.map(|r| [&r[..c], &r[c + 1..]].concat()).collect()
    };
    assert_eq!(of("large-final").len(), 4);
    assert_eq!(of("large-final"), of("magnitude"));
    assert_ne!(of("large-init"), of("magnitude"));
}

#[test]
fn prune_curve_requests_it_cannot_serve_are_one_line_errors() {
    let dir = experiment_dir(|data| small_config(data, ""));
    let root = dir.path();
    finished_run(root);
    for (args, needle) in [
        (vec!["--round", "5"], "no round 5"),
        (vec!["--sparsities", "0"], "--sparsities"),
        (vec!["--criteria", "obd"], "--score-examples"),
        (vec!["--round", "0", "--arm", "nope"], "no arm `nope`"),
    ] {
        let out = curve(root, &args);
        assert_one_line_error(&out, needle);
    }
    assert!(!root.join("out/data/pc").exists(), "nothing written");
}

#[test]
fn a_sensitivity_analysis_prunes_one_tensor_at_a_time_and_suggests_rates() {
    let dir = experiment_dir(|data| small_config(data, ""));
    let root = dir.path();
    finished_run(root);
    let out = lth(
        root,
        &[
            "sensitivity",
            "run",
            "--name",
            "s",
            "--data-dir",
            "out/data",
            "--plots-dir",
            "out/plots",
            "--threads",
            "1",
            "--sparsities",
            "50,90",
            "--suggest",
            "1.0",
        ],
    );
    assert_success(&out, "sensitivity");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Every tensor tolerates 90% within a bound of 1.0: all reach it together at the run's rate.
    assert!(
        stdout.contains(
            "layer_fractions = { \"fc1.weight\" = 0.2, \"fc2.weight\" = 0.2, \"fc3.weight\" = 0.2 }"
        ),
        "suggested rates: {stdout}"
    );
    assert!(root
        .join("out/plots/s/sensitivity_round_0_magnitude.png")
        .exists());
    let (header, rows) = read_csv(&root.join("out/data/s/sensitivity_round_0_magnitude.csv"));
    assert_eq!(
        rows.len(),
        2 * (1 + 3 * 2),
        "2 seeds x (unpruned + 3 tensors x 2 sparsities)"
    );
    let layers = column(&header, &rows, "layer");
    let targets = column(&header, &rows, "target_layer_remaining_pct");
    let remaining = column(&header, &rows, "layer_remaining");
    let seeds = column(&header, &rows, "seed");
    let accuracy = column(&header, &rows, "test_accuracy");
    let data = small_data(root);
    let sizes = [
        ("fc1.weight", 235_200.0),
        ("fc2.weight", 30_000.0),
        ("fc3.weight", 1_000.0),
    ];
    for i in 0..rows.len() {
        let Some(l) = sizes.iter().position(|(n, _)| *n == layers[i]) else {
            assert_eq!(layers[i], "none");
            continue;
        };
        let keep = targets[i].parse::<f64>().unwrap() / 100.0;
        let want = (sizes[l].1 * keep).round() as u64;
        assert_eq!(remaining[i], want.to_string(), "{} at {keep}", layers[i]);
        let mut shares = [1.0; 3];
        shares[l] = keep;
        let seed: u64 = seeds[i].parse().unwrap();
        let want = brute_force_layers(&root.join("run"), seed, shares, &data.test);
        let got: f64 = accuracy[i].parse().unwrap();
        assert!(
            (got - want).abs() <= 1.0 / data.test.len() as f64 + 1e-12,
            "{} at {keep}, seed {seed}: {got} against the brute force {want}",
            layers[i]
        );
    }
}
