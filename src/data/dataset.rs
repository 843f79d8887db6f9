//! The whole data set on the device: training, validation (held out from the training files by
//! a seeded split) and test tensors, loaded once. Images are `[n, C, H, W]` floats: IDX images
//! (one channel) scaled to [0, 1]; CIFAR-10 images (three channels) scaled to [0, 1] and then
//! standardised per channel with the mean and standard deviation of the training split.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::cifar;
use super::idx::{read_images, read_labels, IdxArray};
use crate::config::{DataConfig, DataFormat};
use crate::rng::{permutation, stream, Purpose};

/// Classes in MNIST, Fashion-MNIST and CIFAR-10.
pub const NUM_CLASSES: u8 = 10;

/// The four standard IDX file names (without `.gz`).
pub const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// One split on the device.
#[derive(Debug)]
pub struct Split {
    /// Images `[n, C, H, W]`.
    pub images: Tensor,
    /// Class labels `[n]`.
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

/// Training, validation and test splits.
#[derive(Debug)]
pub struct Dataset {
    /// Examples the optimizer sees.
    pub train: Split,
    /// Held-out training examples used for early stopping.
    pub validation: Split,
    /// The test files.
    pub test: Split,
    /// `[C, H, W]` of one image.
    pub input_shape: [usize; 3],
    /// Per channel, the value a black pixel has after normalisation (padding of random crops).
    pub black: Vec<f64>,
    /// Number of classes.
    pub num_classes: usize,
}

/// Raw images and labels of the training and test files, before the split.
struct Raw {
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    shape: [usize; 3],
    standardise: bool,
    train_path: PathBuf,
}

/// Finds `<dir>/<name>.gz` or `<dir>/<name>`.
fn locate(dir: &Path, name: &str) -> Result<PathBuf> {
    for candidate in [dir.join(format!("{name}.gz")), dir.join(name)] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "missing data file {}[.gz] (data.dir must hold the four MNIST-format files: {}, or the CIFAR-10 batches)",
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

fn read_idx(dir: &Path) -> Result<Raw> {
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
    let shape = [1, train_x.dims[1], train_x.dims[2]];
    let images = |a: &IdxArray| bytes_to_images(&a.data, a.dims[0], shape);
    Ok(Raw {
        train_images: images(&train_x),
        train_labels: Tensor::from_slice(&train_y.data).to_kind(Kind::Int64),
        test_images: images(&test_x),
        test_labels: Tensor::from_slice(&test_y.data).to_kind(Kind::Int64),
        shape,
        standardise: false,
        train_path,
    })
}

fn read_cifar(dir: &Path) -> Result<Raw> {
    let Some(folder) = cifar::locate(dir) else {
        bail!(
            "missing CIFAR-10 file {} (data.dir must hold {} and {}, or their cifar-10-batches-bin/ folder)",
            dir.join(cifar::TRAIN_FILES[0]).display(),
            cifar::TRAIN_FILES.join(", "),
            cifar::TEST_FILE
        );
    };
    let mut train = cifar::CifarBatch::default();
    for name in cifar::TRAIN_FILES {
        let path = folder.join(name);
        if !path.is_file() {
            bail!("missing CIFAR-10 file {}", path.display());
        }
        let b = cifar::read(&path)?;
        train.images.extend(b.images);
        train.labels.extend(b.labels);
    }
    let test_path = folder.join(cifar::TEST_FILE);
    if !test_path.is_file() {
        bail!("missing CIFAR-10 file {}", test_path.display());
    }
    let test = cifar::read(&test_path)?;
    let shape = [3, 32, 32];
    Ok(Raw {
        train_images: bytes_to_images(&train.images, train.len(), shape),
        train_labels: Tensor::from_slice(&train.labels).to_kind(Kind::Int64),
        test_images: bytes_to_images(&test.images, test.len(), shape),
        test_labels: Tensor::from_slice(&test.labels).to_kind(Kind::Int64),
        shape,
        standardise: true,
        train_path: folder.join(cifar::TRAIN_FILES[0]),
    })
}

fn bytes_to_images(bytes: &[u8], n: usize, shape: [usize; 3]) -> Tensor {
    Tensor::from_slice(bytes)
        .view([n as i64, shape[0] as i64, shape[1] as i64, shape[2] as i64])
        .to_kind(Kind::Float)
        / 255.0
}

impl Dataset {
    /// Reads and validates the files of `cfg.dir`, holds out `cfg.validation_size` training
    /// examples chosen by `cfg.split_seed`, and moves everything to `device`.
    pub fn load(cfg: &DataConfig, device: Device) -> Result<Self> {
        let dir = Path::new(&cfg.dir);
        if !dir.is_dir() {
            bail!(
                "data.dir {} is not a folder (run `make data`, or point data.dir at a folder holding {} or the CIFAR-10 batches)",
                dir.display(),
                FILES.join(", ")
            );
        }
        let cifar_found = cifar::locate(dir).is_some();
        let raw = match cfg.format {
            DataFormat::Cifar10 => read_cifar(dir)?,
            DataFormat::Idx => read_idx(dir)?,
            DataFormat::Auto if cifar_found => read_cifar(dir)?,
            DataFormat::Auto => read_idx(dir)?,
        };
        let n = raw.train_labels.size()[0] as usize;
        if cfg.validation_size >= n {
            bail!(
                "data.validation_size ({}) must be below the {n} training examples of {}",
                cfg.validation_size,
                raw.train_path.display()
            );
        }
        let perm = permutation(&mut stream(cfg.split_seed, Purpose::Split, 0), n);
        let mut val_idx: Vec<i64> = perm[..cfg.validation_size]
            .iter()
            .map(|&i| i64::from(i))
            .collect();
        let mut train_idx: Vec<i64> = perm[cfg.validation_size..]
            .iter()
            .map(|&i| i64::from(i))
            .collect();
        val_idx.sort_unstable();
        train_idx.sort_unstable();
        let take = |idx: &[i64]| {
            let idx = Tensor::from_slice(idx);
            (
                raw.train_images.index_select(0, &idx),
                raw.train_labels.index_select(0, &idx),
            )
        };
        let (mut train_x, train_y) = take(&train_idx);
        let (mut val_x, val_y) = take(&val_idx);
        let mut test_x = raw.test_images.shallow_clone();
        let mut black = vec![0.0; raw.shape[0]];
        if raw.standardise {
            let mean = train_x.mean_dim(&[0i64, 2, 3][..], true, Kind::Float);
            let std = train_x.std_dim(&[0i64, 2, 3][..], true, true);
            black = Vec::<f64>::try_from(&(-&mean / &std).to_kind(Kind::Double).reshape([-1]))?;
            train_x = (&train_x - &mean) / &std;
            val_x = (&val_x - &mean) / &std;
            test_x = (&test_x - &mean) / &std;
        }
        let split = |x: Tensor, y: Tensor| Split {
            images: x.to_device(device),
            labels: y.to_device(device),
        };
        Ok(Self {
            train: split(train_x, train_y),
            validation: split(val_x, val_y),
            test: split(test_x, raw.test_labels),
            input_shape: raw.shape,
            black,
            num_classes: usize::from(NUM_CLASSES),
        })
    }

    /// Pixels per image (C x H x W).
    pub fn input_dim(&self) -> usize {
        self.input_shape.iter().product()
    }
}
