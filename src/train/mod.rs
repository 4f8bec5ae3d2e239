//! Joint training: L = Σ_s w_s · L_s over all stages on every example, one SGD step for all
//! branches at once — B_1's weights get gradients from every later stage through the maps
//! those stages read. The monolithic network trains on the last stage's loss; the non-sharing
//! cascade trains each of its stage networks on that stage's loss, one after the other.
//! SGD with momentum and weight decay, cosine learning-rate decay, seeded shuffles and
//! initialisation; a checkpoint after every epoch so `--resume` continues where it stopped.

use crate::checkpoint::{Checkpoint, EpochLog, TrainState};
use crate::data::Dataset;
use crate::error::{CheckpointError, DataError, TrainError};
use crate::model::Model;
use crate::onion::{Arch, Net, NetworkKind, OnionModule, archs};
use crate::spec::{Loss, Spec, Stage};
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::activation::relu;
use burn::tensor::loss::cross_entropy_with_logits;
use burn::tensor::{Device, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::time::Instant;

pub mod config;
pub use config::TrainConfig;

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

/// Trains a network kind from `spec`, checkpointing into `ckpt` after every epoch.
///
/// `pretrained[i] = Some(module)` takes module `i` as already trained (the demo reuses the
/// trained monolithic network as the non-sharing cascade's last stage, which is the same
/// network). With `resume`, continues from the checkpoint's last completed epoch.
#[allow(clippy::too_many_arguments)]
pub fn train(
    spec: &Spec,
    kind: NetworkKind,
    train_set: &Dataset,
    valid_set: &Dataset,
    cfg: &TrainConfig,
    ckpt: &Checkpoint,
    resume: bool,
    mut pretrained: Vec<Option<OnionModule>>,
    device: &Device,
) -> Result<Model, TrainError> {
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
    }
    let archs = archs(spec, kind);
    let objectives = objectives(spec, kind);
    pretrained.resize_with(archs.len(), || None);
    let mut state = TrainState {
        kind,
        epochs_done: vec![0; archs.len()],
        epochs: cfg.epochs,
        seed: cfg.seed,
        config: Some(cfg.clone()),
        train_examples: train_set.len(),
        log: vec![Vec::new(); archs.len()],
    };
    if resume && ckpt.exists() {
        ckpt.check_spec(spec)?;
        let saved = ckpt.load_state()?;
        if saved.kind != kind {
            return Err(CheckpointError::Mismatch {
                path: ckpt.dir.join("train.json"),
                reason: format!("it holds a {} network, not {}", saved.kind, kind),
            }
            .into());
        }
        let same = |a: &TrainConfig, b: &TrainConfig| {
            (a.epochs, a.batch_size, a.seed) == (b.epochs, b.batch_size, b.seed)
                && (a.lr, a.momentum, a.weight_decay) == (b.lr, b.momentum, b.weight_decay)
        };
        if saved.train_examples != train_set.len()
            || !saved.config.as_ref().is_some_and(|c| same(c, cfg))
        {
            return Err(CheckpointError::Mismatch {
                path: ckpt.dir.join("train.json"),
                reason: format!(
                    "it was trained on {} examples with {:?}; this run has {} examples and {:?} (choose another output directory)",
                    saved.train_examples, saved.config, train_set.len(), cfg
                ),
            }
            .into());
        }
        state.epochs_done = saved.epochs_done;
        state.log = saved.log;
    } else {
        ckpt.save_spec(spec)?;
    }
    let ad = device.clone().autodiff();
    let mut nets = Vec::with_capacity(archs.len());
    for (i, arch) in archs.into_iter().enumerate() {
        ad.seed(cfg.seed.wrapping_add(i as u64));
        let mut module = OnionModule::new(&arch, &ad);
        if let Some(done) = pretrained[i].take() {
            module = done;
            state.epochs_done[i] = cfg.epochs;
            ckpt.save_module(i, &module)?;
        } else if state.epochs_done[i] > 0 {
            module = ckpt.load_module(i, module)?;
        }
        let mut optim = sgd(cfg).init();
        if state.epochs_done[i] > 0
            && state.epochs_done[i] < cfg.epochs
            && let Some(bytes) = ckpt.load_optim(i)?
        {
            optim = optim
                .from_bytes(bytes)
                .map_err(|e| CheckpointError::Corrupt {
                    path: ckpt.dir.join(format!("optim{i}.bpk")),
                    reason: format!("{e:?}"),
                })?;
        }
        let steps_per_epoch = train_set.len().div_ceil(cfg.batch_size);
        let total_steps = (steps_per_epoch * cfg.epochs).max(1);
        let objective = &objectives[i];
        let stop = cfg
            .stop_after
            .map_or(cfg.epochs, |n| (state.epochs_done[i] + n).min(cfg.epochs));
        for epoch in state.epochs_done[i]..stop {
            let t0 = Instant::now();
            let mut order: Vec<usize> = (0..train_set.len()).collect();
            // per-epoch seed: a resumed run shuffles exactly as an uninterrupted one
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(
                cfg.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ));
            let unit = if kind == NetworkKind::NonSharing {
                format!(" N{}", i + 1)
            } else {
                String::new()
            };
            let pb = bar(
                steps_per_epoch as u64,
                format!("{kind}{unit} epoch {}/{}", epoch + 1, cfg.epochs),
                cfg.quiet,
            );
            let mut sums = vec![(0.0f64, 0usize); objective.len()];
            let mut seen = 0usize;
            for (step, chunk) in order.chunks(cfg.batch_size).enumerate() {
                let global = epoch * steps_per_epoch + step;
                let lr = cfg.lr
                    * 0.5
                    * (1.0 + (std::f64::consts::PI * global as f64 / total_steps as f64).cos());
                let x = train_set.batch(chunk, &ad);
                let labels: Vec<usize> = chunk.iter().map(|&j| train_set.labels[j]).collect();
                let logits = module.forward_all(&arch, &x);
                let mut total: Option<Tensor<1>> = None;
                for (k, &(b, s)) in objective.iter().enumerate() {
                    let st = &spec.stages[s];
                    let l = stage_loss(st, logits[b].clone(), &labels, &ad);
                    sums[k].0 += l.clone().into_scalar::<f32>() as f64 * chunk.len() as f64;
                    sums[k].1 += correct(st, &logits[b], &labels);
                    let l = l.mul_scalar(st.weight);
                    total = Some(match total {
                        None => l,
                        Some(t) => t + l,
                    });
                }
                seen += chunk.len();
                let grads = GradientsParams::from_grads(total.unwrap().backward(), &module);
                module = optim.step(lr, module, grads);
                pb.inc(1);
                pb.set_message(progress(
                    objective.iter().map(|&(_, s)| s),
                    &sums,
                    seen,
                    "loss",
                    "acc",
                ));
            }
            let valid = evaluate(
                &module.valid(),
                &arch,
                spec,
                objective,
                valid_set,
                256,
                device,
            );
            let stages = epoch_stages(&sums, &valid, seen);
            pb.finish_with_message(
                objective
                    .iter()
                    .zip(&stages)
                    .map(|(&(_, s), v)| {
                        format!("s{} val loss {:.3} acc {:.1}%", s + 1, v[2], 100.0 * v[3])
                    })
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
            state.log[i].push(EpochLog {
                epoch: epoch + 1,
                stages,
                seconds: t0.elapsed().as_secs_f64(),
            });
            state.epochs_done[i] = epoch + 1;
            ckpt.save_module(i, &module)?;
            let ob = optim.into_bytes().map_err(|e| CheckpointError::Corrupt {
                path: ckpt.dir.join(format!("optim{i}.bpk")),
                reason: format!("{e:?}"),
            })?;
            ckpt.save_optim(i, &ob)?;
            ckpt.save_state(&state)?;
        }
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
