//! The whole data set on the device: training, validation (held out from the training files by
//! a seeded split) and test tensors, loaded once.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::idx::{read_images, read_labels, IdxArray};
use crate::rng::{permutation, stream, Purpose};

/// Classes in MNIST and Fashion-MNIST.
pub const NUM_CLASSES: u8 = 10;

/// The four standard file names (without `.gz`).
pub const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// One split on the device: images `[n, rows * cols]` as f32 in [0, 1], labels `[n]` as i64.
#[derive(Debug)]
pub struct Split {
    /// Flattened images scaled to [0, 1].
    pub images: Tensor,
    /// Class labels.
    pub labels: Tensor,
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    /// Whether the split holds no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Training, validation and test splits of an MNIST-format data set.
#[derive(Debug)]
pub struct Dataset {
    /// Examples the optimizer sees.
    pub train: Split,
    /// Held-out training examples used for early stopping.
    pub validation: Split,
    /// The test files.
    pub test: Split,
    /// Pixels per image.
    pub input_dim: usize,
    /// Number of classes.
    pub num_classes: usize,
}

/// Finds `<dir>/<name>.gz` or `<dir>/<name>`.
fn locate(dir: &Path, name: &str) -> Result<PathBuf> {
    for candidate in [dir.join(format!("{name}.gz")), dir.join(name)] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "missing data file {}[.gz] (data.dir must hold the four MNIST-format files: {})",
        dir.join(name).display(),
        FILES.join(", ")
    )
}

fn read_pair(dir: &Path, images: &str, labels: &str) -> Result<(IdxArray, IdxArray, PathBuf)> {
    let image_path = locate(dir, images)?;
    let label_path = locate(dir, labels)?;
    let x = read_images(&image_path)?;
    let y = read_labels(&label_path, NUM_CLASSES)?;
    if x.dims[0] != y.dims[0] {
        bail!(
            "{} holds {} images but {} holds {} labels",
            image_path.display(),
            x.dims[0],
            label_path.display(),
            y.dims[0]
        );
    }
    Ok((x, y, image_path))
}

impl Dataset {
    /// Reads and validates the four files of `dir`, holds out `validation_size` training
    /// examples chosen by `split_seed`, and moves everything to `device`.
    pub fn load(
        dir: &Path,
        validation_size: usize,
        split_seed: u64,
        device: Device,
    ) -> Result<Self> {
        if !dir.is_dir() {
            bail!("data.dir {} is not a folder (run `make data`, or point data.dir at a folder holding {})", dir.display(), FILES.join(", "));
        }
        let (train_x, train_y, train_path) = read_pair(dir, FILES[0], FILES[1])?;
        let (test_x, test_y, test_path) = read_pair(dir, FILES[2], FILES[3])?;
        if train_x.dims[1..] != test_x.dims[1..] {
            bail!(
                "{} holds {}x{} images but {} holds {}x{}",
                train_path.display(),
                train_x.dims[1],
                train_x.dims[2],
                test_path.display(),
                test_x.dims[1],
                test_x.dims[2]
            );
        }
        let n = train_x.dims[0];
        if validation_size >= n {
            bail!("data.validation_size ({validation_size}) must be below the {n} training examples of {}", train_path.display());
        }
        let input_dim = train_x.dims[1] * train_x.dims[2];
        let perm = permutation(&mut stream(split_seed, Purpose::Split, 0), n);
        let mut val_idx: Vec<i64> = perm[..validation_size]
            .iter()
            .map(|&i| i64::from(i))
            .collect();
        let mut train_idx: Vec<i64> = perm[validation_size..]
            .iter()
            .map(|&i| i64::from(i))
            .collect();
        val_idx.sort_unstable();
        train_idx.sort_unstable();
        let all_x = images_tensor(&train_x, input_dim);
        let all_y = labels_tensor(&train_y);
        let take = |idx: &[i64]| {
            let idx = Tensor::from_slice(idx);
            Split {
                images: all_x.index_select(0, &idx).to_device(device),
                labels: all_y.index_select(0, &idx).to_device(device),
            }
        };
        Ok(Self {
            train: take(&train_idx),
            validation: take(&val_idx),
            test: Split {
                images: images_tensor(&test_x, input_dim).to_device(device),
                labels: labels_tensor(&test_y).to_device(device),
            },
            input_dim,
            num_classes: usize::from(NUM_CLASSES),
        })
    }
}

fn images_tensor(a: &IdxArray, input_dim: usize) -> Tensor {
    Tensor::from_slice(&a.data)
        .view([a.dims[0] as i64, input_dim as i64])
        .to_kind(Kind::Float)
        / 255.0
}

fn labels_tensor(a: &IdxArray) -> Tensor {
    Tensor::from_slice(&a.data).to_kind(Kind::Int64)
}
