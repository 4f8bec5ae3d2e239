//! Model descriptions: parsing and validation, then everything computed from a valid one
//! without training (the three networks' shapes, the cost model, the memory estimate).
#![no_main]

use libfuzzer_sys::fuzz_target;
use onionnet::onion::{NetworkKind, archs};
use onionnet::spec::Spec;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = Spec::from_toml(text, Path::new("fuzz.toml")) else {
        return;
    };
    let _ = spec.to_toml();
    for kind in NetworkKind::ALL {
        let _ = archs(&spec, kind);
        let costs = onionnet::cost::stage_costs(&spec, kind);
        let _ = onionnet::cost::speedup(&spec, kind, &vec![0.5; costs.len().saturating_sub(1)]);
    }
    let _ = onionnet::footprint::training(&spec, 64);
});
