//! Image files of an image folder, converted to a grey and an RGB input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onionnet::data::folder::decode_bytes;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = decode_bytes(data, Path::new("fuzz.png"), [1, 28, 28]);
    let _ = decode_bytes(data, Path::new("fuzz.png"), [3, 16, 16]);
});
