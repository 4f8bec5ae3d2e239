//! `onionnet bench SPEC`: the synthetic time-cost benchmark — table, CSV, PNG plot (measured
//! solid, theory dashed, normalised to the monolithic network) and where the time goes.

use crate::bench::{
    BenchConfig, BenchRow, Deviation, LayerRow, Verdict, deviations, fma_peak_gflops, gemm_gflops,
    layer_profile, ms, run_bench, verdict,
};
use crate::cost::stage_costs;
use crate::files::write_atomic;
use crate::onion::NetworkKind;
use crate::report::plot::{Series, line_plot};
use crate::spec::Spec;
use anyhow::Context;
use burn::tensor::Device;
use clap::Args;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model description (TOML).
    pub spec: PathBuf,
    /// Examples per batch.
    #[arg(long, default_value_t = BenchConfig::default().batch)]
    pub batch: usize,
    /// Measured repetitions per (network, p); the median is reported, with a 95% interval of it
    /// (the range below 6 repetitions).
    #[arg(long, default_value_t = BenchConfig::default().reps)]
    pub reps: usize,
    /// Unmeasured repetitions first.
    #[arg(long, default_value_t = BenchConfig::default().warmup)]
    pub warmup: usize,
    /// Fractions passing each early stage, repeated or comma-separated (`--p 0,0.05`)
    /// [default: 0, 0.05, 0.1, 0.2, ..., 1].
    #[arg(long = "p", value_parser = super::parse_fraction, value_delimiter = ',')]
    pub p: Vec<f64>,
    /// Seed of the random weights, input and survivor positions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Directory for bench.csv and bench.png [default: runs/bench/NAME, NAME the description's name].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Inference path: the own path (default) or burn's modules.
    #[arg(long, value_enum, default_value_t = crate::bench::EngineKind::Own)]
    pub engine: crate::bench::EngineKind,
    /// Input batches per measured run, the survivors of each stage pooled across them: a
    /// later stage runs once half a batch of rows waits (or at the run's end), instead of
    /// on a few rows per batch. 1: every batch on its own (the paper's setting).
    #[arg(long, default_value_t = BenchConfig::default().pool)]
    pub pool: usize,
    /// Time each run right after the other networks' runs, with its own weights and maps
    /// evicted from the caches, instead of after unmeasured runs of the same network lasting
    /// at least as long as a monolithic run (a stream of batches, the default).
    #[arg(long)]
    pub cold: bool,
    /// Print `{"rows": [...]}` on stdout instead of the tables.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &BenchArgs, device: &Device) -> anyhow::Result<()> {
    let spec = crate::shipped::load_spec(&args.spec)?;
    anyhow::ensure!(args.batch >= 1, "--batch {} must be at least 1", args.batch);
    anyhow::ensure!(args.reps >= 1, "--reps {} must be at least 1", args.reps);
    anyhow::ensure!(args.pool >= 1, "--pool {} must be at least 1", args.pool);
    // (the three networks' weights, and a stream of --pool batches in flight)
    crate::footprint::check(
        3 * crate::footprint::inference(&spec, args.batch.saturating_mul(args.pool)),
        &format!(
            "benchmarking {} with --batch {} --pool {}",
            spec.name, args.batch, args.pool
        ),
        "--batch, --pool or the description's widths",
    )
    .map_err(anyhow::Error::msg)?;
    let mut cfg = BenchConfig {
        batch: args.batch,
        reps: args.reps,
        warmup: args.warmup,
        seed: args.seed,
        engine: args.engine,
        pool: args.pool,
        cold: args.cold,
        ..BenchConfig::default()
    };
    if !args.p.is_empty() {
        cfg.ps = args.p.clone();
    }
    // (the output directory made before the minutes of measuring, not after)
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/bench").join(&spec.name));
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create the output directory {}", out.display()))?;
    let rows = run_bench(&spec, &cfg, device);
    write_atomic(&out.join("bench.csv"), csv(&rows).as_bytes())?;
    plot(&rows, &spec, &cfg, &out.join("bench.png"))?;
    // achieved throughput of the monolithic forward against the backend's GEMM peak
    let mut mono: Vec<f64> = rows
        .iter()
        .filter(|r| r.network == "monolithic")
        .map(|r| r.ms_per_example)
        .collect();
    mono.sort_by(f64::total_cmp);
    let mono_ms = mono[mono.len() / 2];
    let mono_gflops =
        2.0 * stage_costs(&spec, NetworkKind::Monolithic)[0] as f64 / (mono_ms / 1000.0) / 1e9;
    let peak = gemm_gflops(1024, 5, device);
    let fma_peak = fma_peak_gflops(9);
    let mid = rows
        .iter()
        .map(|r| r.p)
        .min_by(|a, b| (a - 0.5).abs().total_cmp(&(b - 0.5).abs()))
        .unwrap_or(0.5);
    // (burn's modules run whole stages: no per-layer times)
    let layers = match cfg.engine {
        crate::bench::EngineKind::Own => {
            let layers = layer_profile(&spec, &cfg, mid, device);
            write_atomic(&out.join("layers.csv"), layers_csv(&layers).as_bytes())?;
            Some(layers)
        }
        crate::bench::EngineKind::Burn => None,
    };
    // each network's worst p, with the interval its noise leaves, and the verdict on the
    // issue's target
    let worst: Vec<(NetworkKind, Option<Deviation>, Verdict)> = NetworkKind::ALL
        .iter()
        .map(|&k| {
            let w = deviations(&rows, k.name()).max_by(|a, b| a.dev.total_cmp(&b.dev));
            (k, w, verdict(&rows, k.name(), TARGET))
        })
        .collect();
    let measured = Measured {
        rows: &rows,
        worst: &worst,
        mono_gflops,
        peak,
        fma_peak,
        mid,
        layers: layers.as_deref(),
    };
    if args.json {
        print_json(&measured);
        return Ok(());
    }
    print_text(&measured, &spec, &cfg);
    eprintln!(
        "\nwrote {}, {}{}",
        out.join("bench.csv").display(),
        out.join("bench.png").display(),
        if layers.is_some() {
            format!(" and {}", out.join("layers.csv").display())
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The target: measured time within 10% of the cost model at every p >= 0.05.
const TARGET: f64 = 0.10;

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Within => "within the target at every p",
        Verdict::Beyond => "beyond the target (a whole interval outside it)",
        Verdict::Undecided => "undecided (an interval straddles the target)",
    }
}

/// How a run treats survivors, for titles: nothing when every batch runs on its own.
fn pooled(cfg: &BenchConfig) -> String {
    if cfg.pool > 1 {
        format!(", survivors pooled over {} batches", cfg.pool)
    } else {
        String::new()
    }
}

fn csv(rows: &[BenchRow]) -> String {
    let mut s = String::from(
        "network,p,p_forced,ms_per_example,theory_ratio,measured_ratio,stage1_ms,stage2_ms,threshold_ms,compaction_ms,gather_ms,scatter_ms,measured_lo,measured_hi\n",
    );
    for r in rows {
        let st = |i: usize| r.breakdown.stage.get(i).map_or(0.0, |d| ms(*d));
        let b = &r.breakdown;
        let _ = writeln!(
            s,
            "{},{},{:.6},{:.6},{:.6},{:.6},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.6},{:.6}",
            r.network,
            r.p,
            r.p_forced,
            r.ms_per_example,
            r.theory_ratio,
            r.measured_ratio,
            st(0),
            st(1),
            ms(b.threshold),
            ms(b.compaction),
            ms(b.gather),
            ms(b.scatter),
            r.measured_lo,
            r.measured_hi
        );
    }
    s
}

fn layers_csv(rows: &[LayerRow]) -> String {
    let mut s = String::from(
        "network,stage,layer,rows,macs_per_example,ms,measured_share,theory_share,per_mac,gflops\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{:.5},{:.6},{:.6},{},{}",
            r.network,
            r.stage,
            r.layer,
            r.rows,
            r.macs,
            r.ms,
            r.measured_share,
            r.theory_share,
            r.per_mac().map_or(String::new(), |v| format!("{v:.4}")),
            r.gflops().map_or(String::new(), |v| format!("{v:.2}"))
        );
    }
    s
}

fn layers_table(rows: &[LayerRow], fma_peak: Option<f64>) -> String {
    let mut s = format!(
        "  {:<12} {:>5}  {:<10} {:>5} {:>12} {:>9} {:>9} {:>8} {:>8} {:>6}\n",
        "network",
        "stage",
        "layer",
        "rows",
        "MACs/example",
        "ms",
        "measured",
        "theory",
        "per MAC",
        "peak"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "  {:<12} {:>5}  {:<10} {:>5} {:>12} {:>9.3} {:>9.4} {:>8.4} {:>8} {:>6}",
            r.network,
            r.stage,
            r.layer,
            r.rows,
            r.macs,
            r.ms,
            r.measured_share,
            r.theory_share,
            r.per_mac().map_or("-".into(), |v| format!("{v:.2}")),
            match (r.gflops(), fma_peak) {
                (Some(g), Some(f)) => format!("{:.0}%", 100.0 * g / f),
                _ => "-".into(),
            }
        );
    }
    s
}

fn table(rows: &[BenchRow]) -> String {
    let mut s = format!("{:>5}", "p");
    for k in NetworkKind::ALL {
        let _ = write!(s, "  {:>24}", format!("{k} ms (meas/theory)"));
    }
    s.push('\n');
    let mut ps: Vec<f64> = rows.iter().map(|r| r.p).collect();
    ps.dedup();
    for p in ps {
        let _ = write!(s, "{p:>5.2}");
        for k in NetworkKind::ALL {
            if let Some(r) = rows.iter().find(|r| r.p == p && r.network == k.name()) {
                let _ = write!(
                    s,
                    "  {:>24}",
                    format!(
                        "{:.3} ({:.2}/{:.2})",
                        r.ms_per_example, r.measured_ratio, r.theory_ratio
                    )
                );
            }
        }
        s.push('\n');
    }
    s
}

fn breakdown(rows: &[BenchRow], p: f64) -> String {
    let mut s = format!(
        "  {:<12} {:>9} {:>9} {:>10} {:>8} {:>9} {:>8} {:>14}\n",
        "network", "stage 1", "stage 2", "threshold", "compact", "gather", "scatter", "overhead/s2"
    );
    for r in rows.iter().filter(|r| r.p == p) {
        let b = &r.breakdown;
        let st = |i: usize| b.stage.get(i).map_or(0.0, |d| ms(*d));
        let s2: f64 = b.stage.iter().skip(1).map(|d| ms(*d)).sum();
        let over = ms(b.overhead());
        let ratio = if s2 > 0.0 {
            format!("{:.2}%", 100.0 * over / s2)
        } else {
            "-".into()
        };
        let _ = writeln!(
            s,
            "  {:<12} {:>9.3} {:>9.3} {:>10.3} {:>8.3} {:>9.3} {:>8.3} {:>14}",
            r.network,
            st(0),
            st(1),
            ms(b.threshold),
            ms(b.compaction),
            ms(b.gather),
            ms(b.scatter),
            ratio
        );
    }
    s
}

fn plot(
    rows: &[BenchRow],
    spec: &Spec,
    cfg: &BenchConfig,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let mut series = Vec::new();
    for (i, k) in NetworkKind::ALL.iter().enumerate() {
        let pts = |f: fn(&BenchRow) -> f64| {
            rows.iter()
                .filter(|r| r.network == k.name())
                .map(|r| (r.p, f(r)))
                .collect::<Vec<_>>()
        };
        series.push(Series {
            label: format!("{k} (measured)"),
            points: pts(|r| r.measured_ratio),
            colour: i,
            dashed: false,
            bars: rows
                .iter()
                .filter(|r| r.network == k.name())
                .map(|r| (r.p, r.measured_lo, r.measured_hi))
                .collect(),
        });
        series.push(Series {
            label: format!("{k} (theory, dashed)"),
            points: pts(|r| r.theory_ratio),
            colour: i,
            dashed: true,
            bars: Vec::new(),
        });
    }
    line_plot(
        path,
        &format!(
            "{}: time vs fraction passing stage 1 (batch {}{})",
            spec.name,
            cfg.batch,
            pooled(cfg)
        ),
        "p (fraction of examples passing stage 1)",
        "time / monolithic time (bars: 95% interval of the median)",
        &series,
    )
}

/// What one benchmark run measured, for printing.
struct Measured<'a> {
    rows: &'a [BenchRow],
    /// Each network's worst p (with its interval) and the verdict on the target.
    worst: &'a [(NetworkKind, Option<Deviation>, Verdict)],
    mono_gflops: f64,
    peak: f64,
    fma_peak: Option<f64>,
    /// The p of the breakdowns.
    mid: f64,
    layers: Option<&'a [LayerRow]>,
}

/// `bench --json`: one object with the rows, deviations, verdicts, breakdowns and layers.
fn print_json(m: &Measured) {
    let Measured {
        rows,
        worst,
        mono_gflops,
        peak,
        fma_peak,
        layers,
        ..
    } = *m;
    let breakdown: Vec<_> = rows
        .iter()
        .map(|r| {
            serde_json::json!({"network": r.network, "p": r.p,
                "stage_ms": r.breakdown.stage.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
                "threshold_ms": ms(r.breakdown.threshold), "compaction_ms": ms(r.breakdown.compaction),
                "gather_ms": ms(r.breakdown.gather), "scatter_ms": ms(r.breakdown.scatter)})
        })
        .collect();
    // (the largest deviation is the worst point's: `bench::max_deviation`)
    let dev: serde_json::Map<String, serde_json::Value> = worst
        .iter()
        .map(|(k, w, _)| (k.name().to_string(), w.map_or(0.0, |w| w.dev).into()))
        .collect();
    let target: serde_json::Map<String, serde_json::Value> = worst
        .iter()
        .map(|(k, w, v)| {
            let w = w
                .map(|w| serde_json::json!({"p": w.p, "deviation": w.dev, "lo": w.lo, "hi": w.hi}));
            (
                k.name().to_string(),
                serde_json::json!({"worst": w, "verdict": verdict_word(*v)}),
            )
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({"rows": rows, "max_deviation": dev, "target": target,
            "target_tolerance": TARGET, "breakdown": breakdown,
            "monolithic_gflops": mono_gflops, "gemm_peak_gflops": peak,
            "fma_peak_gflops": fma_peak, "layers": layers})
    );
}

/// The benchmark's table, deviations, throughput and breakdowns as text.
fn print_text(m: &Measured, spec: &Spec, cfg: &BenchConfig) {
    let Measured {
        rows,
        worst,
        mono_gflops,
        peak,
        fma_peak,
        mid,
        layers,
    } = *m;
    println!(
        "{}: {} engine, batch {}{}, median of {} runs after {} warm-up, {}, per example; measured ratio: median over runs of time / the monolithic run of the same repetition and p; theory at the fraction forced, round(p x batch) / batch",
        spec.name,
        match cfg.engine {
            crate::bench::EngineKind::Own => "own",
            crate::bench::EngineKind::Burn => "burn",
        },
        cfg.batch,
        pooled(cfg),
        cfg.reps,
        cfg.warmup,
        if cfg.cold {
            "each run cold (right after the other networks)"
        } else {
            "each run right after unmeasured runs of the same network lasting at least a monolithic run"
        }
    );
    print!("{}", table(rows));
    println!(
        "\nlargest |measured/theory - 1| over p >= 0.05, with the 95% interval of the median at that p (from the {} repetitions' spread), against the target (within {:.0}%):",
        cfg.reps,
        100.0 * TARGET
    );
    for (k, w, v) in worst {
        let Some(w) = w else { continue };
        // (the monolithic network against its own median: the run's noise)
        let note = if *k == NetworkKind::Monolithic {
            "  (its spread over p: the noise)".to_string()
        } else {
            format!("  {}", verdict_word(*v))
        };
        println!(
            "  {:<12} {:>5.1}%  at p = {:.2}  (interval {:.1}-{:.1}%){note}",
            k.name(),
            100.0 * w.dev,
            w.p,
            100.0 * w.lo,
            100.0 * w.hi
        );
    }
    println!(
        "\nmonolithic forward: {mono_gflops:.1} GFLOP/s (median over p); GEMM peak (1024x1024 matmul, same backend): {peak:.1} GFLOP/s ({:.0}%)",
        100.0 * mono_gflops / peak
    );
    if let Some(f) = fma_peak {
        println!(
            "vector units' peak (register-only multiply-adds on every thread at once, best of 9): {f:.1} GFLOP/s; the monolithic forward reaches {:.0}% of it",
            100.0 * mono_gflops / f
        );
    }
    println!("\nwhere the time goes per batch at p = {mid} (ms):");
    print!("{}", breakdown(rows, mid));
    if let Some(layers) = layers {
        println!(
            "\nwhere the time goes per layer at p = {mid}: each stage run layer by layer (not chunked) on the rows it gets, right after another stage or network (so caches hold that one's data: a stage 2 here finds its maps and weights colder than in a cascade); measured: the op's time / the monolithic network's; theory: its share of multiply-adds; per MAC: their ratio (1 where the cost model holds); peak: the op's GFLOP/s / the vector units' peak"
        );
        print!("{}", layers_table(layers, fma_peak));
    }
}
