//! Thresholds from a target true-positive rate. For every early stage s and s-class c, the
//! threshold t_{s,c} is the highest score such that at least the target fraction of the
//! calibration examples whose s-class is c score >= t_{s,c} — the operating point of the ROC
//! curve of that score at the target TPR. Calibration uses a held-out split, not the training
//! set (the paper calibrated on training data and missed its TPR at test time).

use crate::data::Dataset;
use crate::error::CascadeError;
use crate::model::Model;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// Checks a user-given target TPR.
pub fn check_tpr(tpr: f64) -> Result<f64, CascadeError> {
    if tpr.is_finite() && tpr > 0.0 && tpr <= 1.0 {
        Ok(tpr)
    } else {
        Err(CascadeError::BadTpr(tpr))
    }
}

/// The threshold that lets at least `tpr` of `positives` pass (`score >= t`).
pub fn threshold_for_tpr(positives: &[f32], tpr: f64) -> Option<f32> {
    if positives.is_empty() {
        return None;
    }
    let mut s = positives.to_vec();
    s.sort_unstable_by(|a, b| b.total_cmp(a));
    // the k-th best positive must pass; rounding up keeps the reached TPR >= the target
    let k = ((tpr * s.len() as f64) - 1e-9).ceil().max(1.0) as usize;
    Some(s[k.min(s.len()) - 1])
}

/// Thresholds of every early stage at one target TPR: `thresholds[s][c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub target_tpr: f64,
    pub thresholds: Vec<Vec<f32>>,
}

/// Calibrates from per-stage scores on the calibration split.
///
/// `scores[s]` is row-major `[n, classes_s]` for early stage s; `s_labels[s][i]` is example
/// i's s-class at stage s.
pub fn calibrate(
    scores: &[Vec<f32>],
    s_labels: &[Vec<usize>],
    classes: &[usize],
    tpr: f64,
) -> Result<Calibration, CascadeError> {
    let tpr = check_tpr(tpr)?;
    if let Some(s) = scores.iter().position(|v| v.iter().any(|x| !x.is_finite())) {
        return Err(CascadeError::NonFinite { stage: s + 1 });
    }
    let mut thresholds = Vec::with_capacity(scores.len());
    for (s, (sc, labels)) in scores.iter().zip(s_labels).enumerate() {
        let nc = classes[s];
        let mut per_class = Vec::with_capacity(nc);
        for c in 0..nc {
            let pos: Vec<f32> = labels
                .iter()
                .enumerate()
                .filter(|&(_, &l)| l == c)
                .map(|(i, _)| sc[i * nc + c])
                .collect();
            per_class.push(
                threshold_for_tpr(&pos, tpr).ok_or(CascadeError::NoPositives {
                    stage: s + 1,
                    class: c,
                })?,
            );
        }
        thresholds.push(per_class);
    }
    Ok(Calibration {
        target_tpr: tpr,
        thresholds,
    })
}

/// Per-stage thresholds for `model` at every target TPR, from the calibration split.
pub fn calibrate_model(
    model: &Model,
    calib: &Dataset,
    tprs: &[f64],
    device: &Device,
) -> Result<Vec<Calibration>, CascadeError> {
    if calib.is_empty() {
        return Err(CascadeError::Empty("calibration split".into()));
    }
    if calib.shape != model.spec.input.dims() {
        return Err(CascadeError::Shape {
            got: calib.shape,
            want: model.spec.input.dims(),
        });
    }
    let early = model.num_stages() - 1;
    let mut scores: Vec<Vec<f32>> = vec![Vec::new(); early];
    let all: Vec<usize> = (0..calib.len()).collect();
    for chunk in all.chunks(256) {
        let s = model.scores_all(&calib.batch(chunk, device));
        for (acc, v) in scores.iter_mut().zip(s) {
            acc.extend(v);
        }
    }
    let s_labels: Vec<Vec<usize>> = (0..early)
        .map(|s| {
            calib
                .labels
                .iter()
                .map(|&l| model.stage(s).s_class(l))
                .collect()
        })
        .collect();
    let classes: Vec<usize> = (0..early).map(|s| model.stage(s).classes).collect();
    tprs.iter()
        .map(|&t| calibrate(&scores, &s_labels, &classes, t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_reaches_the_target() {
        let pos = [0.9, 0.1, 0.5, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4, 1.0];
        // 10 positives: TPR 0.8 needs the 8 best to pass -> 8th best is 0.3
        assert_eq!(threshold_for_tpr(&pos, 0.8), Some(0.3));
        assert_eq!(threshold_for_tpr(&pos, 1.0), Some(0.1));
        // 0.75 of 10 = 7.5 -> 8 must pass (never below the target)
        assert_eq!(threshold_for_tpr(&pos, 0.75), Some(0.3));
        assert_eq!(threshold_for_tpr(&[], 0.5), None);
    }

    #[test]
    fn bad_tpr_is_an_error() {
        for t in [0.0, -0.1, 1.01, f64::NAN] {
            assert!(check_tpr(t).is_err(), "{t}");
        }
        assert!(check_tpr(1.0).is_ok());
    }

    #[test]
    fn per_class_thresholds() {
        // stage with 2 classes, 4 examples
        let scores = vec![vec![0.9, 0.1, 0.6, 0.4, 0.2, 0.8, 0.3, 0.7]];
        let labels = vec![vec![0, 0, 1, 1]];
        let cal = calibrate(&scores, &labels, &[2], 1.0).unwrap();
        assert_eq!(cal.thresholds, vec![vec![0.6, 0.7]]);
        let err = calibrate(&scores, &[vec![0, 0, 0, 0]], &[2], 1.0).unwrap_err();
        assert!(err.to_string().contains("s-class 1"));
    }
}
