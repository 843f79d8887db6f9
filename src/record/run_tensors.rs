//! The tensor files of a run dir, typed: each seed's θ_k and optimizer state at rewind points,
//! each replica's round (start, weights, mask), each span's checkpoint. Weights and masks are
//! saved one replica at a time in PyTorch layout (see `tensors`), loaded as R = 1 on the CPU.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::checkpoint::CheckpointFile;
use super::run_dir::RunDir;
use super::tensors::{
    mask_from, replica_tensors, save_named, state_from, state_tensors, NamedTensors,
};
use crate::model::{Layout, State};
use crate::train::OptimizerState;

/// What one replica's round leaves: the masked weights it started from, its final weights and
/// its mask (each a population, of which one replica is saved).
#[derive(Debug, Clone, Copy)]
pub struct RoundFiles<'a> {
    /// Starting weights (the ticket's initialisation).
    pub start: &'a State,
    /// Final weights.
    pub weights: &'a State,
    /// Masks `[R, P]`.
    pub masks: &'a Tensor,
}

impl RunDir {
    /// Saves replica `r` of `state` as `seed`'s weights at iteration `k` of its dense run.
    pub fn save_theta(
        &self,
        seed: u64,
        k: u64,
        state: &State,
        r: usize,
        layout: &Layout,
    ) -> Result<()> {
        save_named(&self.theta_path(seed, k), &state_tensors(state, r, layout))
    }

    /// `seed`'s weights at iteration `k` of its dense run.
    pub fn load_theta(&self, seed: u64, k: u64, layout: &Layout) -> Result<State> {
        state_from(&NamedTensors::read(&self.theta_path(seed, k))?, layout)
    }

    /// Saves replica `r` of `optimizer` as `seed`'s optimizer state at iteration `k` of its
    /// dense run (its tensors and its step count).
    pub fn save_optimizer(
        &self,
        seed: u64,
        k: u64,
        optimizer: &OptimizerState,
        r: usize,
    ) -> Result<()> {
        let state: Vec<(String, Tensor)> = optimizer
            .tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.get(r as i64).to_device(Device::Cpu)))
            .chain(std::iter::once((
                "step".to_string(),
                Tensor::from(optimizer.steps as f32),
            )))
            .collect();
        save_named(&self.optimizer_path(seed, k), &state)
    }

    /// The optimizer states (tensors `names`) the dense runs of `seeds` saved at iteration
    /// `k`, stacked in order on `device`.
    pub fn load_optimizers(
        &self,
        seeds: &[u64],
        k: u64,
        names: &[&str],
        device: Device,
    ) -> Result<OptimizerState> {
        let mut rows: Vec<Vec<Tensor>> = names.iter().map(|_| Vec::new()).collect();
        let mut steps = 0;
        for &seed in seeds {
            let named = NamedTensors::read(&self.optimizer_path(seed, k))?;
            for (slot, name) in rows.iter_mut().zip(names) {
                slot.push(named.require(name)?.shallow_clone());
            }
            steps = named
                .require("step")?
                .to_kind(Kind::Float)
                .double_value(&[]) as i32;
        }
        let tensors = names
            .iter()
            .zip(rows)
            .map(|(name, r)| (name.to_string(), Tensor::stack(&r, 0).to_device(device)))
            .collect();
        Ok(OptimizerState { tensors, steps })
    }

    /// Saves replica `r` of `files` as the round `round` of (`arm`, `seed`): start, weights,
    /// then mask (of the prunable parameters, and of any other parameter it masks: the biases
    /// of units that structured pruning removed; a parameter left out is unmasked).
    pub fn save_round(
        &self,
        (arm, seed, round): (&str, u64, u32),
        files: RoundFiles<'_>,
        r: usize,
        layout: &Layout,
    ) -> Result<()> {
        save_named(
            &self.start_path(arm, seed, round),
            &state_tensors(files.start, r, layout),
        )?;
        save_named(
            &self.weights_path(arm, seed, round),
            &state_tensors(files.weights, r, layout),
        )?;
        let row = files.masks.get(r as i64);
        let masked: Vec<usize> = (0..layout.specs().len())
            .filter(|&i| {
                layout.specs()[i].prunable
                    || layout.segment(&row.unsqueeze(0), i).min().double_value(&[]) < 0.5
            })
            .collect();
        save_named(
            &self.mask_path(arm, seed, round),
            &replica_tensors(files.masks, r, layout, masked.into_iter()),
        )
    }

    /// The final weights of round `round` of (`arm`, `seed`).
    pub fn load_weights(&self, arm: &str, seed: u64, round: u32, layout: &Layout) -> Result<State> {
        state_from(
            &NamedTensors::read(&self.weights_path(arm, seed, round))?,
            layout,
        )
    }

    /// The mask row `[P]` of round `round` of (`arm`, `seed`).
    pub fn load_mask(&self, arm: &str, seed: u64, round: u32, layout: &Layout) -> Result<Tensor> {
        mask_from(
            &NamedTensors::read(&self.mask_path(arm, seed, round))?,
            layout,
        )
    }

    /// The final weights and the mask of round `round` of (`arm`, `seed`) as their files
    /// hold them (PyTorch names and shapes).
    pub fn round_tensors(
        &self,
        arm: &str,
        seed: u64,
        round: u32,
    ) -> Result<(NamedTensors, NamedTensors)> {
        Ok((
            NamedTensors::read(&self.weights_path(arm, seed, round))?,
            NamedTensors::read(&self.mask_path(arm, seed, round))?,
        ))
    }

    /// The checkpoint file of one training span (`tag`) of `round`.
    pub fn checkpoint_file(&self, round: u32, tag: &str) -> CheckpointFile {
        CheckpointFile::at(self.checkpoint_path(round, tag))
    }

    /// Where the `topology.csv` rows of the span with checkpoint `tag` of `round` are kept
    /// until the round is complete (beside its checkpoint, removed with it).
    pub fn topology_log(&self, round: u32, tag: &str) -> std::path::PathBuf {
        self.checkpoint_path(round, tag)
            .with_extension("topology.csv")
    }
}
