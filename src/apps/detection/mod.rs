//! Proposal-based object detection (the paper's second application): Fast R-CNN with the
//! fully connected classifier replaced by an onion (stage 1 = object vs background on every
//! proposal, stage 2 = the class for the proposals that pass).

pub mod detector;
pub mod metrics;
pub mod new_images;
pub mod proposals;
pub mod roi_pool;
pub mod show;

use crate::calibrate::{Calibration, calibrate_model};
use crate::cost::speedup;
use crate::data::Dataset;
use crate::data::patches::{TEST_PHOTOS, TRAIN_PHOTOS, data_dir, load_photos};
use crate::data::scenes::{BoxF, Scene, SceneConfig, compose};
use crate::error::{CascadeError, DataError};
use crate::onion::NetworkKind;
use crate::report::Row;
use burn::tensor::Device;
use detector::{Detector, object_gate, proposal_labels};
use indicatif::{ProgressBar, ProgressStyle};
use metrics::{Detection, mean_average_precision};
use rand::SeedableRng;
use rand::seq::index::sample;
use std::path::Path;
use std::time::Duration;

/// The composed scenes of one run and the proposals (the same windows for every scene).
pub struct Scenes {
    pub train: Vec<Scene>,
    /// Held out for validation and for calibrating the thresholds.
    pub valid: Vec<Scene>,
    pub test: Vec<Scene>,
    pub proposals: Vec<BoxF>,
}

impl Scenes {
    /// Composes the scenes: training and held-out scenes on the training photographs with
    /// disjoint items of Fashion-MNIST's training file (first 5/6 / last 1/6); test scenes on
    /// other photographs with items of its test file.
    pub fn build(
        fashion: &Path,
        counts: [usize; 3],
        cfg: &SceneConfig,
        seed: u64,
    ) -> Result<Scenes, DataError> {
        let items = crate::data::fashion::load_split(fashion, "train")?;
        let test_items = crate::data::fashion::load_split(fashion, "t10k")?;
        let cut = items.len() * 5 / 6;
        let (a, b): (Vec<usize>, Vec<usize>) = ((0..cut).collect(), (cut..items.len()).collect());
        let photos = data_dir()?.join("photos");
        let train_photos = load_photos(&photos, &TRAIN_PHOTOS)?;
        let test_photos = load_photos(&photos, &TEST_PHOTOS)?;
        Ok(Scenes {
            train: compose(&train_photos, &items.subset(&a), counts[0], cfg, seed),
            valid: compose(
                &train_photos,
                &items.subset(&b),
                counts[1],
                cfg,
                seed.wrapping_add(1),
            ),
            test: compose(
                &test_photos,
                &test_items,
                counts[2],
                cfg,
                seed.wrapping_add(2),
            ),
            proposals: proposals::sliding_windows(
                cfg.size,
                cfg.size,
                &proposals::WindowConfig::default(),
            ),
        })
    }
}

/// Thresholds of a detector's early stages at every target TPR, from the held-out scenes:
/// the RoI-pooled maps of every object proposal (IoU >= 0.5) and of up to `bg_per_scene`
/// background proposals per scene become a calibration set for the engine's calibration.
pub fn calibrate(
    det: &Detector,
    scenes: &[Scene],
    proposals: &[BoxF],
    targets: &[crate::calibrate::Target],
    bg_per_scene: usize,
    device: &Device,
) -> Result<Vec<Calibration>, CascadeError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let i = det.spec.input;
    let mut set = Dataset {
        images: Vec::new(),
        labels: Vec::new(),
        shape: [i.channels, i.height, i.width],
        classes: det.spec.classes,
        files: None,
    };
    for scene in scenes {
        let labels = proposal_labels(scene, proposals);
        let fg: Vec<usize> = (0..proposals.len()).filter(|&j| labels[j].0 > 0).collect();
        let bg: Vec<usize> = (0..proposals.len()).filter(|&j| labels[j].0 == 0).collect();
        let mut pick = fg;
        pick.extend(
            sample(&mut rng, bg.len(), bg_per_scene.min(bg.len()))
                .into_iter()
                .map(|k| bg[k]),
        );
        let boxes: Vec<BoxF> = pick.iter().map(|&j| proposals[j]).collect();
        let x = det.pooled(scene, &boxes, device);
        set.images
            .extend(x.into_data().try_to_vec::<f32>().expect("f32 maps"));
        set.labels.extend(pick.iter().map(|&j| labels[j].0));
    }
    calibrate_model(&det.head, &set, targets, device)
}

/// One detector at one operating point on the test scenes.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub kind: NetworkKind,
    pub target_tpr: Option<f64>,
    pub map: f64,
    /// AP per class (Fashion-MNIST order).
    pub aps: Vec<f64>,
    /// Fraction of proposals passing stage 1 (1 for the monolithic head).
    pub pass: f64,
    /// Fraction of object proposals (IoU >= 0.5) passing stage 1.
    pub reached_tpr: Option<f64>,
    /// What that rests on: (object proposals passing stage 1, object proposals).
    pub reached: Option<(usize, usize)>,
    pub head_ms_per_image: f64,
    pub pipeline_ms_per_image: f64,
    /// Mean per image: backbone, RoI pooling, head (stage forwards), head overhead, NMS.
    pub breakdown: [f64; 5],
}

/// Runs every (detector, calibration) on every test scene — interleaved scene by scene, so
/// machine noise hits all of them alike — and scores mAP at IoU 0.5 over the 10 classes.
pub fn evaluate(
    models: &[(&Detector, Vec<Option<Calibration>>)],
    scenes: &[Scene],
    proposals: &[BoxF],
    pool: usize,
    device: &Device,
) -> Result<Vec<Outcome>, CascadeError> {
    if scenes.is_empty() {
        return Err(CascadeError::Empty("test scenes".into()));
    }
    assert!(pool >= 1, "scenes per group: at least 1");
    let points: Vec<(usize, Option<&Calibration>)> = models
        .iter()
        .enumerate()
        .flat_map(|(m, (_, cals))| cals.iter().map(move |c| (m, c.as_ref())))
        .collect();
    let gates: Vec<crate::cascade::Gate> = points
        .iter()
        .map(|&(m, c)| match c {
            Some(c) => object_gate(&models[m].0.spec, c),
            None => crate::cascade::Gate {
                per_stage: Vec::new(),
            },
        })
        .collect();
    let mut tally: Vec<Tally> = points.iter().map(|_| Tally::default()).collect();
    let pb = ProgressBar::new(scenes.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {elapsed} eta {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_prefix("detecting (test scenes)");
    // groups of `pool` scenes run as one stream (every network on the same group in turn)
    for (gi, group) in scenes.chunks(pool).enumerate() {
        let refs: Vec<&Scene> = group.iter().collect();
        let labels: Vec<_> = group
            .iter()
            .map(|s| proposal_labels(s, proposals))
            .collect();
        for (k, &(m, _)) in points.iter().enumerate() {
            let outs = models[m]
                .0
                .detect_pooled(&refs, proposals, &gates[k], device);
            for (j, (out, labels)) in outs.into_iter().zip(&labels).enumerate() {
                tally[k].add(out, labels, gi * pool + j);
            }
        }
        pb.inc(group.len() as u64);
    }
    pb.finish_and_clear();
    let objects: Vec<Vec<crate::data::scenes::Object>> =
        scenes.iter().map(|s| s.objects.clone()).collect();
    let n = scenes.len() as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / n;
    Ok(points
        .iter()
        .enumerate()
        .map(|(k, &(m, c))| {
            let (aps, map) = mean_average_precision(&tally[k].detections, &objects, 10);
            let t = &tally[k].times;
            let p = &tally[k].passed;
            let cascade = models[m].0.head.num_stages() > 1;
            Outcome {
                kind: models[m].0.head.kind,
                target_tpr: c.map(|c| c.target_tpr),
                map,
                aps,
                pass: p[0] as f64 / p[1].max(1) as f64,
                reached_tpr: cascade.then(|| p[2] as f64 / p[3].max(1) as f64),
                reached: cascade.then(|| (p[2], p[3])),
                head_ms_per_image: ms(t[2] + t[3]),
                pipeline_ms_per_image: ms(t[5]),
                breakdown: [ms(t[0]), ms(t[1]), ms(t[2]), ms(t[3]), ms(t[4])],
            }
        })
        .collect())
}

/// What one (detector, calibration) found and spent over the test scenes.
#[derive(Default)]
struct Tally {
    detections: Vec<Detection>,
    /// proposals passing stage 1, all proposals, object proposals passing, object proposals
    passed: [usize; 4],
    /// backbone, RoI pooling, head stages, head overhead, NMS, total
    times: [Duration; 6],
}

impl Tally {
    /// Adds scene `image`'s output; `labels` are its proposals' (class, IoU).
    fn add(&mut self, out: detector::SceneOutput, labels: &[(usize, f32)], image: usize) {
        for (class, score, bbox) in out.detections {
            self.detections.push(Detection {
                image,
                class,
                score,
                bbox,
            });
        }
        for (&p, &(l, _)) in out.passed.iter().zip(labels) {
            let object = usize::from(l > 0);
            self.passed[0] += p as usize;
            self.passed[1] += 1;
            self.passed[2] += p as usize * object;
            self.passed[3] += object;
        }
        let t = &out.timing;
        let stages: Duration = t.head.stage.iter().sum();
        let parts = [
            t.backbone,
            t.roi_pool,
            stages,
            t.head.overhead(),
            t.nms,
            t.total,
        ];
        for (acc, d) in self.times.iter_mut().zip(parts) {
            *acc += d;
        }
    }
}

/// Table rows: mAP, % of proposals passing stage 1, head and pipeline time per image, and the
/// head's speed-up measured and from the cost model (at the measured pass fraction).
pub fn rows(
    spec: &crate::spec::Spec,
    outcomes: &[Outcome],
    proposals: usize,
    setting: &str,
) -> Vec<Row> {
    let mono = outcomes.iter().find(|o| o.kind == NetworkKind::Monolithic);
    outcomes
        .iter()
        .map(|o| {
            let pass = if o.kind == NetworkKind::Monolithic {
                vec![]
            } else {
                vec![o.pass]
            };
            Row {
                network: o.kind.name().into(),
                metric_name: "mAP".into(),
                metric: Some(o.map),
                target_tpr: o.target_tpr,
                reached_tpr: o.reached_tpr,
                reached_tpr_interval: o
                    .reached
                    .and_then(|(k, n)| crate::calibrate::interval95(k, n)),
                pass_pct: (o.kind != NetworkKind::Monolithic).then_some(100.0 * o.pass),
                ms_per_1000: Some(o.head_ms_per_image * 1000.0 / proposals as f64),
                speedup_measured: mono.map(|m| m.head_ms_per_image / o.head_ms_per_image),
                speedup_theory: Some(speedup(spec, o.kind, &pass)),
                task: "detection".into(),
                setting: Some(setting.into()),
                head_ms_per_image: Some(o.head_ms_per_image),
                pipeline_ms_per_image: Some(o.pipeline_ms_per_image),
                speedup_pipeline: mono.map(|m| m.pipeline_ms_per_image / o.pipeline_ms_per_image),
                ..Row::default()
            }
        })
        .collect()
}
