//! A time budget instead of a TPR target (MSDNet's budgeted mode, with real exits): the
//! highest target TPR whose expected cost fits a fraction of the monolithic network's. The
//! expected cost is the cost model's: each stage's multiply-adds times the held-out fraction
//! of retrieval queries' inputs reaching it (an input reaches stage s + 1 for query q when it
//! passed the thresholds of q's s-classes at stages 1..s). Every early stage is calibrated to
//! the same target, so the stages of an S > 2 cascade are chosen together.

use crate::calibrate::{Calibration, Target, calibrate};
use crate::cost::{expected_cost, stage_costs};
use crate::error::CascadeError;
use crate::onion::NetworkKind;
use crate::spec::Spec;

/// The operating point chosen for a budget.
#[derive(Debug, Clone)]
pub struct Budgeted {
    pub calibration: Calibration,
    /// Expected cost per input over the monolithic network's (the cost model's, at the
    /// held-out pass fractions).
    pub expected: f64,
    /// The held-out fraction of inputs passing each early stage (of those reaching it).
    pub pass: Vec<f64>,
}

/// The fraction of inputs passing each early stage under `cal`, averaged over one query per
/// fine class (`s_class[s][q]`: query q's s-class at stage s), of those reaching it.
pub fn pass_fractions(
    scores: &[Vec<f32>],
    classes: &[usize],
    s_class: &[Vec<usize>],
    cal: &Calibration,
) -> Vec<f64> {
    let early = classes.len();
    let n = if early == 0 {
        0
    } else {
        scores[0].len() / classes[0]
    };
    let queries = s_class.first().map_or(0, Vec::len);
    let mut pass = vec![0.0; early];
    // (each query's s-class at every stage)
    let gates = (0..queries).map(|q| s_class.iter().map(move |per| per[q]));
    for gate in gates {
        let mut alive: Vec<bool> = vec![true; n];
        for (s, g) in gate.enumerate() {
            let reach = alive.iter().filter(|&&a| a).count();
            for (i, a) in alive.iter_mut().enumerate() {
                *a = *a && scores[s][i * classes[s] + g] >= cal.thresholds[s][g];
            }
            let passed = alive.iter().filter(|&&a| a).count();
            pass[s] += passed as f64 / reach.max(1) as f64 / queries as f64;
        }
    }
    pass
}

/// The highest target TPR (one of the TPRs the held-out positives can reach exactly, at
/// `confidence` where given) whose expected cost is at most `budget` times the monolithic
/// network's; an error when even the lowest target does not fit.
#[allow(clippy::too_many_arguments)]
pub fn for_budget(
    spec: &Spec,
    kind: NetworkKind,
    scores: &[Vec<f32>],
    s_labels: &[Vec<usize>],
    classes: &[usize],
    s_class: &[Vec<usize>],
    budget: f64,
    confidence: Option<f64>,
) -> Result<Budgeted, CascadeError> {
    if !(budget.is_finite() && budget > 0.0) {
        return Err(CascadeError::Mismatch(format!(
            "--budget {budget}: must be a positive fraction of the monolithic network's time"
        )));
    }
    let costs = stage_costs(spec, kind);
    let mono = stage_costs(spec, NetworkKind::Monolithic)[0] as f64;
    // every TPR a threshold can reach exactly: k of n positives of some s-class
    let mut candidates: Vec<f64> = Vec::new();
    for (s, labels) in s_labels.iter().enumerate() {
        for c in 0..classes[s] {
            let n = labels.iter().filter(|&&l| l == c).count();
            candidates.extend((1..=n).map(|k| k as f64 / n as f64));
        }
    }
    candidates.sort_by(|a, b| b.total_cmp(a));
    candidates.dedup();
    let cheapest = costs[0] as f64 / mono;
    for tpr in candidates {
        let target = Target { tpr, confidence };
        let Ok(cal) = calibrate(scores, s_labels, classes, target) else {
            continue; // a target the held-out positives cannot certify
        };
        let pass = pass_fractions(scores, classes, s_class, &cal);
        let expected = expected_cost(&costs, &pass) / mono;
        if expected <= budget {
            return Ok(Budgeted {
                calibration: cal,
                expected,
                pass,
            });
        }
    }
    Err(CascadeError::Mismatch(format!(
        "--budget {budget}: no target TPR fits it (stage 1 alone costs {cheapest:.3} of the monolithic network)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// On a small example, the search agrees with trying every target TPR: the highest one
    /// whose expected cost fits, found by brute force over the thresholds each target gives.
    #[test]
    fn the_search_finds_the_highest_target_that_fits() {
        let spec = crate::shipped::spec("fashion-retrieval");
        let groups = [0, 1, 0, 0, 0, 2, 0, 2, 3, 2];
        let s_class = vec![groups.to_vec()];
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let n = 60;
        let fine: Vec<usize> = (0..n).map(|i| i % 10).collect();
        let labels = vec![fine.iter().map(|&f| groups[f]).collect::<Vec<_>>()];
        // scores: the own group's higher on average
        let scores = vec![
            (0..n)
                .flat_map(|i| {
                    let own = labels[0][i];
                    (0..4)
                        .map(|g| rng.random::<f32>() + if g == own { 0.6 } else { 0.0 })
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<f32>>(),
        ];
        let costs = stage_costs(&spec, NetworkKind::Onion);
        let mono = stage_costs(&spec, NetworkKind::Monolithic)[0] as f64;
        for budget in [0.2, 0.3, 0.5, 0.8, 1.2] {
            let got = for_budget(
                &spec,
                NetworkKind::Onion,
                &scores,
                &labels,
                &[4],
                &s_class,
                budget,
                None,
            );
            // brute force: every k / n of every group, each calibrated and costed
            let mut best: Option<(f64, f64)> = None;
            for g in 0..4 {
                let m = labels[0].iter().filter(|&&l| l == g).count();
                for k in 1..=m {
                    let tpr = k as f64 / m as f64;
                    let t = Target {
                        tpr,
                        confidence: None,
                    };
                    let cal = calibrate(&scores, &labels, &[4], t).unwrap();
                    let cost =
                        expected_cost(&costs, &pass_fractions(&scores, &[4], &s_class, &cal))
                            / mono;
                    if cost <= budget && best.is_none_or(|(b, _)| tpr > b) {
                        best = Some((tpr, cost));
                    }
                }
            }
            match (got, best) {
                (Ok(b), Some((tpr, cost))) => {
                    assert_eq!(b.calibration.target_tpr, tpr, "budget {budget}");
                    assert!((b.expected - cost).abs() < 1e-12 && b.expected <= budget);
                }
                (Err(e), None) => assert!(e.to_string().contains("no target TPR fits")),
                (got, best) => panic!("budget {budget}: search {got:?}, brute force {best:?}"),
            }
        }
    }

    #[test]
    fn pass_fractions_follow_the_queries_gates() {
        // two stages of 2 s-classes; 4 inputs; queries: fine classes 0 and 1 -> s-classes 0, 1
        let scores = vec![vec![0.9, 0.1, 0.2, 0.8, 0.6, 0.4, 0.3, 0.7]];
        let cal = Calibration {
            target_tpr: 0.5,
            thresholds: vec![vec![0.5, 0.75]],
            confidence: None,
            positives: Vec::new(),
        };
        let pass = pass_fractions(&scores, &[2], &[vec![0, 1]], &cal);
        // query 0 passes inputs 0 and 2 (0.9, 0.6); query 1 passes input 1 (0.8)
        assert!(
            (pass[0] - (2.0 / 4.0 + 1.0 / 4.0) / 2.0).abs() < 1e-12,
            "{pass:?}"
        );
    }
}
