//! The synthetic time-cost benchmark (paper, "time cost"): the three networks of a description
//! with random weights, a fraction p of each batch forced through stage 1 at random positions
//! (so compaction is exercised), forward time per example measured interleaved across the
//! networks and set against the cost model's prediction.

use crate::cascade::{Engine, Timing, run_pooled};
use crate::cost::time_at;
pub use crate::infer::EngineKind;
use crate::infer::FastModel;
use crate::model::Model;
use crate::onion::{Net, NetworkKind, archs};
use crate::spec::Spec;
use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::index::sample;
use serde::Serialize;
use std::time::Duration;

mod layers;
pub use layers::{LayerRow, layer_profile};

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub batch: usize,
    pub warmup: usize,
    pub reps: usize,
    pub ps: Vec<f64>,
    pub seed: u64,
    pub quiet: bool,
    /// Which inference path runs the networks.
    pub engine: EngineKind,
    /// Input batches per measured run, survivors pooled across them (a later stage runs once
    /// half a batch of rows waits, [`run_pooled`]); 1: every batch on its own.
    pub pool: usize,
    /// Each measured run right after the network interleaved before it, with nothing of its
    /// own left in the caches (the first methodology); otherwise (the default) right after
    /// unmeasured runs of the same network, on batches of its own survivors, lasting at least
    /// as long as a monolithic run, as in a stream of batches (what a deployed cascade sees).
    pub cold: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            batch: 128,
            warmup: 2,
            reps: 7,
            ps: vec![0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
            seed: 1,
            quiet: false,
            engine: EngineKind::default(),
            pool: 1,
            cold: false,
        }
    }
}

/// One measured point.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub network: String,
    pub p: f64,
    /// The fraction actually forced through each early stage: round(p · batch) / batch (the
    /// cost model is evaluated there, so theory and measurement describe the same run).
    pub p_forced: f64,
    /// Median over repetitions of the run's time (`pool` batches), per example.
    pub ms_per_example: f64,
    /// Cost model: T_network(p) / T_mono.
    pub theory_ratio: f64,
    /// Measured: the median over repetitions of time / the monolithic network's time in the
    /// same repetition at the same p (the three run back to back, so the machine's drift over
    /// minutes cancels); for the monolithic network itself, its median at p / its median over
    /// all p (how much it varies: the run's noise).
    pub measured_ratio: f64,
    /// A 95% interval of that median (order statistics of the repetitions' ratios,
    /// [`median_interval`]): how far this run's noise leaves it uncertain.
    pub measured_lo: f64,
    pub measured_hi: f64,
    #[serde(skip)]
    pub breakdown: Timing,
}

/// The three networks of `spec` with random weights, ready for inference.
pub fn random_models(spec: &Spec, device: &Device, seed: u64) -> Vec<Model> {
    device.seed(seed);
    NetworkKind::ALL
        .iter()
        .map(|&kind| Model {
            kind,
            spec: spec.clone(),
            nets: archs(spec, kind)
                .into_iter()
                .map(|a| {
                    let n = Net::new(a, device);
                    Net {
                        module: n.module.valid(),
                        arch: n.arch,
                    }
                })
                .collect(),
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median over repetitions of `times[r] / base[r]`: a network's time against the
/// monolithic network's in the same repetition.
pub fn paired_ratio(times: &[f64], base: &[f64]) -> f64 {
    median(paired(times, base))
}

fn paired(times: &[f64], base: &[f64]) -> Vec<f64> {
    assert_eq!(times.len(), base.len(), "one base time per repetition");
    times.iter().zip(base).map(|(t, m)| t / m).collect()
}

/// A distribution-free interval for the median of the population `v` was drawn from: the
/// k-th smallest and k-th largest values, k the largest with P(Binomial(n, 1/2) < k) <= 2.5%,
/// so that it covers the median with probability >= 95% whatever the noise's distribution
/// (the sign test's interval; independent repetitions assumed). Below 6 values no k reaches
/// 95%: the range. `None` when `v` is empty.
pub fn median_interval(v: &[f64]) -> Option<(f64, f64)> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return None;
    }
    // P(X <= i) for X ~ Binomial(n, 1/2), summed in logs (no underflow at large n)
    let ln_half_n = n as f64 * 0.5f64.ln();
    let (mut ln_c, mut cdf, mut k) = (0.0f64, 0.0, 1);
    for i in 0..n {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        cdf += (ln_c + ln_half_n).exp();
        // P(X <= i) = P(X < i + 1): k = i + 1 keeps the tail within 2.5%
        if cdf > 0.025 {
            break;
        }
        k = i + 1;
    }
    let k = k.min(n.div_ceil(2));
    Some((v[k - 1], v[n - k]))
}

/// The most unmeasured runs a measured one follows (a stage 1 at p = 0 takes a tenth of the
/// monolithic time or less; the cap only bounds a pathological case).
const MAX_WARM_RUNS: usize = 64;

/// Unmeasured runs (`run` returns each one's time, s) until they have lasted `at_least`
/// seconds: one at least, [`MAX_WARM_RUNS`] at most. Returns how many ran.
fn warm_up(at_least: f64, mut run: impl FnMut() -> f64) -> usize {
    let mut warm = 0.0;
    for n in 1..=MAX_WARM_RUNS {
        warm += run();
        if warm >= at_least {
            return n;
        }
    }
    MAX_WARM_RUNS
}

/// Runs the benchmark; rows in `ps` order, three per p (monolithic, non-sharing, onion).
pub fn run_bench(spec: &Spec, cfg: &BenchConfig, device: &Device) -> Vec<BenchRow> {
    let models = random_models(spec, device, cfg.seed);
    debug_assert_eq!(models[0].kind, NetworkKind::Monolithic);
    let [c, h, w] = spec.input.dims();
    let rows = cfg.batch * cfg.pool.max(1);
    let input = Tensor::<4>::random([rows, c, h, w], Distribution::Normal(0.0, 1.0), device);
    match cfg.engine {
        EngineKind::Burn => measure(spec, cfg, &models, input),
        EngineKind::Own => {
            let fast: Vec<FastModel> = models.iter().map(FastModel::from_model).collect();
            // (the batch converted once, outside the timing, as burn's tensor is made once)
            measure(spec, cfg, &fast, fast[0].input(&input))
        }
    }
}

fn measure<E: Engine>(
    spec: &Spec,
    cfg: &BenchConfig,
    models: &[E],
    input: E::Input,
) -> Vec<BenchRow>
where
    E::Input: Clone,
{
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let total = (cfg.warmup + cfg.reps) * cfg.ps.len() * models.len();
    let pb = progress(cfg, total, format!("bench {}", spec.name));
    // times[p][model] over repetitions; breakdown sums
    let mut times = vec![vec![Vec::new(); models.len()]; cfg.ps.len()];
    let mut breakdown = vec![vec![Timing::default(); models.len()]; cfg.ps.len()];
    // the latest monolithic run's time (s): how long the others' warm-up runs last
    let mut last_mono = 0.0;
    for rep in 0..cfg.warmup + cfg.reps {
        for (pi, &p) in cfg.ps.iter().enumerate() {
            // the order rotates with the repetition and p, so that no network always runs
            // right after the same one (whose maps fill the caches; docs/PERFORMANCE.md)
            for k in 0..models.len() {
                let mi = (k + rep + pi) % models.len();
                let model = &models[mi];
                // exactly round(p * rows) survivors at random positions, at every early stage
                let run = |rng: &mut rand::rngs::StdRng| {
                    run_pooled(model, input.clone(), cfg.batch, |s, scores| {
                        let rows = scores.len() / model.stage(s).classes;
                        let k = (p * rows as f64).round() as usize;
                        let mut keep = vec![false; rows];
                        for i in sample(rng, rows, k.min(rows)) {
                            keep[i] = true;
                        }
                        keep
                    })
                };
                // interleaved runs cancel the machine's drift in the paired ratios, but each
                // evicts the others' weights and maps: warm-up runs of this network, lasting
                // at least one monolithic run, come first (unless --cold)
                if !cfg.cold {
                    warm_up(last_mono, || run(&mut rng).timing.total().as_secs_f64());
                }
                let out = run(&mut rng);
                if mi == 0 {
                    last_mono = out.timing.total().as_secs_f64();
                }
                if rep >= cfg.warmup {
                    times[pi][mi].push(out.timing.total().as_secs_f64());
                    breakdown[pi][mi].add(&out.timing);
                }
                pb.inc(1);
            }
        }
    }
    pb.finish_and_clear();
    let mono_t = time_at(spec, NetworkKind::Monolithic, 1.0);
    // the monolithic network does not depend on p: its median over every run shows the noise
    let mono_med = median(times.iter().flat_map(|t| t[0].clone()).collect());
    // each network against the monolithic run of the same repetition and p: paired, so that
    // a drift of the machine's speed moves both alike; the monolithic network's own runs
    // against its median over all p
    let ratios_at = |pi: usize, mi: usize| -> Vec<f64> {
        if mi == 0 {
            times[pi][0].iter().map(|t| t / mono_med).collect()
        } else {
            paired(&times[pi][mi], &times[pi][0])
        }
    };
    let mut rows = Vec::new();
    for (pi, &p) in cfg.ps.iter().enumerate() {
        let med: Vec<f64> = times[pi].iter().map(|t| median(t.clone())).collect();
        for (mi, model) in models.iter().enumerate() {
            // per-batch averages
            let b = breakdown[pi][mi].per((cfg.reps.max(1) * cfg.pool.max(1)) as u32);
            let p_forced = (p * cfg.batch as f64).round() / cfg.batch as f64;
            let ratios = ratios_at(pi, mi);
            let (lo, hi) = median_interval(&ratios).unwrap_or((f64::NAN, f64::NAN));
            rows.push(BenchRow {
                network: model.kind().name().into(),
                p,
                p_forced,
                ms_per_example: med[mi] * 1000.0 / (cfg.batch * cfg.pool.max(1)) as f64,
                theory_ratio: time_at(spec, model.kind(), p_forced) / mono_t,
                measured_ratio: median(ratios),
                measured_lo: lo,
                measured_hi: hi,
                breakdown: b,
            });
        }
    }
    rows
}

/// The benchmark's progress bar over `total` runs (hidden when `cfg.quiet`).
fn progress(cfg: &BenchConfig, total: usize, prefix: String) -> ProgressBar {
    let pb = if cfg.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    pb.set_style(
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {elapsed} eta {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix);
    pb
}

/// The largest |measured / theory − 1| over p >= 0.05 of a network.
pub fn max_deviation(rows: &[BenchRow], network: &str) -> f64 {
    deviations(rows, network).map(|d| d.dev).fold(0.0, f64::max)
}

/// |measured / theory − 1| of one row, with the range it takes over the row's 95% interval
/// of the measured ratio (`lo` is 0 where the interval holds the theory).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deviation {
    pub p: f64,
    pub dev: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Every row of `network` at p >= 0.05 (the range), as [`Deviation`]s.
pub fn deviations<'a>(
    rows: &'a [BenchRow],
    network: &'a str,
) -> impl Iterator<Item = Deviation> + 'a {
    rows.iter()
        .filter(move |r| r.network == network && r.p >= 0.05 - 1e-12)
        .map(|r| {
            let d = |x: f64| (x / r.theory_ratio - 1.0).abs();
            let (a, b) = (d(r.measured_lo), d(r.measured_hi));
            let holds = r.measured_lo <= r.theory_ratio && r.theory_ratio <= r.measured_hi;
            Deviation {
                p: r.p,
                dev: d(r.measured_ratio),
                lo: if holds { 0.0 } else { a.min(b) },
                hi: a.max(b),
            }
        })
}

/// Whether a network's measured time is within `tol` of the cost model at every p >= 0.05,
/// given the run's noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every row's whole interval of the deviation is within `tol`.
    Within,
    /// Some row's whole interval is beyond `tol`.
    Beyond,
    /// Neither: some interval straddles `tol` (more repetitions could decide).
    Undecided,
}

pub fn verdict(rows: &[BenchRow], network: &str, tol: f64) -> Verdict {
    let d: Vec<Deviation> = deviations(rows, network).collect();
    if d.iter().any(|d| d.lo > tol) {
        Verdict::Beyond
    } else if d.iter().all(|d| d.hi <= tol) {
        Verdict::Within
    } else {
        Verdict::Undecided
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Achieved GFLOP/s of a square matmul of side `n` (the GEMM peak the backend reaches here):
/// median of `reps` runs after one warm-up.
pub fn gemm_gflops(n: usize, reps: usize, device: &Device) -> f64 {
    let a = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let b = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let mut t = Vec::new();
    for i in 0..reps + 1 {
        let start = std::time::Instant::now();
        let _ = a.clone().matmul(b.clone()).into_data();
        if i > 0 {
            t.push(start.elapsed().as_secs_f64());
        }
    }
    2.0 * (n as f64).powi(3) / median(t) / 1e9
}

/// The vector units' arithmetic peak in GFLOP/s over all of rayon's threads at once:
/// independent multiply-adds on registers only (12 chains per thread, no loads), at the
/// width the own engine's kernels use (16 lanes with AVX-512, else 8 with AVX2 and FMA). The
/// threads start together (a barrier) and each times its own loop, so a thread that reaches
/// the loop late does not count as slow; the best of `reps` runs (a peak: interference only
/// slows a run down). No layer can beat it, so it shows how far a layer is from the machine
/// rather than from the GEMM (`None` where neither instruction set is present).
pub fn fma_peak_gflops(reps: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        // (the test of the engine's 16-lane kernels, `direct::wide`)
        let wide =
            std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl");
        let narrow = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        if !wide && !narrow {
            return None;
        }
        // (about 3 ms per thread at 4 G multiply-adds/s: long against the clock, short
        // against the machine's drift)
        let iters: u64 = 1 << 20;
        let flops = (iters * peak::CHAINS as u64) as f64 * if wide { 16.0 } else { 8.0 } * 2.0;
        let mut best: f64 = 0.0;
        for _ in 0..reps.max(1) {
            let start = std::sync::Barrier::new(rayon::current_num_threads());
            // every thread at once, as the network's layers run
            let secs = rayon::broadcast(|_| {
                start.wait();
                let t = std::time::Instant::now();
                // SAFETY: the instruction sets checked above
                let sum = unsafe {
                    if wide {
                        peak::fma_chains_512(iters)
                    } else {
                        peak::fma_chains_256(iters)
                    }
                };
                std::hint::black_box(sum);
                t.elapsed().as_secs_f64()
            });
            best = best.max(secs.iter().map(|s| flops / s / 1e9).sum());
        }
        Some(best)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = reps;
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::x86_64::*;

    /// Independent multiply-add chains per thread: more than latency x issue width on the
    /// CPUs measured (4 cycles x 2 per cycle), so the units, not the chains, bound the loop.
    pub const CHAINS: usize = 12;

    /// `iters` rounds of one multiply-add on each of [`CHAINS`] 16-lane registers.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma_chains_512(iters: u64) -> f32 {
        let (x, y) = (_mm512_set1_ps(0.999_9), _mm512_set1_ps(1e-4));
        let mut acc: [__m512; CHAINS] = std::array::from_fn(|i| _mm512_set1_ps(i as f32));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, x, y);
            }
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }

    /// [`fma_chains_512`] on 8-lane registers (AVX2 and FMA).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma_chains_256(iters: u64) -> f32 {
        let (x, y) = (_mm256_set1_ps(0.999_9), _mm256_set1_ps(1e-4));
        let mut acc: [__m256; CHAINS] = std::array::from_fn(|i| _mm256_set1_ps(i as f32));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, x, y);
            }
        }
        let mut lanes = [0.0f32; 8];
        acc.iter()
            .map(|&a| {
                // SAFETY: 8 floats into 8
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
                lanes.iter().sum::<f32>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_lasts_a_monolithic_run() {
        // 1 ms runs after a 5 ms monolithic run: five; a network as slow as the monolithic
        // one, or the first run of all (nothing to wash out): one; a stalled clock: the cap
        assert_eq!(warm_up(0.005, || 0.001), 5);
        assert_eq!(warm_up(0.005, || 0.0049), 2);
        assert_eq!(warm_up(0.005, || 0.006), 1);
        assert_eq!(warm_up(0.0, || 0.001), 1);
        assert_eq!(warm_up(0.005, || 0.0), MAX_WARM_RUNS);
        let mut runs = 0;
        warm_up(0.0035, || {
            runs += 1;
            0.001
        });
        assert_eq!(runs, 4, "each counted run ran once");
    }

    #[test]
    fn paired_ratio_cancels_drift() {
        // a network at 0.3 of the monolithic time, on a machine whose speed drifts between
        // repetitions (both runs of a repetition alike): the paired ratio is exact, the ratio
        // of medians is not
        let speed = [1.0, 1.3, 0.8, 1.25, 1.2];
        let mono: Vec<f64> = speed.iter().map(|s| 10.0 * s).collect();
        let net: Vec<f64> = speed.iter().map(|s| 3.0 * s).collect();
        assert!((paired_ratio(&net, &mono) - 0.3).abs() < 1e-12);
        // (the monolithic medians come from other repetitions, as over all p)
        let other: Vec<f64> = [0.8, 0.9, 0.8, 1.0, 0.85]
            .iter()
            .map(|s| 10.0 * s)
            .collect();
        assert!((median(net.clone()) / median(other) - 0.3).abs() > 0.05);
    }

    /// P(Binomial(n, 1/2) <= k), directly from the binomial coefficients (small n).
    fn binomial_cdf(n: u64, k: u64) -> f64 {
        let c = |i: u64| (0..i).fold(1.0, |c, j| c * (n - j) as f64 / (j + 1) as f64);
        (0..=k).map(c).sum::<f64>() / 2f64.powi(n as i32)
    }

    #[test]
    fn median_interval_takes_the_sign_tests_order_statistics() {
        // values 1..=n shuffled (7919 is a prime above n): the interval is [k, n + 1 - k], k
        // the largest with P(X <= k - 1) <= 2.5%
        for n in 1..=60u64 {
            let mut v: Vec<f64> = (1..=n).map(|i| ((i * 7919) % n + 1) as f64).collect();
            v.reverse();
            let (lo, hi) = median_interval(&v).unwrap();
            let k = lo as u64;
            assert_eq!(hi as u64, n + 1 - k, "n = {n}: symmetric");
            if n >= 6 {
                assert!(
                    binomial_cdf(n, k - 1) <= 0.025,
                    "n = {n}, k = {k}: covers 95%"
                );
                assert!(
                    binomial_cdf(n, k) > 0.025,
                    "n = {n}, k = {k}: the largest such k"
                );
            } else {
                assert_eq!((lo, hi), (1.0, n as f64), "n = {n}: the range");
            }
            let m = median(v.clone());
            assert!(lo <= m && m <= hi);
        }
        // known values: n = 21 -> the 6th and 16th, n = 101 -> the 41st and 61st
        let v: Vec<f64> = (1..=21).map(f64::from).collect();
        assert_eq!(median_interval(&v), Some((6.0, 16.0)));
        let v: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(median_interval(&v), Some((41.0, 61.0)));
        assert_eq!(median_interval(&[]), None);
        // large n: no underflow
        let v: Vec<f64> = (1..=5000).map(f64::from).collect();
        let (lo, hi) = median_interval(&v).unwrap();
        assert!(lo > 2400.0 && lo < 2500.0 && hi == 5001.0 - lo, "{lo} {hi}");
    }

    fn row(network: &str, p: f64, theory: f64, (lo, m, hi): (f64, f64, f64)) -> BenchRow {
        BenchRow {
            network: network.into(),
            p,
            p_forced: p,
            ms_per_example: 1.0,
            theory_ratio: theory,
            measured_ratio: m,
            measured_lo: lo,
            measured_hi: hi,
            breakdown: Timing::default(),
        }
    }

    #[test]
    fn verdict_reads_the_intervals_against_the_tolerance() {
        let within = row("onion", 0.05, 0.1, (0.101, 0.105, 0.109));
        let over = row("onion", 0.1, 0.2, (0.225, 0.23, 0.24));
        let straddles = row("onion", 0.2, 0.2, (0.19, 0.215, 0.23));
        // p = 0 is outside the range: its deviation never counts
        let at_zero = row("onion", 0.0, 0.1, (0.5, 0.5, 0.5));
        let v = |rows: &[BenchRow]| verdict(rows, "onion", 0.10);
        assert_eq!(v(&[at_zero.clone(), within.clone()]), Verdict::Within);
        assert_eq!(v(&[within.clone(), over.clone()]), Verdict::Beyond);
        assert_eq!(v(&[within.clone(), straddles.clone()]), Verdict::Undecided);
        assert_eq!(v(&[straddles.clone(), over]), Verdict::Beyond);
        // the straddling row's deviation: 0 (the interval holds the theory) to 15%
        let d: Vec<Deviation> = deviations(std::slice::from_ref(&straddles), "onion").collect();
        assert_eq!(d.len(), 1);
        assert!(
            d[0].lo == 0.0 && (d[0].hi - 0.15).abs() < 1e-12 && (d[0].dev - 0.075).abs() < 1e-12
        );
        assert!((max_deviation(&[at_zero, within], "onion") - 0.05).abs() < 1e-12);
    }
}
