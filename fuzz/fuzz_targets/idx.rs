//! IDX files, plain and gzipped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onionnet::data::idx;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = idx::parse(data);
    let _ = idx::read_stream(data, false, Path::new("fuzz"));
    let _ = idx::read_stream(data, true, Path::new("fuzz.gz"));
});
