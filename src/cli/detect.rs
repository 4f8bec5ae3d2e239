//! `onionnet detect`: the detection experiment — compose scenes from real images, train the
//! detector with the monolithic head, the non-sharing cascade head and the onion head,
//! calibrate stage 1 on held-out scenes, and print mAP, % of proposals passing stage 1, time
//! per image and speed-ups; `--show` draws a test scene with what the onion finds.

use super::{parse_confidence, parse_tpr};
use crate::apps::detection::detector::{DetectTrainConfig, object_gate};
use crate::apps::detection::{Scenes, evaluate, proposals, rows, show};
use crate::data::scenes::SceneConfig;
use crate::pipeline;
use crate::report::{json, table};
use crate::train::TrainConfig;
use burn::tensor::Device;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Model description with a `[detector]` table (a file, or a shipped description's name; default: detection).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Directory with the Fashion-MNIST IDX files the items come from (default: Debian's
    /// dataset-fashion-mnist if installed, else the committed subset).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Where the trained detectors and thresholds go (a finished detector there is reused).
    #[arg(long, default_value = "runs/detect")]
    pub out: PathBuf,
    /// A run of a few minutes: 400 training scenes, 4 epochs, 40 held-out and 40 test scenes.
    #[arg(long)]
    pub quick: bool,
    /// Training scenes [default: 800; --quick: 400].
    #[arg(long)]
    pub train_scenes: Option<usize>,
    /// Held-out scenes for validation and calibration [default: 150; --quick: 40].
    #[arg(long)]
    pub valid_scenes: Option<usize>,
    /// Test scenes [default: 200; --quick: 40].
    #[arg(long)]
    pub test_scenes: Option<usize>,
    /// Target TPRs of stage 1 (object proposals that must pass).
    #[arg(long = "tpr", value_parser = parse_tpr, default_values_t = [0.95, 0.99])]
    pub tpr: Vec<f64>,
    /// Guarantee each target TPR at this confidence (exact Clopper–Pearson lower bound over the
    /// held-out positives) instead of reaching it as a point estimate, e.g. 0.95.
    #[arg(long, value_parser = parse_confidence)]
    pub confidence: Option<f64>,
    /// Epochs [default: 8; --quick: 4].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Scenes per SGD step.
    #[arg(long, default_value_t = 4)]
    pub scenes_per_step: usize,
    /// RoIs sampled per scene and step (a quarter of them objects).
    #[arg(long, default_value_t = 64)]
    pub rois: usize,
    /// Initial learning rate (cosine decay to 0).
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// Seed of the scenes, initialisation and sampling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Also write a PNG of a test scene with the onion's detections (first target TPR).
    #[arg(long)]
    pub show: Option<PathBuf>,
    /// Which test scene `--show` draws.
    #[arg(long, default_value_t = 0)]
    pub show_scene: usize,
    /// Inference path of the classifier head: the own path or burn's modules (the
    /// backbone always runs on burn).
    #[arg(long, value_enum, default_value_t = crate::infer::EngineKind::Own)]
    pub engine: crate::infer::EngineKind,
    /// Test scenes whose proposals go through the head as one stream: the survivors of K
    /// scenes wait for each other, so that stage 2 runs on blocks of at least half a scene's
    /// proposals (throughput, not latency; the same detections). 1: scene by scene.
    #[arg(long, default_value_t = 1)]
    pub pool: usize,
    /// Print `{"rows": [...]}` on stdout instead of the table (with `--model`: JSON Lines, one
    /// object per detection).
    #[arg(long)]
    pub json: bool,
    /// Detect on your own images instead of running the experiment: a detector written by
    /// `detect --out DIR` (then its `--network`), a model directory of one, or a shipped model
    /// (`detector`). `--show` then draws each image with its detections.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// With `--model`: which network of an output directory.
    #[arg(long, value_enum, default_value_t = crate::onion::NetworkKind::Onion)]
    pub network: crate::onion::NetworkKind,
    /// With `--model`: the images (PNG or JPEG).
    pub images: Vec<PathBuf>,
    /// With `--model`: detections scoring at least this are printed and drawn.
    #[arg(long, default_value_t = 0.5)]
    pub min_score: f32,
    /// With `--model`: the operating point, a target TPR the detector was calibrated for
    /// [default: the highest].
    #[arg(long)]
    pub target_tpr: Option<f64>,
}

impl DetectArgs {
    /// The scene counts (train, held out, test) and the training settings, checked.
    fn settings(&self) -> anyhow::Result<([usize; 3], DetectTrainConfig)> {
        let q = self.quick;
        let counts = [
            self.train_scenes.unwrap_or(if q { 400 } else { 800 }),
            self.valid_scenes.unwrap_or(if q { 40 } else { 150 }),
            self.test_scenes.unwrap_or(if q { 40 } else { 200 }),
        ];
        for (n, what) in counts
            .iter()
            .zip(["--train-scenes", "--valid-scenes", "--test-scenes"])
        {
            anyhow::ensure!(*n >= 1, "{what} {n}: at least 1 scene");
        }
        anyhow::ensure!(
            self.show_scene < counts[2],
            "--show-scene {} but there are {} test scenes",
            self.show_scene,
            counts[2]
        );
        anyhow::ensure!(self.pool >= 1, "--pool {} must be at least 1", self.pool);
        let epochs = self.epochs.unwrap_or(if q { 4 } else { 8 });
        anyhow::ensure!(
            epochs >= 1 && self.scenes_per_step >= 1 && self.rois >= 2,
            "--epochs, --scenes-per-step must be >= 1 and --rois >= 2"
        );
        anyhow::ensure!(
            self.lr.is_finite() && self.lr > 0.0,
            "--lr {} must be a positive number",
            self.lr
        );
        let cfg = DetectTrainConfig {
            base: TrainConfig {
                epochs,
                batch_size: self.scenes_per_step,
                lr: self.lr,
                seed: self.seed,
                ..TrainConfig::default()
            },
            rois_per_scene: self.rois,
            fg_fraction: 0.25,
        };
        Ok((counts, cfg))
    }
}

pub fn run(args: &DetectArgs, device: &Device) -> anyhow::Result<()> {
    if let Some(model) = &args.model {
        return super::detect_images::run(args, model, device);
    }
    anyhow::ensure!(
        args.images.is_empty(),
        "images to detect on ({}) need a trained detector: --model DIR",
        args.images[0].display()
    );
    let spec_path = args
        .spec
        .clone()
        .unwrap_or_else(|| PathBuf::from("detection"));
    let spec = crate::shipped::load_spec(&spec_path)?;
    let size = scene_size(&spec, &spec_path)?;
    let (counts, cfg) = args.settings()?;
    let scene_cfg = SceneConfig {
        size,
        ..SceneConfig::default()
    };
    let fashion = crate::data::fashion::default_dir(args.data.as_deref())?;

    eprintln!(
        "[1/5] composing scenes: Fashion-MNIST items ({}) on real photographs",
        fashion.display()
    );
    let data = Scenes::build(&fashion, counts, &scene_cfg, args.seed)?;
    let recall = |iou| {
        proposals::recall(
            &data.proposals,
            data.test.iter().flat_map(|s| &s.objects),
            iou,
        )
    };
    eprintln!(
        "  {}x{} scenes: train {} ({} objects), held out {} ({}), test {} ({}); {} sliding-window proposals per scene, recall at IoU 0.5 on the test objects {:.1}%",
        scene_cfg.size,
        scene_cfg.size,
        data.train.len(),
        objects(&data.train),
        data.valid.len(),
        objects(&data.valid),
        data.test.len(),
        objects(&data.test),
        data.proposals.len(),
        100.0 * recall(0.5)
    );
    eprintln!(
        "  training: {} epochs, {} scenes x {} RoIs per step, lr {} (cosine), seed {}",
        cfg.base.epochs, args.scenes_per_step, args.rois, args.lr, args.seed
    );
    let mut i = 1;
    let mut dets = pipeline::detection(
        &spec,
        &data,
        &cfg,
        &crate::calibrate::targets(&args.tpr, args.confidence),
        &args.out,
        device,
        |kind| {
            i += 1;
            eprintln!(
                "[{i}/5] {kind} head (backbone and head trained together; a cascade's stage-1 thresholds then on the held-out scenes)"
            );
        },
    )?;
    for (det, _) in &mut dets {
        det.engine = args.engine;
    }
    eprintln!("[5/5] the test scenes");
    let models: Vec<_> = dets.iter().map(|(d, c)| (d, c.clone())).collect();
    let outcomes = evaluate(&models, &data.test, &data.proposals, args.pool, device)?;
    let r = rows(&spec, &outcomes, data.proposals.len(), "composed scenes");
    if let Some(path) = &args.show {
        let (det, cals) = &models[2];
        let cal = cals[0].as_ref().expect("a cascade has thresholds");
        draw_scene(path, det, cal, &spec, &data, args.show_scene, device)?;
    }
    if args.json {
        println!("{}", json::to_string(&r));
    } else {
        println!(
            "\ndetection on {} composed test scenes{}, {} objects ({} proposals each, recall {:.1}% at IoU 0.5, {:.1}% at IoU 0.7):",
            data.test.len(),
            if args.pool > 1 {
                format!(" (head survivors pooled over {} scenes)", args.pool)
            } else {
                String::new()
            },
            objects(&data.test),
            data.proposals.len(),
            100.0 * recall(0.5),
            100.0 * recall(0.7)
        );
        print!("{}", table::to_string(&r));
        print_details(&outcomes, args.tpr[0]);
    }
    eprintln!(
        "\ndetectors and thresholds saved under {}",
        args.out.display()
    );
    Ok(())
}

/// The side of the square grey scenes the description's detector reads; detection has 11
/// classes (background and the 10 Fashion-MNIST classes).
fn scene_size(spec: &crate::spec::Spec, path: &std::path::Path) -> anyhow::Result<usize> {
    let layout = crate::apps::detection::detector::layout(spec)?;
    anyhow::ensure!(
        layout.image.channels == 1 && layout.image.height == layout.image.width,
        "{}: detector.image must be 1 channel and square (grey composed scenes), it is {:?}",
        path.display(),
        layout.image.dims()
    );
    anyhow::ensure!(
        spec.classes == 11,
        "{}: classes = {} but detection has 11 (background + 10 Fashion-MNIST classes)",
        path.display(),
        spec.classes
    );
    Ok(layout.image.height)
}

/// The onion's detections on test scene `index`, drawn to `path`.
fn draw_scene(
    path: &std::path::Path,
    det: &crate::apps::detection::detector::Detector,
    cal: &crate::calibrate::Calibration,
    spec: &crate::spec::Spec,
    data: &Scenes,
    index: usize,
    device: &Device,
) -> anyhow::Result<()> {
    let scene = &data.test[index];
    let out = det.detect(scene, &data.proposals, &object_gate(spec, cal), device);
    let title = format!(
        "onion, TPR {}: detections >= 0.5 (red), objects (green); test scene {index}",
        cal.target_tpr
    );
    show::draw(path, scene, &out.detections, 0.5, &title)?;
    eprintln!("  wrote {}", path.display());
    Ok(())
}

fn objects(scenes: &[crate::data::scenes::Scene]) -> usize {
    scenes.iter().map(|s| s.objects.len()).sum()
}

/// Where the time goes per image, and the AP of each class at the first target TPR `tpr`.
fn print_details(outcomes: &[crate::apps::detection::Outcome], tpr: f64) {
    println!(
        "\nwhere the time goes, ms per image (backbone | RoI pooling | head stages | head overhead | NMS):"
    );
    for o in outcomes {
        let t = o.target_tpr.map_or("-".into(), |t| t.to_string());
        let b = o.breakdown;
        println!(
            "  {:<12} TPR {:<6} {:>7.2} | {:>6.2} | {:>7.2} | {:>5.2} | {:>5.2}",
            o.kind.name(),
            t,
            b[0],
            b[1],
            b[2],
            b[3],
            b[4]
        );
    }
    println!("\nAP per class (%), at the first target TPR for the cascades:");
    let names = crate::data::fashion::CLASS_NAMES;
    for o in outcomes
        .iter()
        .filter(|o| o.target_tpr.is_none() || o.target_tpr == Some(tpr))
    {
        let aps: Vec<String> = o
            .aps
            .iter()
            .zip(names)
            .map(|(a, n)| format!("{n} {:.1}", 100.0 * a))
            .collect();
        println!("  {:<12} {}", o.kind.name(), aps.join(", "));
    }
}
