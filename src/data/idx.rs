//! Reader for IDX files (the MNIST / Fashion-MNIST format), gzipped or raw.
//!
//! An IDX file starts with a magic number: two zero bytes, a type byte (0x08 = unsigned byte,
//! the only type MNIST uses) and the number of dimensions, then one big-endian u32 per
//! dimension, then the data in row-major order. Every deviation is an error naming the file.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use thiserror::Error;

/// What can be wrong with an IDX file.
#[derive(Debug, Error)]
pub enum IdxError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file has no bytes.
    #[error("{path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Gzip decompression failed.
    #[error("{path} is not a valid gzip stream: {reason}")]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// The header is shorter than the magic number and dimensions it announces.
    #[error("{path} is truncated: {what}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// The magic number is not that of an unsigned-byte IDX file.
    #[error("{path} has magic number 0x{magic:08x}, expected 0x{expected:08x} (unsigned-byte IDX with {dims} dimension(s))")]
    Magic {
        /// The file.
        path: PathBuf,
        /// What was read.
        magic: u32,
        /// What was expected.
        expected: u32,
        /// Expected dimension count.
        dims: u8,
    },
    /// The body is longer than the dimensions say.
    #[error("{path} has {extra} byte(s) after the {expected} announced by its header")]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Bytes announced.
        expected: usize,
        /// Bytes beyond that.
        extra: usize,
    },
    /// A semantic check failed (dimensions, counts, labels).
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The failed check.
        what: String,
    },
}

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Row-major data.
    pub data: Vec<u8>,
}

/// Reads the file fully, gunzipping it when it starts with the gzip magic bytes.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, IdxError> {
    let raw = std::fs::read(path).map_err(|source| IdxError::Io {
        path: path.into(),
        source,
    })?;
    decompress(raw, path)
}

/// Gunzips `raw` when it starts with the gzip magic bytes; otherwise returns it unchanged.
pub fn decompress(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>, IdxError> {
    if raw.is_empty() {
        return Err(IdxError::Empty { path: path.into() });
    }
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| IdxError::Gzip {
                path: path.into(),
                reason: e.to_string(),
            })?;
        if out.is_empty() {
            return Err(IdxError::Empty { path: path.into() });
        }
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an unsigned-byte IDX array with exactly `ndims` dimensions.
pub fn parse(bytes: &[u8], ndims: u8, path: &Path) -> Result<IdxArray, IdxError> {
    let expected_magic = 0x0000_0800 | u32::from(ndims);
    if bytes.len() < 4 {
        return Err(IdxError::Truncated {
            path: path.into(),
            what: format!(
                "{} byte(s), shorter than the 4-byte magic number",
                bytes.len()
            ),
        });
    }
    let magic = u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if magic != expected_magic {
        return Err(IdxError::Magic {
            path: path.into(),
            magic,
            expected: expected_magic,
            dims: ndims,
        });
    }
    let header = 4 + 4 * usize::from(ndims);
    if bytes.len() < header {
        return Err(IdxError::Truncated {
            path: path.into(),
            what: format!("header needs {header} bytes, file has {}", bytes.len()),
        });
    }
    let dims: Vec<usize> = (0..usize::from(ndims))
        .map(|i| {
            let at = 4 + 4 * i;
            u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| IdxError::Invalid {
            path: path.into(),
            what: format!("dimensions {dims:?} overflow"),
        })?;
    let body = &bytes[header..];
    if body.len() < expected {
        return Err(IdxError::Truncated {
            path: path.into(),
            what: format!(
                "dimensions {dims:?} announce {expected} data bytes, file has {}",
                body.len()
            ),
        });
    }
    if body.len() > expected {
        return Err(IdxError::TrailingBytes {
            path: path.into(),
            expected,
            extra: body.len() - expected,
        });
    }
    Ok(IdxArray {
        dims,
        data: body.to_vec(),
    })
}

/// Images: `[count, rows, cols]` unsigned bytes.
pub fn read_images(path: &Path) -> Result<IdxArray, IdxError> {
    let array = parse(&read_maybe_gz(path)?, 3, path)?;
    if array.dims[0] == 0 || array.dims[1] == 0 || array.dims[2] == 0 {
        return Err(IdxError::Invalid {
            path: path.into(),
            what: format!("image dimensions {:?} must all be >= 1", array.dims),
        });
    }
    Ok(array)
}

/// Labels: `[count]` unsigned bytes, each below `num_classes`.
pub fn read_labels(path: &Path, num_classes: u8) -> Result<IdxArray, IdxError> {
    let array = parse(&read_maybe_gz(path)?, 1, path)?;
    if array.dims[0] == 0 {
        return Err(IdxError::Invalid {
            path: path.into(),
            what: "holds 0 labels".into(),
        });
    }
    if let Some((i, &l)) = array
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| l >= num_classes)
    {
        return Err(IdxError::Invalid {
            path: path.into(),
            what: format!("label {l} at index {i} is out of range 0..{num_classes}"),
        });
    }
    Ok(array)
}

/// Writes an unsigned-byte IDX array (used by tests and tools to make small data sets).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_encode() {
        let data: Vec<u8> = (0..24).collect();
        let a = parse(&encode(&[2, 3, 4], &data), 3, Path::new("x")).unwrap();
        assert_eq!(a.dims, vec![2, 3, 4]);
        assert_eq!(a.data, data);
    }

    #[test]
    fn wrong_dimension_count_is_a_magic_error() {
        let err = parse(&encode(&[4], &[0; 4]), 3, Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("magic number 0x00000801"), "{err}");
    }

    #[test]
    fn truncated_and_trailing_bodies_are_rejected() {
        let bytes = encode(&[2, 2, 2], &[0; 8]);
        let short = parse(&bytes[..bytes.len() - 1], 3, Path::new("x")).unwrap_err();
        assert!(
            short
                .to_string()
                .contains("announce 8 data bytes, file has 7"),
            "{short}"
        );
        let mut long = bytes.clone();
        long.push(0);
        let err = parse(&long, 3, Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("1 byte(s) after the 8"), "{err}");
    }
}
