//! The synthetic benchmark's bookkeeping (not its speed: timings are measured by `onionnet
//! bench`, never asserted in tests) and its PNG plot.

use onionnet::bench::{BenchConfig, EngineKind, max_deviation, run_bench};
use onionnet::report::plot::{Series, line_plot};
use onionnet::spec::Spec;
use std::path::Path;

#[test]
fn bench_rows_follow_the_cost_model_and_force_p() {
    let spec = Spec::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/fashion-retrieval.toml"),
    )
    .unwrap();
    // every batch on its own on both engines, and survivors pooled over 3 batches; each
    // measured run after an unmeasured one of its own network, or (cold) not
    for (engine, pool, cold) in [
        (EngineKind::Own, 1, false),
        (EngineKind::Burn, 1, true),
        (EngineKind::Own, 3, false),
        (EngineKind::Own, 1, true),
    ] {
        let cfg = BenchConfig {
            batch: 20,
            warmup: 0,
            reps: 1,
            // 0.33 x 20 = 6.6: 7 rows pass, so the cost model is read at 0.35
            ps: vec![0.0, 0.33, 1.0],
            seed: 3,
            quiet: true,
            engine,
            pool,
            cold,
        };
        let rows = run_bench(&spec, &cfg, &burn::tensor::Device::default());
        assert_eq!(rows.len(), 9);
        for r in &rows {
            assert!(r.ms_per_example > 0.0 && r.measured_ratio.is_finite());
            // one repetition: the median's interval is that run
            assert_eq!(
                (r.measured_lo, r.measured_hi),
                (r.measured_ratio, r.measured_ratio)
            );
            let forced = [(0.0, 0.0), (0.33, 0.35), (1.0, 1.0)];
            let want = forced.iter().find(|f| f.0 == r.p).unwrap().1;
            assert!(
                (r.p_forced - want).abs() < 1e-12,
                "p {} forced {}",
                r.p,
                r.p_forced
            );
            match r.network.as_str() {
                "monolithic" => assert_eq!(r.theory_ratio, 1.0),
                // T_onion(p) / T_mono from `onionnet cost`: (307456 + p 3181184) / 4241152
                "onion" => assert!(
                    (r.theory_ratio - (307456.0 + r.p_forced * 3181184.0) / 4241152.0).abs()
                        < 1e-12
                ),
                _ => {}
            }
            // p = 0: stage 2 never runs; otherwise it runs (on exactly round(p * 20) rows)
            if r.network != "monolithic" {
                let ran = r.breakdown.stage[1] > std::time::Duration::ZERO;
                assert_eq!(ran, r.p > 0.0, "{} at p = {}", r.network, r.p);
            }
        }
        assert!(max_deviation(&rows, "onion").is_finite());
    }
}

#[test]
fn plot_writes_a_png() {
    let path = std::env::temp_dir().join(format!("onionnet-plot-{}.png", std::process::id()));
    let s = |label: &str, dashed| Series {
        label: label.into(),
        points: vec![(0.0, 0.1), (0.5, 0.5), (1.0, 0.9)],
        colour: 1,
        dashed,
        // (the measured curve with intervals, one of them open: not drawn)
        bars: if dashed {
            Vec::new()
        } else {
            vec![(0.0, 0.05, 0.15), (0.5, 0.4, 0.6), (1.0, f64::NAN, 1.0)]
        },
    };
    line_plot(
        &path,
        "test",
        "p",
        "ratio",
        &[s("measured", false), s("theory", true)],
    )
    .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 5000, "a real picture, {} bytes", bytes.len());
    let _ = std::fs::remove_file(&path);
}
