//! Using a trained cascade from the library: load an onion (or non-sharing cascade) trained by
//! `onionnet train` and calibrated by `onionnet calibrate`, and ask it for the test images of
//! one class — stage 1 rejects most of them on its group score, stage 2 scores the rest.
//!
//! ```sh
//! cargo run --release --example score_batch -- runs/o [CLASS] [DATA_DIR]
//! ```
//! (`runs/o` as made by the README's "steps one by one"; CLASS a fine class index, default 1,
//! Trouser; DATA_DIR default `data/fashion-mnist-subset`).

use burn::tensor::Device;
use onionnet::apps::retrieval::{Splits, query_gate};
use onionnet::cascade::run;
use onionnet::checkpoint::Checkpoint;
use onionnet::data::fashion::CLASS_NAMES;
use onionnet::infer::FastModel;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "runs/o".into()));
    let class: usize = args.next().map_or(Ok(1), |c| c.parse())?;
    let data = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "data/fashion-mnist-subset".into()),
    );

    let device = Device::default();
    let ckpt = Checkpoint::new(&dir);
    let model = ckpt.load_model(&device)?;
    let thresholds = ckpt.load_thresholds(&model.spec)?;
    let Some(cal) = thresholds.calibrations.first() else {
        anyhow::bail!(
            "{}: no thresholds; run `onionnet calibrate` first",
            dir.display()
        );
    };
    anyhow::ensure!(
        class < model.spec.classes,
        "class {class}: the description has {} classes",
        model.spec.classes
    );

    // the images, normalised as in training (the same splits `onionnet eval` uses)
    let splits = Splits::load(&data, None, None, Some(32), 7)?;
    let all: Vec<usize> = (0..splits.test.len()).collect();
    let batch = splits.test.batch(&all, &device);

    // a query for one class: each early stage passes a row on the score of that class's
    // s-class only, at the calibrated threshold
    let gate = query_gate(&model, Some(cal), class);
    let stages = model.num_stages();

    // the own inference path (weights packed once), through the cascade runner
    let fast = FastModel::from_model(&model);
    let out = run(&fast, fast.input(&batch), &gate);

    let last = stages - 1;
    let classes = model.stage(last).classes;
    println!(
        "query: {} (target TPR {}), {} images",
        CLASS_NAMES.get(class).unwrap_or(&"?"),
        cal.target_tpr,
        splits.test.len()
    );
    println!("image  label          passed stage 1  top class      score");
    for (i, &label) in splits.test.labels.iter().enumerate() {
        let name = |c: usize| CLASS_NAMES.get(c).copied().unwrap_or("?");
        if out.reached[i] < last {
            println!("{i:5}  {:13}  no", name(label));
            continue;
        }
        let row = &out.scores[last][i * classes..(i + 1) * classes];
        let (top, score) = row
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (c, &v)| if v > b.1 { (c, v) } else { b });
        println!(
            "{i:5}  {:13}  yes             {:13}  {score:.3}",
            name(label),
            name(top)
        );
    }
    let passed = out.reached.iter().filter(|&&r| r == last).count();
    println!(
        "{passed} of {} passed stage 1; stage 1 {:.2} ms, stage 2 {:.2} ms",
        out.reached.len(),
        out.timing
            .stage
            .first()
            .map_or(0.0, |d| d.as_secs_f64() * 1e3),
        out.timing
            .stage
            .get(1)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    Ok(())
}
