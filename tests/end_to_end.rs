//! A small end-to-end run on real images (the committed Fashion-MNIST subset): the three
//! networks train, the groups come from k-means, thresholds from the held-out split, and the
//! cascades retrieve far better than chance while rejecting most images at stage 1.

use onionnet::apps::RunOptions;
use onionnet::apps::retrieval::{Splits, evaluate, groups_from, resolve_groups, rows};
use onionnet::calibrate::calibrate_model;
use onionnet::checkpoint::Checkpoint;
use onionnet::data::fashion::subset_dir;
use onionnet::onion::NetworkKind;
use onionnet::spec::Spec;
use onionnet::train::{TrainConfig, TrainJob, train};
use std::path::Path;

// One function of >100 lines on purpose: the steps run in order on one trained run,
// and a test per step would train again (minutes).
#[test]
fn retrieval_end_to_end_on_fashion_mnist() {
    let device = burn::tensor::Device::default();
    let splits = Splits::load(&subset_dir(), Some(2500), Some(500), Some(600), 7).unwrap();
    assert_eq!(
        (splits.train.len(), splits.calib.len(), splits.test.len()),
        (2000, 500, 600)
    );
    let spec = Spec::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/fashion-retrieval.toml"),
    )
    .unwrap();
    let cfg = TrainConfig {
        epochs: 3,
        quiet: true,
        ..TrainConfig::default()
    };
    let tmp = std::env::temp_dir().join(format!("onionnet-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);

    let mono = train(TrainJob {
        spec: &spec,
        kind: NetworkKind::Monolithic,
        train_set: &splits.train,
        valid_set: &splits.calib,
        cfg: &cfg,
        ckpt: &Checkpoint::new(&tmp.join("mono")),
        resume: false,
        pretrained: Vec::new(),
        device: &device,
    })
    .unwrap();
    let groups = groups_from(&mono, &spec, &splits.train, 1, &device);
    assert_eq!(groups.len(), 10);
    assert_eq!(
        groups.iter().max(),
        Some(&3),
        "4 non-empty groups: {groups:?}"
    );
    let spec = resolve_groups(&spec, &groups);
    let onion = train(TrainJob {
        spec: &spec,
        kind: NetworkKind::Onion,
        train_set: &splits.train,
        valid_set: &splits.calib,
        cfg: &cfg,
        ckpt: &Checkpoint::new(&tmp.join("onion")),
        resume: false,
        pretrained: Vec::new(),
        device: &device,
    })
    .unwrap();
    let ns = train(TrainJob {
        spec: &spec,
        kind: NetworkKind::NonSharing,
        train_set: &splits.train,
        valid_set: &splits.calib,
        cfg: &cfg,
        ckpt: &Checkpoint::new(&tmp.join("ns")),
        resume: false,
        pretrained: Vec::new(),
        device: &device,
    })
    .unwrap();

    // the saved onion reloads to the same network
    let reloaded = Checkpoint::new(&tmp.join("onion"))
        .load_model(&device)
        .unwrap();
    let x = splits.test.batch(&(0..8).collect::<Vec<_>>(), &device);
    let (a, b) = (onion.scores_all(&x), reloaded.scores_all(&x));
    for (u, v) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((u - v).abs() < 1e-6);
    }

    let tpr = 0.95;
    let c_onion = calibrate_model(
        &onion,
        &splits.calib,
        &onionnet::calibrate::targets(&[tpr], None),
        &device,
    )
    .unwrap();
    let c_ns = calibrate_model(
        &ns,
        &splits.calib,
        &onionnet::calibrate::targets(&[tpr], None),
        &device,
    )
    .unwrap();
    let models = vec![
        (&mono, vec![None]),
        (&ns, c_ns.into_iter().map(Some).collect()),
        (&onion, c_onion.into_iter().map(Some).collect()),
    ];
    let out = evaluate(
        &models,
        &splits.test,
        1,
        RunOptions {
            batch: 128,
            pool: 1,
            engine: onionnet::infer::EngineKind::Own,
            audit: None,
        },
        &device,
        true,
    )
    .unwrap();
    let table = rows(&spec, &out);
    assert_eq!(table.len(), 3);

    // auditing a tenth of the rejected images: on the test split the live TPR's interval
    // holds the TPR measured with labels (within 0.02: the audit counts what the last stage
    // calls positive, the labels what is); on a shifted stream (contrast inverted) whose true
    // TPR falls far below the target, the interval lies below it too
    let audit_run = RunOptions {
        batch: 128,
        pool: 1,
        engine: onionnet::infer::EngineKind::Own,
        audit: Some(0.1),
    };
    let onion_only = vec![models[2].clone()];
    let audited = evaluate(&onion_only, &splits.test, 1, audit_run, &device, true).unwrap();
    let a = audited[0].audit.expect("audited");
    let (lo, hi) = a.interval().unwrap();
    let reached = audited[0].reached_tpr.unwrap();
    assert!(
        a.audited > 0 && lo <= reached + 0.02 && reached - 0.02 <= hi,
        "{a:?} {lo}-{hi}, labels {reached}"
    );
    let mut shifted = splits.test.clone();
    for v in &mut shifted.images {
        *v = -*v;
    }
    let drifted = evaluate(&onion_only, &shifted, 1, audit_run, &device, true).unwrap();
    let (reached, a) = (drifted[0].reached_tpr.unwrap(), drifted[0].audit.unwrap());
    let (_, hi) = a.interval().unwrap();
    assert!(
        reached < 0.9 && hi < tpr,
        "shifted: labels {reached}, audit {a:?} up to {hi}"
    );
    for r in &table {
        let map = r.metric.unwrap();
        // chance AP is about 0.1 (one class in ten)
        assert!(map > 0.6, "{}: mAP {map}", r.network);
    }
    for r in &table[1..] {
        let pass = r.pass_pct.unwrap();
        assert!(
            pass > 10.0 && pass < 70.0,
            "{}: {pass}% pass stage 1",
            r.network
        );
        let reached = r.reached_tpr.unwrap();
        assert!(
            (reached - tpr).abs() < 0.06,
            "{}: reached TPR {reached} for target {tpr}",
            r.network
        );
        assert!(
            r.speedup_theory.unwrap() > 1.2,
            "{}: theoretical speed-up {:?}",
            r.network,
            r.speedup_theory
        );
    }
    // burn's modules find the same: mAP and pass rates agree with the own path
    let burn = evaluate(
        &models,
        &splits.test,
        1,
        RunOptions {
            batch: 128,
            pool: 1,
            engine: onionnet::infer::EngineKind::Burn,
            audit: None,
        },
        &device,
        true,
    )
    .unwrap();
    for (a, b) in out.iter().zip(&burn) {
        assert!(
            (a.map - b.map).abs() < 1e-3,
            "{}: mAP own {} vs burn {}",
            a.kind,
            a.map,
            b.map
        );
        for (p, q) in a.pass.iter().zip(&b.pass) {
            assert!((p - q).abs() < 1e-3, "{}: pass own {p} vs burn {q}", a.kind);
        }
    }
    // survivors pooled over streams of 4 batches of 32: every image gets the scores it gets
    // in its batch, so the same APs and pass rates
    let pooled = evaluate(
        &models,
        &splits.test,
        1,
        RunOptions {
            batch: 32,
            pool: 4,
            engine: onionnet::infer::EngineKind::Own,
            audit: None,
        },
        &device,
        true,
    )
    .unwrap();
    for (a, b) in out.iter().zip(&pooled) {
        assert!(
            (a.map - b.map).abs() < 1e-6,
            "{}: mAP per batch {} vs pooled {}",
            a.kind,
            a.map,
            b.map
        );
        assert_eq!(a.pass.len(), b.pass.len());
        for (p, q) in a.pass.iter().zip(&b.pass) {
            assert!(
                (p - q).abs() < 1e-9,
                "{}: pass per batch {p} vs pooled {q}",
                a.kind
            );
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
