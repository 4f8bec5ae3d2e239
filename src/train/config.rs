//! The optimisation settings, stored with a checkpoint so that a resumed run can be checked
//! against them.

use serde::{Deserialize, Serialize};

/// Optimisation settings shared by the three networks (so the comparison is fair).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub seed: u64,
    /// Hide progress bars (tests).
    #[serde(skip)]
    pub quiet: bool,
    /// Stop after this many epochs in this call, as if interrupted (the checkpoint then
    /// resumes); `None` runs to `epochs`.
    #[serde(skip)]
    pub stop_after: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 6,
            batch_size: 64,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            seed: 42,
            quiet: false,
            stop_after: None,
        }
    }
}

impl TrainConfig {
    /// Refuses settings that cannot train, naming the option: a learning rate that is not a
    /// positive number, a momentum outside [0, 1), a negative or non-finite weight decay, no
    /// epoch or an empty batch.
    pub fn check(&self) -> Result<(), String> {
        let bad = |opt: &str, v: &dyn std::fmt::Display, want: &str| {
            Err(format!("--{opt} {v}: must be {want}"))
        };
        if self.epochs == 0 {
            return bad("epochs", &self.epochs, "at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch-size", &self.batch_size, "at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", &self.lr, "a positive number");
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return bad("momentum", &self.momentum, "in [0, 1)");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight-decay", &self.weight_decay, "a number >= 0");
        }
        Ok(())
    }

    /// The settings in which `self` (a saved run's) and `other` differ, as `--option a (now b)`.
    pub fn differences(&self, other: &TrainConfig) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("--{name} {a} (this run: {b})"));
            }
        };
        cmp("epochs", self.epochs.to_string(), other.epochs.to_string());
        cmp(
            "batch-size",
            self.batch_size.to_string(),
            other.batch_size.to_string(),
        );
        cmp("lr", self.lr.to_string(), other.lr.to_string());
        cmp(
            "momentum",
            self.momentum.to_string(),
            other.momentum.to_string(),
        );
        cmp(
            "weight-decay",
            self.weight_decay.to_string(),
            other.weight_decay.to_string(),
        );
        cmp("seed", self.seed.to_string(), other.seed.to_string());
        out
    }
}
