//! Everything a run leaves on disk: the run-dir layout, atomic writes, CSV tables and
//! safetensors checkpoints.

pub mod atomic;
pub mod lock;
pub mod run_dir;
pub mod table;
pub mod tensors;

pub use atomic::write_atomic;
pub use lock::RunLock;
pub use run_dir::RunDir;
pub use table::Table;
