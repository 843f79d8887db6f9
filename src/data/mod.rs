//! Data: the IDX reader, the device-resident data set and per-replica batch order.

pub mod augment;
pub mod batches;
pub mod cifar;
pub mod dataset;
pub mod idx;

pub use batches::{index_chunk, BatchOrder};
pub use dataset::{Dataset, Split};
