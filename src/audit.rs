//! Auditing what stage 1 rejects. Once deployed, nobody sees the positives an early stage
//! throws away; an audit sends a seeded random fraction f of the rejected inputs through the
//! remaining stages anyway, and estimates the live TPR from what the last stage says: the
//! positives it confirms among the survivors (C) against those it finds among the audited
//! rejects, scaled up by the fraction audited (M = found x rejected / audited):
//! TPR = C / (C + M). Its 95% interval comes from the exact (Clopper–Pearson) interval of the
//! audited rejects' positive rate. The audit's time is kept apart from the cascade's.

use crate::calibrate::clopper_pearson_lower;
use rand::SeedableRng;
use rand::seq::index::sample;

/// What an audit saw, summed over queries.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Audit {
    /// Survivors the last stage calls positive.
    pub confirmed: usize,
    /// Inputs an early stage rejected.
    pub rejected: usize,
    /// Rejected inputs sent through the remaining stages anyway.
    pub audited: usize,
    /// Audited inputs the last stage calls positive.
    pub found: usize,
    /// Time spent on the audit (not counted in the cascade's).
    pub seconds: f64,
}

impl Audit {
    pub fn add(&mut self, o: &Audit) {
        self.confirmed += o.confirmed;
        self.rejected += o.rejected;
        self.audited += o.audited;
        self.found += o.found;
        self.seconds += o.seconds;
    }

    /// One line: the live TPR, its interval and what it rests on.
    pub fn summary(&self) -> String {
        match (self.live_tpr(), self.interval()) {
            (Some(t), Some((lo, hi))) => format!(
                "live TPR {t:.3} (95% interval {lo:.3}-{hi:.3}): {} confirmed; {} of {} rejected audited, {} of them positive",
                self.confirmed, self.audited, self.rejected, self.found
            ),
            _ => format!(
                "no positive seen yet ({} of {} rejected audited)",
                self.audited, self.rejected
            ),
        }
    }

    /// Whether the live TPR's whole interval lies below `target` (the warning case).
    pub fn below(&self, target: f64) -> bool {
        self.interval().is_some_and(|(_, hi)| hi < target)
    }

    /// The estimated number of positives the early stages rejected.
    pub fn missed(&self) -> f64 {
        if self.audited == 0 {
            0.0
        } else {
            self.found as f64 * self.rejected as f64 / self.audited as f64
        }
    }

    /// The live TPR estimate (`None` before any positive was seen).
    pub fn live_tpr(&self) -> Option<f64> {
        let total = self.confirmed as f64 + self.missed();
        (total > 0.0).then(|| self.confirmed as f64 / total)
    }

    /// The 95% interval of the live TPR: the audited rejects' positive rate at the ends of its
    /// exact two-sided interval.
    pub fn interval(&self) -> Option<(f64, f64)> {
        self.live_tpr()?;
        let (a, f) = (self.audited, self.found);
        let (rate_lo, rate_hi) = if a == 0 {
            (0.0, 1.0)
        } else {
            (
                clopper_pearson_lower(f, a, 0.975),
                1.0 - clopper_pearson_lower(a - f, a, 0.975),
            )
        };
        let c = self.confirmed as f64;
        let r = self.rejected as f64;
        let tpr = |rate: f64| {
            let t = c + rate * r;
            if t > 0.0 { c / t } else { 1.0 }
        };
        Some((tpr(rate_hi), tpr(rate_lo)))
    }
}

/// The rejected rows to audit: round(`fraction` x their number), drawn without replacement
/// by a generator seeded with `seed` (at least one where any was rejected and the fraction
/// is positive).
pub fn pick(rejected: &[usize], fraction: f64, seed: u64) -> Vec<usize> {
    if rejected.is_empty() || fraction <= 0.0 {
        return Vec::new();
    }
    let k = ((fraction * rejected.len() as f64).round() as usize).clamp(1, rejected.len());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut rows: Vec<usize> = sample(&mut rng, rejected.len(), k)
        .into_iter()
        .map(|i| rejected[i])
        .collect();
    rows.sort_unstable();
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_and_interval() {
        let a = Audit {
            confirmed: 90,
            rejected: 1000,
            audited: 100,
            found: 1,
            seconds: 0.0,
        };
        // 1 of 100 audited: 10 missed of 1000
        assert!((a.missed() - 10.0).abs() < 1e-12);
        assert!((a.live_tpr().unwrap() - 0.9).abs() < 1e-12);
        let (lo, hi) = a.interval().unwrap();
        assert!(lo < 0.9 && 0.9 < hi && hi <= 1.0, "{lo} {hi}");
        // everything audited, nothing found: exactly 1, the interval's top end 1
        let all = Audit {
            audited: 1000,
            found: 0,
            ..a
        };
        assert_eq!(all.live_tpr(), Some(1.0));
        assert_eq!(all.interval().unwrap().1, 1.0);
        assert_eq!(Audit::default().live_tpr(), None);
    }

    /// Over seeds, the estimate of the missed positives is unbiased: its mean is the true
    /// number within the sampling error.
    #[test]
    fn the_estimate_is_unbiased_over_seeds() {
        // 2,000 rejected rows, 150 of them positive; audit 5%
        let rejected: Vec<usize> = (0..2000).collect();
        let positive = |r: usize| r % 40 < 3;
        let truth = rejected.iter().filter(|&&r| positive(r)).count() as f64;
        let seeds = 400;
        let estimates: Vec<f64> = (0..seeds)
            .map(|seed| {
                let rows = pick(&rejected, 0.05, seed);
                let a = Audit {
                    confirmed: 0,
                    rejected: rejected.len(),
                    audited: rows.len(),
                    found: rows.iter().filter(|&&r| positive(r)).count(),
                    seconds: 0.0,
                };
                a.missed()
            })
            .collect();
        let mean = estimates.iter().sum::<f64>() / seeds as f64;
        let sd =
            (estimates.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (seeds - 1) as f64).sqrt();
        let se = sd / (seeds as f64).sqrt();
        assert!(
            (mean - truth).abs() < 3.0 * se,
            "mean {mean}, truth {truth}, se {se}"
        );
        assert_eq!(pick(&rejected, 0.05, 1).len(), 100);
        assert_eq!(pick(&rejected, 0.05, 1), pick(&rejected, 0.05, 1));
    }
}
