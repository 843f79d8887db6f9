//! Pruning at initialization (`kind = "at-init"` arms): SNIP, GraSP and SynFlow score what
//! their papers define, checked on a tiny network against a forward pass written out here
//! (GraSP's Hessian-gradient product against finite differences of that pass's gradient,
//! SynFlow's R against the product of the absolute weight matrices), and the arms prune θ₀ to
//! the counts their sibling arms reach each round.

use lth::config::PruneConfig;
use lth::model::{Layout, Network, State};
use lth::prune::at_init::{synflow_masks, Grasp, Snip, GRASP_TEMPERATURE};
use lth::prune::{groups, remaining_counts};
use tch::{Device, Kind, Tensor};

use crate::common::{assert_small_config_refused, experiment_dir, lth, read_csv, tiny_data};
use crate::criteria::{
    hand_gradient, hand_logits, net, relative_error, run_small, score_data, scores, SEEDS,
};

/// θ₀ of `seeds`, dense.
fn dense(layout: &Layout, seeds: &[u64]) -> (State, Tensor) {
    let state = State::init(layout, seeds, Device::Cpu);
    let masks = state.params.ones_like();
    (state, masks)
}

/// The examples of `batches` batches of `batch_size` that replica `r` scores on.
fn batch_examples(
    data: &lth::prune::ScoreData<'_>,
    r: usize,
    b: usize,
    size: usize,
) -> Vec<Vec<i64>> {
    let all = data.examples(r, b * size);
    all.chunks(size).map(<[i64]>::to_vec).collect()
}

#[test]
fn snip_scores_are_abs_w_times_the_mean_batch_gradient() {
    let (_tmp, data) = tiny_data();
    let net = net();
    let layout = net.layout().clone();
    let (state, masks) = dense(&layout, &SEEDS);
    let mut snip = Snip {
        data: score_data(&net, &data, &SEEDS),
        batches: 2,
        batch_size: 20,
    };
    let got = scores(&mut snip, &layout, &state, &masks);
    for r in 0..SEEDS.len() {
        let w = state.params.get(r as i64);
        let mut g = w.zeros_like();
        for batch in batch_examples(&snip.data, r, 2, 20) {
            g += hand_gradient(&layout, &data, &w, &batch);
        }
        let want = (&w * g / 2.0).abs();
        let err = relative_error(&got.get(r as i64), &want);
        assert!(err < 1e-4, "replica {r}: snip scores off by {err}");
    }
}

#[test]
fn grasp_scores_are_w_times_the_hessian_gradient_product() {
    let (_tmp, data) = tiny_data();
    let net = net();
    let layout = net.layout().clone();
    let (state, masks) = dense(&layout, &SEEDS[..1]);
    let mut grasp = Grasp {
        data: score_data(&net, &data, &SEEDS[..1]),
        batches: 2,
        batch_size: 30,
    };
    let got = scores(&mut grasp, &layout, &state, &masks).get(0);
    // Reference in float64: g the mean gradient of the loss on logits / T; Hg by central
    // differences of that mean gradient along g.
    let w = state.params.get(0).to_kind(Kind::Double);
    let batches = batch_examples(&grasp.data, 0, 2, 30);
    let mean_grad = |w: &Tensor| {
        let mut g = w.zeros_like();
        for batch in &batches {
            let idx = Tensor::from_slice(batch);
            let x = data.train.images.index_select(0, &idx);
            let y = data.train.labels.index_select(0, &idx);
            let v = w.detach().set_requires_grad(true);
            let logits = hand_logits(&layout, &v, &x) / GRASP_TEMPERATURE;
            let loss = logits.cross_entropy_for_logits(&y);
            g += Tensor::run_backward(&[loss], &[&v], false, false)
                .pop()
                .unwrap();
        }
        g / batches.len() as f64
    };
    let g = mean_grad(&w);
    let eps = 1e-3;
    let hg = (mean_grad(&(&w + &g * eps)) - mean_grad(&(&w - &g * eps))) / (2.0 * eps);
    let want = &w * hg;
    let err = relative_error(&got, &want);
    assert!(err < 1e-3, "grasp scores off by {err} of the largest");
}

#[test]
fn synflow_scores_the_positive_networks_summed_output_and_prunes_to_exact_counts() {
    let net = net();
    let layout = net.layout().clone();
    let (state, _) = dense(&layout, &SEEDS[..2]);
    // R by hand: the all-ones image through |W| and |b| (everything positive, so the ReLUs
    // pass it all), summed.
    let w = state.params.get(0).to_kind(Kind::Double).abs();
    let ones = Tensor::ones([1, 1, 28, 28], (Kind::Double, Device::Cpu));
    let mut h = Tensor::ones([784], (Kind::Double, Device::Cpu));
    for l in 1..=3 {
        let part = |name: String| {
            let i = layout.index_of(&name).unwrap();
            let spec = &layout.specs()[i];
            w.narrow(0, layout.offset(i) as i64, spec.numel() as i64)
                .view(spec.shape.as_slice())
        };
        h = part(format!("fc{l}.weight")).matmul(&h) + part(format!("fc{l}.bias"));
    }
    let r_hand = h.sum(Kind::Double).double_value(&[]);
    let r_forward = hand_logits(&layout, &w, &ones)
        .sum(Kind::Double)
        .double_value(&[]);
    assert!(
        (r_hand - r_forward).abs() <= 1e-9 * r_hand,
        "R {r_hand} vs {r_forward}"
    );

    // 40% of each layer kept (fc3 too), in one step and in 5.
    let cfg = PruneConfig::default();
    let g = groups(&layout, &cfg).unwrap();
    let keep: Vec<u64> = g
        .iter()
        .map(|gr| (gr.size(&layout) as f64 * 0.4).round() as u64)
        .collect();
    let input = [1i64, 1, 28, 28];
    let one = synflow_masks((&net, &input), &state, &layout, (&g, &keep), 1);
    let five = synflow_masks((&net, &input), &state, &layout, (&g, &keep), 5);
    for masks in [&one, &five] {
        let counts = remaining_counts(masks, &layout);
        for row in &counts {
            let kept: Vec<u64> = g.iter().map(|gr| gr.remaining(row)).collect();
            assert_eq!(kept, keep, "exact counts per layer");
        }
    }
    // One step keeps the largest |w · dR/dw| of each layer, R as above.
    let wv = w.detach().set_requires_grad(true);
    let r = hand_logits(&layout, &wv, &ones).sum(Kind::Double);
    let grad = Tensor::run_backward(&[r], &[&wv], false, false)
        .pop()
        .unwrap();
    let score = (&grad * &w).abs();
    for gr in &g {
        let i = gr.params[0];
        let s = layout.segment(&score.unsqueeze(0), i).get(0);
        let m = layout.segment(&one, i).get(0);
        let kept_min = s.masked_select(&m.gt(0.5)).min().double_value(&[]);
        let gone_max = s.masked_select(&m.lt(0.5)).max().double_value(&[]);
        assert!(
            gone_max <= kept_min * (1.0 + 1e-4),
            "layer {i}: one step keeps the top scores"
        );
    }
    assert!(
        !one.equal(&five),
        "iterating changes the mask (SynFlow's point)"
    );
}

/// `(tensor name, kept)` per prunable tensor of a saved mask file.
fn mask_counts(path: &std::path::Path) -> Vec<(String, i64)> {
    let mut t = Tensor::read_safetensors(path).unwrap();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t.into_iter()
        .map(|(n, m)| (n, m.sum(Kind::Int64).int64_value(&[])))
        .collect()
}

#[test]
fn at_init_arms_prune_theta0_to_their_siblings_counts_and_repeat_their_bytes() {
    let dir = experiment_dir(|_| String::new());
    let root = dir.path();
    let arms = "score_batches = 2\n\n[[arms]]\nname = \"rewind\"\nkind = \"rewind\"\n\n\
        [[arms]]\nname = \"snip\"\nkind = \"at-init\"\ncriterion = \"snip\"\n\n\
        [[arms]]\nname = \"synflow\"\nkind = \"at-init\"\ncriterion = \"synflow\"\nsynflow_iterations = 4\nshuffle = true\n\n\
        [[arms]]\nname = \"random\"\nkind = \"at-init\"\ncriterion = \"random\"\ninit = \"fresh\"\n";
    let a = run_small(root, "a", arms);
    let b = run_small(root, "b", arms);
    assert_eq!(
        crate::common::snapshot(&a),
        crate::common::snapshot(&b),
        "same bytes"
    );
    let seed = a.join("seed_1");
    for round in ["round_01", "round_02"] {
        let want = mask_counts(&seed.join(format!("rewind/{round}/mask.safetensors")));
        for arm in ["snip", "synflow", "random"] {
            let got = mask_counts(&seed.join(format!("{arm}/{round}/mask.safetensors")));
            assert_eq!(
                got, want,
                "{arm} {round}: the rewind arm's per-tensor counts"
            );
        }
    }
    // SNIP trains from θ₀ under its mask; the random arm from a fresh draw.
    let load = |p: std::path::PathBuf| -> Vec<(String, Tensor)> {
        let mut t = Tensor::read_safetensors(p).unwrap();
        t.sort_by(|x, y| x.0.cmp(&y.0));
        t
    };
    let theta0 = load(seed.join("theta_0.safetensors"));
    let snip_start = load(seed.join("snip/round_02/start.safetensors"));
    let snip_mask = load(seed.join("snip/round_02/mask.safetensors"));
    let random_start = load(seed.join("random/round_02/start.safetensors"));
    for ((name, t), (_, s)) in theta0.iter().zip(&snip_start) {
        let want = match snip_mask.iter().find(|(n, _)| n == name) {
            Some((_, m)) => t * m,
            None => t.shallow_clone(),
        };
        assert!(s.equal(&want), "{name}: snip starts from θ₀ masked");
    }
    let fc1 = |t: &[(String, Tensor)]| {
        t.iter()
            .find(|(n, _)| n == "fc1.weight")
            .unwrap()
            .1
            .shallow_clone()
    };
    let (fresh, original) = (fc1(&random_start), fc1(&theta0));
    let kept = fresh.ne(0.0);
    assert!(
        !fresh
            .masked_select(&kept)
            .equal(&original.masked_select(&kept)),
        "init = fresh draws new weights"
    );
    // The arm settings reach the tidy report.
    let out = lth(
        root,
        &[
            "report",
            "a",
            "--name",
            "r",
            "--data-dir",
            "nb",
            "--plots-dir",
            "pl",
        ],
    );
    crate::common::assert_success(&out, "report");
    let (h, rows) = read_csv(&root.join("nb/r/rounds.csv"));
    let col = |k: &str| h.iter().position(|c| c == k).unwrap();
    let synflow = rows.iter().find(|r| r[col("arm")] == "synflow").unwrap();
    assert_eq!(synflow[col("arm.criterion")], "synflow");
    assert_eq!(synflow[col("arm.shuffle")], "true");
    assert_eq!(synflow[col("arm.synflow_iterations")], "4");
}

#[test]
fn at_init_settings_that_cannot_apply_are_one_line_errors() {
    let dir = experiment_dir(|_| String::new());
    let root = dir.path();
    let arm = |body: &str| format!("\n[[arms]]\nname = \"a\"\nkind = \"at-init\"\n{body}");
    for (extra, needle) in [
        (arm(""), "needs `criterion`"),
        (
            arm("criterion = \"snip\"\nsynflow_iterations = 5\n"),
            "synflow_iterations",
        ),
        (
            arm("criterion = \"snip\"\nsibling = \"x\"\n"),
            "does not take `sibling`",
        ),
        (
            format!("score_batches = 500\n{}", arm("criterion = \"grasp\"\n")),
            "exceeds the",
        ),
        (arm("criterion = \"hessian\"\n"), "hessian"),
    ] {
        assert_small_config_refused(root, &extra, needle);
    }
}
