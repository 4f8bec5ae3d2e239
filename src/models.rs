//! What `--model` names: a model directory, the output directory of `fit` / `demo` (one
//! network of it), or a trained model shipped with onionnet (`onionnet models`). Shipped models
//! are compiled into the binary, so they work from an installed `onionnet` too: on first use
//! their files are written to a cache folder (`$ONIONNET_CACHE`, else `$XDG_CACHE_HOME/onionnet`,
//! else `~/.cache/onionnet`) and read from there like any model directory.

use crate::calibrate::Calibration;
use crate::checkpoint::Checkpoint;
use crate::files::{Fnv1a, write_atomic};
use crate::model::Model;
use crate::onion::NetworkKind;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// A trained model shipped in `models/NAME/` of the repository.
pub struct Shipped {
    pub name: &'static str,
    /// One line: what it is and what it was trained on.
    pub about: &'static str,
    /// Its files (name, bytes), the model card `README.md` among them.
    pub files: &'static [(&'static str, &'static [u8])],
}

macro_rules! model_files {
    ($dir:literal: $($file:literal),+) => {
        &[$(($file, include_bytes!(concat!("../models/", $dir, "/", $file)))),+]
    };
}

/// The shipped models.
pub const SHIPPED: &[Shipped] = &[
    Shipped {
        name: "fashion",
        about: "retrieval onion on Fashion-MNIST (28x28 grey, 10 classes, stage 1: 4 groups)",
        files: model_files!("fashion": "README.md", "spec.toml", "train.json", "net0.bpk",
                        "preprocess.json", "thresholds.json"),
    },
    Shipped {
        name: "2ch-deep",
        about: "patch-matching onion (two 64x64 grey patches: match or not)",
        files: model_files!("2ch-deep": "README.md", "spec.toml", "train.json", "net0.bpk",
                        "thresholds.json"),
    },
    Shipped {
        name: "detector",
        about: "detector with an onion head: Fashion-MNIST items in grey pictures (192x192 scenes)",
        files: model_files!("detector": "README.md", "spec.toml", "train.json", "net0.bpk",
                        "thresholds.json"),
    },
];

/// The folder shipped models are unpacked to.
pub fn cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("ONIONNET_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("onionnet")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("onionnet")))
        .unwrap_or_else(|| std::env::temp_dir().join("onionnet-cache"))
}

impl Shipped {
    /// Its files in the cache (written there first where missing or different): a folder
    /// named after the model and a digest of its files, so two versions never mix.
    pub fn unpack(&self) -> anyhow::Result<PathBuf> {
        let mut h = Fnv1a::default();
        for (name, bytes) in self.files {
            h.write(name.as_bytes());
            h.write(bytes);
        }
        let dir = cache_dir()
            .join("models")
            .join(format!("{}-{}", self.name, h.hex()));
        for (name, bytes) in self.files {
            let p = dir.join(name);
            if std::fs::read(&p).ok().as_deref() != Some(*bytes) {
                write_atomic(&p, bytes).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot unpack the shipped model {:?} ({e}); set ONIONNET_CACHE to a writable folder",
                        self.name
                    )
                })?;
            }
        }
        Ok(dir)
    }
}

/// The shipped model called `name`.
pub fn shipped(name: &str) -> Option<&'static Shipped> {
    SHIPPED.iter().find(|m| m.name == name)
}

/// The model directory `arg` names: a model directory itself, the `network` of a `fit` /
/// `demo` output directory, or a shipped model (unpacked to the cache).
pub fn resolve(arg: &Path, network: NetworkKind) -> anyhow::Result<PathBuf> {
    if Checkpoint::new(arg).exists() {
        return Ok(arg.to_path_buf());
    }
    let sub = arg.join(network.name());
    if Checkpoint::new(&sub).exists() {
        return Ok(sub);
    }
    if !arg.exists()
        && let Some(m) = arg.to_str().and_then(shipped)
    {
        return m.unpack();
    }
    let names: Vec<&str> = SHIPPED.iter().map(|m| m.name).collect();
    anyhow::bail!(
        "{}: not a model directory (no train.json), nor the output of `fit` or `demo` (no {}/train.json), nor a shipped model ({})",
        arg.display(),
        network.name(),
        names.join(", ")
    )
}

/// The operating point `--target-tpr` names among those calibrated with the model stored in
/// `ckpt` (default: the highest target); `None` for a monolithic network, which has none.
pub fn operating_point(
    ckpt: &Checkpoint,
    model: &Model,
    target: Option<f64>,
) -> anyhow::Result<Option<Calibration>> {
    if model.kind == NetworkKind::Monolithic {
        return Ok(None);
    }
    let t = ckpt.load_thresholds(&model.spec)?;
    let known: Vec<String> = t
        .calibrations
        .iter()
        .map(|c| c.target_tpr.to_string())
        .collect();
    let cal = match target {
        Some(tpr) => t.calibrations.into_iter().find(|c| c.target_tpr == tpr),
        None => t
            .calibrations
            .into_iter()
            .max_by(|a, b| a.target_tpr.total_cmp(&b.target_tpr)),
    };
    cal.map(Some).with_context(|| {
        format!(
            "{}: no thresholds for target TPR {} (calibrated: {}; run `onionnet calibrate --tpr`)",
            ckpt.dir.join("thresholds.json").display(),
            target.unwrap_or(f64::NAN),
            known.join(", ")
        )
    })
}
