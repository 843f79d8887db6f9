//! Magnitude pruning removes exactly the documented weights: `round(fraction * remaining)` per
//! group, lowest |w| first, ties broken by position (layout order, then row-major). Reference:
//! a brute-force sort on the host.

use lth::config::{PruneConfig, PruneScope};
use lth::model::Network;
use lth::model::{Layout, Lenet};
use lth::prune::{groups, prune_count, prune_round, remaining_counts, Magnitude};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// A small fully connected layout (fc1 [6, 8], fc2 [5, 6], fc3 [3, 5]) with biases.
fn layout() -> Layout {
    Lenet::with_widths(&[8, 6, 5, 3]).layout().clone()
}

/// Weights drawn from a small set of values so that many magnitudes tie (and signs differ).
fn tied_weights(layout: &Layout, replicas: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..replicas)
        .map(|_| {
            (0..layout.total())
                .map(|_| {
                    let v = rng.random_range(1..=6) as f32 * 0.25;
                    if rng.random::<bool>() {
                        v
                    } else {
                        -v
                    }
                })
                .collect()
        })
        .collect()
}

fn to_tensor(rows: &[Vec<f32>]) -> Tensor {
    Tensor::stack(
        &rows
            .iter()
            .map(|r| Tensor::from_slice(r))
            .collect::<Vec<_>>(),
        0,
    )
}

fn to_rows(t: &Tensor) -> Vec<Vec<f32>> {
    Vec::<Vec<f32>>::try_from(&t.to_kind(Kind::Float)).unwrap()
}

/// Brute force: per group, sort the kept positions by (|w|, position) and drop the first
/// `prune_count(remaining, fraction)`.
fn brute_force(
    layout: &Layout,
    weights: &[f32],
    mask: &[f32],
    groups: &[(Vec<usize>, f64)],
) -> Vec<f32> {
    let mut out = mask.to_vec();
    for (params, fraction) in groups {
        let mut kept: Vec<(f32, usize)> = Vec::new();
        for &p in params {
            let off = layout.offset(p);
            for j in off..off + layout.specs()[p].numel() {
                if mask[j] > 0.5 {
                    kept.push((weights[j].abs(), j));
                }
            }
        }
        kept.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
        let count = prune_count(kept.len() as u64, *fraction) as usize;
        for &(_, j) in &kept[..count] {
            out[j] = 0.0;
        }
    }
    out
}

fn config(scope: PruneScope, exclude: &[&str], layer: &[(&str, f64)]) -> PruneConfig {
    PruneConfig {
        scope,
        fraction: 0.2,
        layer_fractions: layer.iter().map(|(n, f)| (n.to_string(), *f)).collect(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        rounds: 3,
        ..PruneConfig::default()
    }
}

/// Runs three rounds for 3 replicas and checks each against the brute force.
fn check_rounds(cfg: &PruneConfig, expected_groups: Vec<(Vec<usize>, f64)>) {
    let layout = layout();
    let g = groups(&layout, cfg).unwrap();
    assert_eq!(
        g.iter()
            .map(|g| (g.params.clone(), g.fraction))
            .collect::<Vec<_>>(),
        expected_groups
    );
    let weights = tied_weights(&layout, 3, 11);
    let w = to_tensor(&weights);
    let mut masks = w.ones_like();
    let mut expected: Vec<Vec<f32>> = to_rows(&masks);
    for round in 0..3 {
        masks = prune_round(&mut Magnitude, &w, &masks, &layout, &g);
        let got = to_rows(&masks);
        for r in 0..3 {
            expected[r] = brute_force(&layout, &weights[r], &expected[r], &expected_groups);
            assert_eq!(got[r], expected[r], "replica {r}, round {round}");
        }
    }
}

#[test]
fn global_pruning_matches_brute_force_with_ties() {
    // One group over fc1, fc2, fc3 weights (indices 0, 2, 4); biases never pruned.
    check_rounds(
        &config(PruneScope::Global, &[], &[]),
        vec![(vec![0, 2, 4], 0.2)],
    );
}

#[test]
fn layerwise_pruning_matches_brute_force_with_per_layer_rates() {
    check_rounds(
        &config(PruneScope::Layerwise, &[], &[("fc3.weight", 0.1)]),
        vec![(vec![0], 0.2), (vec![2], 0.2), (vec![4], 0.1)],
    );
}

#[test]
fn excluded_layers_stay_dense() {
    check_rounds(
        &config(PruneScope::Global, &["fc3.weight"], &[]),
        vec![(vec![0, 2], 0.2)],
    );
}

#[test]
fn remaining_counts_follow_the_count_rule_exactly() {
    // LeNet-300-100 layerwise 20% / output 10%: counts follow round(f * remaining) per layer.
    let net = Lenet::new(784, 10);
    let layout = net.layout();
    let cfg = config(PruneScope::Layerwise, &[], &[("fc3.weight", 0.1)]);
    let g = groups(layout, &cfg).unwrap();
    let w = Tensor::randn([2, layout.total() as i64], (Kind::Float, tch::Device::Cpu));
    let mut masks = w.ones_like();
    let mut expect = [235_200u64, 30_000, 1_000];
    for _ in 0..5 {
        masks = prune_round(&mut Magnitude, &w, &masks, layout, &g);
        expect = [
            expect[0] - prune_count(expect[0], 0.2),
            expect[1] - prune_count(expect[1], 0.2),
            expect[2] - prune_count(expect[2], 0.1),
        ];
        for row in remaining_counts(&masks, layout) {
            assert_eq!([row[0], row[2], row[4]], expect);
            assert_eq!(
                [row[1], row[3], row[5]],
                [300, 100, 10],
                "biases stay dense"
            );
        }
    }
    // 5 rounds of 20%: 235200 -> 188160 -> 150528 -> 120422 -> 96338 -> 77070.
    assert_eq!(expect[0], 77_070);
}

#[test]
fn count_rule_rounds_to_nearest() {
    assert_eq!(prune_count(10, 0.2), 2);
    assert_eq!(prune_count(7, 0.2), 1); // 1.4
    assert_eq!(prune_count(8, 0.2), 2); // 1.6
    assert_eq!(prune_count(1, 0.2), 0);
    assert_eq!(prune_count(150_528, 0.2), 30_106); // 30105.6
}

#[test]
fn unknown_or_unprunable_names_are_rejected() {
    let layout = layout();
    let err = groups(&layout, &config(PruneScope::Global, &["fc9.weight"], &[])).unwrap_err();
    assert!(err.to_string().contains("fc9.weight"), "{err}");
    let err = groups(
        &layout,
        &config(PruneScope::Layerwise, &[], &[("fc1.bias", 0.5)]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not prunable"), "{err}");
}
