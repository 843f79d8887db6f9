//! Structured pruning (`prune.granularity` neuron / filter): unit scores against a hand
//! computation (norms, taylor, activations of neurons and filters), exact counts and the tie
//! rule under both scopes and every schedule (iterative, one-shot, gradual), the random
//! control, removed units masked in their rows, biases and the inputs they feed (also
//! through convolutions into `fc1`), and a run whose removed units stay zero through
//! training and whose rerun gives the same bytes.

use crate::common::{assert_success, experiment_dir, run_in, run_quietly, small_config, snapshot};

use lth::config::{Granularity, PruneConfig, PruneScope, StructuredCriterion};
use lth::data::Split;
use lth::model::{ConvNet, Lenet, Network, ResNet, State, Vgg};
use lth::prune::structured::{
    activation_unit_scores, prune_units_round, pruned_unit_layers, taylor_unit_scores, unit_scores,
};
use lth::prune::ScoreData;
use lth::record::RunDir;
use tch::{Device, Kind, Tensor};

fn structured(granularity: Granularity, scope: PruneScope, fraction: f64) -> PruneConfig {
    PruneConfig {
        granularity,
        scope,
        fraction,
        ..PruneConfig::default()
    }
}

/// Row `u` of parameter `i` of replica `r` (as a flat list).
fn row(net: &dyn Network, flat: &Tensor, r: i64, i: usize, u: i64) -> Vec<f32> {
    let t = net.layout().view(flat, i).get(r).get(u).reshape([-1]);
    Vec::<f32>::try_from(&t).unwrap()
}

/// Parameter `i` of replica `r`, flat.
fn entries(net: &dyn Network, flat: &Tensor, r: i64, i: usize) -> Vec<f32> {
    Vec::<f32>::try_from(&net.layout().segment(flat, i).get(r)).unwrap()
}

fn param(net: &dyn Network, name: &str) -> usize {
    net.layout().index_of(name).unwrap()
}

#[test]
fn neurons_are_scored_by_hand_and_removed_with_their_bias_and_outgoing_columns() {
    let net = Lenet::with_widths(&[6, 4, 3, 2]);
    let state = State::init(net.layout(), &[0, 1], Device::Cpu);
    let params = state.params;
    let masks = Tensor::ones_like(&params);
    let layers = pruned_unit_layers(
        &net,
        &structured(Granularity::Neuron, PruneScope::Layerwise, 0.5),
    )
    .unwrap();
    assert_eq!(
        layers.len(),
        2,
        "fc1 and fc2; the output layer is never one"
    );
    let (fc1, fc2) = (param(&net, "fc1.weight"), param(&net, "fc2.weight"));

    // Scores by hand: mean |w| (l1) and root mean square (l2) of each neuron's row.
    for (criterion, f) in [
        (
            StructuredCriterion::L1,
            (|r: &[f32]| r.iter().map(|w| f64::from(w.abs())).sum::<f64>() / r.len() as f64)
                as fn(&[f32]) -> f64,
        ),
        (StructuredCriterion::L2, |r: &[f32]| {
            (r.iter().map(|w| f64::from(*w).powi(2)).sum::<f64>() / r.len() as f64).sqrt()
        }),
    ] {
        let s = unit_scores(&layers[0], net.layout(), &params, criterion);
        for r in 0..2 {
            for u in 0..4 {
                let hand = f(&row(&net, &params, r, fc1, u));
                assert!((s.get(r).get(u).double_value(&[]) - hand).abs() < 1e-12);
            }
        }
    }

    // Layerwise, half of each layer: fc1 loses round(0.5 x 4) = 2 neurons, fc2 round(1.5) = 2.
    let cfg = structured(Granularity::Neuron, PruneScope::Layerwise, 0.5);
    let out = prune_units_round(&layers, net.layout(), &cfg, &params, &masks);
    for r in 0..2 {
        for (l, (weight, units, removed)) in [(fc1, 4, 2), (fc2, 3, 2)].into_iter().enumerate() {
            let scores =
                unit_scores(&layers[l], net.layout(), &params, StructuredCriterion::L1).get(r);
            let mut order: Vec<i64> = (0..units).collect();
            order.sort_by(|&a, &b| {
                scores
                    .get(a)
                    .double_value(&[])
                    .total_cmp(&scores.get(b).double_value(&[]))
            });
            let gone = &order[..removed];
            let bias = weight + 1;
            let next = if l == 0 {
                fc2
            } else {
                param(&net, "fc3.weight")
            };
            for u in 0..units {
                let expect = if gone.contains(&u) { 0.0 } else { 1.0 };
                // A kept fc2 neuron loses only the columns of fc1's removed neurons.
                let own = row(&net, &out, r, weight, u);
                match (expect == 0.0, l) {
                    (true, _) => assert!(own.iter().all(|&m| m == 0.0), "row {u}"),
                    (false, 0) => assert!(own.iter().all(|&m| m == 1.0), "row {u}"),
                    (false, _) => assert_eq!(own.iter().filter(|&&m| m == 1.0).count(), 2),
                }
                assert_eq!(entries(&net, &out, r, bias)[u as usize], expect, "bias {u}");
                let next_rows = net.layout().view(&out, next).get(r);
                let column = Vec::<f32>::try_from(&next_rows.select(1, u)).unwrap();
                if expect == 0.0 {
                    assert!(
                        column.iter().all(|&m| m == 0.0),
                        "column {u} of the next layer"
                    );
                }
            }
        }
    }

    // Global: 7 units, round(0.5 x 7) = 4 go, the lowest per-weight scores over both layers.
    let cfg = structured(Granularity::Neuron, PruneScope::Global, 0.5);
    let out = prune_units_round(&layers, net.layout(), &cfg, &params, &masks);
    for r in 0..2 {
        let mut all: Vec<(f64, usize, i64)> = Vec::new();
        for (l, units) in [(0usize, 4i64), (1, 3)] {
            let s = unit_scores(&layers[l], net.layout(), &params, StructuredCriterion::L1).get(r);
            all.extend((0..units).map(|u| (s.get(u).double_value(&[]), l, u)));
        }
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (k, &(_, l, u)) in all.iter().enumerate() {
            let weight = [fc1, fc2][l];
            let own = row(&net, &out, r, weight, u);
            let removed = own.iter().all(|&m| m == 0.0);
            assert_eq!(removed, k < 4, "the 4 lowest go");
        }
    }
    // A second round counts only the units that remain: fc1 keeps 2, loses round(1) = 1.
    let cfg = structured(Granularity::Neuron, PruneScope::Layerwise, 0.5);
    let once = prune_units_round(&layers, net.layout(), &cfg, &params, &masks);
    let twice = prune_units_round(&layers, net.layout(), &cfg, &params, &once);
    for r in 0..2 {
        let kept = (0..4)
            .filter(|&u| row(&net, &twice, r, fc1, u).iter().any(|&m| m > 0.0))
            .count();
        assert_eq!(kept, 1);
    }
}

/// A 6-4-3-2 LeNet of two replicas, its full masks, and `examples` random examples of 6
/// inputs in [-0.5, 0.5) and 2 classes (drawn from `seed`).
fn scoring_fixture(seed: i64, examples: i64) -> (Lenet, State, Tensor, Split) {
    let net = Lenet::with_widths(&[6, 4, 3, 2]);
    let state = State::init(net.layout(), &[0, 1], Device::Cpu);
    let masks = Tensor::ones_like(&state.params);
    tch::manual_seed(seed);
    let split = Split {
        images: Tensor::rand([examples, 1, 2, 3], (Kind::Float, Device::Cpu)) - 0.5,
        labels: Tensor::randint(2, [examples], (Kind::Int64, Device::Cpu)),
    };
    (net, state, masks, split)
}

#[test]
fn taylor_scores_a_neuron_by_the_squared_sum_of_w_times_its_gradient_over_row_and_bias() {
    let (net, state, masks, split) = scoring_fixture(5, 20);
    let layout = net.layout();
    let data = ScoreData {
        net: &net,
        train: &split,
        seeds: vec![0, 1],
        index: 3,
    };
    let cfg = structured(Granularity::Neuron, PruneScope::Layerwise, 0.5);
    let layers = pruned_unit_layers(&net, &cfg).unwrap();
    let (batches, size) = (2, 4);
    let scores = taylor_unit_scores(&layers, layout, &data, (&state, &masks), (batches, size));
    // By hand: the three layers written out, autograd for the gradient.
    for r in 0..2i64 {
        let examples = data.examples(r as usize, batches * size);
        let mut expect = [vec![0.0f64; 4], vec![0.0f64; 3]];
        for b in 0..batches {
            let index = Tensor::from_slice(&examples[b * size..(b + 1) * size]);
            let x = split.images.index_select(0, &index).view([size as i64, 6]);
            let y = split.labels.index_select(0, &index);
            let p: Vec<Tensor> = (0..6)
                .map(|i| {
                    layout
                        .view(&state.params, i)
                        .get(r)
                        .detach()
                        .set_requires_grad(true)
                })
                .collect();
            let loss = crate::common::lenet_loss_by_hand(&p, &x, &y);
            let g = Tensor::run_backward(&[loss], &p[..4].iter().collect::<Vec<_>>(), false, false);
            for (l, units) in [(0usize, 4i64), (1, 3)] {
                let (w, bias) = (&p[2 * l], &p[2 * l + 1]);
                let (gw, gb) = (&g[2 * l], &g[2 * l + 1]);
                for u in 0..units {
                    let s = (w.get(u) * gw.get(u)).sum(Kind::Double).double_value(&[])
                        + (bias.get(u) * gb.get(u)).double_value(&[]);
                    expect[l][u as usize] += s * s / batches as f64;
                }
            }
        }
        for l in 0..2 {
            for (u, e) in expect[l].iter().enumerate() {
                let got = scores[l].get(r).get(u as i64).double_value(&[]);
                assert!(
                    (got - e).abs() <= 1e-4 * e.abs() + 1e-12,
                    "replica {r} layer {l} unit {u}: {got} vs {e}"
                );
            }
        }
    }
}

#[test]
fn apoz_and_mean_activation_score_a_neuron_by_its_relu_outputs() {
    let (net, state, masks, split) = scoring_fixture(6, 300);
    let layout = net.layout();
    let data = ScoreData {
        net: &net,
        train: &split,
        seeds: vec![0, 1],
        index: 2,
    };
    let mut cfg = structured(Granularity::Neuron, PruneScope::Layerwise, 0.5);
    let layers = pruned_unit_layers(&net, &cfg).unwrap();
    let n = 250; // three chunks of at most 100
    for criterion in [
        StructuredCriterion::Apoz,
        StructuredCriterion::MeanActivation,
    ] {
        cfg.structured_criterion = criterion;
        let scores =
            activation_unit_scores(&layers, layout, &data, (&state, &masks), (criterion, n));
        for r in 0..2i64 {
            let index = Tensor::from_slice(&data.examples(r as usize, n));
            let x = split.images.index_select(0, &index).view([n as i64, 6]);
            let p = |i: usize| layout.view(&state.params, i).get(r);
            let h1 = x.linear(&p(0), Some(&p(1))).relu();
            let h2 = h1.linear(&p(2), Some(&p(3))).relu();
            for (l, h) in [h1, h2].iter().enumerate() {
                let expect = match criterion {
                    StructuredCriterion::Apoz => {
                        h.gt(0.0)
                            .to_kind(Kind::Double)
                            .mean_dim(0, false, Kind::Double)
                    }
                    _ => h.to_kind(Kind::Double).mean_dim(0, false, Kind::Double),
                };
                let got = scores[l].get(r);
                assert!(
                    got.allclose(&expect, 1e-6, 1e-9, false),
                    "{criterion:?} replica {r} layer {l}: {got} vs {expect}"
                );
            }
        }
    }
}

#[test]
fn equal_scores_go_in_position_order() {
    let net = Lenet::with_widths(&[3, 4, 2]);
    let layers = pruned_unit_layers(
        &net,
        &structured(Granularity::Neuron, PruneScope::Layerwise, 0.5),
    )
    .unwrap();
    let params = Tensor::ones([1, net.layout().total() as i64], (Kind::Float, Device::Cpu));
    let masks = Tensor::ones_like(&params);
    let cfg = structured(Granularity::Neuron, PruneScope::Layerwise, 0.5);
    let out = prune_units_round(&layers, net.layout(), &cfg, &params, &masks);
    let fc1 = param(&net, "fc1.weight");
    let kept: Vec<bool> = (0..4)
        .map(|u| row(&net, &out, 0, fc1, u).iter().all(|&m| m == 1.0))
        .collect();
    assert_eq!(kept, [false, false, true, true]);
}

#[test]
fn filters_are_removed_with_the_next_convolutions_channels_and_fc1s_columns() {
    let net = ConvNet::new(&[4, 4], [1, 4, 4], 3, 0.0).unwrap();
    let cfg = structured(Granularity::Filter, PruneScope::Layerwise, 0.5);
    let layers = pruned_unit_layers(&net, &cfg).unwrap();
    assert_eq!(
        layers.len(),
        2,
        "conv1 and conv2; fc neurons are another granularity"
    );
    let state = State::init(net.layout(), &[3], Device::Cpu);
    let masks = Tensor::ones_like(&state.params);
    let out = prune_units_round(&layers, net.layout(), &cfg, &state.params, &masks);
    let layout = net.layout();
    let gone = |name: &str| -> Vec<i64> {
        let i = param(&net, name);
        (0..4)
            .filter(|&u| row(&net, &out, 0, i, u).iter().all(|&m| m == 0.0))
            .collect()
    };
    let (g1, g2) = (gone("conv1.weight"), gone("conv2.weight"));
    assert_eq!((g1.len(), g2.len()), (2, 2));
    let conv2 = layout.view(&out, param(&net, "conv2.weight")).get(0);
    let fc1 = layout.view(&out, param(&net, "fc1.weight")).get(0); // [256, 4 * 2 * 2]
    for c in 0..4 {
        let channel = conv2.select(1, c).abs().sum(Kind::Double).double_value(&[]);
        assert_eq!(channel == 0.0, g1.contains(&c), "conv2's input channel {c}");
        let bias = layout.view(&out, param(&net, "conv1.bias")).get(0).get(c);
        assert_eq!(
            bias.double_value(&[]) == 0.0,
            g1.contains(&c),
            "conv1's bias {c}"
        );
        let columns = fc1
            .narrow(1, c * 4, 4)
            .abs()
            .sum(Kind::Double)
            .double_value(&[]);
        assert_eq!(
            columns == 0.0,
            g2.contains(&c),
            "fc1's 4 columns of channel {c}"
        );
    }
    // Multiply-adds: a convolution weight once per output position (4 x 4 here, the pool
    // comes after conv2), a fully connected one once.
    let at = net.weight_positions().unwrap();
    assert_eq!(at[param(&net, "conv1.weight")], 16);
    assert_eq!(at[param(&net, "conv2.weight")], 16);
    assert_eq!(at[param(&net, "fc1.weight")], 1);
    // LeNet has no filters: one error line.
    let err = pruned_unit_layers(&Lenet::new(784, 10), &cfg).unwrap_err();
    assert!(format!("{err}").contains("no convolution filters"), "{err}");
}

#[test]
fn a_neuron_pruned_run_keeps_removed_units_at_zero_through_training_and_reruns_its_bytes() {
    let extra = "granularity = \"neuron\"\nstructured_criterion = \"l2\"\n";
    let tmp = experiment_dir(|data| {
        small_config(data, "").replace("rounds = 2", &format!("rounds = 2\n{extra}"))
    });
    let root = tmp.path();
    for dir in ["a", "b"] {
        let out = run_in(root, dir)
            .args(["--quiet", "--threads", "1"])
            .output()
            .unwrap();
        assert_success(&out, "the structured run");
    }
    let net = Lenet::new(784, 10);
    let layout = net.layout();
    let dir = RunDir::at(root.join("a"));
    let (fc1, fc2) = (param(&net, "fc1.weight"), param(&net, "fc2.weight"));
    for seed in [0, 1] {
        let mask = dir
            .load_mask("rewind", seed, 2, layout)
            .unwrap()
            .unsqueeze(0);
        let weights = dir.load_weights("rewind", seed, 2, layout).unwrap().params;
        // fc1: 300 -> 240 -> 192 neurons; fc2: 100 -> 80 -> 64.
        for (weight, units, kept) in [(fc1, 300, 192), (fc2, 100, 64)] {
            let alive: Vec<i64> = (0..units)
                .filter(|&u| row(&net, &mask, 0, weight, u).iter().any(|&m| m > 0.0))
                .collect();
            assert_eq!(alive.len(), kept);
            for u in (0..units).filter(|u| !alive.contains(u)) {
                // The trained weights of a removed neuron: its row and bias are exactly 0.
                assert!(row(&net, &weights, 0, weight, u).iter().all(|&w| w == 0.0));
                assert_eq!(entries(&net, &weights, 0, weight + 1)[u as usize], 0.0);
            }
        }
    }
    let read = |d: &str, f: &str| std::fs::read(root.join(d).join(f)).unwrap();
    assert_eq!(
        read("a", "rounds.csv"),
        read("b", "rounds.csv"),
        "same bytes on a rerun"
    );

    // rounds.csv counts what remains: units, parameters (the compact network's size) and
    // multiply-adds per example (LeNet: one per weight).
    let (header, rows) = crate::common::read_csv(&root.join("a/rounds.csv"));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    for (round, (k1, k2)) in [(0, (300, 100)), (1, (240, 80)), (2, (192, 64))] {
        let row = rows
            .iter()
            .find(|r| r[col("round")] == round.to_string() && r[col("seed")] == "0")
            .unwrap();
        let weights = 784 * k1 + k1 * k2 + k2 * 10;
        assert_eq!(row[col("units_remaining")], (k1 + k2).to_string());
        assert_eq!(
            row[col("params_remaining")],
            (weights + k1 + k2 + 10).to_string()
        );
        assert_eq!(row[col("flops_remaining")], weights.to_string());
        let pct: f64 = row[col("flops_remaining_pct")].parse().unwrap();
        let dense = f64::from(784 * 300 + 300 * 100 + 100 * 10);
        assert!((pct - 100.0 * f64::from(weights) / dense).abs() < 1e-9);
    }

    // Ranked by their activations, the counts are as exact.
    let out = run_in(root, "c")
        .args(["--quiet", "--set", "prune.structured_criterion=\"apoz\""])
        .args(["--set", "prune.score_examples=100"])
        .output()
        .unwrap();
    assert_success(&out, "the apoz run");
    let (header, rows) = crate::common::read_csv(&root.join("c/rounds.csv"));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let units: Vec<&str> = rows
        .iter()
        .filter(|r| r[col("round")] == "2")
        .map(|r| r[col("units_remaining")].as_str())
        .collect();
    assert_eq!(units, ["256", "256"], "192 + 64 neurons for each seed");
}

#[test]
fn a_resnet_loses_inner_filters_with_their_batchnorm_entries_and_the_next_convs_channels() {
    let net = ResNet::new(20, [3, 8, 8], 10);
    let layout = net.layout();
    let cfg = structured(Granularity::Filter, PruneScope::Layerwise, 0.2);
    let layers = pruned_unit_layers(&net, &cfg).unwrap();
    let names: Vec<&str> = layers
        .iter()
        .map(|l| layout.specs()[l.weight].name.as_str())
        .collect();
    assert_eq!(names.len(), 9, "each block's conv1, nothing else");
    assert!(
        names.iter().all(|n| n.ends_with(".conv1.weight")),
        "{names:?}"
    );
    let state = State::init(layout, &[4], Device::Cpu);
    let masks = Tensor::ones_like(&state.params);
    let out = prune_units_round(&layers, layout, &cfg, &state.params, &masks);
    for (i, width) in [16i64, 16, 16, 32, 32, 32, 64, 64, 64]
        .into_iter()
        .enumerate()
    {
        let p = |part: &str| param(&net, &format!("blocks.{i}.{part}"));
        let gone: Vec<i64> = (0..width)
            .filter(|&u| {
                row(&net, &out, 0, p("conv1.weight"), u)
                    .iter()
                    .all(|&m| m == 0.0)
            })
            .collect();
        // round(0.2 x 16) = 3, round(6.4) = 6, round(12.8) = 13.
        assert_eq!(
            gone.len() as i64,
            (0.2 * width as f64).round() as i64,
            "block {i}"
        );
        let conv2 = layout.view(&out, p("conv2.weight")).get(0);
        for u in 0..width {
            let removed = gone.contains(&u);
            for bn in ["bn1.weight", "bn1.bias"] {
                assert_eq!(
                    entries(&net, &out, 0, p(bn))[u as usize] == 0.0,
                    removed,
                    "{bn} {u}"
                );
            }
            let channel = conv2.select(1, u).abs().sum(Kind::Double).double_value(&[]);
            assert_eq!(channel == 0.0, removed, "conv2's input channel {u}");
            // conv2's own filters and bn2 stay: the residual sum ties them.
            assert!(row(&net, &out, 0, p("conv2.weight"), u).contains(&1.0));
            assert_eq!(entries(&net, &out, 0, p("bn2.weight"))[u as usize], 1.0);
        }
    }
    // Multiply-adds per weight: 8 x 8 before the first stride, 4 x 4 and 2 x 2 after.
    let at = net.weight_positions().unwrap();
    assert_eq!(at[param(&net, "conv.weight")], 64);
    assert_eq!(at[param(&net, "blocks.3.conv1.weight")], 16);
    assert_eq!(at[param(&net, "blocks.3.shortcut.0.weight")], 16);
    assert_eq!(at[param(&net, "blocks.8.conv2.weight")], 4);
    assert_eq!(at[param(&net, "fc.weight")], 1);

    // A run: taylor-ranked filters, exact counts, removed filters and their BatchNorm entries
    // zero in the trained weights.
    let tmp = crate::common::tiny_resnet_run(
        "granularity = \"filter\"\nstructured_criterion = \"taylor\"\nscore_batches = 1\n",
    );
    let root = tmp.path();
    let (header, rows) = crate::common::read_csv(&root.join("run/rounds.csv"));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let units: Vec<&str> = rows
        .iter()
        .map(|r| r[col("units_remaining")].as_str())
        .collect();
    // 3 x 16 + 3 x 32 + 3 x 64 = 336 filters; one round: 3 x 13 + 3 x 26 + 3 x 51 = 270.
    assert_eq!(units, ["336", "270"]);
    assert!(rows.iter().all(|r| !r[col("flops_remaining")].is_empty()));
    let net = ResNet::new(20, [3, 32, 32], 10);
    let dir = RunDir::at(root.join("run"));
    let mask = dir
        .load_mask("rewind", 0, 1, net.layout())
        .unwrap()
        .unsqueeze(0);
    let weights = dir
        .load_weights("rewind", 0, 1, net.layout())
        .unwrap()
        .params;
    let (conv1, bn1) = (
        param(&net, "blocks.0.conv1.weight"),
        param(&net, "blocks.0.bn1.weight"),
    );
    for u in (0..16).filter(|&u| row(&net, &mask, 0, conv1, u).iter().all(|&m| m == 0.0)) {
        assert!(row(&net, &weights, 0, conv1, u).iter().all(|&w| w == 0.0));
        assert_eq!(entries(&net, &weights, 0, bn1)[u as usize], 0.0);
    }
}

/// The units of layer `weight` (with `units` rows) that some kept mask entry of their row
/// reaches, in mask row `mask` `[1, P]`.
fn alive_units(net: &dyn Network, mask: &Tensor, weight: usize, units: i64) -> Vec<i64> {
    (0..units)
        .filter(|&u| row(net, mask, 0, weight, u).iter().any(|&m| m > 0.0))
        .collect()
}

/// Asserts that every unit of `weight` outside `alive` is gone from `mask` `[1, P]`: its row,
/// its bias (the parameter after the weight) and its column in `next`.
fn assert_removed_whole(
    net: &dyn Network,
    mask: &Tensor,
    (weight, next): (usize, usize),
    alive: &[i64],
    units: i64,
) {
    let next_in = net.layout().view(mask, next).get(0);
    for u in (0..units).filter(|u| !alive.contains(u)) {
        assert!(row(net, mask, 0, weight, u).iter().all(|&m| m == 0.0));
        assert_eq!(entries(net, mask, 0, weight + 1)[u as usize], 0.0);
        let column = Vec::<f32>::try_from(&next_in.select(1, u)).unwrap();
        assert!(
            column.iter().all(|&m| m == 0.0),
            "unit {u}'s column in the next layer"
        );
    }
}

#[test]
fn filters_are_scored_by_their_relu_outputs_by_hand() {
    let net = ConvNet::new(&[4, 4], [1, 4, 4], 3, 0.0).unwrap();
    let layout = net.layout();
    let state = State::init(layout, &[0, 1], Device::Cpu);
    let masks = Tensor::ones_like(&state.params);
    tch::manual_seed(9);
    let split = Split {
        images: Tensor::randn([150, 1, 4, 4], (Kind::Float, Device::Cpu)),
        labels: Tensor::randint(3, [150], (Kind::Int64, Device::Cpu)),
    };
    let data = ScoreData {
        net: &net,
        train: &split,
        seeds: vec![0, 1],
        index: 4,
    };
    let n = 130; // two chunks
    for criterion in [
        StructuredCriterion::Apoz,
        StructuredCriterion::MeanActivation,
    ] {
        let mut cfg = structured(Granularity::Filter, PruneScope::Layerwise, 0.5);
        cfg.structured_criterion = criterion;
        let layers = pruned_unit_layers(&net, &cfg).unwrap();
        assert_eq!(layers.len(), 2, "conv1 and conv2");
        let scores =
            activation_unit_scores(&layers, layout, &data, (&state, &masks), (criterion, n));
        for r in 0..2i64 {
            let index = Tensor::from_slice(&data.examples(r as usize, n));
            let x = split.images.index_select(0, &index);
            let p = |i: usize| layout.view(&state.params, i).get(r);
            // Each filter's ReLU outputs: conv1's at all 4 x 4 positions, conv2's after the
            // 2 x 2 pooling that precedes fc1.
            let h1 = x
                .conv2d(&p(0), Some(&p(1)), [1, 1], [1, 1], [1, 1], 1)
                .relu();
            let h2 = h1
                .conv2d(&p(2), Some(&p(3)), [1, 1], [1, 1], [1, 1], 1)
                .relu()
                .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
            for (l, h) in [h1, h2].iter().enumerate() {
                let per_filter = h.transpose(0, 1).reshape([4, -1]).to_kind(Kind::Double);
                let expect =
                    match criterion {
                        StructuredCriterion::Apoz => per_filter
                            .gt(0.0)
                            .to_kind(Kind::Double)
                            .mean_dim(1, false, Kind::Double),
                        _ => per_filter.mean_dim(1, false, Kind::Double),
                    };
                let got = scores[l].get(r);
                assert!(
                    got.allclose(&expect, 1e-6, 1e-9, false),
                    "{criterion:?} replica {r} conv{}: {got} vs {expect}",
                    l + 1
                );
            }
        }
    }
    // A network whose layer inputs lth does not read: one error line.
    let resnet = ResNet::new(20, [3, 8, 8], 10);
    let mut by_filters = structured(Granularity::Filter, PruneScope::Layerwise, 0.5);
    by_filters.structured_criterion = StructuredCriterion::Apoz;
    let err = pruned_unit_layers(&resnet, &by_filters).unwrap_err();
    assert!(
        format!("{err}").contains("lth reads for LeNet and Conv-2/4/6 only"),
        "{err}"
    );
}

#[test]
fn one_shot_structured_ranks_the_trained_dense_units_and_the_random_control_takes_its_siblings_counts(
) {
    let extra = "schedule = \"one-shot\"\ngranularity = \"neuron\"\nstructured_criterion = \"l2\"\n\n[[arms]]\nname = \"rewind\"\nkind = \"rewind\"\n\n[[arms]]\nname = \"random\"\nkind = \"random-prune\"\nsibling = \"rewind\"\n";
    let tmp = experiment_dir(|data| {
        small_config(data, "").replace("rounds = 2", &format!("rounds = 2\n{extra}"))
    });
    let root = tmp.path();
    run_quietly(root, "a", &[], "the one-shot structured run");
    let net = Lenet::new(784, 10);
    let layout = net.layout();
    let dir = RunDir::at(root.join("a"));
    let (fc1, fc2, fc3) = (
        param(&net, "fc1.weight"),
        param(&net, "fc2.weight"),
        param(&net, "fc3.weight"),
    );
    let cfg = structured(Granularity::Neuron, PruneScope::Layerwise, 0.2);
    let layers = pruned_unit_layers(&net, &cfg).unwrap();
    for seed in [0, 1] {
        let dense = dir.load_weights("rewind", seed, 0, layout).unwrap().params;
        for (round, (k1, k2)) in [(1u32, (240usize, 80usize)), (2, (192, 64))] {
            let mask = dir
                .load_mask("rewind", seed, round, layout)
                .unwrap()
                .unsqueeze(0);
            let random = dir
                .load_mask("random", seed, round, layout)
                .unwrap()
                .unsqueeze(0);
            for (l, (weight, next, units, kept)) in [(fc1, fc2, 300, k1), (fc2, fc3, 100, k2)]
                .into_iter()
                .enumerate()
            {
                // One-shot: the `kept` units of the highest l2 norm of round 0's trained
                // weights (not of the previous round's), exactly as many as the schedule says.
                let alive = alive_units(&net, &mask, weight, units);
                let scores = Vec::<f64>::try_from(
                    &unit_scores(&layers[l], layout, &dense, StructuredCriterion::L2).get(0),
                )
                .unwrap();
                let mut order: Vec<i64> = (0..units).collect();
                order.sort_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]));
                let mut best = order[..kept].to_vec();
                best.sort_unstable();
                assert_eq!(alive, best, "seed {seed} round {round} layer {l}");
                assert_removed_whole(&net, &mask, (weight, next), &alive, units);
                // The random control: the sibling's count in each layer, other units.
                let drawn = alive_units(&net, &random, weight, units);
                assert_eq!(drawn.len(), kept, "seed {seed} round {round} layer {l}");
                assert_ne!(drawn, alive);
                assert_removed_whole(&net, &random, (weight, next), &drawn, units);
            }
        }
    }
    // Stopped after its 20th file write and run again, the run ends with the same bytes; seed 1
    // trained alone gives the same bytes as inside the population.
    let stopped = run_in(root, "b")
        .args(["--quiet", "--threads", "1"])
        .env("LTH_FAULT_INJECT", "after:20")
        .output()
        .unwrap();
    assert!(!stopped.status.success(), "the injected stop");
    let resumed = run_in(root, "b")
        .args(["--quiet", "--threads", "1"])
        .output()
        .unwrap();
    assert_success(&resumed, "the resumed run");
    assert_eq!(snapshot(&root.join("a")), snapshot(&root.join("b")));
    let alone = run_in(root, "c")
        .args(["--quiet", "--threads", "1", "--set", "seeds=[1]"])
        .output()
        .unwrap();
    assert_success(&alone, "seed 1 alone");
    for arm in ["rewind", "random"] {
        for round in [1, 2] {
            for what in ["mask", "weights"] {
                let f = format!("seed_1/{arm}/round_{round:02}/{what}.safetensors");
                let read = |d: &str| std::fs::read(root.join(d).join(&f)).unwrap();
                assert_eq!(read("a"), read("c"), "{f}");
            }
        }
    }
}

#[test]
fn gradual_structured_pruning_keeps_the_cubic_share_of_each_layers_neurons() {
    let extra = "schedule = \"gradual\"\ngranularity = \"neuron\"\nlayer_fractions = {}\ngradual = { initial_sparsity = 0.1, final_sparsity = 0.8, start = 20, end = 100, every = 40 }\n\n[[arms]]\nname = \"gmp\"\nkind = \"gradual\"\n";
    let tmp = experiment_dir(|data| {
        small_config(data, "")
            .replace("layer_fractions = { \"fc3.weight\" = 0.1 }\n", "")
            .replace("rounds = 2", extra)
    });
    let root = tmp.path();
    run_quietly(root, "a", &[], "the gradual structured run");
    let net = Lenet::new(784, 10);
    let layout = net.layout();
    let dir = RunDir::at(root.join("a"));
    let (fc1, fc2, fc3) = (
        param(&net, "fc1.weight"),
        param(&net, "fc2.weight"),
        param(&net, "fc3.weight"),
    );
    for seed in [0, 1] {
        let mut previous: Option<(Vec<i64>, Vec<i64>)> = None;
        for (stretch, t) in [(1u32, 20u64), (2, 60), (3, 100)] {
            let mask = dir
                .load_mask("gmp", seed, stretch, layout)
                .unwrap()
                .unsqueeze(0);
            let s = 0.8 + (0.1 - 0.8) * (1.0 - (t - 20) as f64 / 80.0).powi(3);
            let a1 = alive_units(&net, &mask, fc1, 300);
            let a2 = alive_units(&net, &mask, fc2, 100);
            assert_eq!(a1.len(), (300.0 * (1.0 - s)).round() as usize, "fc1 at {t}");
            assert_eq!(a2.len(), (100.0 * (1.0 - s)).round() as usize, "fc2 at {t}");
            assert_removed_whole(&net, &mask, (fc1, fc2), &a1, 300);
            assert_removed_whole(&net, &mask, (fc2, fc3), &a2, 100);
            if let Some((p1, p2)) = &previous {
                // A removed neuron never comes back.
                assert!(a1.iter().all(|u| p1.contains(u)) && a2.iter().all(|u| p2.contains(u)));
            }
            previous = Some((a1, a2));
        }
    }
}

#[test]
fn a_vgg_loses_filters_with_their_batchnorm_entries_and_the_next_layers_inputs() {
    let net = Vgg::new(11, [3, 32, 32], 10).unwrap();
    let layout = net.layout();
    let cfg = structured(Granularity::Filter, PruneScope::Layerwise, 0.25);
    let layers = pruned_unit_layers(&net, &cfg).unwrap();
    assert_eq!(layers.len(), 8, "every convolution of VGG-11");
    let state = State::init(layout, &[2], Device::Cpu);
    let masks = Tensor::ones_like(&state.params);
    let out = prune_units_round(&layers, layout, &cfg, &state.params, &masks);
    let widths = [64i64, 128, 256, 256, 512, 512, 512, 512];
    for (i, width) in widths.into_iter().enumerate() {
        let p = |part: &str| param(&net, &format!("layers.{i}.{part}"));
        let gone: Vec<i64> = (0..width)
            .filter(|&u| {
                row(&net, &out, 0, p("conv.weight"), u)
                    .iter()
                    .all(|&m| m == 0.0)
            })
            .collect();
        assert_eq!(gone.len() as i64, width / 4, "layer {i}");
        let next = if i + 1 < widths.len() {
            param(&net, &format!("layers.{}.conv.weight", i + 1))
        } else {
            param(&net, "fc.weight")
        };
        let next_in = layout.view(&out, next).get(0);
        for u in 0..width {
            let removed = gone.contains(&u);
            for bn in ["bn.weight", "bn.bias"] {
                assert_eq!(
                    entries(&net, &out, 0, p(bn))[u as usize] == 0.0,
                    removed,
                    "{bn} {u}"
                );
            }
            let input = next_in
                .select(1, u)
                .abs()
                .sum(Kind::Double)
                .double_value(&[]);
            assert_eq!(
                input == 0.0,
                removed,
                "layer {i}'s unit {u} in the next layer"
            );
        }
    }
    // Multiply-adds per weight: 32 x 32 positions before the first pooling, 2 x 2 at the end.
    let at = net.weight_positions().unwrap();
    assert_eq!(at[param(&net, "layers.0.conv.weight")], 1024);
    assert_eq!(at[param(&net, "layers.1.conv.weight")], 256);
    assert_eq!(at[param(&net, "layers.7.conv.weight")], 4);
    assert_eq!(at[param(&net, "fc.weight")], 1);
}
