//! Reader for the CIFAR-10 binary format: `data_batch_1.bin` .. `data_batch_5.bin` and
//! `test_batch.bin`, each a sequence of 3,073-byte records: one label byte (0-9), then
//! 3,072 pixel bytes (1,024 red, 1,024 green, 1,024 blue, each 32 x 32 row-major).

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Bytes in one record.
pub const RECORD: usize = 1 + PIXELS;
/// Pixel bytes in one record.
pub const PIXELS: usize = 3 * 32 * 32;
/// The training files.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test file.
pub const TEST_FILE: &str = "test_batch.bin";

/// What can be wrong with a CIFAR-10 batch file.
#[derive(Debug, Error)]
pub enum CifarError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file has no record.
    #[error("{path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The length is not a whole number of records.
    #[error("{path} is truncated: {len} bytes is not a whole number of {RECORD}-byte records ({whole} whole, {extra} bytes left over)")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
        /// Whole records.
        whole: usize,
        /// Bytes beyond them.
        extra: usize,
    },
    /// A label byte is not a class.
    #[error("{path}: label {label} of record {index} is out of range 0..10")]
    Label {
        /// The file.
        path: PathBuf,
        /// The record.
        index: usize,
        /// The byte read.
        label: u8,
    },
}

/// Images (`count * 3072` bytes, channel-major per image) and labels of one file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CifarBatch {
    /// Pixel bytes.
    pub images: Vec<u8>,
    /// Labels.
    pub labels: Vec<u8>,
}

impl CifarBatch {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Parses one batch file's bytes.
pub fn parse(bytes: &[u8], path: &Path) -> Result<CifarBatch, CifarError> {
    if bytes.is_empty() {
        return Err(CifarError::Empty { path: path.into() });
    }
    if !bytes.len().is_multiple_of(RECORD) {
        return Err(CifarError::Truncated {
            path: path.into(),
            len: bytes.len(),
            whole: bytes.len() / RECORD,
            extra: bytes.len() % RECORD,
        });
    }
    let mut batch = CifarBatch::default();
    for (index, record) in bytes.chunks_exact(RECORD).enumerate() {
        let label = record[0];
        if label >= 10 {
            return Err(CifarError::Label {
                path: path.into(),
                index,
                label,
            });
        }
        batch.labels.push(label);
        batch.images.extend_from_slice(&record[1..]);
    }
    Ok(batch)
}

/// Reads and parses one batch file.
pub fn read(path: &Path) -> Result<CifarBatch, CifarError> {
    let bytes = std::fs::read(path).map_err(|source| CifarError::Io {
        path: path.into(),
        source,
    })?;
    parse(&bytes, path)
}

/// The folder holding the batch files: `dir` itself, or `dir/cifar-10-batches-bin` (as the
/// official tarball unpacks); `None` when neither holds `data_batch_1.bin`.
pub fn locate(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), dir.join("cifar-10-batches-bin")]
        .into_iter()
        .find(|d| d.join(TRAIN_FILES[0]).is_file())
}

/// Encodes records (used by tests and tools to write small data sets).
pub fn encode(images: &[u8], labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(labels.len() * RECORD);
    for (i, &l) in labels.iter().enumerate() {
        out.push(l);
        out.extend_from_slice(&images[i * PIXELS..(i + 1) * PIXELS]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_encode_and_rejects_bad_files() {
        let images: Vec<u8> = (0..2 * PIXELS).map(|i| (i % 251) as u8).collect();
        let bytes = encode(&images, &[3, 9]);
        let b = parse(&bytes, Path::new("x")).unwrap();
        assert_eq!(b.labels, vec![3, 9]);
        assert_eq!(b.images, images);
        let err = parse(&bytes[..bytes.len() - 5], Path::new("x")).unwrap_err();
        assert!(
            err.to_string().contains("1 whole, 3068 bytes left over"),
            "{err}"
        );
        let mut bad = bytes.clone();
        bad[RECORD] = 10;
        let err = parse(&bad, Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("label 10 of record 1"), "{err}");
        assert!(parse(&[], Path::new("x"))
            .unwrap_err()
            .to_string()
            .contains("is empty"));
    }
}
