//! The files of a model directory: the first byte picks which file of the seed model
//! (`fuzz/seed-model/`) the rest replaces, then the directory is read as `eval` and
//! `retrieve` read it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onionnet::checkpoint::Checkpoint;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const FILES: [&str; 5] = [
    "net0.bpk",
    "train.json",
    "thresholds.json",
    "preprocess.json",
    "spec.toml",
];

/// A private copy of the seed model, made once per process.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("seed-model");
        let d = std::env::temp_dir().join(format!("onionnet-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for f in FILES {
            std::fs::copy(seed.join(f), d.join(f)).unwrap();
        }
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let d = dir();
    let file = FILES[which as usize % FILES.len()];
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("seed-model");
    std::fs::write(d.join(file), rest).unwrap();
    let ck = Checkpoint::new(d);
    let device = burn::tensor::Device::default();
    if let Ok(model) = ck.load_model(&device) {
        let _ = ck.load_thresholds(&model.spec);
    }
    let _ = ck.load_preprocess();
    let _ = ck.load_state();
    // restore the file for the next input
    std::fs::copy(seed.join(file), d.join(file)).unwrap();
});
