//! lth: a lottery-ticket research harness on libtorch.
//!
//! Iterative magnitude pruning (Frankle & Carbin 2019) over a *population* of replicas
//! (seeds x arms) trained together: every parameter carries a leading replica axis, layers run
//! batched, and each replica keeps its own seed, data order, mask and rewind target.
//!
//! Modules, each with one job:
//! - [`config`] holds experiment TOML, presets, `--set`, validation, content hash;
//! - [`data`] holds IDX reader, device-resident data set, per-replica batch order;
//! - [`model`] holds replica-stacked networks over a flat parameter layout;
//! - [`prune`] holds magnitude pruning with exact counts;
//! - [`train`] holds optimizers, the step loop, evaluation, early stopping;
//! - [`experiment`] holds the rounds of a run, arms, resume;
//! - [`record`] holds run-dir layout, CSV tables, safetensors, atomic writes;
//! - [`report`] holds figures;
//! - [`export`] holds one replica's weights for PyTorch.

pub mod config;
pub mod data;
pub mod experiment;
pub mod export;
pub mod model;
pub mod platform;
pub mod precision;
pub mod progress;
pub mod prune;
pub mod record;
pub mod report;
pub mod rng;
pub mod train;
