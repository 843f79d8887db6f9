//! `rounds.csv`'s training cost (`train_flops`, `train_flops_cumulative`) against counts made
//! here from the layer shapes: a dense round costs three forward passes of every weight per
//! example and step, a sparse arm at density d costs d times that, RigL adds its dense
//! gradients, an iterative ticket's rounds add up while a sparse arm pays only its own; and the
//! report draws accuracy against it.

use std::collections::BTreeMap;

use crate::common::{assert_success, experiment_dir, lth, read_csv, run_quietly, small_config};

/// `small_config`'s training: iterations and batch size.
const ITERATIONS: u64 = 120;
const BATCH: u64 = 30;

/// Forward multiply-adds of one example through LeNet-300-100 on 28 x 28 images.
const LENET_MACS: u64 = 784 * 300 + 300 * 100 + 100 * 10;

#[test]
fn train_flops_count_every_step_under_the_mask_and_a_tickets_rounds_add_up() {
    let arms = "\n[[arms]]\nname = \"rewind\"\nkind = \"rewind\"\n\n[[arms]]\nname = \"static\"\nkind = \"sparse\"\n\n[[arms]]\nname = \"rigl\"\nkind = \"sparse\"\nmethod = \"rigl\"\nupdate_every = 20\n\n[[arms]]\nname = \"static-2x\"\nkind = \"sparse\"\niterations = 240\n\n[[arms]]\nname = \"snfs\"\nkind = \"sparse\"\nmethod = \"snfs\"\nupdate_every = 20\n";
    let dir = experiment_dir(|data| small_config(data, arms));
    let root = dir.path();
    run_quietly(root, "a", &[], "the run with rewind, static and rigl arms");
    let (header, rows) = read_csv(&root.join("a/rounds.csv"));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let int = |row: &Vec<String>, name: &str| row[col(name)].parse::<u64>().unwrap();
    // (arm, seed, round) -> (weights remaining, train_flops, cumulative)
    let table: BTreeMap<(String, u64, u64), (u64, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                (r[col("arm")].clone(), int(r, "seed"), int(r, "round")),
                (
                    int(r, "weights_remaining"),
                    int(r, "train_flops"),
                    int(r, "train_flops_cumulative"),
                ),
            )
        })
        .collect();
    assert_eq!(
        table.len(),
        5 * 2 * 3,
        "five arms, two seeds, rounds 0 to 2"
    );
    // RigL's updates: every 20 steps before 0.75 x 120 = 90.
    let updates = [20, 40, 60, 80].len() as u64;
    for ((arm, seed, round), &(remaining, own, cumulative)) in &table {
        // LeNet uses each weight once per example: a round costs 3 x its weights x steps x batch.
        let steps = 3 * remaining * ITERATIONS * BATCH;
        if *round == 0 {
            assert_eq!(remaining, 784 * 300 + 300 * 100 + 100 * 10);
            assert_eq!(own, 3 * LENET_MACS * ITERATIONS * BATCH, "{arm} {seed}");
            assert_eq!(cumulative, own);
            continue;
        }
        match arm.as_str() {
            "static" => assert_eq!((own, cumulative), (steps, steps), "{seed} {round}"),
            // Its own length: twice the steps, twice the cost.
            "static-2x" => assert_eq!((own, cumulative), (2 * steps, 2 * steps)),
            // A dense weight gradient at every step: 2 sparse passes and 1 dense per example.
            "snfs" => {
                let every_step = ITERATIONS * BATCH * (2 * remaining + LENET_MACS);
                assert_eq!(
                    (own, cumulative),
                    (every_step, every_step),
                    "{seed} {round}"
                );
            }
            "rigl" => {
                let gradients = updates * BATCH * (2 * remaining + LENET_MACS);
                assert_eq!(own, steps + gradients, "{seed} {round}");
                assert_eq!(
                    cumulative, own,
                    "a sparse arm never trains the dense network"
                );
            }
            _ => {
                assert_eq!(own, steps, "{seed} {round}");
                let before: u64 = (0..*round).map(|r| table[&(arm.clone(), *seed, r)].1).sum();
                assert_eq!(
                    cumulative,
                    before + own,
                    "an iterative ticket's rounds add up"
                );
            }
        }
    }
    // The sparse arms train at the ticket's sparsity, so their cost is a fraction of its.
    let ticket = table[&("rewind".to_string(), 0, 2)];
    let stat = table[&("static".to_string(), 0, 2)];
    assert_eq!(ticket.0, stat.0);
    assert!(stat.2 * 3 < ticket.2);

    // The arm of twice the length trains to iteration 240, the others to 120.
    let (ch, curves) = read_csv(&root.join("a/curves.csv"));
    let last = |arm: &str| {
        let (a, it) = (
            ch.iter().position(|h| h == "arm").unwrap(),
            ch.iter().position(|h| h == "iteration").unwrap(),
        );
        curves
            .iter()
            .filter(|r| r[a] == arm)
            .map(|r| r[it].parse::<u64>().unwrap())
            .max()
    };
    assert_eq!((last("static"), last("static-2x")), (Some(120), Some(240)));

    let out = lth(
        root,
        &[
            "report",
            "a",
            "--name",
            "cost",
            "--plots-dir",
            "plots",
            "--data-dir",
            "data-out",
        ],
    );
    assert_success(&out, "the report");
    for ext in ["svg", "png"] {
        let figure = root.join(format!("plots/cost/accuracy_vs_train_flops.{ext}"));
        assert!(
            figure.metadata().unwrap().len() > 1000,
            "{}",
            figure.display()
        );
    }
}
