//! lth: a lottery-ticket research harness on libtorch.
//!
//! Iterative magnitude pruning (Frankle & Carbin 2019) over a *population* of replicas
//! (seeds x arms) trained together: every parameter carries a leading replica axis, layers run
//! batched, and each replica keeps its own seed, data order, mask and rewind target.
//!
//! Modules, each with one job, listed from the bottom up: a module imports only modules
//! listed before it (`tests/suite/layering.rs` checks it).
//! - [`rng`], [`platform`], [`precision`], [`portable`] hold seeded streams, OS facts, the GPU
//!   float mode, the reproducibility mode (pinned CPU code paths);
//! - [`config`] holds experiment TOML, presets, `--set`, validation, content hash, arm plans;
//! - [`data`] holds IDX and CIFAR-10 readers, device-resident data set, per-replica batch order;
//! - [`model`] holds replica-stacked networks over a flat parameter layout;
//! - [`prune`] holds pruning groups, criteria (magnitude, random, taylor, obd, obs), counts;
//! - [`train`] holds optimizers, the step loop over a span, evaluation, early stopping;
//! - [`record`] holds the run dir and its files: tables and rows, tensors, checkpoints;
//! - [`progress`] holds what a run prints;
//! - [`experiment`] holds the rounds of a run, arms, resume;
//! - [`report`] holds tidy data and figures;
//! - [`export`] holds one replica's weights for PyTorch;
//! - [`analysis`] holds read-only studies of finished runs (prune-curve, sensitivity);
//! - [`sweep`] holds grids of experiments: sweep files, their tasks, the local executor.

pub mod analysis;
pub mod config;
pub mod data;
pub mod experiment;
pub mod export;
pub mod interrupt;
pub mod model;
pub mod platform;
pub mod portable;
pub mod precision;
pub mod progress;
pub mod prune;
pub mod record;
pub mod report;
pub mod rng;
pub mod sweep;
pub mod train;
