//! CIFAR-10 reader: arbitrary bytes never panic; they parse into whole records or give an error.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lth::data::cifar::{parse, PIXELS};

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = parse(data, Path::new("fuzz")) {
        assert_eq!(batch.images.len(), batch.len() * PIXELS);
        assert!(batch.labels.iter().all(|&l| l < 10));
    }
});
