//! Read-only studies of finished runs: what a run's saved networks do under other pruning,
//! without training them again. Each study loads a run dir's config, data and network, writes
//! a tidy CSV under `notebooks-data/<name>/` and a figure under `plots/<name>/`, and never
//! writes into the run dir.

pub mod prune_curve;
pub mod saved;
pub mod scoring;
pub mod sensitivity;

pub use prune_curve::{prune_curve, PruneCurveOutput, PruneCurveRequest};
pub use sensitivity::{sensitivity, SensitivityOutput, SensitivityRequest};
