//! A tiny end-to-end patch-matching run on real photographs and the Graffiti pair: 2ch-deep
//! learns (its hinge loss falls), the onion trains jointly, stage 1 is calibrated on held-out
//! pairs, and both test settings produce FPR95 rows.

use onionnet::apps::RunOptions;
use onionnet::apps::patches::{evaluate, rows};
use onionnet::calibrate::calibrate_model;
use onionnet::checkpoint::Checkpoint;
use onionnet::data::patches::{
    TEST_PHOTOS, TRAIN_PHOTOS, data_dir, generate_pairs, graffiti, load_photos,
};
use onionnet::onion::NetworkKind;
use onionnet::spec::Spec;
use onionnet::train::{TrainConfig, TrainJob, train};
use std::path::Path;

// One function of >100 lines on purpose: the steps run in order on one trained run,
// and a test per step would train again (minutes).
#[test]
fn patch_matching_end_to_end() {
    let device = burn::tensor::Device::default();
    let spec = Spec::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/2ch-deep.toml"))
        .unwrap();
    let photos = data_dir().unwrap().join("photos");
    let train_photos = load_photos(&photos, &TRAIN_PHOTOS).unwrap();
    let (train_set, _) = generate_pairs(&train_photos, 400, 1);
    let (calib, _) = generate_pairs(&train_photos, 200, 2);
    let (balanced, _) = generate_pairs(&load_photos(&photos, &TEST_PHOTOS).unwrap(), 100, 3);
    let graf = graffiti(&data_dir().unwrap().join("graffiti"), 16, 4.0).unwrap();
    let cfg = TrainConfig {
        epochs: 3,
        lr: 0.01,
        quiet: true,
        ..TrainConfig::default()
    };
    let tmp = std::env::temp_dir().join(format!("onionnet-patches-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);

    let mono = train(TrainJob {
        spec: &spec,
        kind: NetworkKind::Monolithic,
        train_set: &train_set,
        valid_set: &calib,
        cfg: &cfg,
        ckpt: &Checkpoint::new(&tmp.join("m")),
        resume: false,
        pretrained: Vec::new(),
        device: &device,
    })
    .unwrap();
    let log = Checkpoint::new(&tmp.join("m")).load_state().unwrap().log;
    let (first, last) = (log[0][0].stages[0][0], log[0][2].stages[0][0]);
    assert!(last < first - 0.05, "hinge loss falls: {first} -> {last}");
    let onion = train(TrainJob {
        spec: &spec,
        kind: NetworkKind::Onion,
        train_set: &train_set,
        valid_set: &calib,
        cfg: &cfg,
        ckpt: &Checkpoint::new(&tmp.join("o")),
        resume: false,
        pretrained: Vec::new(),
        device: &device,
    })
    .unwrap();
    let cal = calibrate_model(
        &onion,
        &calib,
        &onionnet::calibrate::targets(&[0.99], None),
        &device,
    )
    .unwrap();
    assert_eq!(cal[0].thresholds.len(), 1, "one early stage");
    Checkpoint::new(&tmp.join("o"))
        .save_thresholds(&cal)
        .unwrap();
    let models = vec![
        (&mono, vec![None]),
        (&onion, cal.into_iter().map(Some).collect()),
    ];
    for (name, data) in [("balanced", &balanced), ("graffiti", &graf.pairs)] {
        if data.labels.iter().all(|&l| l == 0) {
            continue;
        }
        // batches of 64, survivors pooled over `pool` of them
        let run = |pool: usize| {
            let own = onionnet::infer::EngineKind::Own;
            evaluate(
                &models,
                data,
                1,
                RunOptions {
                    batch: 64,
                    pool,
                    engine: own,
                    audit: None,
                },
                &device,
                name,
            )
            .unwrap()
        };
        let out = run(1);
        let r = rows(&spec, &out, name);
        assert_eq!(r.len(), 2);
        for row in &r {
            let f = row.metric.unwrap();
            assert!(
                (0.0..=1.0).contains(&f),
                "{name} {}: FPR95 {f}",
                row.network
            );
            assert_eq!(row.setting.as_deref(), Some(name));
        }
        let p = r[1].pass_pct.unwrap();
        assert!(p > 0.0 && p <= 100.0);
        // survivors pooled over streams of 3 batches: the same scores, so the same figures
        let pooled = run(3);
        for (a, b) in out.iter().zip(&pooled) {
            // (stage 1 runs on the same batches; stage 2 on other blocks of rows)
            assert_eq!(
                (a.pass, a.reached_tpr),
                (b.pass, b.reached_tpr),
                "{name} {}: per batch vs pooled",
                a.kind
            );
            assert!(
                (a.fpr95 - b.fpr95).abs() < 1e-6,
                "{name} {}: FPR95 per batch {} vs pooled {}",
                a.kind,
                a.fpr95,
                b.fpr95
            );
        }
    }
    match_with_the_trained_onion(&tmp);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `onionnet match` with the onion trained above: an image against itself finds its own
/// corners, the picture is written, and what is not a patch matcher or has no corner is
/// refused.
fn match_with_the_trained_onion(tmp: &Path) {
    let graf = data_dir().unwrap().join("graffiti");
    let g1 = graf.join("graf1.png");
    let (model, png) = (tmp.join("o"), tmp.join("m.png"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let run = |args: &[String]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_onionnet"))
            .args(args)
            .env("ONIONNET_CACHE", tmp.join("cache"))
            .output()
            .unwrap()
    };
    let base = |a: &Path, b: &Path| {
        vec![
            "match".to_string(),
            "--model".into(),
            s(&model),
            s(a),
            s(b),
            "--corners".into(),
            "40".into(),
        ]
    };
    let mut args = base(&g1, &g1);
    args.extend(["--json".into(), "--show".into(), s(&png)]);
    let o = run(&args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("40 and 40 corners, 1600 pairs"), "{err}");
    let matches: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let same = matches
        .iter()
        .filter(|m| m["x1"] == m["x2"] && m["y1"] == m["y2"])
        .count();
    // mutual best: no corner twice on either side
    let mut firsts: Vec<_> = matches
        .iter()
        .map(|m| (m["x1"].clone(), m["y1"].clone()))
        .collect();
    firsts.dedup();
    assert_eq!(firsts.len(), matches.len());
    assert!(
        same * 2 >= 40,
        "an image against itself: {same} of 40 corners matched to themselves ({} matches)",
        matches.len()
    );
    let pic = image::open(&png).unwrap();
    assert!(
        pic.height() > 480 && pic.width() > 2 * 480,
        "{:?}",
        (pic.width(), pic.height())
    );

    // a 60 x 60 image has no corner 40 pixels from its border
    let small = tmp.join("small.png");
    image::GrayImage::from_fn(60, 60, |x, y| image::Luma([((x * y) % 256) as u8]))
        .save(&small)
        .unwrap();
    let o = run(&base(&g1, &small));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("small.png") && err.contains("no corner in image 2"),
        "{err}"
    );
    // the retrieval model is not a patch matcher
    let mut args = base(&g1, &g1);
    args[2] = "fashion".into();
    let o = run(&args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("a patch matcher has input [2, 64, 64]"),
        "{err}"
    );
    // an operating point it was not calibrated for
    let mut args = base(&g1, &g1);
    args.extend(["--target-tpr".into(), "0.5".into()]);
    let o = run(&args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no thresholds for target TPR 0.5 (calibrated: 0.99"),
        "{err}"
    );
}

/// `patches --audit`: with the shipped 2ch-deep onion at TPR 0.99 (thresholds from synthetic
/// pairs), half the pairs stage 1 rejects go through stage 2 anyway, on Graffiti and on
/// synthetic pairs from other photographs: the counts agree with the cascade's pass rate, and
/// a network run without thresholds is not audited.
#[test]
fn the_patch_audit_counts_what_stage_1_rejected() {
    let device = burn::tensor::Device::flex();
    let dir = onionnet::models::resolve(Path::new("2ch-deep"), NetworkKind::Onion).unwrap();
    let ckpt = Checkpoint::new(&dir);
    let model = ckpt.load_model(&device).unwrap();
    let cal = onionnet::models::operating_point(&ckpt, &model, Some(0.99)).unwrap();
    let graf = graffiti(&data_dir().unwrap().join("graffiti"), 40, 4.0).unwrap();
    let photos = data_dir().unwrap().join("photos");
    let (synthetic, _) = generate_pairs(&load_photos(&photos, &TEST_PHOTOS).unwrap(), 400, 9);
    let models = vec![(&model, vec![cal])];
    for (name, data) in [("graffiti", &graf.pairs), ("synthetic", &synthetic)] {
        let run = |audit| RunOptions {
            batch: 256,
            pool: 1,
            engine: onionnet::infer::EngineKind::Own,
            audit,
        };
        let out = evaluate(&models, data, 1, run(Some(0.5)), &device, name).unwrap();
        let a = out[0].audit.expect("a calibrated cascade is audited");
        let passed = (out[0].pass * data.len() as f64).round() as usize;
        assert_eq!(a.rejected, data.len() - passed, "{name}");
        assert!(a.rejected > 0, "{name}: stage 1 rejects pairs");
        assert_eq!(
            a.audited,
            (a.rejected as f64 * 0.5).round() as usize,
            "{name}"
        );
        assert!(
            a.found <= a.audited && a.confirmed <= passed,
            "{name}: {a:?}"
        );
        assert!(a.seconds > 0.0);
        // the uncalibrated (monolithic-like) run is not audited
        let open = vec![(&model, vec![None])];
        let o = evaluate(&open, data, 1, run(Some(0.5)), &device, name).unwrap();
        assert!(o[0].audit.is_none());
    }
}
