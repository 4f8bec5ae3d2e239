//! Joint training: L = Σ_s w_s · L_s over all stages on every example, one SGD step for all
//! branches at once — B_1's weights get gradients from every later stage through the maps
//! those stages read. The monolithic network trains on the last stage's loss; the non-sharing
//! cascade trains each of its stage networks on that stage's loss, one after the other.
//! SGD with momentum and weight decay, cosine learning-rate decay, seeded shuffles and
//! initialisation; a checkpoint after every epoch so `--resume` continues where it stopped.

use crate::checkpoint::Checkpoint;
use crate::data::Dataset;
use crate::error::{DataError, TrainError};
use crate::model::Model;
use crate::onion::{Arch, Net, NetworkKind, OnionModule, archs};
use crate::spec::{Loss, Spec, Stage};
use burn::module::Module;
use burn::optim::SgdConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::tensor::activation::relu;
use burn::tensor::loss::cross_entropy_with_logits;
use burn::tensor::{Device, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};

pub mod config;
pub(crate) mod epochs;
pub use config::TrainConfig;

/// A classifier's training on images: one step is a batch of images through every branch of
/// the module.
struct Classify<'a> {
    spec: &'a Spec,
    arch: &'a Arch,
    /// `(branch, description stage)` of each loss term.
    objective: &'a [(usize, usize)],
    train_set: &'a Dataset,
    valid_set: &'a Dataset,
    train_device: &'a Device,
    device: &'a Device,
}

impl epochs::Task for Classify<'_> {
    type Module = OnionModule;

    fn items(&self) -> usize {
        self.train_set.len()
    }

    fn read_ahead(&self, order: &[usize], batch: usize) {
        self.train_set.read_ahead(order, batch);
    }

    fn step(
        &self,
        module: &OnionModule,
        chunk: &[usize],
        _rng: &mut rand::rngs::StdRng,
    ) -> (Vec<epochs::Term>, usize) {
        let x = self.train_set.batch(chunk, self.train_device);
        let labels: Vec<usize> = chunk.iter().map(|&j| self.train_set.labels[j]).collect();
        let logits = module.forward_all(self.arch, &x);
        let terms = self
            .objective
            .iter()
            .map(|&(b, s)| {
                let st = &self.spec.stages[s];
                epochs::Term {
                    loss: stage_loss(st, logits[b].clone(), &labels, self.train_device),
                    weight: st.weight,
                    correct: correct(st, &logits[b], &labels),
                }
            })
            .collect();
        (terms, chunk.len())
    }

    fn validate(&self, module: &OnionModule) -> Vec<(f64, f64)> {
        let m = module.valid();
        evaluate(
            &m,
            self.arch,
            self.spec,
            self.objective,
            self.valid_set,
            256,
            self.device,
        )
    }
}

/// An epoch's log row per trained stage: mean training loss and accuracy from running sums
/// over `seen` examples, then the validation loss and accuracy.
pub(crate) fn epoch_stages(
    sums: &[(f64, usize)],
    valid: &[(f64, f64)],
    seen: usize,
) -> Vec<[f64; 4]> {
    sums.iter()
        .zip(valid)
        .map(|(&(l, c), &(vl, va))| [l / seen as f64, c as f64 / seen as f64, vl, va])
        .collect()
}

/// `s1 loss 0.123 acc 45.6% | s2 ...` for a progress bar: per trained stage, mean loss and
/// accuracy from running sums over `seen` examples.
pub(crate) fn progress(
    stages: impl IntoIterator<Item = usize>,
    sums: &[(f64, usize)],
    seen: usize,
    loss: &str,
    acc: &str,
) -> String {
    stages
        .into_iter()
        .zip(sums)
        .map(|(s, &(l, c))| {
            format!(
                "s{} {loss} {:.3} {acc} {:.1}%",
                s + 1,
                l / seen as f64,
                100.0 * c as f64 / seen as f64
            )
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// SGD with the settings' momentum and weight decay (the learning rate is given per step).
pub(crate) fn sgd(cfg: &TrainConfig) -> SgdConfig {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: cfg.momentum,
            dampening: 0.0,
            nesterov: false,
        }))
        .with_weight_decay(Some(WeightDecayConfig {
            penalty: cfg.weight_decay as f32,
        }))
}

/// What one module learns: `(branch, description stage)` pairs, each adding its weighted loss.
pub(crate) fn objectives(spec: &Spec, kind: NetworkKind) -> Vec<Vec<(usize, usize)>> {
    let s = spec.num_stages();
    match kind {
        NetworkKind::Monolithic => vec![vec![(0, s - 1)]],
        NetworkKind::Onion => vec![(0..s).map(|b| (b, b)).collect()],
        NetworkKind::NonSharing => (0..s).map(|t| vec![(0, t)]).collect(),
    }
}

/// Per-stage loss (scalar) for a head's logits and the examples' fine labels.
pub(crate) fn stage_loss(
    stage: &Stage,
    logits: Tensor<2>,
    labels: &[usize],
    device: &Device,
) -> Tensor<1> {
    let n = labels.len();
    match stage.loss {
        Loss::CrossEntropy => {
            let c = stage.classes;
            let mut onehot = vec![0f32; n * c];
            for (i, &l) in labels.iter().enumerate() {
                onehot[i * c + stage.s_class(l)] = 1.0;
            }
            let target = Tensor::<2>::from_data(TensorData::new(onehot, [n, c]), device);
            cross_entropy_with_logits(logits, target)
        }
        Loss::Hinge => {
            let y: Vec<f32> = labels
                .iter()
                .map(|&l| if stage.s_class(l) == 1 { 1.0 } else { -1.0 })
                .collect();
            let y = Tensor::<2>::from_data(TensorData::new(y, [n, 1]), device);
            relu(y.mul(logits).neg().add_scalar(1.0)).mean()
        }
    }
}

/// Correct predictions of a head (argmax, or the sign for hinge).
pub(crate) fn correct(stage: &Stage, logits: &Tensor<2>, labels: &[usize]) -> usize {
    let o = stage.outputs();
    let v = logits.to_data().try_to_vec::<f32>().expect("f32 logits");
    labels
        .iter()
        .enumerate()
        .filter(|&(i, &l)| {
            let row = &v[i * o..(i + 1) * o];
            let pred = match stage.loss {
                Loss::Hinge => (row[0] > 0.0) as usize,
                Loss::CrossEntropy => (0..o).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap(),
            };
            pred == stage.s_class(l)
        })
        .count()
}

/// Mean loss and accuracy of each objective over a dataset, without gradients.
pub fn evaluate(
    module: &OnionModule,
    arch: &Arch,
    spec: &Spec,
    objective: &[(usize, usize)],
    data: &Dataset,
    batch: usize,
    device: &Device,
) -> Vec<(f64, f64)> {
    let mut sums = vec![(0.0, 0usize); objective.len()];
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(batch.max(1)) {
        let x = data.batch(chunk, device);
        let labels: Vec<usize> = chunk.iter().map(|&i| data.labels[i]).collect();
        let logits = module.forward_all(arch, &x);
        for (k, &(b, s)) in objective.iter().enumerate() {
            let st = &spec.stages[s];
            let l = stage_loss(st, logits[b].clone(), &labels, device).into_scalar::<f32>() as f64;
            sums[k].0 += l * chunk.len() as f64;
            sums[k].1 += correct(st, &logits[b], &labels);
        }
    }
    let n = data.len().max(1) as f64;
    sums.into_iter()
        .map(|(l, c)| (l / n, c as f64 / n))
        .collect()
}

pub(crate) fn bar(len: u64, prefix: String, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len).with_prefix(prefix);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:>24} [{bar:30}] {pos}/{len} {elapsed} eta {eta} {msg}",
        )
        .unwrap()
        .progress_chars("=> "),
    );
    pb
}

/// One network to train: what, on what, with which settings, and where to.
pub struct TrainJob<'a> {
    pub spec: &'a Spec,
    pub kind: NetworkKind,
    pub train_set: &'a Dataset,
    /// The validation split (reported each epoch, never trained on).
    pub valid_set: &'a Dataset,
    pub cfg: &'a TrainConfig,
    /// Checkpointed after every epoch.
    pub ckpt: &'a Checkpoint,
    /// Continue from the checkpoint's last completed epoch (same description, settings and
    /// data, else an error).
    pub resume: bool,
    /// `pretrained[i] = Some(module)` takes module `i` as already trained (the non-sharing
    /// cascade's last stage is the monolithic network when the split adds up); may be empty.
    pub pretrained: Vec<Option<OnionModule>>,
    pub device: &'a Device,
}

/// Trains a network kind from its description, checkpointing after every epoch.
pub fn train(job: TrainJob<'_>) -> Result<Model, TrainError> {
    train_from(job, None)
}

/// Stage-wise training of an onion (the paper's contrast to joint training, which it found
/// worse): stage 1 first on its own loss (the later stages' loss weights set to 0), saved
/// under `ckpt/stage1`; then stage 1's weights frozen and the later stages trained on their
/// own losses (stage 1's weight set to 0), each phase for the settings' epochs. The model's
/// description carries the last phase's weights.
pub fn train_stagewise(job: TrainJob<'_>) -> Result<Model, TrainError> {
    if job.kind != NetworkKind::Onion || job.spec.num_stages() < 2 {
        return Err(TrainError::Settings(format!(
            "stage-wise training needs an onion of two or more stages ({}: {} network, {} stages)",
            job.spec.name,
            job.kind,
            job.spec.num_stages()
        )));
    }
    let weighted = |keep: &dyn Fn(usize) -> bool| {
        let mut spec = job.spec.clone();
        for (s, st) in spec.stages.iter_mut().enumerate() {
            if !keep(s) {
                st.weight = 0.0;
            }
        }
        spec
    };
    let first = weighted(&|s| s == 0);
    let ckpt1 = Checkpoint::new(&job.ckpt.dir.join("stage1"));
    let stage1 = train_from(
        TrainJob {
            spec: &first,
            ckpt: &ckpt1,
            pretrained: Vec::new(),
            ..job
        },
        None,
    )?;
    let rest = weighted(&|s| s > 0);
    let module = stage1.nets.into_iter().next().expect("one module").module;
    train_from(TrainJob { spec: &rest, ..job }, Some((module.train(), 1)))
}

/// [`train`], the first module starting from `start = (module, k)` with its first `k`
/// branches frozen (no gradients, so no updates), where given.
fn train_from(job: TrainJob<'_>, start: Option<(OnionModule, usize)>) -> Result<Model, TrainError> {
    let TrainJob {
        spec,
        kind,
        train_set,
        valid_set,
        cfg,
        ckpt,
        resume,
        mut pretrained,
        device,
    } = job;
    cfg.check().map_err(TrainError::Settings)?;
    crate::footprint::check(
        crate::footprint::training(spec, cfg.batch_size),
        &format!(
            "training {} with --batch-size {}",
            spec.name, cfg.batch_size
        ),
        "--batch-size or the description's widths",
    )
    .map_err(TrainError::Settings)?;
    for (what, d) in [
        ("training split", train_set),
        ("validation split", valid_set),
    ] {
        if d.shape != spec.input.dims() {
            return Err(DataError::Mismatch {
                what: format!("{what} vs {} field input", spec.source.display()),
                reason: format!(
                    "images are {:?} (channels, height, width) but the description expects {:?}",
                    d.shape,
                    spec.input.dims()
                ),
            }
            .into());
        }
        if d.is_empty() {
            return Err(DataError::Mismatch {
                what: what.into(),
                reason: "no examples".into(),
            }
            .into());
        }
        // (a label past the description's classes would index past its heads)
        if d.classes != spec.classes || d.labels.iter().any(|&l| l >= spec.classes) {
            return Err(DataError::Mismatch {
                what: format!("{what} vs {} field classes", spec.source.display()),
                reason: format!(
                    "the data have {} classes but the description says classes = {}",
                    d.classes, spec.classes
                ),
            }
            .into());
        }
    }
    let archs = archs(spec, kind);
    let objectives = objectives(spec, kind);
    pretrained.resize_with(archs.len(), || None);
    let mut state = epochs::start(spec, kind, cfg, train_set.len(), archs.len(), ckpt, resume)?;
    let ad = device.clone().autodiff();
    let mut nets = Vec::with_capacity(archs.len());
    let mut start = start;
    for (i, arch) in archs.into_iter().enumerate() {
        ad.seed(cfg.seed.wrapping_add(i as u64));
        let mut module = OnionModule::new(&arch, &ad);
        let mut frozen = 0;
        if let Some((init, k)) = start.take().filter(|_| i == 0) {
            (module, frozen) = (init, k);
        }
        if let Some(done) = pretrained[i].take() {
            module = done;
            state.epochs_done[i] = cfg.epochs;
            ckpt.save_module(i, &module)?;
        } else if state.epochs_done[i] > 0 {
            module = ckpt.load_module(i, module)?;
        }
        module = module.freeze(frozen);
        let mut optim = epochs::optimiser(cfg, &state, i, ckpt)?;
        let unit = epochs::Unit {
            index: i,
            label: if kind == NetworkKind::NonSharing {
                format!("{kind} N{}", i + 1)
            } else {
                kind.to_string()
            },
            stages: objectives[i].iter().map(|&(_, s)| s).collect(),
        };
        let task = Classify {
            spec,
            arch: &arch,
            objective: &objectives[i],
            train_set,
            valid_set,
            train_device: &ad,
            device,
        };
        module = epochs::run(&task, module, &mut optim, cfg, &unit, &mut state, ckpt)?;
        ckpt.save_state(&state)?;
        nets.push(Net {
            module: module.valid(),
            arch,
        });
    }
    Ok(Model {
        kind,
        spec: spec.clone(),
        nets,
    })
}
