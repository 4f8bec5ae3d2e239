//! Thresholds from a target true-positive rate. For every early stage s and s-class c, the
//! threshold t_{s,c} is the highest score such that at least the target fraction of the
//! calibration examples whose s-class is c score >= t_{s,c} — the operating point of the ROC
//! curve of that score at the target TPR. Calibration uses a held-out split, not the training
//! set (the paper calibrated on training data and missed its TPR at test time).
//!
//! That threshold is a point estimate: on new data the TPR falls below the target about half
//! the time. With a confidence c the threshold is instead the highest whose TPR *lower
//! confidence bound* (exact one-sided Clopper–Pearson at level c, over that s-class's
//! held-out positives) is at least the target, so the TPR reaches the target on new data of
//! the same distribution with probability at least c.

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

/// What a calibration aims at: a target TPR, as a point estimate or guaranteed at a
/// confidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub tpr: f64,
    pub confidence: Option<f64>,
}

/// One [`Target`] per TPR, all at `confidence`.
pub fn targets(tprs: &[f64], confidence: Option<f64>) -> Vec<Target> {
    tprs.iter().map(|&tpr| Target { tpr, confidence }).collect()
}

/// Thresholds of every early stage at one target TPR: `thresholds[s][c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub target_tpr: f64,
    pub thresholds: Vec<Vec<f32>>,
    /// The confidence at which each threshold's TPR lower bound reaches the target (`None`:
    /// point estimates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// The held-out positives each threshold rests on: `positives[s][c]`.
    #[serde(default)]
    pub positives: Vec<Vec<usize>>,
    /// The time budget this target was chosen for (`--budget`, `--budget-ms`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
}

/// The exact two-sided 95% (Clopper–Pearson) interval of a rate observed as `k` of `n`
/// (`None` when n = 0).
pub fn interval95(k: usize, n: usize) -> Option<[f64; 2]> {
    (n > 0).then(|| {
        [
            clopper_pearson_lower(k, n, 0.975),
            1.0 - clopper_pearson_lower(n - k, n, 0.975),
        ]
    })
}

/// The exact one-sided Clopper–Pearson lower bound at confidence `c` of a success rate
/// observed as `k` successes in `n` trials: the p at which k or more successes have
/// probability 1 - c (0 when k = 0). Bisection on the binomial tail, in log space.
pub fn clopper_pearson_lower(k: usize, n: usize, c: f64) -> f64 {
    assert!(k <= n && (0.0..1.0).contains(&c), "k {k} n {n} c {c}");
    if k == 0 {
        return 0.0;
    }
    let alpha = 1.0 - c;
    // ln C(n, i) for every i, from running sums of logarithms
    let mut ln_fact = vec![0.0f64; n + 1];
    for i in 1..=n {
        ln_fact[i] = ln_fact[i - 1] + (i as f64).ln();
    }
    let tail = |p: f64| -> f64 {
        // P(X >= k) for X ~ Binomial(n, p), terms summed from their largest
        let (lp, lq) = (p.ln(), (1.0 - p).ln());
        let terms: Vec<f64> = (k..=n)
            .map(|i| ln_fact[n] - ln_fact[i] - ln_fact[n - i] + i as f64 * lp + (n - i) as f64 * lq)
            .collect();
        let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        top.exp() * terms.iter().map(|t| (t - top).exp()).sum::<f64>()
    };
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if tail(mid) < alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The fewest positives that can certify `tpr` at confidence `c` (all of them passing).
pub fn positives_needed(tpr: f64, c: f64) -> usize {
    // all n pass: the bound is (1 - c)^(1/n)
    ((1.0 - c).ln() / tpr.ln()).ceil().max(1.0) as usize
}

/// The highest threshold over `positives` whose TPR lower bound at confidence `c` is at least
/// `tpr`; `None` when even letting every positive pass cannot certify it.
pub fn threshold_with_confidence(positives: &[f32], tpr: f64, c: f64) -> Option<f32> {
    let n = positives.len();
    let mut s = positives.to_vec();
    s.sort_unstable_by(|a, b| b.total_cmp(a));
    // the bound grows with the number k of positives passing: the smallest k that certifies
    if n == 0 || clopper_pearson_lower(n, n, c) < tpr {
        return None;
    }
    let (mut lo, mut hi) = (0, n); // the bound fails at lo (or lo = 0), holds at hi
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if clopper_pearson_lower(mid, n, c) >= tpr {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(s[hi - 1])
}

/// Calibrates from per-stage scores on the calibration split.
///
/// `scores[s]` is row-major `[n, classes_s]` for early stage s; `s_labels[s][i]` is example
/// i's s-class at stage s.
pub fn calibrate(
    scores: &[Vec<f32>],
    s_labels: &[Vec<usize>],
    classes: &[usize],
    target: Target,
) -> Result<Calibration, CascadeError> {
    let tpr = check_tpr(target.tpr)?;
    if let Some(c) = target.confidence
        && !(c.is_finite() && (0.0..1.0).contains(&c) && c > 0.0)
    {
        return Err(CascadeError::Mismatch(format!(
            "--confidence {c}: must be in (0, 1)"
        )));
    }
    if let Some(s) = scores.iter().position(|v| v.iter().any(|x| !x.is_finite())) {
        return Err(CascadeError::NonFinite { stage: s + 1 });
    }
    let mut thresholds = Vec::with_capacity(scores.len());
    let mut positives = Vec::with_capacity(scores.len());
    for (s, (sc, labels)) in scores.iter().zip(s_labels).enumerate() {
        let nc = classes[s];
        let mut per_class = Vec::with_capacity(nc);
        let mut counts = Vec::with_capacity(nc);
        for c in 0..nc {
            let pos: Vec<f32> = labels
                .iter()
                .enumerate()
                .filter(|&(_, &l)| l == c)
                .map(|(i, _)| sc[i * nc + c])
                .collect();
            if pos.is_empty() {
                return Err(CascadeError::NoPositives {
                    stage: s + 1,
                    class: c,
                });
            }
            let t = match target.confidence {
                None => threshold_for_tpr(&pos, tpr),
                Some(conf) => threshold_with_confidence(&pos, tpr, conf),
            };
            per_class.push(t.ok_or_else(|| {
                let conf = target.confidence.unwrap_or(0.5);
                CascadeError::Mismatch(format!(
                    "stage {}, s-class {c}: {} held-out positives cannot certify TPR {tpr} at confidence {conf} (it needs at least {}, all passing): hold out more examples (--calib-size) or lower the target or the confidence",
                    s + 1,
                    pos.len(),
                    positives_needed(tpr, conf)
                ))
            })?);
            counts.push(pos.len());
        }
        thresholds.push(per_class);
        positives.push(counts);
    }
    Ok(Calibration {
        target_tpr: tpr,
        thresholds,
        confidence: target.confidence,
        positives,
        budget: None,
    })
}

/// Every early stage's scores of `model` on `calib` (row-major `[n, classes_s]`), each
/// example's s-class at that stage, and the stages' numbers of s-classes.
#[allow(clippy::type_complexity)]
pub fn early_scores(
    model: &Model,
    calib: &Dataset,
    device: &Device,
) -> Result<(Vec<Vec<f32>>, Vec<Vec<usize>>, Vec<usize>), CascadeError> {
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
    Ok((scores, s_labels, classes))
}

/// Early-stage scores with each example's s-class per stage, as [`early_scores`] gives them.
pub type Scored = (Vec<Vec<f32>>, Vec<Vec<usize>>);

/// How often thresholds calibrated on a redrawn held-out set reach their target on the test
/// split: over `draws` seeded draws of half of the held-out examples, each calibrates and
/// each (stage, s-class)'s TPR is measured on the test examples. Returns, per (stage,
/// s-class), the fraction of draws whose test TPR reaches the target.
pub fn coverage(
    held_out: &Scored,
    test: &Scored,
    classes: &[usize],
    target: Target,
    draws: usize,
    seed: u64,
) -> Result<Vec<f64>, CascadeError> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let (scores, s_labels) = held_out;
    let n = s_labels.first().map_or(0, Vec::len);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    let mut held = vec![0usize; classes.iter().sum()];
    for _ in 0..draws {
        order.shuffle(&mut rng);
        let rows = &order[..n / 2];
        let sc: Vec<Vec<f32>> = scores
            .iter()
            .zip(classes)
            .map(|(v, &k)| {
                rows.iter()
                    .flat_map(|&r| v[r * k..(r + 1) * k].to_vec())
                    .collect()
            })
            .collect();
        let lb: Vec<Vec<usize>> = s_labels
            .iter()
            .map(|l| rows.iter().map(|&r| l[r]).collect())
            .collect();
        let cal = calibrate(&sc, &lb, classes, target)?;
        let mut k = 0;
        for (s, &nc) in classes.iter().enumerate() {
            for c in 0..nc {
                let pos: Vec<f32> = (0..test.1[s].len())
                    .filter(|&i| test.1[s][i] == c)
                    .map(|i| test.0[s][i * nc + c])
                    .collect();
                let passed = pos.iter().filter(|&&v| v >= cal.thresholds[s][c]).count();
                held[k] += usize::from(passed as f64 >= target.tpr * pos.len() as f64);
                k += 1;
            }
        }
    }
    Ok(held
        .iter()
        .map(|&h| h as f64 / draws.max(1) as f64)
        .collect())
}

/// Per-stage thresholds for `model` at every target TPR, from the calibration split.
pub fn calibrate_model(
    model: &Model,
    calib: &Dataset,
    targets: &[Target],
    device: &Device,
) -> Result<Vec<Calibration>, CascadeError> {
    let (scores, s_labels, classes) = early_scores(model, calib, device)?;
    targets
        .iter()
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
        let point = Target {
            tpr: 1.0,
            confidence: None,
        };
        let cal = calibrate(&scores, &labels, &[2], point).unwrap();
        assert_eq!(cal.thresholds, vec![vec![0.6, 0.7]]);
        assert_eq!(cal.positives, vec![vec![2, 2]]);
        let err = calibrate(&scores, &[vec![0, 0, 0, 0]], &[2], point).unwrap_err();
        assert!(err.to_string().contains("s-class 1"));
    }

    #[test]
    fn scores_of_diverged_weights_are_refused_not_written() {
        let scores = vec![vec![0.9, f32::NAN, 0.6, 0.4]];
        let t = Target {
            tpr: 0.9,
            confidence: None,
        };
        let err = calibrate(&scores, &[vec![0, 1]], &[2], t)
            .unwrap_err()
            .to_string();
        assert!(err.contains("stage 1's scores are not finite"), "{err}");
    }

    #[test]
    fn clopper_pearson_matches_known_bounds() {
        let close = |a: f64, b: f64| (a - b).abs() < 5e-4;
        assert_eq!(clopper_pearson_lower(0, 10, 0.95), 0.0);
        // n of n: the bound is (1 - c)^(1/n)
        for (n, c) in [(10, 0.95), (300, 0.95), (50, 0.99)] {
            let want = (1.0f64 - c).powf(1.0 / n as f64);
            assert!(close(clopper_pearson_lower(n, n, c), want), "{n} {c}");
        }
        // tabulated two-sided intervals: 8 of 10 at 90% is (0.4931, 0.9632), 50 of 100 at
        // 95% is (0.3983, 0.6017); their lower ends are the one-sided bounds at 95% and 97.5%
        assert!(close(clopper_pearson_lower(8, 10, 0.95), 0.4931));
        assert!(close(clopper_pearson_lower(50, 100, 0.975), 0.3983));
        assert_eq!(positives_needed(0.99, 0.95), 299);
        assert!(clopper_pearson_lower(299, 299, 0.95) >= 0.99);
        assert!(clopper_pearson_lower(298, 298, 0.95) < 0.99);
        // the two-sided 95% interval: 50 of 100 is (0.3983, 0.6017); 0 of 10 is
        // (0, 1 - 0.025^(1/10)); nothing observed, no interval
        let [lo, hi] = interval95(50, 100).unwrap();
        assert!(close(lo, 0.3983) && close(hi, 0.6017), "{lo} {hi}");
        let [lo, hi] = interval95(0, 10).unwrap();
        assert!(lo == 0.0 && close(hi, 1.0 - 0.025f64.powf(0.1)), "{hi}");
        assert_eq!(interval95(0, 0), None);
    }

    #[test]
    fn too_few_positives_to_certify_is_an_error_naming_how_many() {
        let scores = vec![
            (0..40)
                .map(|i| i as f32 / 40.0)
                .flat_map(|v| [v, 1.0 - v])
                .collect(),
        ];
        let labels = vec![(0..40).map(|i| i % 2).collect()];
        let t = Target {
            tpr: 0.99,
            confidence: Some(0.95),
        };
        let err = calibrate(&scores, &labels, &[2], t)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("20 held-out positives") && err.contains("at least 299"),
            "{err}"
        );
    }

    /// Positive scores uniform on [0, 1], so a threshold t has true TPR 1 - t. Over 200
    /// seeded draws of 400 held-out positives, the guaranteed threshold reaches the target
    /// in at least about c of the draws; the point estimate in about half.
    #[test]
    fn the_guarantee_holds_over_redrawn_held_out_sets() {
        use rand::{Rng, SeedableRng};
        let (tpr, c, draws) = (0.95, 0.9, 200);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (mut guaranteed, mut point) = (0, 0);
        for _ in 0..draws {
            let pos: Vec<f32> = (0..400).map(|_| rng.random::<f32>()).collect();
            let t = threshold_with_confidence(&pos, tpr, c).unwrap();
            guaranteed += usize::from(1.0 - t as f64 >= tpr);
            let t = threshold_for_tpr(&pos, tpr).unwrap();
            point += usize::from(1.0 - t as f64 >= tpr);
        }
        let (g, p) = (
            guaranteed as f64 / draws as f64,
            point as f64 / draws as f64,
        );
        // 200 draws: a standard error of 0.021 at 0.9, 0.035 at 0.5
        assert!(g >= c - 0.05, "guaranteed: {g}");
        assert!((0.35..=0.75).contains(&p), "point estimate: {p}");
    }
}
