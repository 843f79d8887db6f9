//! Replica-stacked networks. Every parameter has a leading replica axis and lives in one flat
//! `[R, P]` tensor described by a [`Layout`]; R = 1 goes through the same code.

pub mod init;
pub mod layout;
pub mod lenet;

use tch::Tensor;

pub use init::{fresh_replica, init_population, init_replica};
pub use layout::{Init, Layout, ParamSpec};
pub use lenet::Lenet;

use crate::config::Arch;

/// A network whose replicas run batched.
pub trait Network {
    /// Named parameters and their place in the flat vector.
    fn layout(&self) -> &Layout;

    /// Logits `[R, B, classes]` for per-replica inputs `x` `[R, B, input_dim]`.
    fn forward(&self, params: &Tensor, x: &Tensor) -> Tensor;

    /// Logits `[R, M, classes]` for one input batch `x` `[M, input_dim]` shared by all replicas
    /// (evaluation).
    fn forward_shared(&self, params: &Tensor, x: &Tensor) -> Tensor;
}

/// Builds the architecture named in the config.
pub fn build(arch: Arch, input_dim: usize, classes: usize) -> Box<dyn Network> {
    match arch {
        Arch::Lenet300100 => Box::new(Lenet::new(input_dim, classes)),
    }
}
