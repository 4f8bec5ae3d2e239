//! A time budget instead of a TPR target (MSDNet's budgeted mode, with real exits): the
//! highest target TPR whose expected cost fits the budget. The expected cost is each stage's
//! cost times the held-out fraction of retrieval queries' inputs reaching it (an input reaches
//! stage s + 1 for query q when it passed the thresholds of q's s-classes at stages 1..s). A
//! stage's cost comes from the cost model (multiply-adds, `--budget R`: R of the monolithic
//! network's) or from its time measured on this machine (`--budget-ms B`: B ms per 1,000
//! inputs). Every early stage is calibrated to the same target, so the stages of an S > 2
//! cascade are chosen together.

use crate::calibrate::{Calibration, Target, calibrate};
use crate::cascade::Gate;
use crate::cost::{expected_cost, relative_costs};
use crate::data::Dataset;
use crate::error::CascadeError;
use crate::model::Model;
use crate::onion::NetworkKind;
use burn::tensor::Device;

/// What a budget is given as.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// A fraction of the monolithic network's cost (the cost model).
    Fraction(f64),
    /// Milliseconds per 1,000 inputs on this machine (stage times measured here).
    MsPer1000(f64),
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Fraction(r) => write!(f, "{r}x"),
            Budget::MsPer1000(ms) => write!(f, "{ms}ms"),
        }
    }
}

/// The operating point chosen for a budget.
#[derive(Debug, Clone)]
pub struct Budgeted {
    pub calibration: Calibration,
    /// Expected cost per input over the monolithic network's, at the held-out pass fractions.
    pub expected: f64,
    /// The expected time in ms per 1,000 inputs (`Budget::MsPer1000` only: measured stages).
    pub expected_ms: Option<f64>,
    /// The held-out fraction of inputs passing each early stage (of those reaching it).
    pub pass: Vec<f64>,
    /// Where the stage costs came from, in words.
    pub basis: String,
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
/// `confidence` where given) whose expected cost — `costs[s]`, each stage's cost as a fraction
/// of the monolithic network's, weighted by the fraction reaching it — is at most `budget`
/// (a fraction of the monolithic network's); an error naming `what` and what stage 1 alone
/// costs (`stage1`) when even the lowest target does not fit.
#[allow(clippy::too_many_arguments)]
pub fn search(
    costs: &[f64],
    scores: &[Vec<f32>],
    s_labels: &[Vec<usize>],
    classes: &[usize],
    s_class: &[Vec<usize>],
    budget: f64,
    confidence: Option<f64>,
    (what, stage1): (&str, &str),
) -> Result<(Calibration, f64, Vec<f64>), CascadeError> {
    if !(budget.is_finite() && budget > 0.0) {
        return Err(CascadeError::Mismatch(format!(
            "{what}: must be a positive time budget"
        )));
    }
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
    for tpr in candidates {
        let target = Target { tpr, confidence };
        let Ok(cal) = calibrate(scores, s_labels, classes, target) else {
            continue; // a target the held-out positives cannot certify
        };
        let pass = pass_fractions(scores, classes, s_class, &cal);
        let expected = expected_cost(costs, &pass);
        if expected <= budget {
            return Ok((cal, expected, pass));
        }
    }
    Err(CascadeError::Mismatch(format!(
        "{what}: no target TPR fits it (stage 1 alone {stage1})"
    )))
}

/// Each stage's time per input (seconds) of `model` run on `rows` with every input passing,
/// and the monolithic network's of the same description (random weights: the time does not
/// depend on them), on the own inference path: medians of `reps` runs. `rows` is not empty
/// ([`for_budget`] has read its scores first).
pub(crate) fn measured_stage_times(
    model: &Model,
    rows: &Dataset,
    reps: usize,
    device: &Device,
) -> (Vec<f64>, f64) {
    let n = rows.len().clamp(1, 1000);
    let x = rows.batch(&(0..n).collect::<Vec<_>>(), device);
    let mono = crate::bench::random_models(&model.spec, device, 1)
        .into_iter()
        .find(|m| m.kind == NetworkKind::Monolithic)
        .expect("the three kinds");
    let time = |m: &Model| -> Vec<f64> {
        let fast = crate::infer::FastModel::from_model(m);
        let open = Gate::open(&m.spec);
        let mut per: Vec<Vec<f64>> = vec![Vec::new(); m.num_stages()];
        for _ in 0..reps.max(1) + 1 {
            let out = crate::infer::run_stream_on(m, Some(&fast), &x, 256, &open);
            for (s, d) in out.timing.stage.iter().enumerate() {
                per[s].push(d.as_secs_f64() / n as f64);
            }
        }
        per.into_iter()
            .map(|mut v| {
                v.remove(0); // (the warm-up run)
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            })
            .collect()
    };
    (time(model), time(&mono)[0])
}

/// The operating points of `model` for `budgets` on the held-out `calib` split, for `queries`
/// (fine classes, each gated on its s-classes: every class for retrieval; "match" alone for
/// patch matching): one result per budget (a budget nothing fits is an error of its own). The
/// held-out scores are read, and the stage times measured, once for all of them.
pub fn for_budgets(
    model: &Model,
    calib: &Dataset,
    budgets: &[Budget],
    confidence: Option<f64>,
    queries: &[usize],
    device: &Device,
) -> Result<Vec<Result<Budgeted, CascadeError>>, CascadeError> {
    if model.num_stages() < 2 {
        return Err(CascadeError::Mismatch(
            "a monolithic network has no early stage to calibrate".into(),
        ));
    }
    let (scores, labels, classes) = crate::calibrate::early_scores(model, calib, device)?;
    let s_class: Vec<Vec<usize>> = (0..classes.len())
        .map(|s| queries.iter().map(|&q| model.stage(s).s_class(q)).collect())
        .collect();
    let model_costs = relative_costs(&model.spec, model.kind);
    // (measured on the first budget in ms, for all of them)
    let measured = std::cell::OnceCell::new();
    let choose = |budget: Budget| {
        let (costs, fraction, mono_ms, basis, what, stage1) = match budget {
            Budget::MsPer1000(ms) => {
                let (stages, mono) =
                    measured.get_or_init(|| measured_stage_times(model, calib, 3, device));
                let mono_ms = mono * 1e6;
                let costs: Vec<f64> = stages.iter().map(|t| t / mono).collect();
                let basis = format!(
                    "stage times measured here: {} ms per 1,000 inputs (monolithic {mono_ms:.1})",
                    stages
                        .iter()
                        .map(|t| format!("{:.1}", t * 1e6))
                        .collect::<Vec<_>>()
                        .join(" / ")
                );
                let stage1 = format!(
                    "takes {:.1} ms per 1,000 inputs here, the monolithic network {mono_ms:.1}",
                    costs[0] * mono_ms
                );
                let what = format!("--budget-ms {ms}");
                (costs, ms / mono_ms, Some(mono_ms), basis, what, stage1)
            }
            Budget::Fraction(r) => (
                model_costs.clone(),
                r,
                None,
                "cost model (multiply-adds)".to_string(),
                format!("--budget {r}"),
                format!("costs {:.3} of the monolithic network", model_costs[0]),
            ),
        };
        let (mut calibration, expected, pass) = search(
            &costs,
            &scores,
            &labels,
            &classes,
            &s_class,
            fraction,
            confidence,
            (&what, &stage1),
        )?;
        calibration.budget = Some(budget.to_string());
        Ok(Budgeted {
            calibration,
            expected,
            expected_ms: mono_ms.map(|m| expected * m),
            pass,
            basis,
        })
    };
    Ok(budgets.iter().map(|&b| choose(b)).collect())
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
        let costs = crate::cost::stage_costs(&spec, NetworkKind::Onion);
        let mono = crate::cost::stage_costs(&spec, NetworkKind::Monolithic)[0] as f64;
        let costs: Vec<f64> = costs.iter().map(|&c| c as f64).collect();
        for budget in [0.2, 0.3, 0.5, 0.8, 1.2] {
            let got = search(
                &relative_costs(&spec, NetworkKind::Onion),
                &scores,
                &labels,
                &[4],
                &s_class,
                budget,
                None,
                ("--budget", "costs"),
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
                (Ok((cal, expected, _)), Some((tpr, cost))) => {
                    assert_eq!(cal.target_tpr, tpr, "budget {budget}");
                    assert!((expected - cost).abs() < 1e-12 && expected <= budget);
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
            budget: None,
        };
        let pass = pass_fractions(&scores, &[2], &[vec![0, 1]], &cal);
        // query 0 passes inputs 0 and 2 (0.9, 0.6); query 1 passes input 1 (0.8)
        assert!(
            (pass[0] - (2.0 / 4.0 + 1.0 / 4.0) / 2.0).abs() < 1e-12,
            "{pass:?}"
        );
    }
}
