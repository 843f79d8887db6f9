//! Figures drawn from a run's CSV tables.

pub mod accuracy;
pub mod axis;
pub mod style;

pub use accuracy::{accuracy_vs_weights, arm_series};
