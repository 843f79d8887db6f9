//! The three result tables of a run dir (`rounds.csv`, `curves.csv`, `layers.csv`), read and
//! written together: the rows a replica's round adds, the rounds a resumed run keeps, and the
//! check that every completed round has all its rows.

use anyhow::{bail, Result};

use super::rows::{ReplicaRound, CURVES, LAYERS, ROUNDS, TOPOLOGY};
use super::run_dir::RunDir;
use super::table::{RowsPerKey, Table, REPAIR};
use crate::model::Layout;
use crate::train::EvalPoint;

/// Arm and seed of replicas as the tables write them (see `Experiment::row_keys`).
pub type RowKeys = [(String, String)];

/// One replica's round as its rows record it.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaRow<'a> {
    /// Arm name.
    pub arm: &'a str,
    /// Seed.
    pub seed: u64,
    /// Round.
    pub round: u32,
    /// Remaining entries of every parameter of the layout.
    pub counts: &'a [u64],
    /// Remaining neurons and filters (`None`: the network has no unit layers).
    pub units: Option<u64>,
    /// Per parameter, the output positions each entry is used at per example (`None`: the
    /// network does not say, and `flops_remaining` stays empty).
    pub positions: Option<&'a [i64]>,
    /// The evaluation points of the replica's training, and its column in them.
    pub evals: &'a [EvalPoint],
    /// The replica's column in `evals`.
    pub column: usize,
    /// The iteration at which its loss became non-finite, if it did.
    pub diverged: Option<u64>,
    /// Multiply-adds of the round's training and of every training its network needed.
    pub train_flops: (Option<u64>, Option<u64>),
}

/// `rounds.csv`, `curves.csv` and `layers.csv` of one run dir.
#[derive(Debug, Clone)]
pub struct Results {
    /// One row per arm x seed x round.
    pub rounds: Table,
    /// One row per arm x seed x round x evaluation point.
    pub curves: Table,
    /// One row per arm x seed x round x prunable parameter.
    pub layers: Table,
    /// One row per topology update x replica x pruned tensor of dynamic `sparse` arms
    /// (written only by runs that have some).
    pub topology: Table,
}

impl Results {
    /// The tables of `dir` as they are on disk (empty where a file is missing).
    pub fn open(dir: &RunDir) -> Result<Self> {
        Ok(Self {
            rounds: Table::open(&dir.csv_path("rounds"), ROUNDS)?,
            curves: Table::open(&dir.csv_path("curves"), CURVES)?,
            layers: Table::open(&dir.csv_path("layers"), LAYERS)?,
            topology: Table::open(&dir.csv_path("topology"), TOPOLOGY)?,
        })
    }

    /// Keeps only the rows of rounds below `rounds`.
    pub fn keep_rounds_below(&mut self, rounds: u32) {
        for table in [
            &mut self.rounds,
            &mut self.curves,
            &mut self.layers,
            &mut self.topology,
        ] {
            table.keep_rounds_below(rounds);
        }
    }

    /// Adds one replica's rows for a round: one to `rounds.csv`, one per evaluation point to
    /// `curves.csv`, one per prunable parameter of `layout` to `layers.csv`.
    pub fn push_replica(&mut self, layout: &Layout, row: &ReplicaRow<'_>) {
        let prunable: Vec<usize> = layout.prunable().collect();
        let id = ReplicaRound {
            arm: row.arm,
            seed: row.seed,
            round: row.round,
            remaining: prunable.iter().map(|&i| row.counts[i]).sum(),
            total: layout.prunable_total() as u64,
            units: row.units,
            params: row.counts.iter().sum(),
            flops: row.positions.map(|at| {
                let macs = |count: &dyn Fn(usize) -> u64| -> u64 {
                    prunable.iter().map(|&i| count(i) * at[i] as u64).sum()
                };
                (
                    macs(&|i| row.counts[i]),
                    macs(&|i| layout.specs()[i].numel() as u64),
                )
            }),
            train_flops: row.train_flops,
        };
        self.rounds
            .push(id.rounds_row(row.evals, row.column, row.diverged));
        for curve in id.curve_rows(row.evals, row.column) {
            self.curves.push(curve);
        }
        for &i in &prunable {
            let spec = &layout.specs()[i];
            self.layers
                .push(id.layer_row(&spec.name, row.counts[i], spec.numel() as u64));
        }
    }

    /// The `train_flops` of `arm`'s replica of `seed` in `round`, where its row has one.
    pub fn train_flops(&self, arm: &str, seed: u64, round: u32) -> Option<u64> {
        let t = &self.rounds;
        let col = |name: &str| t.column(name).expect("rounds.csv column");
        let (a, s, r, f) = (col("arm"), col("seed"), col("round"), col("train_flops"));
        let (seed, round) = (seed.to_string(), round.to_string());
        t.rows()
            .iter()
            .find(|row| row[a] == arm && row[s] == seed && row[r] == round)
            .and_then(|row| row[f].parse().ok())
    }

    /// Rewrites the files (atomically, each; `topology.csv` only where the run has one), `rounds.csv` last.
    pub fn save(&self) -> Result<()> {
        if !self.topology.rows().is_empty() || self.topology.path().exists() {
            self.topology.save()?;
        }
        self.curves.save()?;
        self.layers.save()?;
        self.rounds.save()
    }

    /// Refuses rows of an arm or a seed that is not one of `members` (each an arm and a seed
    /// as the tables write them, see `Experiment::row_keys`), naming the file and the arm or
    /// seed: rows of another run.
    pub fn check_members(&self, members: &[(String, String)]) -> Result<()> {
        for table in [&self.rounds, &self.curves, &self.layers, &self.topology] {
            let Some((arm, seed)) = table.first_row_outside(members) else {
                continue;
            };
            let path = table.path().display();
            if members.iter().any(|(a, _)| a == arm) {
                // Members are arm-major: the first arm's are every seed.
                let seeds: Vec<&str> = members
                    .iter()
                    .filter(|(a, _)| *a == members[0].0)
                    .map(|(_, s)| s.as_str())
                    .collect();
                bail!(
                    "{path} holds rows of seed {seed}, which the run's config.toml does not have (seeds: {}): {REPAIR}",
                    seeds.join(", ")
                );
            }
            let mut arms: Vec<&str> = members.iter().map(|(a, _)| a.as_str()).collect();
            arms.dedup();
            bail!(
                "{path} holds rows of arm `{arm}`, which the run's config.toml does not have (arms: {}): {REPAIR}",
                arms.join(", ")
            );
        }
        Ok(())
    }

    /// The first round below `completed` whose rows are not all here, exactly: one row per
    /// arm and seed (`members`, as the tables write them) in `rounds.csv`, one per evaluation
    /// point (as many as the arm's other seeds) in `curves.csv`, one per prunable tensor (as
    /// many as every other key) in `layers.csv`; with the file that lacks (or repeats) them.
    /// `topology` are the members with topology updates (one or more rows per pruned round
    /// in `topology.csv`, as many for every seed of an arm).
    pub fn first_incomplete_round(
        &self,
        (members, topology): (&RowKeys, &RowKeys),
        completed: u32,
    ) -> Option<(u32, &'static str)> {
        let updates = match topology.is_empty() {
            true => None,
            false => self
                .topology
                .first_round_lacking_in(topology, 1..completed.max(1), RowsPerKey::SameAcrossSeeds)
                .map(|round| (round, "topology.csv")),
        };
        [
            (&self.rounds, "rounds.csv", RowsPerKey::One),
            (&self.curves, "curves.csv", RowsPerKey::SameAcrossSeeds),
            (&self.layers, "layers.csv", RowsPerKey::SameForAll),
        ]
        .into_iter()
        .filter_map(|(table, name, expect)| {
            table
                .first_round_lacking(members, completed, expect)
                .map(|round| (round, name))
        })
        .chain(updates)
        .min_by_key(|(round, _)| *round)
    }
}
