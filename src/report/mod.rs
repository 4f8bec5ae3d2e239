//! Results tables: one [`Row`] per network and target TPR, printed as an aligned text table
//! ([`table`]) or, with `--json`, as `{"rows": [...]}` on stdout ([`json`]). The JSON field
//! names are a stable interface (scripts and CI read them); fields that do not apply are null.

pub mod json;
pub mod plot;
pub mod table;

use serde::Serialize;

/// One line of a results table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    /// The study's variant the row belongs to (`onionnet study`; "baseline" for the base
    /// description's monolithic network and non-sharing cascade).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// "monolithic" | "non-sharing" | "onion"
    pub network: String,
    /// Name of the precision metric ("mAP", ...).
    pub metric_name: String,
    pub metric: Option<f64>,
    /// The metric of stage 1 alone (retrieval: every example ranked by its stage-1 score).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage1_metric: Option<f64>,
    /// The metric with every example passing every stage (the paper's 'full').
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_metric: Option<f64>,
    pub target_tpr: Option<f64>,
    /// The time budget the target was chosen for (`--budget R`: "Rx" of the monolithic
    /// network's cost; `--budget-ms B`: "Bms" per 1,000 inputs), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
    /// TPR of stage 1 actually reached on the test split.
    pub reached_tpr: Option<f64>,
    /// Its exact (Clopper–Pearson) two-sided 95% interval, from the test positives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reached_tpr_interval: Option<[f64; 2]>,
    /// Mean % of examples passing stage 1.
    pub pass_pct: Option<f64>,
    /// With more than two stages: the mean % passing each early stage, of those reaching it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass_pct_stages: Option<Vec<f64>>,
    pub ms_per_1000: Option<f64>,
    pub speedup_measured: Option<f64>,
    pub speedup_theory: Option<f64>,
    /// Extra: the task ("retrieval", "patches", ...).
    pub task: String,
    /// Extra: the test setting, where a task has several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
    /// Extra (detection): time of the classifier head per image, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_ms_per_image: Option<f64>,
    /// Extra (detection): time of the whole pipeline per image (backbone, RoI pooling, head,
    /// NMS), ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_ms_per_image: Option<f64>,
    /// Extra (detection): measured speed-up of the whole pipeline vs the monolithic one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speedup_pipeline: Option<f64>,
}
