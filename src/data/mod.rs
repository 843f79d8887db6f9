//! Data: the IDX reader, the device-resident data set, per-replica batch order and
//! augmentation, and the per-chunk copies of both to the device.

pub mod augment;
pub mod batches;
pub mod cifar;
pub mod dataset;
pub mod idx;
pub mod transfer;

pub use batches::{index_chunk, BatchOrder};
pub use dataset::{Dataset, Split};
