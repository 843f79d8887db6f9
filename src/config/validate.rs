//! Range checks that serde cannot express. Each failure names the key and the bad value.

use std::collections::BTreeSet;

use anyhow::{bail, Result};

use super::{
    Arch, ArmConfig, ArmKind, ControlStart, Experiment, Granularity, InitCriterion, OptimizerKind,
    PruneConfig, PruneCriterion, PruneSchedule, Reproducibility,
};

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
    if exp.data.crop_padding > 16 {
        bail!(
            "invalid config: `data.crop_padding` must be at most 16 (got {})",
            exp.data.crop_padding
        );
    }
    if exp.model.depth > 1202 {
        bail!(
            "invalid config: `model.depth` must be at most 1202 (got {})",
            exp.model.depth
        );
    }
    if !(0.0..1.0).contains(&exp.model.dropout) {
        bail!(
            "invalid config: `model.dropout` must be in [0, 1) (got {})",
            exp.model.dropout
        );
    }
    validate_sparse_kernels(exp)?;
    validate_train(exp)?;
    validate_prune(exp)?;
    validate_arms(exp)?;
    validate_structured(exp)?;
    validate_reproducibility(exp)?;
    exp.stability
        .check(exp.train.iterations, exp.total_rounds(), |key| {
            format!("invalid config: `stability.{key}`")
        })
}

/// Portable mode covers the networks whose every operation it pins: fully connected ones.
fn validate_reproducibility(exp: &Experiment) -> Result<()> {
    if exp.reproducibility == Reproducibility::Portable && exp.model.arch != Arch::Lenet300100 {
        bail!("invalid config: `reproducibility = \"portable\"` covers LeNet-300-100 so far: convolutions and BatchNorm run through oneDNN, whose kernel choice and blocking (by ISA and cache sizes) have not been checked across CPUs (use \"machine\" for {})", toml::Value::try_from(exp.model.arch).map_or_else(|_| "?".into(), |v| v.to_string()));
    }
    Ok(())
}

/// Structured pruning (`prune.granularity` neuron or filter) ranks units by its own criterion
/// on every schedule, and takes every arm but `at-init` (which ranks single weights of θ₀).
fn validate_structured(exp: &Experiment) -> Result<()> {
    let p = &exp.prune;
    let g = p.granularity;
    if g == Granularity::Weight {
        return Ok(());
    }
    let name = g.name();
    if p.criterion != PruneCriterion::Magnitude {
        bail!("invalid config: `prune.criterion` ranks single weights; with `prune.granularity = \"{name}\"` units are ranked by `prune.structured_criterion` (leave `prune.criterion` out)");
    }
    if let Some(arm) = exp
        .arms
        .iter()
        .find(|a| matches!(a.kind, ArmKind::AtInit | ArmKind::Sparse))
    {
        bail!("invalid config: arm `{}` ({}) chooses single weights of the initial network, which `prune.granularity = \"{name}\"` does not match (keep rewind, finetune, lr-rewind, reinit and random-prune arms)", arm.name, kind_name(arm.kind));
    }
    Ok(())
}

/// `train.sparse_kernels` has kernels for fully connected ReLU networks without dropout.
fn validate_sparse_kernels(exp: &Experiment) -> Result<()> {
    if exp.train.sparse_kernels.is_off() {
        return Ok(());
    }
    if exp.model.arch != Arch::Lenet300100 || exp.model.dropout != 0.0 {
        bail!(
            "invalid config: `train.sparse_kernels` has kernels for fully connected networks without dropout only (`model.arch = \"lenet-300-100\"`, `model.dropout = 0`); got arch {} with dropout {} (leave it \"off\")",
            toml::Value::try_from(exp.model.arch).map_or_else(|_| "?".into(), |v| v.to_string()),
            exp.model.dropout
        );
    }
    Ok(())
}

/// Rejects settings a new config gives that would silently have no effect. Only for configs
/// as written (presets, files, `--set`), not for those saved in run dirs: a run made before a
/// check was added stays readable and resumable.
pub fn refuse_inert(exp: &Experiment) -> Result<()> {
    let t = &exp.train;
    if let Some(&m) = t.lr_milestones.iter().find(|&&m| m >= t.iterations) {
        bail!(
            "invalid config: `train.lr_milestones` holds {m}, not below `train.iterations` ({}): the schedule never reaches it (shorten the milestones with the schedule: `--set train.lr_milestones=[...]`)",
            t.iterations
        );
    }
    let p = &exp.prune;
    let defaults = PruneConfig::default();
    let name = format!("\"{}\"", p.criterion.name());
    if p.score_batches != defaults.score_batches && !exp.scores_batches() {
        bail!("invalid config: `prune.score_batches` is set, but `prune.criterion = {name}` scores no batches and no `at-init` arm uses snip or grasp (remove it with `--unset prune.score_batches`)");
    }
    if p.score_examples != defaults.score_examples
        && !p.criterion.takes_score_examples()
        && !p.structured_reads_examples()
    {
        bail!("invalid config: `prune.score_examples` is set, but `prune.criterion = {name}` scores no single examples (only \"obd\" and \"obs\" do, and structured pruning by \"apoz\" or \"mean-activation\"; remove it with `--unset prune.score_examples`)");
    }
    if p.obs_damping != defaults.obs_damping && p.criterion != PruneCriterion::Obs {
        bail!("invalid config: `prune.obs_damping` is set, but `prune.criterion = {name}` is not \"obs\" (remove it with `--unset prune.obs_damping`)");
    }
    if t.warmup_iterations > t.iterations {
        bail!(
            "invalid config: `train.warmup_iterations` ({}) exceeds `train.iterations` ({}): the warm-up would never end",
            t.warmup_iterations,
            t.iterations
        );
    }
    Ok(())
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
    if !(t.l1 >= 0.0 && t.l1.is_finite()) {
        bail!("invalid config: `train.l1` must be >= 0 (got {})", t.l1);
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
    for (key, f) in [
        ("prune.conv_fraction", p.conv_fraction),
        ("prune.fc_fraction", p.fc_fraction),
        ("prune.output_fraction", p.output_fraction),
    ] {
        if let Some(f) = f {
            fraction(key, f)?;
        }
    }
    if p.rounds == 0 {
        bail!("invalid config: `prune.rounds` must be >= 1 (got 0)");
    }
    if p.score_batches == 0 {
        bail!("invalid config: `prune.score_batches` must be >= 1 (got 0)");
    }
    if p.score_examples == 0 {
        bail!("invalid config: `prune.score_examples` must be >= 1 (got 0)");
    }
    if !(p.obs_damping > 0.0 && p.obs_damping <= 1.0) {
        bail!(
            "invalid config: `prune.obs_damping` must be in (0, 1] (got {})",
            p.obs_damping
        );
    }
    if p.criterion.changes_weights() && p.schedule == PruneSchedule::Gradual {
        bail!("invalid config: `prune.criterion = \"obs\"` moves the surviving weights, which the gradual schedule does not take (use the iterative or one-shot schedule)");
    }
    if !p.targets.is_empty() && p.schedule != PruneSchedule::OneShot {
        bail!("invalid config: `prune.targets` needs `prune.schedule = \"one-shot\"`");
    }
    for t in &p.targets {
        if !(*t > 0.0 && *t < 100.0) {
            bail!("invalid config: `prune.targets` must be percents in (0, 100) (got {t})");
        }
    }
    if p.schedule == PruneSchedule::Gradual {
        let g = &p.gradual;
        let t = exp.train.iterations;
        if !(0.0..1.0).contains(&g.initial_sparsity) {
            bail!(
                "invalid config: `prune.gradual.initial_sparsity` must be in [0, 1) (got {})",
                g.initial_sparsity
            );
        }
        if !(g.final_sparsity > g.initial_sparsity && g.final_sparsity < 1.0) {
            bail!(
                "invalid config: `prune.gradual.final_sparsity` must be in (initial_sparsity, 1) (got {})",
                g.final_sparsity
            );
        }
        if g.every == 0 {
            bail!("invalid config: `prune.gradual.every` must be >= 1 (got 0)");
        }
        if !(g.start < g.end && g.end < t) {
            bail!(
                "invalid config: `prune.gradual` needs start < end < train.iterations (got start {}, end {}, iterations {t})",
                g.start,
                g.end
            );
        }
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
        validate_arm(exp, arm)?;
    }
    let gradual = exp.prune.schedule == PruneSchedule::Gradual;
    let gradual_arms = exp
        .arms
        .iter()
        .filter(|a| a.kind == ArmKind::Gradual)
        .count();
    if gradual && (gradual_arms != 1 || exp.arms.len() != 1) {
        bail!("invalid config: `prune.schedule = \"gradual\"` takes exactly one arm, of kind \"gradual\"");
    }
    if !gradual && gradual_arms > 0 {
        bail!("invalid config: arms of kind \"gradual\" need `prune.schedule = \"gradual\"`");
    }
    Ok(())
}

/// Checks one arm's settings: the ones its kind takes are in range, the others are unset.
fn validate_arm(exp: &Experiment, arm: &ArmConfig) -> Result<()> {
    let name = &arm.name;
    let t = exp.train.iterations;
    for field in arm.set_keys() {
        if !arm.takes(field) {
            bail!(
                "invalid config: arm `{name}` of kind {:?} does not take `{field}`",
                kind_name(arm.kind)
            );
        }
    }
    if arm.kind == ArmKind::Rewind && arm.rewind_iteration >= t {
        bail!(
            "invalid config: arm `{name}`: `rewind_iteration` ({}) must be below `train.iterations` ({t})",
            arm.rewind_iteration
        );
    }
    if let Some(it) = arm.iterations {
        if it == 0 {
            bail!("invalid config: arm `{name}`: `iterations` must be >= 1 (got 0)");
        }
        if arm.kind == ArmKind::LrRewind && it > t {
            bail!("invalid config: arm `{name}`: `iterations` ({it}) must be at most `train.iterations` ({t}) to replay the schedule's last iterations");
        }
    }
    if let Some(lr) = arm.lr {
        positive(&format!("arms.{name}.lr"), lr)?;
    }
    if arm.kind == ArmKind::AtInit {
        validate_at_init(exp, arm)?;
    }
    if arm.kind == ArmKind::Sparse {
        validate_sparse(exp, arm)?;
    }
    if matches!(arm.kind, ArmKind::Reinit | ArmKind::RandomPrune) {
        let Some(sibling) = &arm.sibling else {
            bail!("invalid config: arm `{name}` of kind {:?} needs `sibling`, the arm whose mask it uses", kind_name(arm.kind));
        };
        match exp.arm(sibling) {
            None => bail!("invalid config: arm `{name}` names sibling `{sibling}`, which is not an arm"),
            Some(s) if !s.ranks_own_weights() => bail!(
                "invalid config: arm `{name}` names sibling `{sibling}`, which does not prune its own weights (use a rewind, finetune or lr-rewind arm)"
            ),
            Some(s) if arm.start_at == Some(ControlStart::Rewind) && s.kind != ArmKind::Rewind => bail!(
                "invalid config: arm `{name}` has `start_at = \"rewind\"` but its sibling `{sibling}` is a {:?} arm, which has no rewind point (use a rewind sibling or `start_at = \"init\"`)",
                kind_name(s.kind)
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// The `sparse` arm settings only a moving topology takes.
const DYNAMIC_ONLY: &[&str] = &[
    "update_every",
    "end_fraction",
    "drop_fraction",
    "drop_anneal",
    "grow_init",
];

/// A `sparse` arm trains at each round's sparsity (not the gradual schedule's), and its
/// topology settings are in range and need a method that updates the topology.
fn validate_sparse(exp: &Experiment, arm: &ArmConfig) -> Result<()> {
    let name = &arm.name;
    if exp.prune.schedule == PruneSchedule::Gradual {
        bail!("invalid config: arm `{name}` of kind \"sparse\" trains at the sparsity of each round, which the gradual schedule does not have (use the iterative or one-shot schedule)");
    }
    let dynamic = arm.method.unwrap_or_default().is_dynamic();
    if let Some(key) = arm
        .set_keys()
        .into_iter()
        .find(|k| DYNAMIC_ONLY.contains(k) && !dynamic)
    {
        bail!("invalid config: arm `{name}`: `{key}` needs `method = \"set\"`, `\"rigl\"` or `\"snfs\"` (a static mask never changes)");
    }
    if arm.redistribute.is_some() && arm.method != Some(super::SparseMethod::Snfs) {
        bail!("invalid config: arm `{name}`: `redistribute` needs `method = \"snfs\"` (SNFS splits its regrowth by momentum)");
    }
    if arm.update_every == Some(0) {
        bail!("invalid config: arm `{name}`: `update_every` must be >= 1 (got 0)");
    }
    if let Some(f) = arm.end_fraction {
        if !(f > 0.0 && f <= 1.0) {
            bail!("invalid config: arm `{name}`: `end_fraction` must be in (0, 1] (got {f})");
        }
    }
    if let Some(f) = arm.drop_fraction {
        if !(0.0..1.0).contains(&f) {
            bail!("invalid config: arm `{name}`: `drop_fraction` must be in [0, 1) (got {f})");
        }
    }
    Ok(())
}

/// An `at-init` arm names its criterion, takes synflow's steps only with synflow, and prunes
/// to the sparsities of the iterative or one-shot schedule.
fn validate_at_init(exp: &Experiment, arm: &ArmConfig) -> Result<()> {
    let name = &arm.name;
    let Some(criterion) = arm.criterion else {
        bail!("invalid config: arm `{name}` of kind \"at-init\" needs `criterion` (\"snip\", \"grasp\", \"synflow\", \"magnitude\" or \"random\")");
    };
    if arm.synflow_iterations.is_some() && criterion != InitCriterion::Synflow {
        bail!("invalid config: arm `{name}`: `synflow_iterations` needs `criterion = \"synflow\"`");
    }
    if arm.synflow_iterations == Some(0) {
        bail!("invalid config: arm `{name}`: `synflow_iterations` must be >= 1 (got 0)");
    }
    if exp.prune.schedule == PruneSchedule::Gradual {
        bail!("invalid config: arm `{name}` of kind \"at-init\" prunes to the sparsity of each round, which the gradual schedule does not have (use the iterative or one-shot schedule)");
    }
    Ok(())
}

fn kind_name(kind: ArmKind) -> String {
    toml::Value::try_from(kind)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
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
