//! `retrieve --audit`: auditing every rejected image finds exactly the positives the last
//! stage would have found had every image gone through (the full run), and a fraction audits
//! that fraction of the rejects; with the shipped retrieval onion on PNGs of the test split.

use burn::tensor::Device;
use onionnet::apps::retrieve::{Operating, ScanOptions, scan};
use onionnet::infer::EngineKind;
use onionnet::trained::Trained;
use std::path::PathBuf;

mod common;
use common::{onionnet, stderr, tmp};

/// The first `n` test images of the committed subset as PNGs in a fresh folder.
fn pngs(name: &str, n: usize) -> (PathBuf, Vec<PathBuf>) {
    pngs_with(name, n, |v| v)
}

/// The same, each pixel (in [0, 1]) through `shift` first.
fn pngs_with(name: &str, n: usize, mut shift: impl FnMut(f32) -> f32) -> (PathBuf, Vec<PathBuf>) {
    let d = tmp(name);
    let test = onionnet::data::fashion::load_split(&onionnet::data::fashion::subset_dir(), "t10k")
        .unwrap();
    let files = (0..n)
        .map(|i| {
            let px: Vec<u8> = test.images[i * 784..(i + 1) * 784]
                .iter()
                .map(|&v| (shift(v).clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect();
            let p = d.join(format!("{i:04}.png"));
            image::GrayImage::from_raw(28, 28, px)
                .unwrap()
                .save(&p)
                .unwrap();
            p
        })
        .collect();
    (d, files)
}

#[test]
fn auditing_every_reject_finds_what_the_full_run_finds() {
    let (d, files) = pngs("audit-all", 300);
    let device = Device::default();
    let mut t = Trained::load("fashion", &device).unwrap();
    let queries = [t.class("Trouser").unwrap(), t.class("Bag").unwrap()];
    let run = |fraction: f64, t: &Trained| {
        let op = Operating {
            model: &t.model,
            preprocess: &t.preprocess,
            calibration: t.calibration.as_ref(),
        };
        let opts = ScanOptions {
            batch: 64,
            top: 5,
            engine: EngineKind::Own,
            audit: Some(fraction),
        };
        scan(op, &queries, vec![d.clone()], opts, &device, |_| {})
    };
    let all = run(1.0, &t);
    let some = run(0.3, &t);
    // the full run: no thresholds, every image through every stage
    let x = t.input_files(&files).unwrap();
    t.calibration = None;
    for (qi, &q) in queries.iter().enumerate() {
        let full = t.query(q, &x).iter().filter(|a| a.retrieved).count();
        let a = all.audit[qi];
        assert_eq!(a.rejected, all.rejected[qi]);
        assert!(a.rejected > 100, "stage 1 rejects most images: {a:?}");
        assert_eq!(a.audited, a.rejected, "fraction 1 audits every reject");
        assert_eq!(a.confirmed, all.retrieved[qi]);
        assert_eq!(a.confirmed + a.found, full, "query {q}: {a:?}");
        // a fraction: round(0.3 x rejects) of each batch (5 batches of at most 64)
        let b = some.audit[qi];
        assert_eq!(b.rejected, a.rejected);
        let want = 0.3 * b.rejected as f64;
        assert!(
            (b.audited as f64 - want).abs() <= 5.0,
            "{} vs {want}",
            b.audited
        );
        assert!(b.found <= a.found);
    }
    assert!(all.audit_seconds > 0.0);

    let o = onionnet(&[
        "retrieve",
        "--model",
        "fashion",
        "--query",
        "Trouser",
        "--audit",
        "0.5",
        d.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("audit: live TPR"), "{}", stderr(&o));
    assert!(stderr(&o).contains("(not in images/s)"), "{}", stderr(&o));
    let o = onionnet(&[
        "retrieve", "--model", "fashion", "--query", "Bag", "--audit", "2", ".",
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "clap refuses a fraction above 1: {}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// A shifted stream is flagged: the shipped onion was calibrated on clean Fashion-MNIST; on
/// the same test images with strong pixel noise stage 1 rejects many images the last stage
/// calls sneakers, and the live TPR's interval falls below the target. On the clean images
/// it does not.
#[test]
fn the_audit_flags_a_shifted_stream() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let (noisy, _) = pngs_with("audit-noisy", 2000, |v| v + rng.random_range(-0.4f32..0.4));
    let (clean, _) = pngs("audit-clean", 2000);
    let audit = |d: &PathBuf| {
        let o = onionnet(&[
            "retrieve",
            "--model",
            "fashion",
            "--query",
            "Sneaker",
            "--target-tpr",
            "0.99",
            "--audit",
            "1",
            d.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let e = audit(&noisy);
    assert!(
        e.contains("warning: Sneaker: the live TPR is below the target"),
        "{e}"
    );
    let e = audit(&clean);
    assert!(
        e.contains("audit: live TPR") && !e.contains("warning"),
        "{e}"
    );
    for d in [noisy, clean] {
        let _ = std::fs::remove_dir_all(d);
    }
}
