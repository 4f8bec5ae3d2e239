//! The memory a command will need, estimated from the description before anything is
//! allocated, so that a network too large for the machine is an error naming the option to
//! change rather than an abort in the allocator.
//!
//! The estimate is deliberately generous (a factor of the exact sizes, not a measurement):
//! training holds the weights four times (weights, gradients, momentum, a copy while the
//! optimiser steps) and each example's maps three times (the forward values, the autodiff
//! graph's saved inputs, their gradients), for the three networks of the comparison at most
//! once each at a time; inference holds the weights twice (burn's and the own path's packed
//! copy) and a batch's maps twice.

use crate::spec::{Spec, running_values};

/// Bytes of the monolithic network's weights and of one example's maps (every layer's, the
/// detector's backbone included).
fn sizes(spec: &Spec) -> (u128, u128) {
    let mut last = vec![running_values(&spec.input, &spec.layers).last().copied()];
    if let Some(d) = &spec.detector {
        last.push(running_values(&d.image, &d.backbone).last().copied());
    }
    let (weights, maps) = last
        .into_iter()
        .flatten()
        .fold((0, 0), |(w, m), (lw, lm)| (w + lw, m + lm));
    (weights * 4, maps * 4)
}

/// Bytes that training a network of `spec` on batches of `batch` examples needs, about.
pub fn training(spec: &Spec, batch: usize) -> u128 {
    let (weights, maps) = sizes(spec);
    4 * weights + 3 * maps * batch as u128
}

/// Bytes that running a network of `spec` on batches of `batch` examples needs, about.
pub fn inference(spec: &Spec, batch: usize) -> u128 {
    let (weights, maps) = sizes(spec);
    2 * weights + 2 * maps * batch as u128
}

/// The memory this machine has available now (`MemAvailable` of `/proc/meminfo`), where it
/// can be read.
fn available() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses `need` bytes for `what` (e.g. "training fashion-retrieval with --batch-size 64")
/// when the machine has less available; `lower` says which setting to lower.
pub fn check(need: u128, what: &str, lower: &str) -> Result<(), String> {
    match available() {
        Some(have) if need > have => Err(format!(
            "{what} needs about {:.1} GiB of memory, and this machine has {:.1} GiB available: lower {lower}",
            gib(need),
            gib(have)
        )),
        _ => Ok(()),
    }
}

fn gib(bytes: u128) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_grow_with_the_batch_and_refuse_the_impossible() {
        let spec = crate::shipped::load_spec(std::path::Path::new("fashion-retrieval")).unwrap();
        assert!(training(&spec, 128) > training(&spec, 64));
        assert!(training(&spec, 64) > inference(&spec, 64));
        // the retrieval network trains in well under a GiB
        assert!(training(&spec, 64) < 1 << 30, "{}", training(&spec, 64));
        let err = check(1 << 100, "a test", "--batch-size").unwrap_err();
        assert!(err.contains("lower --batch-size"), "{err}");
        assert!(check(1, "a test", "--batch-size").is_ok());
    }
}
