//! An interrupted training run resumes where it stopped and ends where an uninterrupted run
//! ends (alone in its own test binary: weight initialisation uses burn's global seed).

use onionnet::apps::retrieval::Splits;
use onionnet::checkpoint::Checkpoint;
use onionnet::data::fashion::subset_dir;
use onionnet::onion::NetworkKind;
use onionnet::spec::Spec;
use onionnet::train::{TrainConfig, TrainJob, train};
use std::path::Path;

// One function of >100 lines on purpose: the steps run in order on one trained run,
// and a test per step would train again (minutes).
#[test]
fn interrupted_training_resumes_to_the_same_network() {
    let device = burn::tensor::Device::default();
    let splits = Splits::load(&subset_dir(), Some(900), Some(300), Some(64), 3).unwrap();
    let mut spec_text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/fashion-retrieval.toml"),
    )
    .unwrap();
    spec_text = spec_text.replace(
        "label_map = \"kmeans\"",
        "label_map = [0, 1, 0, 0, 0, 2, 0, 2, 3, 2]",
    );
    let spec = Spec::from_toml(&spec_text, Path::new("fashion-retrieval.toml")).unwrap();
    let tmp = std::env::temp_dir().join(format!("onionnet-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let cfg = TrainConfig {
        epochs: 3,
        quiet: true,
        ..TrainConfig::default()
    };

    let straight = Checkpoint::new(&tmp.join("straight"));
    let full = train(TrainJob {
        spec: &spec,
        kind: NetworkKind::Onion,
        train_set: &splits.train,
        valid_set: &splits.calib,
        cfg: &cfg,
        ckpt: &straight,
        resume: false,
        pretrained: Vec::new(),
        device: &device,
    })
    .unwrap();

    let broken = Checkpoint::new(&tmp.join("broken"));
    let first = TrainConfig {
        stop_after: Some(1),
        ..cfg.clone()
    };
    train(TrainJob {
        spec: &spec,
        kind: NetworkKind::Onion,
        train_set: &splits.train,
        valid_set: &splits.calib,
        cfg: &first,
        ckpt: &broken,
        resume: false,
        pretrained: Vec::new(),
        device: &device,
    })
    .unwrap();
    assert_eq!(broken.load_state().unwrap().epochs_done, vec![1]);
    let resumed = train(TrainJob {
        spec: &spec,
        kind: NetworkKind::Onion,
        train_set: &splits.train,
        valid_set: &splits.calib,
        cfg: &cfg,
        ckpt: &broken,
        resume: true,
        pretrained: Vec::new(),
        device: &device,
    })
    .unwrap();
    let state = broken.load_state().unwrap();
    assert_eq!(state.epochs_done, vec![3]);
    assert_eq!(
        state.log[0].iter().map(|e| e.epoch).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    let x = splits.test.batch(&(0..64).collect::<Vec<_>>(), &device);
    let (a, b) = (full.scores_all(&x), resumed.scores_all(&x));
    let worst = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(u, v)| (u - v).abs())
        .fold(0f32, f32::max);
    assert!(
        worst < 1e-3,
        "resumed network differs from the uninterrupted one by {worst}"
    );

    // resuming under another description is refused, naming the checkpoint's spec
    let other = Spec::from_toml(
        &spec_text.replace("split = [8, 24]", "split = [16, 16]"),
        Path::new("other.toml"),
    )
    .unwrap();
    let err = train(TrainJob {
        spec: &other,
        kind: NetworkKind::Onion,
        train_set: &splits.train,
        valid_set: &splits.calib,
        cfg: &cfg,
        ckpt: &broken,
        resume: true,
        pretrained: Vec::new(),
        device: &device,
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("spec.toml") && err.to_string().contains("other.toml"),
        "{err}"
    );
    // ... and so is resuming with other settings or other data
    let faster = TrainConfig {
        lr: 0.1,
        ..cfg.clone()
    };
    let err = train(TrainJob {
        spec: &spec,
        kind: NetworkKind::Onion,
        train_set: &splits.train,
        valid_set: &splits.calib,
        cfg: &faster,
        ckpt: &broken,
        resume: true,
        pretrained: Vec::new(),
        device: &device,
    })
    .unwrap_err();
    assert!(err.to_string().contains("train.json"), "{err}");
    let fewer = splits.train.take(100);
    let err = train(TrainJob {
        spec: &spec,
        kind: NetworkKind::Onion,
        train_set: &fewer,
        valid_set: &splits.calib,
        cfg: &cfg,
        ckpt: &broken,
        resume: true,
        pretrained: Vec::new(),
        device: &device,
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("600 training examples (this run: 100)"),
        "{err}"
    );
    // a description of another number of classes than the data: refused before training
    // (it used to train, then panic in evaluation)
    for classes in ["classes = 12", "classes = 5"] {
        let other = Spec::from_toml(
            &spec_text
                .replace(
                    "label_map = [0, 1, 0, 0, 0, 2, 0, 2, 3, 2]",
                    "label_map = \"kmeans\"",
                )
                .replacen("classes = 10", classes, 1),
            Path::new("other-classes.toml"),
        )
        .unwrap();
        let err = train(TrainJob {
            spec: &other,
            kind: NetworkKind::Monolithic,
            train_set: &splits.train,
            valid_set: &splits.calib,
            cfg: &cfg,
            ckpt: &Checkpoint::new(&tmp.join(classes)),
            resume: false,
            pretrained: Vec::new(),
            device: &device,
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("other-classes.toml field classes") && err.contains("10 classes"),
            "{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
