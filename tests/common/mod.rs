//! Fixtures shared by the integration tests (each test binary uses some of them).
#![allow(dead_code)]

use onionnet::spec::Spec;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `onionnet` binary with `args`.
pub fn onionnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onionnet"))
        .args(args)
        .output()
        .expect("runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh temporary directory for test `name` of this process.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("onionnet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A clean failure: exit code 1, no panic, and every one of `needles` in the message.
pub fn assert_clean_error(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {e}");
    assert!(!e.contains("panicked"), "no panic: {e}");
    for n in needles {
        assert!(e.contains(n), "stderr should mention {n:?}: {e}");
    }
}

/// A three-stage description with stages of different depths (S > 2, a stage ending
/// mid-network with no channels past its end), batch norm and dropout, on 2 x 12 x 12 inputs
/// of 6 classes. `strided`: the first conv with stride 2 and an overlapping max pooling
/// (stride 1), to cover those shapes too.
pub fn three_stage(strided: bool) -> Spec {
    Spec::from_toml(&three_stage_toml(strided), Path::new("three-stage.toml"))
        .expect("the fixture is valid")
}

/// The TOML text of [`three_stage`].
#[allow(dead_code)] // (not every test file uses every fixture)
pub fn three_stage_toml(strided: bool) -> String {
    let mut text = THREE_STAGE.to_string();
    if strided {
        text = text
            .replacen("padding = 1\n", "padding = 1\nstride = 2\n", 1)
            .replacen("kernel = 2\n", "kernel = 2\nstride = 1\n", 1);
    }
    text
}

const THREE_STAGE: &str = r#"
name = "three-stage"
classes = 6
input = { channels = 2, height = 12, width = 12 }
[[layer]]
type = "conv"
name = "c1"
filters = 12
kernel = 3
padding = 1
split = [3, 4, 5]
[[layer]]
type = "batchnorm"
[[layer]]
type = "relu"
[[layer]]
type = "maxpool"
kernel = 2
[[layer]]
type = "conv"
name = "c2"
filters = 16
kernel = 3
split = [4, 6, 6]
[[layer]]
type = "relu"
[[layer]]
type = "fc"
name = "f1"
units = 20
split = [0, 8, 12]
[[layer]]
type = "relu"
[[layer]]
type = "dropout"
prob = 0.3
[[stage]]
ends_at = 6
loss = "hinge"
classes = 2
label_map = [0, 0, 0, 1, 1, 1]
[[stage]]
classes = 3
label_map = [0, 0, 1, 1, 2, 2]
[[stage]]
"#;
