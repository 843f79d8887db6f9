//! Settings of the studies a run's config carries for later (`lth stability` reads its
//! defaults here). They describe what is measured on a finished run, not the run itself: they
//! enter neither the config hash nor the check that a run dir belongs to a config.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// `[stability]`: the defaults of `lth stability` for this run (each a flag of the command).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StabilityConfig {
    /// Rewind iterations k the copies start from, each before the schedule's end.
    pub ks: Vec<u64>,
    /// Rounds whose networks are copied (0: the dense network; a pruned round: its ticket).
    pub rounds: Vec<u32>,
    /// Copies of each network, at least 2 (every pair is a path).
    pub copies: usize,
    /// Points on each path, both ends included, at least 2.
    pub points: usize,
    /// Base of the copies' noise seeds.
    pub noise_seed: u64,
    /// Training batches (of `train.batch_size`) on which each network on a path has its
    /// BatchNorm statistics recomputed (networks with BatchNorm only).
    pub bn_batches: usize,
}

impl Default for StabilityConfig {
    fn default() -> Self {
        Self {
            ks: vec![0],
            rounds: vec![0],
            copies: 2,
            points: 30,
            noise_seed: 1_000_000,
            bn_batches: 10,
        }
    }
}

impl StabilityConfig {
    /// Refuses settings that cannot be measured on a run of `iterations` iterations per
    /// round and `rounds_total` rounds (round 0 included), naming the setting as `key(...)`
    /// writes its key here (`ks`, `bn_batches`, ...) for the reader (a config key, a flag).
    pub fn check(
        &self,
        iterations: u64,
        rounds_total: u32,
        key: impl Fn(&str) -> String,
    ) -> Result<()> {
        if self.copies < 2 {
            bail!(
                "{} must be at least 2 (a path joins two copies; got {})",
                key("copies"),
                self.copies
            );
        }
        if self.points < 2 {
            bail!(
                "{} must be at least 2 (a path's two ends; got {})",
                key("points"),
                self.points
            );
        }
        if self.bn_batches == 0 {
            bail!("{} must be at least 1", key("bn_batches"));
        }
        if self.ks.is_empty() {
            bail!("{} must list at least one rewind iteration", key("ks"));
        }
        if self.rounds.is_empty() {
            bail!("{} must list at least one round", key("rounds"));
        }
        if let Some(k) = twice(&self.ks) {
            bail!("{} names {k} twice", key("ks"));
        }
        if let Some(r) = twice(&self.rounds) {
            bail!("{} names {r} twice", key("rounds"));
        }
        if let Some(k) = self.ks.iter().find(|&&k| k >= iterations) {
            bail!(
                "{}: k = {k} is not before the schedule's end (train.iterations = {iterations})",
                key("ks")
            );
        }
        if let Some(r) = self.rounds.iter().find(|&&r| r >= rounds_total) {
            bail!(
                "{}: the run has no round {r} (rounds 0..={})",
                key("rounds"),
                rounds_total.saturating_sub(1)
            );
        }
        Ok(())
    }
}

/// The first value of `values` that an earlier one repeats.
fn twice<T: PartialEq + Copy>(values: &[T]) -> Option<T> {
    values
        .iter()
        .enumerate()
        .find_map(|(i, v)| values[..i].contains(v).then_some(*v))
}
