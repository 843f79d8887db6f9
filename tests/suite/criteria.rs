//! Gradient criteria (`prune.criterion = "taylor" | "obd"`) score what their papers define.
//! Reference: an independent computation on a tiny network, each replica alone: a forward pass
//! written out here (matrix products on the replica's own weight tensors), autograd on those
//! tensors, and for OBD each example's gradient by a loop over examples, summed in f64.

use lth::config::{PruneConfig, PruneScope};
use lth::data::Dataset;
use lth::model::{ConvNet, Layout, Lenet, Network, State};
use lth::prune::{
    groups, prune_count, prune_round, prune_to_keep, remaining_counts, targets, Criterion,
    Magnitude, Obd, Obs, ScoreContext, ScoreData, Taylor,
};
use tch::{Device, Kind, Tensor};

use crate::common::{
    assert_one_line_error, assert_small_config_refused, assert_success, experiment_dir, lth,
    read_csv, small_config, snapshot, tiny_data,
};

pub(crate) const SEEDS: [u64; 3] = [3, 5, 8];

/// LeNet-like 784-6-5-10: small enough for per-example loops.
pub(crate) fn net() -> Lenet {
    Lenet::with_widths(&[784, 6, 5, 10])
}

/// θ₀ of `seeds`, with a magnitude mask of one 20% round applied (so scores are taken on a
/// masked network, as in round 2 and later).
pub(crate) fn masked_population(layout: &Layout, seeds: &[u64]) -> (State, Tensor) {
    let state = State::init(layout, seeds, Device::Cpu);
    let cfg = PruneConfig::default();
    let g = groups(layout, &cfg).unwrap();
    let dense = state.params.ones_like();
    let masks = prune_round(&mut Magnitude, &state.params, &dense, layout, &g);
    (state.masked(&masks), masks)
}

pub(crate) fn score_data<'a>(net: &'a Lenet, data: &'a Dataset, seeds: &[u64]) -> ScoreData<'a> {
    ScoreData {
        net,
        train: &data.train,
        seeds: seeds.to_vec(),
        index: 2,
    }
}

pub(crate) fn scores(
    criterion: &mut dyn Criterion,
    layout: &Layout,
    state: &State,
    masks: &Tensor,
) -> Tensor {
    let losing = vec![vec![true; layout.specs().len()]; state.replicas()];
    let ctx = ScoreContext {
        layout,
        state,
        masks,
        losing: &losing,
    };
    criterion.scores(&ctx)
}

/// Each layer's inputs and the logits `[n, 10]` of one replica's flat weights `w` `[P]` on
/// images `[n, 1, 28, 28]`, written out layer by layer.
pub(crate) fn hand_forward(layout: &Layout, w: &Tensor, x: &Tensor) -> (Vec<Tensor>, Tensor) {
    let mut h = x.view([x.size()[0], 784]).to_kind(w.kind());
    let mut inputs = Vec::new();
    for l in 1..=3 {
        inputs.push(h.shallow_clone());
        let part = |name: String| {
            let i = layout.index_of(&name).unwrap();
            let spec = &layout.specs()[i];
            w.narrow(0, layout.offset(i) as i64, spec.numel() as i64)
                .view(spec.shape.as_slice())
        };
        h = h.matmul(&part(format!("fc{l}.weight")).tr()) + part(format!("fc{l}.bias"));
        if l < 3 {
            h = h.relu();
        }
    }
    (inputs, h)
}

/// The logits of [`hand_forward`].
pub(crate) fn hand_logits(layout: &Layout, w: &Tensor, x: &Tensor) -> Tensor {
    hand_forward(layout, w, x).1
}

/// Gradient `[P]` of the mean cross-entropy of examples `index` for one replica's weights.
pub(crate) fn hand_gradient(layout: &Layout, data: &Dataset, w: &Tensor, index: &[i64]) -> Tensor {
    let idx = Tensor::from_slice(index);
    let x = data.train.images.index_select(0, &idx);
    let y = data.train.labels.index_select(0, &idx);
    let w = w.detach().set_requires_grad(true);
    let loss = hand_logits(layout, &w, &x).cross_entropy_for_logits(&y);
    Tensor::run_backward(&[loss], &[&w], false, false)
        .pop()
        .unwrap()
}

/// Largest absolute difference relative to the largest reference value.
pub(crate) fn relative_error(got: &Tensor, want: &Tensor) -> f64 {
    let scale = want.abs().max().double_value(&[]);
    assert!(scale > 0.0, "reference scores are not all zero");
    (got.to_kind(Kind::Double) - want.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
        / scale
}

#[test]
fn taylor_scores_are_the_mean_squared_first_order_terms_over_the_replicas_own_batches() {
    let (_tmp, data) = tiny_data();
    let net = net();
    let layout = net.layout().clone();
    let (state, masks) = masked_population(&layout, &SEEDS);
    let (batches, batch_size) = (3, 20);
    let mut taylor = Taylor {
        data: score_data(&net, &data, &SEEDS),
        batches,
        batch_size,
    };
    let got = scores(&mut taylor, &layout, &state, &masks);
    for r in 0..SEEDS.len() {
        let examples = taylor.data.examples(r, batches * batch_size);
        let distinct: std::collections::BTreeSet<i64> = examples.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            examples.len(),
            "examples drawn without replacement"
        );
        assert!(examples.iter().all(|&i| (i as usize) < data.train.len()));
        let w = state.params.get(r as i64);
        let mut want = Tensor::zeros([layout.total() as i64], (Kind::Double, Device::Cpu));
        for b in 0..batches {
            let g = hand_gradient(
                &layout,
                &data,
                &w,
                &examples[b * batch_size..(b + 1) * batch_size],
            );
            want += (&w * g).square().to_kind(Kind::Double);
        }
        want /= batches as f64;
        let err = relative_error(&got.get(r as i64), &want);
        assert!(
            err < 1e-4,
            "replica {r}: taylor scores off by {err} of the largest"
        );
    }
    // Different seeds score on different examples.
    assert_ne!(taylor.data.examples(0, 10), taylor.data.examples(1, 10));
}

#[test]
fn obd_scores_are_half_the_fisher_diagonal_from_per_example_gradients_times_w_squared() {
    let (_tmp, data) = tiny_data();
    let net = net();
    let layout = net.layout().clone();
    let (state, masks) = masked_population(&layout, &SEEDS[..2]);
    let examples = 70; // more than one chunk of per-example copies on the CPU (64)
    let mut obd = Obd {
        data: score_data(&net, &data, &SEEDS[..2]),
        examples,
    };
    let got = scores(&mut obd, &layout, &state, &masks);
    for r in 0..2 {
        let w = state.params.get(r as i64);
        let mut fisher = Tensor::zeros([layout.total() as i64], (Kind::Double, Device::Cpu));
        for &n in &obd.data.examples(r, examples) {
            let g = hand_gradient(&layout, &data, &w, &[n]);
            fisher += g.to_kind(Kind::Double).square();
        }
        let want = fisher / examples as f64 * w.to_kind(Kind::Double).square() * 0.5;
        let err = relative_error(&got.get(r as i64), &want);
        assert!(
            err < 1e-4,
            "replica {r}: obd scores off by {err} of the largest"
        );
    }
}

#[test]
fn a_replicas_gradient_scores_are_the_same_bits_alone_or_in_a_population() {
    let (_tmp, data) = tiny_data();
    let net = net();
    let layout = net.layout().clone();
    let (state, masks) = masked_population(&layout, &SEEDS);
    let (alone_state, alone_masks) = masked_population(&layout, &SEEDS[1..2]);
    type Make<'a> = Box<dyn Fn(&[u64]) -> Box<dyn Criterion + 'a> + 'a>;
    let makers: Vec<(&str, Make<'_>)> = vec![
        (
            "taylor",
            Box::new(|s: &[u64]| -> Box<dyn Criterion + '_> {
                Box::new(Taylor {
                    data: score_data(&net, &data, s),
                    batches: 2,
                    batch_size: 30,
                })
            }),
        ),
        (
            "obd",
            Box::new(|s: &[u64]| -> Box<dyn Criterion + '_> {
                Box::new(Obd {
                    data: score_data(&net, &data, s),
                    examples: 40,
                })
            }),
        ),
    ];
    for (name, make) in makers {
        let together = scores(make(&SEEDS).as_mut(), &layout, &state, &masks);
        let alone = scores(
            make(&SEEDS[1..2]).as_mut(),
            &layout,
            &alone_state,
            &alone_masks,
        );
        assert!(
            together.get(1).equal(&alone.get(0)),
            "{name}: replica of seed {} scores differently inside the population",
            SEEDS[1]
        );
    }
}

#[test]
fn gradient_criteria_prune_exact_counts_lowest_scores_first_and_never_revive_a_weight() {
    let (_tmp, data) = tiny_data();
    let net = net();
    let layout = net.layout().clone();
    let (state, masks) = masked_population(&layout, &SEEDS);
    for scope in [PruneScope::Global, PruneScope::Layerwise] {
        let cfg = PruneConfig {
            scope,
            ..PruneConfig::default()
        };
        let g = groups(&layout, &cfg).unwrap();
        let mut taylor = Taylor {
            data: score_data(&net, &data, &SEEDS),
            batches: 2,
            batch_size: 30,
        };
        let score = scores(&mut taylor, &layout, &state, &masks);
        let new = prune_to_keep(&mut taylor, &state, &masks, &layout, &g, |remaining| {
            targets::keep_iterative(remaining, &g)
        });
        let before = remaining_counts(&masks, &layout);
        let after = remaining_counts(&new, &layout);
        for r in 0..SEEDS.len() {
            for group in &g {
                let n: u64 = group.params.iter().map(|&i| before[r][i]).sum();
                let kept: u64 = group.params.iter().map(|&i| after[r][i]).sum();
                assert_eq!(
                    kept,
                    n - prune_count(n, group.fraction),
                    "{scope:?} replica {r}"
                );
                // Every removed weight scores at most every surviving one of its group.
                let (mut removed_max, mut kept_min) = (f64::MIN, f64::MAX);
                for &i in &group.params {
                    let seg = |t: &Tensor| layout.segment(t, i).get(r as i64);
                    let (old, now, s) = (seg(&masks), seg(&new), seg(&score));
                    let gone = old.gt(0.5).logical_and(&now.lt(0.5));
                    if gone.any().int64_value(&[]) == 1 {
                        removed_max =
                            removed_max.max(s.masked_select(&gone).max().double_value(&[]));
                    }
                    kept_min = kept_min.min(s.masked_select(&now.gt(0.5)).min().double_value(&[]));
                }
                assert!(
                    removed_max <= kept_min,
                    "{scope:?} replica {r}: a higher score was removed"
                );
            }
        }
        // A pruned weight is never kept again.
        let revived = new
            .gt(0.5)
            .logical_and(&masks.lt(0.5))
            .any()
            .int64_value(&[]);
        assert_eq!(revived, 0, "{scope:?}: a pruned weight came back");
    }
}

/// A run of the small config with `extra` under `[prune]`, into `name` under `root`.
pub(crate) fn run_small(root: &std::path::Path, name: &str, extra: &str) -> std::path::PathBuf {
    let config = root.join(format!("{name}.toml"));
    let data = root.join("data");
    std::fs::write(&config, small_config(&data, extra)).unwrap();
    let out = lth(
        root,
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--run-dir",
            name,
            "--quiet",
            "--threads",
            "1",
        ],
    );
    assert_success(&out, name);
    root.join(name)
}

#[test]
fn taylor_and_obd_runs_repeat_their_bytes_and_choose_other_masks_than_magnitude() {
    let dir = experiment_dir(|_| String::new());
    let root = dir.path();
    let magnitude = run_small(root, "magnitude", "");
    let mut masks_of = vec![snapshot(&magnitude)];
    for (criterion, size) in [
        ("taylor", "score_batches = 2"),
        ("obd", "score_examples = 50"),
    ] {
        let extra = format!("criterion = \"{criterion}\"\n{size}\n");
        let a = run_small(root, &format!("{criterion}-a"), &extra);
        let b = run_small(root, &format!("{criterion}-b"), &extra);
        let (sa, sb) = (snapshot(&a), snapshot(&b));
        assert_eq!(sa, sb, "{criterion}: the same config wrote different bytes");
        // The same counts as magnitude in every round, other weights chosen.
        let (h, rows) = read_csv(&a.join("rounds.csv"));
        let (_, mrows) = read_csv(&magnitude.join("rounds.csv"));
        let col = h.iter().position(|c| c == "weights_remaining").unwrap();
        let counts: Vec<&String> = rows.iter().map(|r| &r[col]).collect();
        let mcounts: Vec<&String> = mrows.iter().map(|r| &r[col]).collect();
        assert_eq!(counts, mcounts, "{criterion}: counts as magnitude's");
        let mask = |s: &std::collections::BTreeMap<String, Vec<u8>>| {
            s.iter()
                .filter(|(k, _)| k.contains("round_01") && k.ends_with("mask.safetensors"))
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        assert!(!mask(&sa).is_empty(), "round 1 masks saved");
        assert!(
            masks_of.iter().all(|other| mask(other) != mask(&sa)),
            "{criterion}: round 1 masks equal another criterion's"
        );
        masks_of.push(sa);
    }
}

#[test]
fn criterion_settings_that_cannot_apply_are_one_line_errors() {
    let dir = experiment_dir(|_| String::new());
    let root = dir.path();
    for (extra, needle) in [
        ("criterion = \"hessian\"\n", "criterion"),
        ("score_batches = 5\n", "prune.score_batches"),
        (
            "criterion = \"taylor\"\nscore_examples = 50\n",
            "prune.score_examples",
        ),
        (
            "criterion = \"obd\"\nscore_examples = 5000\n",
            "exceeds the",
        ),
        (
            "criterion = \"taylor\"\nscore_batches = 500\n",
            "exceeds the",
        ),
        (
            "criterion = \"obd\"\nscore_examples = 0\n",
            "prune.score_examples",
        ),
    ] {
        assert_small_config_refused(root, extra, needle);
    }
}

/// OBS scores of a layer's weights `w` `[out, in]` (float64) under mask `m` from its input
/// rows `[M, in]`, by a dense inverse per row: w_q² / [H_KK⁻¹]_qq over the row's kept inputs
/// K, H = (2/M) XᵀX + λI.
fn hand_obs_scores(rows: &Tensor, w: &Tensor, m: &Tensor, damping: f64) -> Tensor {
    let (out, inn) = (w.size()[0], w.size()[1]);
    let xtx = rows.tr().matmul(rows) * (2.0 / rows.size()[0] as f64);
    let lambda = damping * xtx.diagonal(0, 0, 1).mean(Kind::Double).double_value(&[]);
    let h = xtx + Tensor::eye(inn, (Kind::Double, Device::Cpu)) * lambda;
    let want = Tensor::zeros([out, inn], (Kind::Double, Device::Cpu));
    for j in 0..out {
        let kept = m.get(j).gt(0.5).nonzero().view([-1]);
        let sub = h.index_select(0, &kept).index_select(1, &kept).inverse();
        let wk = w.get(j).index_select(0, &kept);
        let _ = want
            .get(j)
            .index_copy_(0, &kept, &(wk.square() / sub.diagonal(0, 0, 1)));
    }
    want
}

#[test]
fn obs_scores_are_w_squared_over_the_inverse_hessian_diagonal_of_each_rows_kept_inputs() {
    let (_tmp, data) = tiny_data();
    let net = net();
    let layout = net.layout().clone();
    let (state, masks) = masked_population(&layout, &SEEDS[..2]);
    let (examples, damping) = (80, 0.01);
    let mut obs = Obs::new(score_data(&net, &data, &SEEDS[..2]), examples, damping);
    let got = scores(&mut obs, &layout, &state, &masks);
    for r in 0..2 {
        let w = state.params.get(r as i64).to_kind(Kind::Double);
        let m = masks.get(r as i64);
        let idx = Tensor::from_slice(&obs.data.examples(r, examples));
        let x = data
            .train
            .images
            .index_select(0, &idx)
            .to_kind(Kind::Double);
        for (l, input) in hand_forward(&layout, &w, &x).0.iter().enumerate() {
            let i = layout.index_of(&format!("fc{}.weight", l + 1)).unwrap();
            let spec = &layout.specs()[i];
            let (out, inn) = (spec.shape[0], spec.shape[1]);
            let seg = |t: &Tensor| layout.segment(&t.unsqueeze(0), i).view([out, inn]);
            let want = hand_obs_scores(input, &seg(&w), &seg(&m), damping);
            let err = relative_error(&seg(&got.get(r as i64)), &want);
            assert!(
                err < 1e-4,
                "replica {r} {}: obs scores off by {err}",
                spec.name
            );
        }
    }
}

/// Classic OBS, one weight after another (Hassibi & Stork 1993): remove q with
/// δw = -w_q / [H⁻¹]_qq · H⁻¹[:, q], then drop q from H⁻¹ by the rank-one update.
fn sequential_obs(h: &Tensor, w: &Tensor, kept: &[i64], remove: &[i64]) -> Tensor {
    let mut w = w.copy();
    let mut active = kept.to_vec();
    let idx = Tensor::from_slice(&active);
    let mut hinv = h.index_select(0, &idx).index_select(1, &idx).inverse();
    for &q in remove {
        let p = active.iter().position(|&a| a == q).unwrap() as i64;
        let col = hinv.select(1, p);
        let hqq = col.double_value(&[p]);
        let wq = w.double_value(&[q]);
        let shift = &col * (-wq / hqq);
        let ids = Tensor::from_slice(&active);
        let moved = w.index_select(0, &ids) + shift;
        let _ = w.index_copy_(0, &ids, &moved);
        let _ = w.index_fill_(0, &Tensor::from_slice(&[q]), 0.0);
        hinv = &hinv - col.unsqueeze(1).matmul(&hinv.select(0, p).unsqueeze(0)) / hqq;
        let rest: Vec<i64> = (0..active.len() as i64).filter(|&k| k != p).collect();
        let rest_t = Tensor::from_slice(&rest);
        hinv = hinv.index_select(0, &rest_t).index_select(1, &rest_t);
        active.remove(p as usize);
    }
    w
}

#[test]
fn the_obs_update_equals_removing_the_weights_one_after_another_and_removing_none_changes_nothing()
{
    let n = 12;
    let x = crate::common::randn(&[40, n], 7).to_kind(Kind::Double);
    let h = Obs::hessian(&x, 0.01);
    let w = crate::common::randn(&[3, n], 9).to_kind(Kind::Double);
    // Row 0 loses 4 of its 10 kept inputs, row 1 loses nothing, row 2 loses all it kept.
    let before = Tensor::ones([3, n], (Kind::Float, Device::Cpu));
    let _ = before.get(0).narrow(0, 0, 2).fill_(0.0);
    let after = before.copy();
    let row0_removed = [3i64, 5, 8, 11];
    let _ = after
        .get(0)
        .index_fill_(0, &Tensor::from_slice(&row0_removed), 0.0);
    let _ = after.get(2).fill_(0.0);
    let got = Obs::update(&h, &w, &before, &after);
    let kept0: Vec<i64> = (2..n).collect();
    let want0 = sequential_obs(&h, &w.get(0), &kept0, &row0_removed);
    let err = (got.get(0) - &want0).abs().max().double_value(&[]);
    assert!(err < 1e-9, "batched update vs one-by-one OBS: {err}");
    assert!(
        want0.get(4).double_value(&[]) != w.get(0).double_value(&[4]),
        "the kept weights moved"
    );
    assert!(
        got.get(1).equal(&w.get(1)),
        "a row that loses nothing is unchanged"
    );
    assert_eq!(got.get(2).abs().sum(Kind::Double).double_value(&[]), 0.0);
    // Masks unchanged: the weights come back as they were.
    assert!(Obs::update(&h, &w, &before, &before).equal(&w));
}

#[test]
fn obs_moves_the_weights_a_finetune_arm_starts_from_and_repeats_its_bytes() {
    let dir = experiment_dir(|_| String::new());
    let root = dir.path();
    // fc1 (784 inputs) is left dense to keep the test short: obs solves per row.
    let arms = "criterion = \"obs\"\nscore_examples = 60\nexclude = [\"fc1.weight\"]\n\n[[arms]]\nname = \"rewind\"\nkind = \"rewind\"\n\n[[arms]]\nname = \"finetune\"\nkind = \"finetune\"\niterations = 40\n";
    let a = run_small(root, "obs-a", arms);
    let b = run_small(root, "obs-b", arms);
    assert_eq!(
        snapshot(&a),
        snapshot(&b),
        "obs: the same config wrote different bytes"
    );
    let load = |path: std::path::PathBuf| -> Vec<(String, Tensor)> {
        let mut t = Tensor::read_safetensors(path).unwrap();
        t.sort_by(|x, y| x.0.cmp(&y.0));
        t
    };
    let seed = a.join("seed_0");
    let trained = load(seed.join("round_00/weights.safetensors"));
    let mask = load(seed.join("finetune/round_01/mask.safetensors"));
    let start = load(seed.join("finetune/round_01/start.safetensors"));
    let rewind_start = load(seed.join("rewind/round_01/start.safetensors"));
    let theta0 = load(seed.join("theta_0.safetensors"));
    let (mut moved, mut pruned_zero) = (false, true);
    for ((name, w), (_, s)) in trained.iter().zip(&start) {
        match mask.iter().find(|(n, _)| n == name) {
            Some((_, m)) => {
                moved |= !s.equal(&(w * m));
                pruned_zero &= s
                    .masked_select(&m.lt(0.5))
                    .abs()
                    .sum(Kind::Double)
                    .double_value(&[])
                    == 0.0;
            }
            None => assert!(
                s.equal(w),
                "{name}: unpruned tensors keep their trained values"
            ),
        }
    }
    assert!(
        moved,
        "the finetune arm starts from the weights obs moved, not the trained ones"
    );
    assert!(pruned_zero, "pruned weights start at zero");
    // The rewind arm starts from θ₀ under its own mask, whatever obs did to the trained ones.
    let rewind_mask = load(seed.join("rewind/round_01/mask.safetensors"));
    for ((name, s), (_, t)) in rewind_start.iter().zip(&theta0) {
        let want = match rewind_mask.iter().find(|(n, _)| n == name) {
            Some((_, m)) => t * m,
            None => t.shallow_clone(),
        };
        assert!(s.equal(&want), "{name}: rewind starts from θ₀ masked");
    }
}

#[test]
fn obs_settings_it_cannot_take_are_one_line_errors() {
    let dir = experiment_dir(|_| String::new());
    let root = dir.path();
    for (extra, needle) in [
        (
            "criterion = \"obs\"\nscore_examples = 60\n\n[model]\narch = \"conv-2\"\n",
            "cannot prune `fc1.weight`: its 12544 inputs",
        ),
        ("obs_damping = 0.1\n", "prune.obs_damping"),
        ("criterion = \"obs\"\nobs_damping = 0.0\n", "prune.obs_damping"),
        (
            "criterion = \"obs\"\nschedule = \"gradual\"\ngradual = { final_sparsity = 0.5, start = 20, end = 80, every = 20 }\n\n[[arms]]\nname = \"g\"\nkind = \"gradual\"\n",
            "gradual",
        ),
    ] {
        assert_small_config_refused(root, extra, needle);
    }
    // A residual network (its layers' inputs pass BatchNorm), without the fc3 fraction.
    let config = small_config(
        &root.join("data"),
        "criterion = \"obs\"\nscore_examples = 60\n\n[model]\narch = \"resnet\"\ndepth = 8\n",
    )
    .replace("layer_fractions = { \"fc3.weight\" = 0.1 }\n", "");
    std::fs::write(root.join("resnet.toml"), config).unwrap();
    let out = lth(
        root,
        &["run", "--config", "resnet.toml", "--run-dir", "bad"],
    );
    assert_one_line_error(&out, "BatchNorm");
    assert!(!root.join("bad").exists(), "no run dir made");
}

#[test]
fn obs_gives_a_diverged_replica_nan_scores_and_scores_the_others_as_alone() {
    let (_tmp, data) = tiny_data();
    let net = net();
    let layout = net.layout().clone();
    let (state, masks) = masked_population(&layout, &SEEDS[..2]);
    let _ = state.params.get(0).narrow(0, 0, 10).fill_(f64::NAN);
    let (alone, alone_masks) = masked_population(&layout, &SEEDS[1..2]);
    let make = |seeds: &[u64]| Obs::new(score_data(&net, &data, seeds), 40, 0.01);
    let got = scores(&mut make(&SEEDS[..2]), &layout, &state, &masks);
    let want = scores(&mut make(&SEEDS[1..2]), &layout, &alone, &alone_masks);
    assert!(
        got.get(1).equal(&want.get(0)),
        "the healthy replica as alone"
    );
    // fc2's inputs come through the NaN weights of fc1: its H is not finite.
    let fc2 = layout
        .segment(&got, layout.index_of("fc2.weight").unwrap())
        .get(0);
    assert_eq!(
        fc2.isnan().all().int64_value(&[]),
        1,
        "NaN scores for the diverged one"
    );
}

/// The 3 x 3 patches (padding 1) of `x` `[N, C, H, W]`, one row per example and position,
/// cut out one position at a time.
fn hand_patches(x: &Tensor) -> Tensor {
    let s = x.size();
    let padded = x.constant_pad_nd([1, 1, 1, 1]);
    let mut rows = Vec::new();
    for p in 0..s[2] {
        for q in 0..s[3] {
            rows.push(padded.narrow(2, p, 3).narrow(3, q, 3).reshape([s[0], -1]));
        }
    }
    Tensor::cat(&rows, 0)
}

#[test]
fn obs_scores_convolutions_by_their_unfolded_patches_in_any_chunking() {
    let (_tmp, data) = tiny_data();
    let net = ConvNet::new(&[3, 4], [1, 28, 28], 10, 0.0).unwrap();
    let layout = net.layout().clone();
    let seeds = [SEEDS[0]];
    let state = State::init(&layout, &seeds, Device::Cpu);
    let g = groups(&layout, &PruneConfig::default()).unwrap();
    let dense = state.params.ones_like();
    let masks = prune_round(&mut Magnitude, &state.params, &dense, &layout, &g);
    let state = state.masked(&masks);
    let convs = ["conv1.weight", "conv2.weight"].map(|n| layout.index_of(n).unwrap());
    let mut losing = vec![vec![false; layout.specs().len()]];
    for &i in &convs {
        losing[0][i] = true;
    }
    let ctx = ScoreContext {
        layout: &layout,
        state: &state,
        masks: &masks,
        losing: &losing,
    };
    let data_of = || ScoreData {
        net: &net,
        train: &data.train,
        seeds: seeds.to_vec(),
        index: 2,
    };
    let (examples, damping) = (30, 0.01);
    let mut obs = Obs::new(data_of(), examples, damping);
    let got = obs.scores(&ctx);
    // The same sums in chunks of one example (a Conv-2 of real width needs several).
    let mut chunked = Obs::new(data_of(), examples, damping);
    chunked.chunk_elements = 1;
    let err = relative_error(&chunked.scores(&ctx), &got);
    assert!(err < 1e-6, "one chunk vs one example at a time: {err}");

    let w = state.params.get(0).to_kind(Kind::Double);
    let param = |name: &str| {
        let i = layout.index_of(name).unwrap();
        layout.view(&w.unsqueeze(0), i).squeeze_dim(0)
    };
    let idx = Tensor::from_slice(&obs.data.examples(0, examples));
    let x = data
        .train
        .images
        .index_select(0, &idx)
        .to_kind(Kind::Double);
    let conv1 = x.conv2d(
        &param("conv1.weight"),
        Some(&param("conv1.bias")),
        [1, 1],
        [1, 1],
        [1, 1],
        1,
    );
    for (i, input) in convs.into_iter().zip([x.shallow_clone(), conv1.relu()]) {
        let spec = &layout.specs()[i];
        let out = spec.shape[0];
        let rows = hand_patches(&input);
        let fan_in = rows.size()[1];
        assert_eq!(fan_in, spec.shape[1] * 9);
        let seg = |t: &Tensor| layout.segment(&t.unsqueeze(0), i).view([out, fan_in]);
        let want = hand_obs_scores(&rows, &seg(&w), &seg(&masks.get(0)), damping);
        let err = relative_error(&seg(&got.get(0)), &want);
        assert!(err < 1e-4, "{}: obs scores off by {err}", spec.name);
    }
    let fc1 = layout.index_of("fc1.weight").unwrap();
    assert_eq!(
        layout
            .segment(&got, fc1)
            .abs()
            .sum(Kind::Double)
            .double_value(&[]),
        0.0,
        "a tensor not losing weights is not scored"
    );
}

#[test]
fn a_convnets_layer_inputs_give_its_logits_and_its_pre_activations() {
    let (_tmp, data) = tiny_data();
    let net = ConvNet::new(&[3, 4], [1, 28, 28], 10, 0.0).unwrap();
    let layout = net.layout();
    let state = State::init(layout, &[SEEDS[1]], Device::Cpu);
    let x = data.train.images.narrow(0, 0, 8);
    let w = state.params.get(0);
    let inputs = net.layer_inputs(&w, &x).unwrap();
    let names: Vec<&str> = inputs
        .iter()
        .map(|input| layout.specs()[input.weight].name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "conv1.weight",
            "conv2.weight",
            "fc1.weight",
            "fc2.weight",
            "fc3.weight"
        ]
    );
    let param = |name: &str| {
        let i = layout.index_of(name).unwrap();
        layout.view(&state.params, i).squeeze_dim(0)
    };
    // conv1's patches times its flattened filters are its convolution, position by position.
    let conv1 = x.conv2d(
        &param("conv1.weight"),
        None::<&Tensor>,
        [1, 1],
        [1, 1],
        [1, 1],
        1,
    );
    let by_rows = inputs[0]
        .rows
        .matmul(&param("conv1.weight").view([3, -1]).tr())
        .view([8, 28 * 28, 3])
        .permute([0, 2, 1])
        .reshape([8, 3, 28, 28]);
    let err = relative_error(&by_rows, &conv1);
    assert!(err < 1e-5, "conv1 by patches: {err}");
    // fc3's inputs give the network's logits.
    let pass = lth::model::Pass {
        params: &state.params,
        buffers: &[],
        train: false,
        dropout: None,
    };
    let logits = net.forward(&pass, lth::model::Input::Shared(&x)).get(0);
    let fc3 = inputs[4].rows.matmul(&param("fc3.weight").tr()) + param("fc3.bias");
    let err = relative_error(&fc3, &logits);
    assert!(err < 1e-5, "logits from fc3's inputs: {err}");
}
