//! The integration tests, one crate (libtorch is linked once, not once per file): one module
//! per concern. Run one module with `cargo test --release --test suite <module>::`.

mod common;

mod anatomy;
mod arms;
mod at_init;
mod bad_input;
mod bad_input_corpus;
mod config;
mod convnets;
mod crash;
mod criteria;
mod engine;
mod export;
mod layering;
mod manifest;
mod portable;
mod prune;
mod report;
mod reproducible;
mod robustness;
mod sparse;
mod sparse_training;
mod stability;
mod structured;
mod studies;
mod sweep;
mod train_cost;
