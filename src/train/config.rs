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
