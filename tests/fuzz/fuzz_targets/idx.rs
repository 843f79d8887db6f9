//! IDX reader: arbitrary bytes (gzipped or not) never panic; they parse or give an error.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lth::data::idx::{decompress, parse};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz");
    if let Ok(bytes) = decompress(data.to_vec(), path) {
        for dims in [1, 3] {
            if let Ok(array) = parse(&bytes, dims, path) {
                assert_eq!(array.data.len(), array.dims.iter().product::<usize>());
            }
        }
    }
});
