//! The detector: a backbone runs once on the whole scene, every proposal is RoI max-pooled
//! from its last maps, and the classifier head from the model description scores it. The
//! three heads (monolithic, non-sharing cascade, onion) come from the same description; each
//! detector trains end to end (backbone and head together, as the paper fine-tunes whole
//! networks) on RoIs sampled per scene — object proposals (IoU >= 0.5 with an object, plus the
//! objects' own boxes) and background (IoU < 0.5, half of it from the harder 0.1..0.5 band) —
//! under the joint loss Σ w_s L_s (cross-entropy for both stages; stage 1's labels are
//! object/background through its label map). The non-sharing cascade's two heads share the
//! backbone (the cascade is over the classifier, as in Fast R-CNN) and train jointly too.

use super::proposals::best_match;
use super::roi_pool::{roi_pool, roi_pool_direct, roi_pool_direct_nhwc};
use crate::cascade::{Gate, Timing, run_batches};
use crate::checkpoint::Checkpoint;
use crate::data::scenes::{BoxF, Scene};
use crate::error::{DataError, TrainError};
use crate::infer::{Act, EngineKind, FastModel};
use crate::model::Model;
use crate::onion::{Arch, Net, NetworkKind, OnionModule, archs, he};
use crate::spec::{Detector as Layout, LayerKind, Spec};
use crate::train::{TrainConfig, correct, epochs, objectives, stage_loss};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Scene pixels are normalised as `(v - MEAN) / STD` before the backbone.
const MEAN: f32 = 0.45;
const STD: f32 = 0.25;

/// The `[detector]` backbone of the description.
#[derive(Module, Debug)]
pub struct Backbone {
    convs: Vec<Option<Conv2d>>,
    norms: Vec<Option<BatchNorm>>,
}

impl Backbone {
    pub fn new(layout: &Layout, device: &Device) -> Backbone {
        let mut c_in = layout.image.channels;
        let mut norms = Vec::new();
        let convs = layout
            .backbone
            .iter()
            .map(|l| match l.kind {
                LayerKind::Conv {
                    kernel,
                    stride,
                    padding,
                } => {
                    let conv = Conv2dConfig::new([c_in, l.width], [kernel, kernel])
                        .with_stride([stride, stride])
                        .with_padding(PaddingConfig2d::Explicit(
                            padding, padding, padding, padding,
                        ))
                        .with_initializer(he())
                        .init(device);
                    c_in = l.width;
                    norms.push(None);
                    Some(conv)
                }
                _ => {
                    norms.push(
                        (l.kind == LayerKind::Batchnorm)
                            .then(|| BatchNormConfig::new(c_in).init(device)),
                    );
                    None
                }
            })
            .collect();
        Backbone { convs, norms }
    }

    /// `[N, C_img, H, W]` -> the last maps `[N, C, H / stride, W / stride]`.
    pub fn forward(&self, layout: &Layout, mut x: Tensor<4>) -> Tensor<4> {
        for ((l, conv), norm) in layout.backbone.iter().zip(&self.convs).zip(&self.norms) {
            x = match (&l.kind, conv) {
                (LayerKind::Conv { .. }, Some(c)) => c.forward(x),
                (LayerKind::Batchnorm, _) => {
                    norm.as_ref().expect("built with the layout").forward(x)
                }
                (
                    LayerKind::Maxpool {
                        kernel,
                        stride,
                        ceil,
                    },
                    _,
                ) => max_pool2d(
                    x,
                    MaxPoolOptions::new([*kernel, *kernel])
                        .with_stride([*stride, *stride])
                        .with_ceil_mode(*ceil),
                ),
                _ => relu(x),
            };
        }
        x
    }
}

/// Backbone and the head modules of one network kind (one for the monolithic network and the
/// onion, one per stage for the non-sharing cascade), trained together.
#[derive(Module, Debug)]
pub struct DetectorModule {
    backbone: Backbone,
    heads: Vec<OnionModule>,
}

impl DetectorModule {
    pub fn new(spec: &Spec, kind: NetworkKind, device: &Device) -> DetectorModule {
        let layout = spec.detector.as_ref().expect("checked by layout()");
        DetectorModule {
            backbone: Backbone::new(layout, device),
            heads: archs(spec, kind)
                .iter()
                .map(|a| OnionModule::new(a, device))
                .collect(),
        }
    }
}

/// The description's `[detector]` table, or an error naming the file.
pub fn layout(spec: &Spec) -> Result<&Layout, DataError> {
    spec.detector.as_ref().ok_or_else(|| DataError::Mismatch {
        what: spec.source.display().to_string(),
        reason: "the description has no [detector] table (backbone and image size): it is not a detection description".into(),
    })
}

/// Scenes as a normalised batch `[N, 1, H, W]`.
pub fn scenes_tensor(scenes: &[&Scene], device: &Device) -> Tensor<4> {
    let (h, w) = (scenes[0].height, scenes[0].width);
    let px: Vec<f32> = scenes
        .iter()
        .flat_map(|s| s.px.iter().map(|v| (v - MEAN) / STD))
        .collect();
    Tensor::from_data(TensorData::new(px, [scenes.len(), 1, h, w]), device)
}

/// A trained detector, ready for inference.
#[derive(Debug, Clone)]
pub struct Detector {
    pub spec: Spec,
    pub backbone: Backbone,
    /// The classifier head as a cascade (its input is the RoI-pooled maps).
    pub head: Model,
    /// The same head on the own inference path.
    pub fast: FastModel,
    /// Which of the two runs the head in [`Detector::detect`].
    pub engine: EngineKind,
}

/// Where one scene's time went.
#[derive(Debug, Clone, Default)]
pub struct SceneTiming {
    pub backbone: Duration,
    pub roi_pool: Duration,
    /// The classifier head (the cascade's own breakdown).
    pub head: Timing,
    pub nms: Duration,
    pub total: Duration,
}

/// One scene's result.
#[derive(Debug, Clone)]
pub struct SceneOutput {
    /// `(class 0..10, score, box)` after per-class NMS, best first.
    pub detections: Vec<(usize, f32, BoxF)>,
    /// Which proposals passed stage 1 (all, for the monolithic network).
    pub passed: Vec<bool>,
    pub timing: SceneTiming,
}

/// Class scores below this are not kept as detections (they cannot change AP measurably and
/// would only slow NMS down).
const MIN_SCORE: f32 = 0.01;
/// NMS overlap within one class (Fast R-CNN's 0.3).
pub const NMS_IOU: f32 = 0.3;
/// Detections kept per scene.
const MAX_PER_SCENE: usize = 100;

impl Detector {
    fn layout(&self) -> &Layout {
        self.spec
            .detector
            .as_ref()
            .expect("a detector's description has [detector]")
    }

    /// Backbone maps of one scene, channels last `[H, W, C]`, and their `(C, H, W)`.
    fn maps(&self, scene: &Scene, device: &Device) -> (Vec<f32>, (usize, usize, usize)) {
        let x = scenes_tensor(&[scene], device);
        let m = self.backbone.forward(self.layout(), x);
        let [_, c, h, w] = m.dims();
        let v = m
            .permute([0, 2, 3, 1])
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 maps");
        (v, (c, h, w))
    }

    /// RoI-pooled maps of `boxes` in one scene: the head's input `[R, C, gh, gw]`.
    pub fn pooled(&self, scene: &Scene, boxes: &[BoxF], device: &Device) -> Tensor<4> {
        let (v, chw) = self.maps(scene, device);
        self.pool(&v, chw, boxes, device)
    }

    fn pool(
        &self,
        maps: &[f32],
        chw: (usize, usize, usize),
        boxes: &[BoxF],
        device: &Device,
    ) -> Tensor<4> {
        let i = self.spec.input;
        let v = roi_pool_direct(maps, chw, boxes, self.layout().stride, (i.height, i.width));
        Tensor::from_data(
            TensorData::new(v, [boxes.len(), i.channels, i.height, i.width]),
            device,
        )
    }

    /// Detects objects in one scene: backbone, RoI pooling of every proposal, the head as a
    /// cascade under `gate`, per-class NMS.
    pub fn detect(
        &self,
        scene: &Scene,
        proposals: &[BoxF],
        gate: &Gate,
        device: &Device,
    ) -> SceneOutput {
        self.detect_pooled(&[scene], proposals, gate, device)
            .pop()
            .expect("one scene, one output")
    }

    /// Detects objects in a group of scenes whose proposals go through the head as one
    /// stream: each scene's proposals are a batch, and the survivors of the group's batches
    /// wait for each other, so that stage 2 runs on blocks of at least half a scene's
    /// proposals rather than on one scene's few survivors ([`run_batches`]; the same scores
    /// as scene by scene). Each scene's timing is an equal share of the group's.
    pub fn detect_pooled(
        &self,
        scenes: &[&Scene],
        proposals: &[BoxF],
        gate: &Gate,
        device: &Device,
    ) -> Vec<SceneOutput> {
        let r = proposals.len();
        let t0 = Instant::now();
        let maps: Vec<_> = scenes.iter().map(|s| self.maps(s, device)).collect();
        let t1 = Instant::now();
        let i = self.spec.input;
        // each scene's proposals a batch of the stream, as pooled (no stacking copy)
        let (out, t2) = match self.engine {
            EngineKind::Burn => {
                let xs = maps
                    .iter()
                    .map(|(v, chw)| self.pool(v, *chw, proposals, device))
                    .collect();
                let t2 = Instant::now();
                (run_batches(&self.head, xs, gate), t2)
            }
            EngineKind::Own => {
                let xs = maps
                    .iter()
                    .map(|(v, chw)| {
                        let data = roi_pool_direct_nhwc(
                            v,
                            *chw,
                            proposals,
                            self.layout().stride,
                            (i.height, i.width),
                        );
                        Act::new(r, i.height, i.width, i.channels, data)
                    })
                    .collect();
                let t2 = Instant::now();
                (run_batches(&self.fast, xs, gate), t2)
            }
        };
        let t3 = Instant::now();
        let last = self.head.num_stages() - 1;
        let k = self.head.stage(last).classes;
        let mut outputs: Vec<SceneOutput> = (0..scenes.len())
            .map(|si| {
                let rows = si * r..(si + 1) * r;
                let passed: Vec<bool> = out.reached[rows.clone()]
                    .iter()
                    .map(|&x| x == last)
                    .collect();
                let scores = &out.scores[last][rows.start * k..rows.end * k];
                SceneOutput {
                    detections: scene_detections(proposals, &passed, scores, k),
                    passed,
                    timing: SceneTiming::default(),
                }
            })
            .collect();
        let t4 = Instant::now();
        let n = scenes.len().max(1) as u32;
        for o in &mut outputs {
            o.timing = SceneTiming {
                backbone: (t1 - t0) / n,
                roi_pool: (t2 - t1) / n,
                head: out.timing.per(n),
                nms: (t4 - t3) / n,
                total: (t4 - t0) / n,
            };
        }
        outputs
    }
}

/// One scene's detections from its proposals' last-stage scores (`[proposals, k]`, NaN where a
/// proposal did not reach it, `passed` false there): per-class NMS, best first, at most
/// [`MAX_PER_SCENE`].
fn scene_detections(
    proposals: &[BoxF],
    passed: &[bool],
    scores: &[f32],
    k: usize,
) -> Vec<(usize, f32, BoxF)> {
    let mut detections = Vec::new();
    // class c of the task is fine label c + 1 (0 = background)
    for c in 1..k {
        let (mut boxes, mut kept) = (Vec::new(), Vec::new());
        for (i, p) in proposals.iter().enumerate() {
            let s = scores[i * k + c];
            if passed[i] && s >= MIN_SCORE {
                boxes.push(*p);
                kept.push(s);
            }
        }
        for j in super::metrics::nms(&boxes, &kept, NMS_IOU) {
            detections.push((c - 1, kept[j], boxes[j]));
        }
    }
    detections.sort_by(|a, b| b.1.total_cmp(&a.1));
    detections.truncate(MAX_PER_SCENE);
    detections
}

/// Detection-specific training settings on top of the engine's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectTrainConfig {
    /// Epochs, scenes per step (`batch_size`), learning rate, ...
    pub base: TrainConfig,
    /// RoIs sampled per scene and step.
    pub rois_per_scene: usize,
    /// Fraction of them that are objects (when the scene has enough).
    pub fg_fraction: f64,
}

/// Fine label of every proposal of a scene: the class + 1 of the object it overlaps by IoU
/// >= 0.5 (the best one), else 0 (background); and its best IoU.
pub fn proposal_labels(scene: &Scene, proposals: &[BoxF]) -> Vec<(usize, f32)> {
    best_match(proposals, &scene.objects)
        .into_iter()
        .map(|(v, o)| match o {
            Some(j) if v >= 0.5 => (scene.objects[j].class + 1, v),
            _ => (0, v),
        })
        .collect()
}

/// RoIs for one training step of one scene: `(box, fine label)`.
fn sample_rois(
    scene: &Scene,
    labels: &[(usize, f32)],
    proposals: &[BoxF],
    cfg: &DetectTrainConfig,
    rng: &mut impl Rng,
) -> Vec<(BoxF, usize)> {
    let mut fg: Vec<(BoxF, usize)> = scene
        .objects
        .iter()
        .map(|o| (o.bbox, o.class + 1))
        .collect();
    let mut hard = Vec::new();
    let mut easy = Vec::new();
    for (p, &(l, v)) in proposals.iter().zip(labels) {
        if l > 0 {
            fg.push((*p, l));
        } else if v >= 0.1 {
            hard.push((*p, 0));
        } else {
            easy.push((*p, 0));
        }
    }
    let n_fg = ((cfg.rois_per_scene as f64 * cfg.fg_fraction) as usize).min(fg.len());
    let n_bg = cfg.rois_per_scene - n_fg;
    let n_hard = (n_bg / 2).min(hard.len());
    let mut out: Vec<(BoxF, usize)> = fg.choose_multiple(rng, n_fg).copied().collect();
    out.extend(hard.choose_multiple(rng, n_hard).copied());
    easy.extend(hard);
    out.extend(easy.choose_multiple(rng, n_bg - n_hard).copied());
    out
}

/// Trains the detector of one network kind end to end, checkpointing after every epoch into
/// `ckpt`. A checkpoint of this detector (same description, settings and number of scenes)
/// is resumed where it stopped, or loaded where it is fully trained; one of another detector
/// is an error (choose another output directory).
/// It trains on `scenes.train` and validates on `scenes.valid`, with `scenes.proposals`.
pub fn train(
    spec: &Spec,
    kind: NetworkKind,
    scenes: &super::Scenes,
    cfg: &DetectTrainConfig,
    ckpt: &Checkpoint,
    device: &Device,
) -> Result<Detector, TrainError> {
    let (train_scenes, valid_scenes, proposals) =
        (&scenes.train[..], &scenes.valid[..], &scenes.proposals[..]);
    cfg.base.check().map_err(TrainError::Settings)?;
    let lay = layout(spec)?.clone();
    for (what, sc) in [
        ("training scenes", train_scenes),
        ("validation scenes", valid_scenes),
    ] {
        if sc.is_empty() {
            return Err(DataError::Mismatch {
                what: what.into(),
                reason: "no scenes".into(),
            }
            .into());
        }
        if let Some(s) = sc
            .iter()
            .find(|s| (s.height, s.width) != (lay.image.height, lay.image.width))
        {
            return Err(DataError::Mismatch {
                what: format!("{what} vs {} field detector.image", spec.source.display()),
                reason: format!(
                    "a scene is {}x{} but the description expects {}x{}",
                    s.width, s.height, lay.image.width, lay.image.height
                ),
            }
            .into());
        }
    }
    let base = &cfg.base;
    let archs: Vec<Arch> = archs(spec, kind);
    let objectives = objectives(spec, kind);
    let fresh = |dev: &Device| DetectorModule::new(spec, kind, dev);
    // (one module: the backbone and every head, trained together)
    let mut state = epochs::start(spec, kind, base, train_scenes.len(), 1, ckpt, true)?;
    if state.epochs_done[0] >= base.epochs {
        let module: DetectorModule = ckpt.load_module(0, fresh(device))?;
        return Ok(finish(spec, kind, module, archs));
    }
    let ad = device.clone().autodiff();
    ad.seed(base.seed);
    let mut module = fresh(&ad);
    if state.epochs_done[0] > 0 {
        module = ckpt.load_module(0, module)?;
    }
    let mut optim = epochs::optimiser(base, &state, 0, ckpt)?;
    let task = Detect {
        spec,
        lay: &lay,
        archs: &archs,
        objectives: &objectives,
        scenes: train_scenes,
        labels: train_scenes
            .iter()
            .map(|s| proposal_labels(s, proposals))
            .collect(),
        valid_scenes,
        valid_labels: valid_scenes
            .iter()
            .map(|s| proposal_labels(s, proposals))
            .collect(),
        proposals,
        cfg,
        train_device: &ad,
        device,
    };
    let unit = epochs::Unit {
        index: 0,
        label: format!("{kind} detector"),
        stages: stages_of(&objectives).collect(),
    };
    let module = epochs::run(&task, module, &mut optim, base, &unit, &mut state, ckpt)?;
    ckpt.save_state(&state)?;
    Ok(finish(spec, kind, module.valid(), archs))
}

/// A detector's training on scenes: one step samples RoIs from a few scenes, runs the
/// backbone on the scenes and every head on the RoI-pooled maps.
struct Detect<'a> {
    spec: &'a Spec,
    lay: &'a Layout,
    archs: &'a [Arch],
    objectives: &'a [Vec<(usize, usize)>],
    scenes: &'a [Scene],
    /// Each proposal's fine label and best IoU, per training scene.
    labels: Vec<Vec<(usize, f32)>>,
    valid_scenes: &'a [Scene],
    valid_labels: Vec<Vec<(usize, f32)>>,
    proposals: &'a [BoxF],
    cfg: &'a DetectTrainConfig,
    train_device: &'a Device,
    device: &'a Device,
}

impl epochs::Task for Detect<'_> {
    type Module = DetectorModule;

    fn items(&self) -> usize {
        self.scenes.len()
    }

    fn step(
        &self,
        module: &DetectorModule,
        chunk: &[usize],
        rng: &mut rand::rngs::StdRng,
    ) -> (Vec<epochs::Term>, usize) {
        let scenes: Vec<&Scene> = chunk.iter().map(|&i| &self.scenes[i]).collect();
        let mut rois = Vec::new();
        let mut fine = Vec::new();
        for (k, &i) in chunk.iter().enumerate() {
            let sampled = sample_rois(
                &self.scenes[i],
                &self.labels[i],
                self.proposals,
                self.cfg,
                rng,
            );
            for (b, l) in sampled {
                rois.push((k, b));
                fine.push(l);
            }
        }
        let grid = (self.spec.input.height, self.spec.input.width);
        let maps = module
            .backbone
            .forward(self.lay, scenes_tensor(&scenes, self.train_device));
        let x = roi_pool(maps, &rois, self.lay.stride, grid);
        let mut terms = Vec::new();
        for (i, arch) in self.archs.iter().enumerate() {
            let logits = module.heads[i].forward_all(arch, &x);
            for &(b, s) in &self.objectives[i] {
                let st = &self.spec.stages[s];
                terms.push(epochs::Term {
                    loss: stage_loss(st, logits[b].clone(), &fine, self.train_device),
                    weight: st.weight,
                    correct: correct(st, &logits[b], &fine),
                });
            }
        }
        (terms, fine.len())
    }

    fn validate(&self, module: &DetectorModule) -> Vec<(f64, f64)> {
        self.held_out(&module.valid())
    }
}

impl Detect<'_> {
    /// Loss and accuracy of each trained stage on RoIs sampled from the held-out scenes with a
    /// fixed seed, without gradients.
    fn held_out(&self, module: &DetectorModule) -> Vec<(f64, f64)> {
        let (spec, lay, archs, objectives, proposals, cfg, device) = (
            self.spec,
            self.lay,
            self.archs,
            self.objectives,
            self.proposals,
            self.cfg,
            self.device,
        );
        let (scenes, labels) = (self.valid_scenes, &self.valid_labels);
        let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.base.seed ^ 0x5eed);
        let n_obj: usize = objectives.iter().map(|o| o.len()).sum();
        let mut sums = vec![(0.0f64, 0usize); n_obj];
        let mut seen = 0usize;
        let grid = (spec.input.height, spec.input.width);
        for (chunk, lab) in scenes.chunks(8).zip(labels.chunks(8)) {
            let mut rois = Vec::new();
            let mut fine = Vec::new();
            for (k, (s, l)) in chunk.iter().zip(lab).enumerate() {
                for (b, f) in sample_rois(s, l, proposals, cfg, &mut rng) {
                    rois.push((k, b));
                    fine.push(f);
                }
            }
            let refs: Vec<&Scene> = chunk.iter().collect();
            let x = roi_pool(
                module.backbone.forward(lay, scenes_tensor(&refs, device)),
                &rois,
                lay.stride,
                grid,
            );
            let mut k = 0;
            for (i, arch) in archs.iter().enumerate() {
                let logits = module.heads[i].forward_all(arch, &x);
                for &(b, s) in &objectives[i] {
                    let st = &spec.stages[s];
                    sums[k].0 += stage_loss(st, logits[b].clone(), &fine, device)
                        .into_scalar::<f32>() as f64
                        * fine.len() as f64;
                    sums[k].1 += correct(st, &logits[b], &fine);
                    k += 1;
                }
            }
            seen += fine.len();
        }
        sums.into_iter()
            .map(|(l, c)| (l / seen.max(1) as f64, c as f64 / seen.max(1) as f64))
            .collect()
    }
}

/// The description stages the objectives train, in order.
fn stages_of(objectives: &[Vec<(usize, usize)>]) -> impl Iterator<Item = usize> + '_ {
    objectives.iter().flatten().map(|&(_, s)| s)
}

fn finish(spec: &Spec, kind: NetworkKind, module: DetectorModule, archs: Vec<Arch>) -> Detector {
    let nets = archs
        .into_iter()
        .zip(module.heads)
        .map(|(arch, module)| Net { arch, module })
        .collect();
    let head = Model {
        kind,
        spec: spec.clone(),
        nets,
    };
    Detector {
        spec: spec.clone(),
        backbone: module.backbone,
        fast: FastModel::from_model(&head),
        head,
        engine: EngineKind::default(),
    }
}

/// A trained detector from its checkpoint (`onionnet detect --out DIR` writes one per network
/// kind under `DIR/<kind>/`); the thresholds are read separately.
pub fn load(ckpt: &Checkpoint, device: &Device) -> Result<Detector, crate::error::CheckpointError> {
    let spec = ckpt.load_spec()?;
    let kind = ckpt.load_state()?.kind;
    layout(&spec).map_err(|e| crate::error::CheckpointError::Mismatch {
        path: ckpt.dir.join("spec.toml"),
        reason: format!("not a detector: {e}"),
    })?;
    let module = ckpt.load_module(0, DetectorModule::new(&spec, kind, device))?;
    Ok(finish(&spec, kind, module, archs(&spec, kind)))
}

/// Thresholds are calibrated from this gate's complement: the s-classes of interest of an
/// early stage are every s-class but background's.
pub fn object_gate(spec: &Spec, cal: &crate::calibrate::Calibration) -> Gate {
    Gate {
        per_stage: cal
            .thresholds
            .iter()
            .enumerate()
            .map(|(s, t)| {
                let bg = spec.stages[s].s_class(0);
                (0..t.len())
                    .filter(|&c| c != bg)
                    .map(|c| (c, t[c]))
                    .collect()
            })
            .collect(),
    }
}
