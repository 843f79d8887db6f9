//! Everything a run leaves on disk: the run-dir layout and its typed files (weights, masks,
//! optimizer states, checkpoints), the result tables and their rows, atomic writes, and the
//! SHA-256 manifest of the files of completed rounds.

pub mod atomic;
pub mod checkpoint;
pub mod lock;
pub mod manifest;
pub mod results;
pub mod rows;
pub mod run_dir;
pub mod run_tensors;
pub mod table;
pub mod tensors;

pub use atomic::write_atomic;
pub use checkpoint::CheckpointFile;
pub use lock::RunLock;
pub use manifest::TableCheck;
pub use results::Results;
pub use rows::{ReplicaRound, CURVES, LAYERS, ROUNDS, TIMINGS};
pub use run_dir::RunDir;
pub use table::Table;
pub use tensors::NamedTensors;
