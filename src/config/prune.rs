//! The `[prune]` section: scope, rates and schedule of pruning.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Scope of pruning: which weights one ranking compares (the key `prune.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PruneScope {
    /// One ranking (one threshold) over all prunable tensors of a replica.
    Global,
    /// Each prunable tensor loses its own fraction of its remaining weights.
    Layerwise,
}

/// When pruning happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PruneSchedule {
    /// Each round prunes a fraction of the weights its arm's previous round kept.
    Iterative,
    /// Each round prunes the dense trained network straight to its target sparsity.
    OneShot,
    /// Sparsity rises during one training run along Zhu & Gupta's cubic schedule.
    Gradual,
}

/// What ranks the weights a round prunes (the key `prune.criterion`): the lowest-scored
/// remaining weights go first, with the same counts and tie rule whatever the criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PruneCriterion {
    /// |w| (Frankle & Carbin 2019).
    Magnitude,
    /// First order: (w * dL/dw)^2, averaged over `prune.score_batches` training batches
    /// (Molchanov et al. 2019).
    Taylor,
    /// Second order, Optimal Brain Damage (LeCun et al. 1990): 1/2 F_ii w_i^2, with F_ii the
    /// diagonal of the empirical Fisher from per-example gradients over
    /// `prune.score_examples` training examples.
    Obd,
    /// Layer-wise Optimal Brain Surgeon (OBC / SparseGPT, Frantar & Alistarh 2022/2023):
    /// w_q^2 / [H^-1]_qq per row, H = (2/N) X^T X + damping from the layer's inputs on
    /// `prune.score_examples` examples; the surviving weights of each row then move to make up
    /// for the removed ones.
    Obs,
    /// Zhou et al. 2019's mask criteria over the weight the arm rewinds to (w_i: θ₀ or θ_k)
    /// and its trained value (w_f); `large-final` keeps what `magnitude` keeps.
    LargeFinal,
    /// Keeps the smallest |w_f|.
    SmallFinal,
    /// Keeps the largest |w_i|.
    LargeInit,
    /// Keeps the weights large at both ends: score min(|w_i|, |w_f|).
    LargeInitLargeFinal,
    /// Keeps the weights small at both ends: score -max(|w_i|, |w_f|).
    SmallInitSmallFinal,
    /// Keeps the largest growth |w_f| - |w_i|.
    MagnitudeIncrease,
    /// Keeps the largest movement |w_f - w_i|.
    Movement,
    /// Keeps the largest |w_f| among the weights whose sign matches sign(w_i); a flipped
    /// weight goes before any that kept its sign.
    LargeFinalSameSign,
}

impl PruneCriterion {
    /// The name the config writes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Magnitude => "magnitude",
            Self::Taylor => "taylor",
            Self::Obd => "obd",
            Self::Obs => "obs",
            Self::LargeFinal => "large-final",
            Self::SmallFinal => "small-final",
            Self::LargeInit => "large-init",
            Self::LargeInitLargeFinal => "large-init-large-final",
            Self::SmallInitSmallFinal => "small-init-small-final",
            Self::MagnitudeIncrease => "magnitude-increase",
            Self::Movement => "movement",
            Self::LargeFinalSameSign => "large-final-same-sign",
        }
    }

    /// Whether scoring reads the weight each replica rewinds to (Zhou et al.'s criteria).
    pub fn reads_init(self) -> bool {
        !matches!(
            self,
            Self::Magnitude
                | Self::Taylor
                | Self::Obd
                | Self::Obs
                | Self::LargeFinal
                | Self::SmallFinal
        )
    }

    /// Whether scoring reads training batches (`prune.score_batches`).
    pub fn takes_score_batches(self) -> bool {
        self == Self::Taylor
    }

    /// Whether scoring reads single training examples (`prune.score_examples`).
    pub fn takes_score_examples(self) -> bool {
        matches!(self, Self::Obd | Self::Obs)
    }

    /// Whether the criterion moves the surviving weights (so a round that keeps the trained
    /// weights starts from the moved ones).
    pub fn changes_weights(self) -> bool {
        self == Self::Obs
    }
}

/// What a round removes (the key `prune.granularity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Granularity {
    /// Single weights.
    Weight,
    /// Whole neurons of the hidden fully connected layers: a weight row, its bias, and the
    /// column of the next layer it feeds.
    Neuron,
    /// Whole filters of the convolutions: a filter, its bias (and BatchNorm entries), and the
    /// input channel of the next layer it feeds.
    Filter,
}

impl Granularity {
    /// The name the config writes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Weight => "weight",
            Self::Neuron => "neuron",
            Self::Filter => "filter",
        }
    }
}

/// What ranks whole units (neurons, filters) when `prune.granularity` removes them (the key
/// `prune.structured_criterion`): the lowest-scored remaining units go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StructuredCriterion {
    /// Mean |w| of the unit's incoming weights (its L1 norm over their count; Li et al. 2017).
    L1,
    /// Root mean square of the unit's incoming weights (its L2 norm over the square root of
    /// their count; `torch.nn.utils.prune.ln_structured` with n = 2).
    L2,
    /// First order (Molchanov et al. 2019): (sum over the unit's weights and bias of
    /// w * dL/dw)^2, averaged over `prune.score_batches` training batches: the squared
    /// first-order estimate of the loss change when the whole unit is removed.
    Taylor,
    /// The fraction of the unit's activations (after its ReLU, as the next layer sees them)
    /// that are not zero, on `prune.score_examples` training examples: units with the highest
    /// Average Percentage of Zeros go first (Hu et al. 2016, APoZ).
    Apoz,
    /// The mean of the unit's activations (after its ReLU, as the next layer sees them) on
    /// `prune.score_examples` training examples.
    MeanActivation,
}

impl StructuredCriterion {
    /// Whether the scores come from the units' activations on training examples.
    pub fn reads_activations(self) -> bool {
        matches!(self, Self::Apoz | Self::MeanActivation)
    }
}

/// Gradual magnitude pruning (Zhu & Gupta 2017): between iterations `start` and `end`,
/// every `every` iterations, the sparsity is set to
/// `s(t) = final + (initial - final) * (1 - (t - start) / (end - start))^3`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GradualConfig {
    /// Sparsity at `start` (fraction of prunable weights removed).
    pub initial_sparsity: f64,
    /// Sparsity reached at `end`.
    pub final_sparsity: f64,
    /// First pruning iteration.
    pub start: u64,
    /// Last pruning iteration (the final sparsity is reached here); below `train.iterations`.
    pub end: u64,
    /// Iterations between pruning steps.
    pub every: u64,
}

/// Pruning between rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruneConfig {
    /// Global or layerwise pruning (written `strategy` in the TOML, as it always was).
    #[serde(rename = "strategy")]
    pub scope: PruneScope,
    /// Fraction of the remaining weights removed per round.
    pub fraction: f64,
    /// Per-layer fractions (layerwise only), keyed by parameter name, e.g. `"fc3.weight" = 0.1`.
    pub layer_fractions: BTreeMap<String, f64>,
    /// Fraction for convolution weights (layerwise only; default `fraction`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conv_fraction: Option<f64>,
    /// Fraction for hidden fully connected weights (layerwise only; default `fraction`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fc_fraction: Option<f64>,
    /// Fraction for the output layer's weights (layerwise only; default `fraction`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_fraction: Option<f64>,
    /// Prunable parameters left dense, by name.
    pub exclude: Vec<String>,
    /// Number of pruning rounds after the dense round 0.
    pub rounds: u32,
    /// Iterative, one-shot or gradual.
    pub schedule: PruneSchedule,
    /// One-shot targets: percent of weights remaining in each round (empty: the sparsities the
    /// iterative schedule reaches in rounds 1..=rounds).
    pub targets: Vec<f64>,
    /// The gradual schedule's parameters.
    pub gradual: GradualConfig,
    /// What ranks the weights: magnitude, taylor, obd or obs.
    pub criterion: PruneCriterion,
    /// Training batches (of `train.batch_size`) a `taylor` score averages over.
    pub score_batches: u32,
    /// Training examples whose gradients give `obd` its Fisher diagonal, or whose layer
    /// inputs give `obs` its Hessians.
    pub score_examples: u32,
    /// `obs` only: the dampening added to the diagonal of each H, as a fraction of its mean.
    pub obs_damping: f64,
    /// Single weights, or whole neurons or filters.
    pub granularity: Granularity,
    /// What ranks whole units (`granularity` neuron or filter).
    pub structured_criterion: StructuredCriterion,
}

impl Default for GradualConfig {
    fn default() -> Self {
        Self {
            initial_sparsity: 0.0,
            final_sparsity: 0.9,
            start: 0,
            end: 0,
            every: 100,
        }
    }
}

impl Default for PruneConfig {
    fn default() -> Self {
        Self {
            scope: PruneScope::Layerwise,
            fraction: 0.2,
            layer_fractions: BTreeMap::new(),
            conv_fraction: None,
            fc_fraction: None,
            output_fraction: None,
            exclude: Vec::new(),
            rounds: 20,
            schedule: PruneSchedule::Iterative,
            targets: Vec::new(),
            gradual: GradualConfig::default(),
            criterion: PruneCriterion::Magnitude,
            score_batches: 10,
            score_examples: 1000,
            obs_damping: 0.01,
            granularity: Granularity::Weight,
            structured_criterion: StructuredCriterion::L1,
        }
    }
}

impl PruneConfig {
    /// Whether structured pruning scores units on single training examples
    /// (`prune.score_examples`).
    pub fn structured_reads_examples(&self) -> bool {
        self.granularity != Granularity::Weight && self.structured_criterion.reads_activations()
    }

    /// Whether any layerwise-only setting is given.
    pub fn has_layer_settings(&self) -> bool {
        !self.layer_fractions.is_empty()
            || self.conv_fraction.is_some()
            || self.fc_fraction.is_some()
            || self.output_fraction.is_some()
    }
}

impl GradualConfig {
    /// Sparsity the cubic schedule prescribes at iteration `t` (clamped to [start, end]).
    pub fn sparsity_at(&self, t: u64) -> f64 {
        let t = t.clamp(self.start, self.end);
        let progress = (t - self.start) as f64 / (self.end - self.start) as f64;
        self.final_sparsity
            + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress).powi(3)
    }

    /// Iterations at which masks are updated: start, start + every, ..., and end.
    pub fn steps(&self) -> Vec<u64> {
        let mut steps: Vec<u64> = (self.start..self.end)
            .step_by(self.every as usize)
            .collect();
        steps.push(self.end);
        steps
    }
}
