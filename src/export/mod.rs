//! `lth export`: one replica's trained weights of one round in plain PyTorch layout, masked,
//! plus each mask as `<param>_mask` (0/1 float), loadable with `safetensors.torch.load_file`;
//! with `--compact` ([`compact`]) the physically smaller network its removed units leave.

pub mod compact;

use std::path::Path;

use anyhow::{bail, Result};
use tch::Tensor;

use crate::config::Experiment;
use crate::record::tensors::save_named;
use crate::record::RunDir;

/// Which replica and round to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Arm name.
    pub arm: String,
    /// Seed.
    pub seed: u64,
    /// Round (0 = dense).
    pub round: u32,
}

/// Writes the export file and returns the names written.
pub fn export(run_dir: &Path, req: &ExportRequest, out: &Path) -> Result<Vec<String>> {
    let (dir, _) = checked(run_dir, req)?;
    let (weights, masks) = dir.round_tensors(&req.arm, req.seed, req.round)?;
    let mut out_tensors: Vec<(String, Tensor)> = Vec::new();
    for (name, w) in weights.iter() {
        match masks.get(name) {
            Some(m) => {
                out_tensors.push((name.to_string(), w * m));
                out_tensors.push((format!("{name}_mask"), m.shallow_clone()));
            }
            None => out_tensors.push((name.to_string(), w.shallow_clone())),
        }
    }
    save_named(out, &out_tensors)?;
    Ok(out_tensors.into_iter().map(|(n, _)| n).collect())
}

/// The run dir at `run_dir` and its config, once the request names an arm, seed and complete
/// round it has whose files match the manifest.
fn checked(run_dir: &Path, req: &ExportRequest) -> Result<(RunDir, Experiment)> {
    let (dir, exp) = RunDir::open_existing(run_dir)?;
    if !exp.arms.iter().any(|a| a.name == req.arm) {
        let names: Vec<&str> = exp.arms.iter().map(|a| a.name.as_str()).collect();
        bail!("run has no arm `{}` (arms: {})", req.arm, names.join(", "));
    }
    if !exp.seeds.contains(&req.seed) {
        bail!("run has no seed {} (seeds: {:?})", req.seed, exp.seeds);
    }
    let completed = dir.rounds_completed(exp.total_rounds())?;
    let last = exp.total_rounds() - 1;
    if req.round > last {
        bail!("run has no round {} (rounds 0..={last})", req.round);
    }
    if req.round >= completed {
        bail!(
            "round {} is not complete in {} ({} round(s) complete, of 0..={})",
            req.round,
            run_dir.display(),
            completed,
            last
        );
    }
    dir.verify_replica_round(&req.arm, req.seed, req.round)?;
    Ok((dir, exp))
}
