//! Patch matching (the paper's first application): 2ch-deep and its onion decide whether two
//! 64x64 patches show the same scene point. Trained on pairs cut from real photographs under
//! random homographies; tested on a balanced set from other photographs and on the Graffiti
//! pair with every pair of corners (realistic imbalance). Metric: FPR95, the false-positive
//! rate at the threshold where 95% of the matches are found; a pair a cascade rejects at
//! stage 1 ranks below every pair it keeps.

use crate::audit::Audit;
use crate::calibrate::{Calibration, threshold_for_tpr};
use crate::cascade::Gate;
use crate::cost::speedup;
use crate::data::Dataset;
use crate::error::CascadeError;
use crate::infer::{FastModel, prepare, run_stream_on};
use crate::model::Model;
use crate::onion::NetworkKind;
use crate::report::Row;
use burn::tensor::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::index::sample;
use std::time::Instant;

/// The false-positive rate at 95% recall: the threshold lets 95% of the positives score at or
/// above it; FPR is the fraction of negatives that do too.
pub fn fpr95(positives: &[f32], negatives: &[f32]) -> Option<f64> {
    let t = threshold_for_tpr(positives, 0.95)?;
    if negatives.is_empty() {
        return None;
    }
    Some(negatives.iter().filter(|&&s| s >= t).count() as f64 / negatives.len() as f64)
}

/// One network at one operating point on one test set.
#[derive(Debug, Clone)]
pub struct PatchOutcome {
    pub kind: NetworkKind,
    pub target_tpr: Option<f64>,
    /// The time budget that chose the target, if one did.
    pub budget: Option<String>,
    pub fpr95: f64,
    /// Fraction passing stage 1 (1 for the monolithic network).
    pub pass: f64,
    /// TPR of stage 1 on the test positives.
    pub reached_tpr: Option<f64>,
    /// What that rests on: (positives passing stage 1, positives).
    pub reached: Option<(usize, usize)>,
    pub ms_per_1000: f64,
    /// The audit of the pairs the early stages rejected (`--audit`, calibrated cascades).
    pub audit: Option<Audit>,
}

pub(crate) fn gate(model: &Model, cal: &Option<Calibration>) -> Gate {
    match cal {
        None => Gate {
            per_stage: Vec::new(),
        },
        // the s-class of interest is "match" (1) at every early stage
        Some(c) => Gate {
            per_stage: (0..model.num_stages() - 1)
                .map(|s| vec![(1, c.thresholds[s][1])])
                .collect(),
        },
    }
}

/// Runs one network over `batches` (each a stream cut into batches of `batch` pairs);
/// returns final match scores (−∞ for rejected pairs),
/// whether each pair passed stage 1, and the elapsed seconds.
pub(crate) fn score(
    model: &Model,
    fast: Option<&FastModel>,
    cal: &Option<Calibration>,
    batches: &[(Vec<usize>, Tensor<4>)],
    batch: usize,
    n: usize,
) -> (Vec<f32>, Vec<bool>, f64) {
    let g = gate(model, cal);
    let stages = model.num_stages();
    let mut scores = vec![f32::NEG_INFINITY; n];
    let mut passed = vec![true; n];
    let t0 = Instant::now();
    for (rows, x) in batches {
        let out = run_stream_on(model, fast, x, batch, &g);
        for (i, &r) in rows.iter().enumerate() {
            passed[r] = out.reached[i] >= 1 || stages == 1;
            if out.reached[i] + 1 == stages {
                // hinge scores are [-f, f]: s-class 1 ("match") is f
                scores[r] = out.scores[stages - 1][i * 2 + 1];
            }
        }
    }
    (scores, passed, t0.elapsed().as_secs_f64())
}

/// Evaluates every (network, calibration) on `data`, timing runs interleaved `reps` times
/// (the median is kept). The pairs run in batches of `batch`; with `pool` > 1 as streams of
/// `pool` batches whose survivors wait for each other before the next stage
/// ([`run_stream_on`]: same scores, stage 2 on fuller blocks).
pub fn evaluate(
    models: &[(&Model, Vec<Option<Calibration>>)],
    data: &Dataset,
    reps: usize,
    run: super::RunOptions,
    device: &Device,
    label: &str,
) -> Result<Vec<PatchOutcome>, CascadeError> {
    let super::RunOptions {
        batch,
        pool,
        engine,
        audit,
    } = run;
    let fast = prepare(engine, &models.iter().map(|(m, _)| *m).collect::<Vec<_>>());
    if data.is_empty() {
        return Err(CascadeError::Empty(format!("{label} test set")));
    }
    if data.labels.iter().all(|&l| l == 0) {
        return Err(CascadeError::Empty(format!(
            "{label} test set has no positive pair"
        )));
    }
    if batch == 0 || pool == 0 {
        return Err(CascadeError::Empty(format!(
            "batches of {batch} pairs pooled over {pool} batches (both must be at least 1)"
        )));
    }
    // (each stream one tensor: the runner cuts it into batches)
    let b = data.batches(batch.saturating_mul(pool), device);
    let n = data.len();
    let points: usize = models.iter().map(|(_, c)| c.len()).sum();
    let pb = ProgressBar::new((points * reps.max(1)) as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_prefix(format!("evaluating {label}"));
    let mut times: Vec<Vec<Vec<f64>>> = models
        .iter()
        .map(|(_, c)| vec![Vec::new(); c.len()])
        .collect();
    let mut results: Vec<Vec<(Vec<f32>, Vec<bool>)>> = models
        .iter()
        .map(|(_, c)| vec![(Vec::new(), Vec::new()); c.len()])
        .collect();
    for _ in 0..reps.max(1) {
        for (mi, (m, cals)) in models.iter().enumerate() {
            for (ci, cal) in cals.iter().enumerate() {
                let (s, p, t) = score(m, fast[mi].as_ref(), cal, &b, batch, n);
                times[mi][ci].push(t);
                results[mi][ci] = (s, p);
                pb.inc(1);
            }
        }
    }
    pb.finish_and_clear();
    let mut out = Vec::new();
    for (mi, (m, cals)) in models.iter().enumerate() {
        for (ci, cal) in cals.iter().enumerate() {
            let (s, p) = &results[mi][ci];
            let pos: Vec<f32> = (0..n)
                .filter(|&i| data.labels[i] == 1)
                .map(|i| s[i])
                .collect();
            let neg: Vec<f32> = (0..n)
                .filter(|&i| data.labels[i] == 0)
                .map(|i| s[i])
                .collect();
            let npos = pos.len();
            // (positives passing stage 1, positives), for a calibrated cascade
            let reached = cal.as_ref().map(|_| {
                (
                    (0..n).filter(|&i| data.labels[i] == 1 && p[i]).count(),
                    npos,
                )
            });
            let mut t = times[mi][ci].clone();
            t.sort_by(f64::total_cmp);
            out.push(PatchOutcome {
                kind: m.kind,
                target_tpr: cal.as_ref().map(|c| c.target_tpr),
                budget: cal.as_ref().and_then(|c| c.budget.clone()),
                fpr95: fpr95(&pos, &neg).unwrap_or(1.0),
                pass: p.iter().filter(|&&x| x).count() as f64 / n as f64,
                reached_tpr: reached.map(|(k, n)| k as f64 / n as f64),
                reached,
                ms_per_1000: t[t.len() / 2] * 1e6 / n as f64,
                audit: match (audit, cal) {
                    (Some(f), Some(_)) => {
                        let seed = (mi * 10 + ci) as u64;
                        Some(audit_rejected(
                            m,
                            fast[mi].as_ref(),
                            data,
                            s,
                            (f, seed),
                            batch,
                            device,
                        ))
                    }
                    _ => None,
                },
            });
        }
    }
    Ok(out)
}

/// Whether the last stage calls a pair a match, from its s-class 1 score.
fn called_match(model: &Model, score: f32) -> bool {
    match model.stage(model.num_stages() - 1).loss {
        crate::spec::Loss::Hinge => score > 0.0,
        crate::spec::Loss::CrossEntropy => score > 0.5,
    }
}

/// Audits a seeded `fraction` of the pairs an early stage rejected (final score −∞): the last
/// stage's verdict on them against the matches it confirms among the survivors
/// ([`crate::audit`]); its time is the audit's, not the cascade's.
fn audit_rejected(
    model: &Model,
    fast: Option<&FastModel>,
    data: &Dataset,
    scores: &[f32],
    (fraction, seed): (f64, u64),
    batch: usize,
    device: &Device,
) -> Audit {
    let t0 = Instant::now();
    let rejected: Vec<usize> = (0..scores.len())
        .filter(|&i| scores[i] == f32::NEG_INFINITY)
        .collect();
    let rows = crate::audit::pick(&rejected, fraction, seed);
    let last = model.num_stages() - 1;
    let found = if rows.is_empty() {
        0
    } else {
        let out = run_stream_on(
            model,
            fast,
            &data.batch(&rows, device),
            batch,
            &Gate::open(&model.spec),
        );
        (0..rows.len())
            .filter(|&i| called_match(model, out.scores[last][i * 2 + 1]))
            .count()
    };
    Audit {
        confirmed: scores
            .iter()
            .filter(|&&v| v != f32::NEG_INFINITY && called_match(model, v))
            .count(),
        rejected: rejected.len(),
        audited: rows.len(),
        found,
        seconds: t0.elapsed().as_secs_f64(),
    }
}

/// Table rows for one test setting.
pub fn rows(spec: &crate::spec::Spec, outcomes: &[PatchOutcome], setting: &str) -> Vec<Row> {
    let mono = outcomes.iter().find(|o| o.kind == NetworkKind::Monolithic);
    outcomes
        .iter()
        .map(|o| {
            let pass = if o.kind == NetworkKind::Monolithic {
                vec![]
            } else {
                vec![o.pass]
            };
            Row {
                network: o.kind.name().into(),
                metric_name: "FPR95".into(),
                metric: Some(o.fpr95),
                target_tpr: o.target_tpr,
                budget: o.budget.clone(),
                reached_tpr: o.reached_tpr,
                reached_tpr_interval: o
                    .reached
                    .and_then(|(k, n)| crate::calibrate::interval95(k, n)),
                pass_pct: (o.kind != NetworkKind::Monolithic).then_some(100.0 * o.pass),
                ms_per_1000: Some(o.ms_per_1000),
                speedup_measured: mono.map(|m| m.ms_per_1000 / o.ms_per_1000),
                speedup_theory: Some(speedup(spec, o.kind, &pass)),
                task: "patches".into(),
                setting: Some(setting.into()),
                ..Row::default()
            }
        })
        .collect()
}

/// Subsets of `data` with every positive and `r` negatives per positive (as many as exist).
pub fn imbalanced(data: &Dataset, ratio: usize, seed: u64) -> Dataset {
    let pos: Vec<usize> = (0..data.len()).filter(|&i| data.labels[i] == 1).collect();
    let neg: Vec<usize> = (0..data.len()).filter(|&i| data.labels[i] == 0).collect();
    let k = (pos.len() * ratio).min(neg.len());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut idx: Vec<usize> = sample(&mut rng, neg.len(), k)
        .into_iter()
        .map(|i| neg[i])
        .collect();
    idx.extend(&pos);
    idx.sort_unstable();
    data.subset(&idx)
}

/// The running time against the imbalance: for each ratio r of `ratios`, every network's time
/// per 1,000 pairs (in `models`' order) on the subset of `pairs` with r negatives per positive,
/// at each cascade's first operating point. Stops at the first ratio `pairs` has too few
/// negatives for.
pub fn imbalance_sweep(
    models: &[(&Model, Vec<Option<Calibration>>)],
    pairs: &Dataset,
    ratios: &[usize],
    run: super::RunOptions,
    device: &Device,
) -> Result<Vec<(usize, Vec<f64>)>, CascadeError> {
    let first: Vec<_> = models
        .iter()
        .map(|(m, c)| (*m, vec![c[0].clone()]))
        .collect();
    let positives = pairs.labels.iter().sum::<usize>();
    let mut out = Vec::new();
    for &r in ratios {
        let sub = imbalanced(pairs, r, 7);
        let actual = (sub.len() - positives) as f64 / positives.max(1) as f64;
        if positives == 0 || (r > 1 && actual < r as f64 * 0.999) {
            break;
        }
        let o = evaluate(&first, &sub, 3, run, device, &format!("imbalance 1:{r}"))?;
        out.push((r, o.iter().map(|o| o.ms_per_1000).collect()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fpr95_by_hand() {
        // 20 positives 1..=20: 95% = 19 must pass -> threshold 2.0
        let pos: Vec<f32> = (1..=20).map(|v| v as f32).collect();
        // negatives at or above 2.0: 2.0, 5.0 of 4
        assert_eq!(fpr95(&pos, &[0.0, 2.0, 1.9, 5.0]), Some(0.5));
        // rejected positives rank last: with 20 -> -inf the 19th best is 1.0
        let mut p2 = pos.clone();
        p2[19] = f32::NEG_INFINITY;
        assert_eq!(fpr95(&p2, &[0.0, 0.5, 1.5]), Some(1.0 / 3.0));
        // with two rejected, the threshold falls to -inf and every negative counts
        p2[18] = f32::NEG_INFINITY;
        assert_eq!(fpr95(&p2, &[f32::NEG_INFINITY, 0.0]), Some(1.0));
    }

    #[test]
    fn imbalanced_keeps_every_positive() {
        let ds = Dataset {
            images: vec![0.0; 10],
            labels: vec![1, 0, 0, 0, 0, 1, 0, 0, 0, 0],
            shape: [1, 1, 1],
            classes: 2,
            files: None,
        };
        let s = imbalanced(&ds, 2, 1);
        assert_eq!(s.len(), 6);
        assert_eq!(s.labels.iter().sum::<usize>(), 2);
        assert_eq!(imbalanced(&ds, 100, 1).len(), 10);
    }
}
