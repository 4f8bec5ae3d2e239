//! Training killed with SIGKILL at random moments: the checkpoint directory is always either
//! without a network yet, or at a completed epoch — loadable — and `--resume` then finishes
//! with the network an uninterrupted run trains.

use onionnet::checkpoint::Checkpoint;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::tmp;

const EPOCHS: &str = "3";

/// The retrieval description with fixed stage-1 groups, beside the runs.
fn spec(d: &Path) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/fashion-retrieval.toml"),
    )
    .unwrap()
    .replace(
        "label_map = \"kmeans\"",
        "label_map = [0, 1, 0, 0, 0, 2, 0, 2, 3, 2]",
    );
    let p = d.join("groups.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// `onionnet train` of the non-sharing cascade (two modules trained one after the other).
fn train(dir: &Path, resume: bool) -> Command {
    let spec = spec(dir.parent().unwrap());
    let mut c = Command::new(env!("CARGO_BIN_EXE_onionnet"));
    c.args([
        "train",
        &spec,
        "--network",
        "non-sharing",
        "--out",
        dir.to_str().unwrap(),
        "--epochs",
        EPOCHS,
        "--data",
        onionnet::data::fashion::subset_dir().to_str().unwrap(),
        "--train-limit",
        "400",
        "--calib-size",
        "100",
        "--test-limit",
        "64",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if resume {
        c.arg("--resume");
    }
    c
}

/// Stage scores of the network in `dir` on the first 64 test images.
fn scores(dir: &Path) -> Vec<f32> {
    let device = burn::tensor::Device::default();
    let model = Checkpoint::new(dir).load_model(&device).expect("loadable");
    let splits = onionnet::apps::retrieval::Splits::load(
        &onionnet::data::fashion::subset_dir(),
        Some(400),
        Some(100),
        Some(64),
        7,
    )
    .unwrap();
    let x = splits.test.batch(&(0..64).collect::<Vec<_>>(), &device);
    model.scores_all(&x).into_iter().flatten().collect()
}

#[test]
fn killed_training_leaves_a_loadable_checkpoint_that_resumes_to_the_same_network() {
    let d = tmp("interrupt");
    let reference = d.join("reference");
    let t0 = std::time::Instant::now();
    assert!(train(&reference, false).status().unwrap().success());
    // (the run's length only spreads the kills over it; any moment is a valid one)
    let span = t0.elapsed().as_millis() as u64;
    let want = scores(&reference);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut states = Vec::new();
    for k in 0..6 {
        let dir = d.join(format!("killed{k}"));
        let mut child = train(&dir, false).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(0..span)));
        child.kill().unwrap();
        child.wait().unwrap();
        let ck = Checkpoint::new(&dir);
        let done = if ck.exists() {
            let state = ck.load_state().expect("train.json whole");
            let e: usize = state.epochs_done.iter().sum();
            assert!(e <= 6, "epochs_done {:?}", state.epochs_done);
            if state.epochs_done.iter().all(|&e| e > 0) {
                ck.load_model(&burn::tensor::Device::default())
                    .expect("a completed epoch loads");
            }
            e
        } else {
            0
        };
        states.push(done);
        let o = train(&dir, done > 0 || ck.exists()).status().unwrap();
        assert!(o.success(), "resume after a kill at epoch {done}");
        let got = scores(&dir);
        let worst = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-3,
            "killed at epoch {done}: resumed network differs by {worst}"
        );
        // no temporary file left beside the checkpoint's files
        for f in std::fs::read_dir(&dir).unwrap() {
            let name = f.unwrap().file_name();
            assert!(!name.to_string_lossy().ends_with(".tmp"), "{name:?}");
        }
    }
    eprintln!("epochs completed when killed: {states:?}");
    let _ = std::fs::remove_dir_all(&d);
}
