//! Typed errors, one enum per concern. Every message names the file, the field and the value
//! so a user can fix the input without reading code; `main` prints the chain.

use std::path::PathBuf;

/// A model description (TOML) that cannot be turned into networks.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read model description {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: malformed TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("{path}: {field} = {value}: {reason}")]
    Invalid {
        path: PathBuf,
        field: String,
        value: String,
        reason: String,
    },
}

impl SpecError {
    pub fn invalid(
        path: &std::path::Path,
        field: impl Into<String>,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        SpecError::Invalid {
            path: path.to_path_buf(),
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Datasets on disk: missing, truncated or inconsistent files.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{what}: {reason}")]
    Mismatch { what: String, reason: String },
}

/// Checkpoints and saved thresholds.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt checkpoint: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: checkpoint does not match the model description: {reason}")]
    Mismatch { path: PathBuf, reason: String },
}

/// Calibration and cascade inference.
#[derive(Debug, thiserror::Error)]
pub enum CascadeError {
    #[error("target TPR {0} is outside (0, 1]")]
    BadTpr(f64),
    #[error("stage {stage}, s-class {class}: no positive example in the calibration split")]
    NoPositives { stage: usize, class: usize },
    #[error("empty input: {0}")]
    Empty(String),
    #[error("input shape {got:?} does not match the model's input {want:?}")]
    Shape { got: [usize; 3], want: [usize; 3] },
    #[error("{0}")]
    Mismatch(String),
    #[error(
        "stage {stage}'s scores are not finite (NaN or infinite): the network's weights are not usable; train it again"
    )]
    NonFinite { stage: usize },
}

/// Training: a checkpoint problem or data that do not fit the description.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Nothing of the diverged epoch is saved; the checkpoint keeps the previous epoch.
    #[error(
        "training diverged ({what}); nothing of this epoch was saved. The likely cause is a learning rate too high for this network (--lr {lr:?}): try a tenth of it"
    )]
    Diverged { what: String, lr: f64 },
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    Data(#[from] DataError),
}
