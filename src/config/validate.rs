//! Range checks that serde cannot express. Each failure names the key and the bad value.

use std::collections::BTreeSet;

use anyhow::{bail, Result};

use super::{ArmKind, Experiment, OptimizerKind};

/// Rejects out-of-range values with a message naming the key.
pub fn validate(exp: &Experiment) -> Result<()> {
    check_name("name", &exp.name)?;
    if exp.seeds.is_empty() {
        bail!("invalid config: `seeds` must list at least one seed");
    }
    let mut seen = BTreeSet::new();
    for s in &exp.seeds {
        if !seen.insert(s) {
            bail!("invalid config: `seeds` lists seed {s} twice");
        }
    }
    if exp.data.dir.trim().is_empty() {
        bail!("invalid config: `data.dir` must not be empty");
    }
    if exp.data.validation_size == 0 {
        bail!("invalid config: `data.validation_size` must be >= 1 (got 0)");
    }
    validate_train(exp)?;
    validate_prune(exp)?;
    validate_arms(exp)
}

fn validate_train(exp: &Experiment) -> Result<()> {
    let t = &exp.train;
    positive("train.lr", t.lr)?;
    if t.batch_size == 0 {
        bail!("invalid config: `train.batch_size` must be >= 1 (got 0)");
    }
    if t.iterations == 0 {
        bail!("invalid config: `train.iterations` must be >= 1 (got 0)");
    }
    if t.eval_every == 0 {
        bail!("invalid config: `train.eval_every` must be >= 1 (got 0)");
    }
    if !(0.0..1.0).contains(&t.momentum) {
        bail!(
            "invalid config: `train.momentum` must be in [0, 1) (got {})",
            t.momentum
        );
    }
    if !(t.weight_decay >= 0.0 && t.weight_decay.is_finite()) {
        bail!(
            "invalid config: `train.weight_decay` must be >= 0 (got {})",
            t.weight_decay
        );
    }
    positive("train.lr_gamma", t.lr_gamma)?;
    if t.lr_milestones.windows(2).any(|w| w[0] >= w[1]) {
        bail!("invalid config: `train.lr_milestones` must be strictly increasing");
    }
    if t.optimizer == OptimizerKind::Adam {
        for (key, v) in [
            ("train.adam_beta1", t.adam_beta1),
            ("train.adam_beta2", t.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&v) {
                bail!("invalid config: `{key}` must be in [0, 1) (got {v})");
            }
        }
        positive("train.adam_eps", t.adam_eps)?;
    }
    Ok(())
}

fn validate_prune(exp: &Experiment) -> Result<()> {
    let p = &exp.prune;
    fraction("prune.fraction", p.fraction)?;
    for (name, f) in &p.layer_fractions {
        fraction(&format!("prune.layer_fractions.\"{name}\""), *f)?;
    }
    if p.rounds == 0 {
        bail!("invalid config: `prune.rounds` must be >= 1 (got 0)");
    }
    Ok(())
}

fn validate_arms(exp: &Experiment) -> Result<()> {
    if exp.arms.is_empty() {
        bail!("invalid config: `arms` must list at least one arm");
    }
    let mut names = BTreeSet::new();
    for arm in &exp.arms {
        check_name("arms.name", &arm.name)?;
        if !names.insert(arm.name.as_str()) {
            bail!("invalid config: two arms are named `{}`", arm.name);
        }
        match arm.kind {
            ArmKind::Rewind => {
                if arm.rewind_iteration >= exp.train.iterations {
                    bail!(
                        "invalid config: arm `{}`: `rewind_iteration` ({}) must be below `train.iterations` ({})",
                        arm.name,
                        arm.rewind_iteration,
                        exp.train.iterations
                    );
                }
            }
        }
    }
    Ok(())
}

fn positive(key: &str, v: f64) -> Result<()> {
    if !(v > 0.0 && v.is_finite()) {
        bail!("invalid config: `{key}` must be > 0 (got {v})");
    }
    Ok(())
}

fn fraction(key: &str, v: f64) -> Result<()> {
    if !(v > 0.0 && v < 1.0) {
        bail!("invalid config: `{key}` must be in (0, 1) (got {v})");
    }
    Ok(())
}

/// Names become file names: letters, digits, `-`, `_` and `.` only, not starting with `.`.
fn check_name(key: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("invalid config: `{key}` = {name:?} may hold only letters, digits, `-`, `_` and `.`");
    }
    Ok(())
}
