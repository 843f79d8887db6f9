//! Sparse execution of pruned fully connected layers on the CPU (`train.sparse_kernels`): a
//! layer's surviving weights by row and by column ([`csr`]), the products over them
//! ([`kernels`]) and a ReLU network's step and evaluation on them ([`mlp`]).

pub mod csr;
pub mod kernels;
pub mod mlp;
pub mod team;

pub use csr::SparseWeights;
pub use mlp::{EvalBlocks, SparseMlp};
