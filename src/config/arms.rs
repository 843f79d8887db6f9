//! The `[[arms]]` list: retraining strategies compared side by side, each applied to every seed.
//! Definitions follow `REFERENCES.md` (Frankle & Carbin 2019; Frankle et al. 2019/2020;
//! Renda, Frankle & Carbin 2020).

use serde::{Deserialize, Serialize};

/// Kinds of arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArmKind {
    /// Reset survivors to their values at `rewind_iteration` of the dense run and replay the
    /// schedule from there (0 = the original lottery ticket, k > 0 = late rewinding).
    Rewind,
    /// Keep the trained weights and train `iterations` more at the fine-tuning rate.
    Finetune,
    /// Keep the trained weights and replay the learning-rate schedule of the last
    /// `iterations` iterations.
    LrRewind,
    /// The mask of arm `sibling` (same seed and round) with freshly drawn weights.
    Reinit,
    /// A random mask with the per-layer remaining counts of arm `sibling`'s mask.
    RandomPrune,
    /// Gradual magnitude pruning during one training run (`prune.schedule = "gradual"`).
    Gradual,
    /// Pruning at initialization: θ₀ pruned once by `criterion` to each round's sparsity (the
    /// per-layer counts the run's schedule reaches that round) and trained from θ₀
    /// (Frankle et al. 2021, "Pruning Neural Networks at Initialization: Why are We Missing
    /// the Mark?").
    AtInit,
    /// Sparse training from scratch (Evci et al. 2020, "Rigging the Lottery"): a random mask
    /// at each round's sparsity, spread over the layers by `distribution`, trained from θ₀
    /// by `method`: `static` (the mask never changes), `set`, `rigl` or `snfs` (every
    /// `update_every` steps each tensor drops its weakest weights and regrows as many).
    Sparse,
}

/// How a `sparse` arm trains its topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SparseMethod {
    /// The initial random mask throughout (RigL's `static` baseline).
    #[default]
    Static,
    /// Sparse Evolutionary Training (Mocanu et al. 2018): drops the smallest |w|, regrows at
    /// random.
    Set,
    /// RigL (Evci et al. 2020): drops the smallest |w|, regrows where the dense gradient of a
    /// training batch is largest.
    Rigl,
    /// Sparse Networks From Scratch (Dettmers & Zettlemoyer 2019): drops the smallest |w|,
    /// regrows where the momentum of the dense gradient (pruned positions included, kept at
    /// every step) is largest; per-layer counts stay (no redistribution between layers).
    Snfs,
}

impl SparseMethod {
    /// Whether the topology changes during training.
    pub fn is_dynamic(self) -> bool {
        self != Self::Static
    }
}

/// What a `rewind` arm's kept weights start from (Zhou et al. 2019's "mask-1 actions"),
/// from the weights w_i it rewinds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mask1 {
    /// w_i itself (the lottery ticket).
    #[default]
    Rewind,
    /// The kept w_i of each tensor permuted among its kept positions.
    Reshuffle,
    /// alpha * sign(w_i), alpha the standard deviation of the tensor's w_i.
    Constant,
    /// Fresh magnitudes from the model's initializer with w_i's signs.
    Sign,
}

/// What the weights a dynamic `sparse` arm regrows start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrowInit {
    /// Zero, with zero optimizer state (RigL's choice).
    #[default]
    Zeros,
    /// Their value at θ₀ (optimizer state still zero).
    Init,
}

/// What a `rewind` arm's pruned weights hold while it trains (Zhou et al. 2019's "mask-0
/// actions"), from the weights w_i it rewinds to and the trained weights w_f it pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mask0 {
    /// Zero (the lottery ticket).
    #[default]
    Zero,
    /// w_i, frozen.
    FreezeInit,
    /// Zero where |w_f| < |w_i| (the weight moved toward zero in training), w_i elsewhere,
    /// frozen.
    FreezeTowardZero,
}

/// How a dynamic `sparse` arm's drop fraction decays until `end_fraction` of training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropAnneal {
    /// `drop_fraction / 2 * (1 + cos(pi * t / t_end))` (RigL's default).
    #[default]
    Cosine,
    /// `drop_fraction` at every update.
    Constant,
}

/// How a `sparse` arm's kept weights spread over the layers (see `prune::distribution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Every pruned tensor the same density.
    Uniform,
    /// Erdős-Rényi: density proportional to (n_in + n_out) / (n_in * n_out).
    Er,
    /// Erdős-Rényi-Kernel: convolutions count their kernel too (RigL's default).
    #[default]
    Erk,
}

/// What ranks θ₀'s weights for an `at-init` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitCriterion {
    /// |w · dL/dw| on `prune.score_batches` training batches (Lee et al. 2019, SNIP).
    Snip,
    /// w · Hg, lowest first (Wang et al. 2020, GraSP: removes the largest -w · Hg), g and the
    /// Hessian-gradient product on `prune.score_batches` training batches.
    Grasp,
    /// Data-free, iterated (Tanaka et al. 2020, SynFlow): |w · dR/dw| with R the summed
    /// output of the network with every parameter made positive on an all-ones input, pruned
    /// in `synflow_iterations` steps along an exponential schedule.
    Synflow,
    /// |w| at θ₀.
    Magnitude,
    /// Uniformly random (with the layer counts of the others).
    Random,
}

impl InitCriterion {
    /// Whether scoring reads training batches (`prune.score_batches`).
    pub fn takes_score_batches(self) -> bool {
        matches!(self, Self::Snip | Self::Grasp)
    }
}

/// Where a `random-prune` arm's weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RandomStart {
    /// The seed's dense-run weights where the arm starts (masked): θ₀, or θ_k under
    /// `start_at = "rewind"`.
    Theta0,
    /// A fresh seeded draw each round.
    Fresh,
}

/// Where a control arm (`reinit`, `random-prune`) starts training in a pruned round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlStart {
    /// Iteration 0: the control trains the whole schedule, [0, T].
    Init,
    /// The rewind point k of its `rewind` sibling: the control trains [k, T] beside it, and
    /// a `random-prune` control with `init = "theta0"` starts from θ_k (OpenLTH's default,
    /// `start_at = 'rewind'`).
    Rewind,
}

/// One arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmConfig {
    /// Name used in CSVs and paths (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Strategy.
    pub kind: ArmKind,
    /// `rewind`: iteration of the dense run whose weights survivors are reset to.
    #[serde(default)]
    pub rewind_iteration: u64,
    /// `rewind`: restore the optimizer state saved at `rewind_iteration` instead of resetting it.
    #[serde(default)]
    pub restore_optimizer: bool,
    /// `finetune`, `lr-rewind`: retraining iterations t (default `train.iterations`);
    /// `sparse`: its training's length, the learning-rate schedule stretched to it (RigL's
    /// "5x": five times `train.iterations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u64>,
    /// The arm's learning rate: `finetune`'s constant rate (default: the schedule's last
    /// rate); for the other kinds, the base rate its schedule scales (default `train.lr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// `reinit`, `random-prune`: the arm whose mask is reused or matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sibling: Option<String>,
    /// `random-prune`: start from the dense run's weights (θ₀, or θ_k with
    /// `start_at = "rewind"`; the default) or a fresh draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<RandomStart>,
    /// `reinit`, `random-prune`: train from iteration 0 (default) or from the rewind point of
    /// the `rewind` sibling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<ControlStart>,
    /// `at-init`: what ranks θ₀'s weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criterion: Option<InitCriterion>,
    /// `at-init`: shuffle the mask within each tensor, keeping its count (an ablation: a
    /// method whose shuffled masks train as well only chose per-layer densities).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shuffle: bool,
    /// `at-init` with `criterion = "synflow"`: pruning steps (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synflow_iterations: Option<u32>,
    /// `sparse`: how the topology trains (default `static`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<SparseMethod>,
    /// `sparse`: how the kept weights spread over the layers (default `erk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
    /// `sparse` with `set`, `rigl` or `snfs`: steps between topology updates (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_every: Option<u64>,
    /// `sparse` with `set`, `rigl` or `snfs`: the fraction of training after which the topology stays
    /// (default 0.75).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_fraction: Option<f64>,
    /// `sparse` with `set`, `rigl` or `snfs`: the fraction of each tensor's active weights an update
    /// drops (and regrows) at its start (default 0.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_fraction: Option<f64>,
    /// `sparse` with `set`, `rigl` or `snfs`: how the drop fraction decays (default `cosine`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_anneal: Option<DropAnneal>,
    /// `sparse` with `snfs`: split each update's regrowth between the tensors by their mean
    /// |momentum| (Dettmers & Zettlemoyer's redistribution; default: each tensor regrows what
    /// it dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redistribute: Option<bool>,
    /// `sparse` with `set`, `rigl` or `snfs`: what regrown weights start from (default `zeros`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grow_init: Option<GrowInit>,
    /// `rewind`: what the kept weights start from (default `rewind`: the weights rewound to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask1: Option<Mask1>,
    /// `rewind`: what the pruned weights hold (default `zero`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask0: Option<Mask0>,
}

impl ArmConfig {
    /// An arm with every optional setting at its default.
    pub fn new(name: &str, kind: ArmKind) -> Self {
        Self {
            name: name.into(),
            kind,
            rewind_iteration: 0,
            restore_optimizer: false,
            iterations: None,
            lr: None,
            sibling: None,
            init: None,
            start_at: None,
            criterion: None,
            shuffle: false,
            synflow_iterations: None,
            method: None,
            distribution: None,
            update_every: None,
            end_fraction: None,
            drop_fraction: None,
            drop_anneal: None,
            grow_init: None,
            redistribute: None,
            mask1: None,
            mask0: None,
        }
    }

    /// The settings this arm gives (keys of `[[arms]]` other than `name` and `kind`, set to
    /// other than their default).
    pub fn set_keys(&self) -> Vec<&'static str> {
        [
            ("rewind_iteration", self.rewind_iteration != 0),
            ("restore_optimizer", self.restore_optimizer),
            ("iterations", self.iterations.is_some()),
            ("lr", self.lr.is_some()),
            ("sibling", self.sibling.is_some()),
            ("init", self.init.is_some()),
            ("start_at", self.start_at.is_some()),
            ("criterion", self.criterion.is_some()),
            ("shuffle", self.shuffle),
            ("synflow_iterations", self.synflow_iterations.is_some()),
            ("method", self.method.is_some()),
            ("distribution", self.distribution.is_some()),
            ("update_every", self.update_every.is_some()),
            ("end_fraction", self.end_fraction.is_some()),
            ("drop_fraction", self.drop_fraction.is_some()),
            ("drop_anneal", self.drop_anneal.is_some()),
            ("grow_init", self.grow_init.is_some()),
            ("redistribute", self.redistribute.is_some()),
            ("mask1", self.mask1.is_some()),
            ("mask0", self.mask0.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }

    /// Whether this arm's kind takes the setting `field` (a key of `[[arms]]` other than
    /// `name` and `kind`).
    pub fn takes(&self, field: &str) -> bool {
        match self.kind {
            ArmKind::Rewind => matches!(
                field,
                "rewind_iteration" | "restore_optimizer" | "lr" | "mask1" | "mask0"
            ),
            ArmKind::Finetune | ArmKind::LrRewind => matches!(field, "iterations" | "lr"),
            ArmKind::Reinit => matches!(field, "sibling" | "start_at" | "lr"),
            ArmKind::RandomPrune => matches!(field, "sibling" | "init" | "start_at" | "lr"),
            ArmKind::Gradual => false,
            ArmKind::AtInit => matches!(
                field,
                "criterion" | "shuffle" | "init" | "synflow_iterations" | "lr"
            ),
            ArmKind::Sparse => matches!(
                field,
                "method"
                    | "distribution"
                    | "update_every"
                    | "end_fraction"
                    | "drop_fraction"
                    | "drop_anneal"
                    | "grow_init"
                    | "redistribute"
                    | "iterations"
                    | "lr"
            ),
        }
    }

    /// The iterations of a span [0, `iterations`] at which a dynamic `sparse` arm updates its
    /// topology: every `update_every` steps while below `end_fraction` of training; none for
    /// other arms.
    pub fn topology_updates(&self, iterations: u64) -> Vec<u64> {
        if self.kind != ArmKind::Sparse || !self.method.unwrap_or_default().is_dynamic() {
            return Vec::new();
        }
        let every = self.update_every.unwrap_or(100).max(1);
        let end = self.end_fraction.unwrap_or(0.75) * iterations as f64;
        (1..)
            .map(|k| k * every)
            .take_while(|&t| (t as f64) < end && t < iterations)
            .collect()
    }

    /// The fraction of each tensor's active weights a dynamic `sparse` arm drops at
    /// iteration `t` of a span of `iterations` (see [`DropAnneal`]).
    pub fn drop_fraction_at(&self, t: u64, iterations: u64) -> f64 {
        let f = self.drop_fraction.unwrap_or(0.3);
        match self.drop_anneal.unwrap_or_default() {
            DropAnneal::Constant => f,
            DropAnneal::Cosine => {
                let end = self.end_fraction.unwrap_or(0.75) * iterations as f64;
                f / 2.0 * (1.0 + (std::f64::consts::PI * t as f64 / end).cos())
            }
        }
    }

    /// `synflow_iterations` with its default.
    pub fn synflow_steps(&self) -> u32 {
        self.synflow_iterations.unwrap_or(100)
    }

    /// Whether each pruned round ranks this arm's own trained weights by the pruning
    /// criterion (rewind, finetune, lr-rewind): the arms a control may take as its sibling.
    pub fn ranks_own_weights(&self) -> bool {
        matches!(
            self.kind,
            ArmKind::Rewind | ArmKind::Finetune | ArmKind::LrRewind
        )
    }
}
