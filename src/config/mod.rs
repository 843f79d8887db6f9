//! Experiment configuration: serde structs with defaults, presets, `--set` overrides,
//! validation and the content hash that names a run directory.

mod arms;
mod hash;
mod overrides;
mod plan;
mod presets;
mod prune;
mod study;
mod validate;

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use crate::portable::Reproducibility;
pub use arms::{
    ArmConfig, ArmKind, ControlStart, Distribution, DropAnneal, GrowInit, InitCriterion, Mask0,
    Mask1, RandomStart, SparseMethod,
};
pub use hash::{config_hash, with_digest_line};
pub use plan::{
    replica_steps, rewind_points, round_replica_steps, ArmPlan, LrPlan, MaskRule, StartWeights,
};
pub use presets::{preset_names, preset_summary, preset_text};
pub use prune::{
    GradualConfig, Granularity, PruneConfig, PruneCriterion, PruneSchedule, PruneScope,
    StructuredCriterion,
};
pub use study::StabilityConfig;

/// One whole experiment: which seeds and arms to train, on what data, how, and how to prune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Experiment {
    /// Name of the experiment; the run dir is `runs/<name>-<hash>`.
    pub name: String,
    /// Seeds of the replicas; each arm runs once per seed.
    pub seeds: Vec<u64>,
    /// What the run's bytes repeat across: `machine` (default; left out of the saved config,
    /// which keeps earlier hashes and files) or `portable` (README, "Reproducibility").
    #[serde(skip_serializing_if = "Reproducibility::is_machine")]
    pub reproducibility: Reproducibility,
    /// Where the data comes from and how it is split.
    pub data: DataConfig,
    /// Which network to train.
    pub model: ModelConfig,
    /// How each round is trained.
    pub train: TrainConfig,
    /// How masks are derived between rounds.
    pub prune: PruneConfig,
    /// The retraining strategies compared side by side.
    pub arms: Vec<ArmConfig>,
    /// Defaults of `lth stability` on this run (outside the hash: not part of the run).
    pub stability: StabilityConfig,
}

/// Data source and validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Folder holding the four MNIST-format IDX files (gzipped or raw) or the CIFAR-10 binary
    /// batches (`data_batch_1.bin` .. `test_batch.bin`, or their `cifar-10-batches-bin/`).
    pub dir: String,
    /// File format: `auto` (CIFAR-10 when the batches are there, else IDX), `idx`, `cifar10`.
    pub format: DataFormat,
    /// Number of training examples held out for validation (early stopping).
    pub validation_size: usize,
    /// Seed of the validation split (shared by every replica of the experiment).
    pub split_seed: u64,
    /// Random crop (after zero padding) and horizontal flip of every training example, drawn
    /// per replica and iteration from the replica's seed.
    pub augment: bool,
    /// Zero padding on each side before the random crop.
    pub crop_padding: usize,
}

/// Data file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// CIFAR-10 when `data_batch_1.bin` is found, else IDX.
    Auto,
    /// MNIST-format IDX files.
    Idx,
    /// CIFAR-10 binary batches.
    Cifar10,
}

/// Network architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Architecture name.
    pub arch: Arch,
    /// Depth of a CIFAR ResNet (6n + 2: 20, 32, 44, 56, 110); other architectures ignore it.
    pub depth: usize,
    /// Dropout probability after each hidden fully connected layer (LeNet, Conv-2/4/6).
    pub dropout: f64,
}

/// Architectures the engine can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// LeNet-300-100: fully connected 300, 100, 10 with ReLU.
    #[serde(rename = "lenet-300-100")]
    Lenet300100,
    /// Conv-2: conv 64, 64, pool, fc 256, 256, 10.
    #[serde(rename = "conv-2")]
    Conv2,
    /// Conv-4: conv 64, 64, pool, 128, 128, pool, fc 256, 256, 10.
    #[serde(rename = "conv-4")]
    Conv4,
    /// Conv-6: conv 64, 64, pool, 128, 128, pool, 256, 256, pool, fc 256, 256, 10.
    #[serde(rename = "conv-6")]
    Conv6,
    /// CIFAR VGG-11 with BatchNorm.
    #[serde(rename = "vgg-11")]
    Vgg11,
    /// CIFAR VGG-16 with BatchNorm.
    #[serde(rename = "vgg-16")]
    Vgg16,
    /// CIFAR ResNet of depth `model.depth`.
    Resnet,
}

/// Optimizers with per-replica learning rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// Adam (Kingma & Ba) with L2 weight decay added to the gradient.
    Adam,
    /// SGD with (heavy-ball) momentum and L2 weight decay.
    Sgd,
}

/// Training hyperparameters of one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Base learning rate.
    pub lr: f64,
    /// Examples per batch (per replica).
    pub batch_size: usize,
    /// Training iterations (optimizer steps) per round.
    pub iterations: u64,
    /// Evaluate validation and test sets every this many iterations.
    pub eval_every: u64,
    /// SGD momentum (ignored by Adam).
    pub momentum: f64,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
    /// L1 regularization: `l1 * sign(w)` added to the gradient of every prunable weight
    /// (biases and BatchNorm left alone; pruned weights stay exactly zero).
    pub l1: f64,
    /// Iterations at which the learning rate is multiplied by `lr_gamma`.
    pub lr_milestones: Vec<u64>,
    /// Factor applied at each milestone.
    pub lr_gamma: f64,
    /// Adam's first-moment decay.
    pub adam_beta1: f64,
    /// Adam's second-moment decay.
    pub adam_beta2: f64,
    /// Adam's epsilon.
    pub adam_eps: f64,
    /// Iterations over which the learning rate rises linearly from 0 to its value.
    pub warmup_iterations: u64,
    /// Allow TensorFloat-32 (a 10-bit mantissa) in GPU convolutions and matmuls: faster on
    /// NVIDIA tensor cores, less precise. Off: IEEE float32 everywhere. No effect on the CPU.
    pub tf32: bool,
    /// Sparse execution of pruned fully connected networks on the CPU (README, "Sparse
    /// kernels"): `off` (default) computes every layer dense with its mask; `on` runs every
    /// replica on its surviving weights only; `auto` those whose prunable weights are at most
    /// [`SparseKernels::AUTO_DENSITY`] dense. Rounds differently from the dense path, so it
    /// enters the config hash (and is left out of the saved config while `off`, which keeps
    /// earlier hashes and files). No effect on GPUs.
    #[serde(skip_serializing_if = "SparseKernels::is_off")]
    pub sparse_kernels: SparseKernels,
}

/// Which replicas run on their surviving weights only (`train.sparse_kernels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SparseKernels {
    /// Every layer dense, multiplied by its mask.
    #[default]
    Off,
    /// Replicas whose prunable weights are at most [`SparseKernels::AUTO_DENSITY`] dense.
    Auto,
    /// Every replica, whatever its density.
    On,
}

impl SparseKernels {
    /// Density (kept fraction of the prunable weights) at or below which `auto` runs a
    /// replica sparse: where the sparse kernels overtake libtorch's dense ones on two CPU
    /// cores (LeNet-300-100 rounds: sparse 1.14x as fast at 30% of the weights, 0.92x at 40%;
    /// BENCHMARKS.md, "Sparse kernels").
    pub const AUTO_DENSITY: f64 = 0.35;

    /// Whether this is `off`.
    pub fn is_off(&self) -> bool {
        *self == Self::Off
    }

    /// Whether a replica whose prunable weights have this density runs sparse.
    pub fn sparse_at(&self, density: f64) -> bool {
        match self {
            Self::Off => false,
            Self::Auto => density <= Self::AUTO_DENSITY,
            Self::On => true,
        }
    }
}

impl Default for Experiment {
    fn default() -> Self {
        Self {
            name: "experiment".into(),
            seeds: vec![0],
            reproducibility: Reproducibility::Machine,
            data: DataConfig::default(),
            model: ModelConfig::default(),
            train: TrainConfig::default(),
            prune: PruneConfig::default(),
            arms: vec![ArmConfig::new("rewind", ArmKind::Rewind)],
            stability: StabilityConfig::default(),
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dir: "data/fashion-mnist".into(),
            format: DataFormat::Auto,
            validation_size: 5000,
            split_seed: 0,
            augment: false,
            crop_padding: 4,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Lenet300100,
            depth: 20,
            dropout: 0.0,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerKind::Adam,
            lr: 1.2e-3,
            batch_size: 60,
            iterations: 50_000,
            eval_every: 100,
            momentum: 0.9,
            weight_decay: 0.0,
            l1: 0.0,
            lr_milestones: Vec::new(),
            lr_gamma: 0.1,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            warmup_iterations: 0,
            tf32: false,
            sparse_kernels: SparseKernels::Off,
        }
    }
}

impl TrainConfig {
    /// This schedule stretched to `iterations` (a `sparse` arm's own length): every
    /// milestone and the warm-up scaled by `iterations / self.iterations`, rounded.
    pub fn stretched(&self, iterations: u64) -> Self {
        let scale = |i: u64| (i as f64 * iterations as f64 / self.iterations as f64).round() as u64;
        Self {
            iterations,
            lr_milestones: self.lr_milestones.iter().map(|&m| scale(m)).collect(),
            warmup_iterations: scale(self.warmup_iterations),
            ..self.clone()
        }
    }

    /// Learning-rate multiplier of the step schedule at `iteration`.
    pub fn lr_factor(&self, iteration: u64) -> f64 {
        let passed = self
            .lr_milestones
            .iter()
            .filter(|&&m| iteration >= m)
            .count();
        let warmup = if iteration < self.warmup_iterations {
            (iteration + 1) as f64 / self.warmup_iterations as f64
        } else {
            1.0
        };
        warmup * self.lr_gamma.powi(passed as i32)
    }
}

#[cfg(test)]
mod stretch_tests {
    use super::TrainConfig;

    #[test]
    fn a_stretched_schedule_scales_its_milestones_and_warmup() {
        let cfg = TrainConfig {
            iterations: 1000,
            lr_milestones: vec![500, 750],
            warmup_iterations: 100,
            ..TrainConfig::default()
        };
        let long = cfg.stretched(5000);
        assert_eq!(long.iterations, 5000);
        assert_eq!(long.lr_milestones, vec![2500, 3750]);
        assert_eq!(long.warmup_iterations, 500);
        assert_eq!(long.lr_factor(3749), cfg.lr_factor(749));
    }
}

/// Where an experiment's TOML comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A preset bundled with the binary (from `configs/`).
    Preset(String),
    /// A TOML file on disk.
    File(std::path::PathBuf),
}

impl Experiment {
    /// Whether anything scores on training batches (`prune.score_batches`): the run's
    /// criterion, or an `at-init` arm's.
    pub fn scores_batches(&self) -> bool {
        self.prune.criterion.takes_score_batches()
            || (self.prune.granularity != Granularity::Weight
                && self.prune.structured_criterion == StructuredCriterion::Taylor)
            || self
                .arms
                .iter()
                .filter_map(|a| a.criterion)
                .any(InitCriterion::takes_score_batches)
    }

    /// Reads the source, applies `--set key=value` overrides in order and validates.
    pub fn resolve(source: &ConfigSource, sets: &[String]) -> Result<Self> {
        Self::resolve_with(source, &[], sets)
    }

    /// [`Experiment::resolve`] with keys removed (`--unset`, their defaults apply again)
    /// before the `--set` overrides.
    pub fn resolve_with(source: &ConfigSource, unsets: &[String], sets: &[String]) -> Result<Self> {
        let (text, origin, default_name) = match source {
            ConfigSource::Preset(name) => {
                let text = preset_text(name).with_context(|| {
                    format!(
                        "unknown preset `{name}` (available: {})",
                        preset_names().join(", ")
                    )
                })?;
                (text.to_string(), format!("preset `{name}`"), name.clone())
            }
            ConfigSource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "experiment".into());
                (text, format!("config file {}", path.display()), stem)
            }
        };
        Self::written(&text, &origin, &default_name, unsets, sets)
    }

    /// Parses and validates config text (as a config file would hold it) with `--set`
    /// overrides; `origin` names it in errors.
    pub fn from_text(text: &str, origin: &str, sets: &[String]) -> Result<Self> {
        Self::written(text, origin, "experiment", &[], sets)
    }

    /// A config as written (its `name` defaulting to `default_name`), with `--unset` and
    /// `--set` applied, validated, and refused if a setting would have no effect.
    fn written(
        text: &str,
        origin: &str,
        default_name: &str,
        unsets: &[String],
        sets: &[String],
    ) -> Result<Self> {
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{origin} is not valid TOML: {}", toml_error(text, &e)))?;
        table
            .entry("name")
            .or_insert_with(|| toml::Value::String(default_name.into()));
        let exp = Self::from_table(table).with_context(|| format!("invalid {origin}"))?;
        let exp = overrides::apply(exp, unsets, sets)?.with_settled_rounds();
        validate::validate(&exp)?;
        validate::refuse_inert(&exp)?;
        Ok(exp)
    }

    /// Parses the resolved config saved in a run dir (`config.toml`).
    pub fn from_saved(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if !hash::digest_line_holds(&text) {
            bail!(
                "{} was changed after the run wrote it (its text no longer matches the SHA-256 on its first line): restore it",
                path.display()
            );
        }
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not valid TOML: {}",
                path.display(),
                toml_error(&text, &e)
            )
        })?;
        let exp = Self::from_table(table)
            .with_context(|| format!("invalid {}", path.display()))?
            .with_settled_rounds();
        validate::validate(&exp).with_context(|| format!("invalid {}", path.display()))?;
        Ok(exp)
    }

    /// Deserializes a TOML table, naming the offending key on error.
    pub fn from_table(table: toml::Table) -> Result<Self> {
        let value = toml::Value::Table(table);
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = one_line(&e.into_inner().to_string());
            if path.is_empty() || path == "." {
                anyhow::anyhow!("{inner}")
            } else {
                anyhow::anyhow!("key `{path}`: {inner}")
            }
        })
    }

    /// The resolved config as a TOML table (every key, defaults included, but optional keys left unset).
    pub fn to_table(&self) -> toml::Table {
        match toml::Value::try_from(self).expect("config serializes to TOML") {
            toml::Value::Table(t) => t,
            _ => unreachable!("config serializes to a table"),
        }
    }

    /// The resolved config as TOML text, as saved in `config.toml`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serializes to TOML")
    }

    /// Number of replicas trained in pruned rounds (arms x seeds).
    pub fn replicas(&self) -> usize {
        self.arms.len() * self.seeds.len()
    }

    /// Every replica's `(arm name, seed)` as the run's CSV files write them, arms in config
    /// order.
    pub fn row_keys(&self) -> Vec<(String, String)> {
        self.arms
            .iter()
            .flat_map(|a| self.seeds.iter().map(|s| (a.name.clone(), s.to_string())))
            .collect()
    }

    /// The arm and seed of every replica whose topology moves in pruned rounds (dynamic
    /// `sparse` arms with at least one update: their rows of `topology.csv`), as
    /// [`Experiment::row_keys`] writes them.
    pub fn topology_row_keys(&self) -> Vec<(String, String)> {
        self.arms
            .iter()
            .filter(|a| !a.topology_updates(ArmPlan::of(self, a).to).is_empty())
            .flat_map(|a| self.seeds.iter().map(|s| (a.name.clone(), s.to_string())))
            .collect()
    }

    /// The arm called `name`.
    pub fn arm(&self, name: &str) -> Option<&ArmConfig> {
        self.arms.iter().find(|a| a.name == name)
    }

    /// Rows per arm and seed in `rounds.csv` when the run is complete (round 0 included).
    pub fn total_rounds(&self) -> u32 {
        match self.prune.schedule {
            PruneSchedule::Gradual => self.prune.gradual.steps().len() as u32 + 1,
            _ => self.pruned_rounds() + 1,
        }
    }

    /// The config with `prune.rounds` set to the number of one-shot `prune.targets` when
    /// those are given, and under the gradual schedule to its number of pruning steps (they
    /// set the rounds), so that the resolved config (`lth config`, the run dir's
    /// `config.toml`, the tidy data's `prune.rounds`) says how many rounds run, and a
    /// `prune.rounds` they override does not change the run dir.
    pub fn with_settled_rounds(mut self) -> Self {
        let gradual = &self.prune.gradual;
        match self.prune.schedule {
            PruneSchedule::OneShot if !self.prune.targets.is_empty() => {
                self.prune.rounds = self.prune.targets.len() as u32;
            }
            // (An invalid schedule, which validation then refuses, keeps them: steps() needs
            // every >= 1.)
            PruneSchedule::Gradual if gradual.every > 0 && gradual.start <= gradual.end => {
                self.prune.rounds = gradual.steps().len() as u32;
            }
            _ => {}
        }
        self
    }

    /// Rounds after the dense round 0 under the iterative and one-shot schedules.
    pub fn pruned_rounds(&self) -> u32 {
        match self.prune.schedule {
            PruneSchedule::OneShot if !self.prune.targets.is_empty() => {
                self.prune.targets.len() as u32
            }
            _ => self.prune.rounds,
        }
    }
}

/// A TOML parse error as one line: the message and where (`line L, column C`).
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = one_line(e.message());
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{message} (line {line}, column {column})")
        }
        None => message,
    }
}

/// Collapses a multi-line error message into one line.
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
