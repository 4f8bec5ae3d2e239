//! The training loop every task shares — a classifier on images ([`super::train`]) and a
//! detector on scenes ([`crate::apps::detection::detector::train`]): seeded per-epoch shuffles,
//! cosine learning-rate decay, the joint loss Σ w_s L_s of one step, validation, and a
//! checkpoint after every epoch, with the same rules for resuming.

use super::{TrainConfig, bar, epoch_stages, progress, sgd};
use crate::checkpoint::{Checkpoint, EpochLog, TrainState};
use crate::error::{CheckpointError, TrainError};
use crate::onion::NetworkKind;
use crate::spec::Spec;
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::time::Instant;

/// One trained stage's share of a step: its loss (before weighting), its weight w_s, and the
/// examples it got right.
pub(crate) struct Term {
    pub loss: Tensor<1>,
    pub weight: f64,
    pub correct: usize,
}

/// What a task brings to the loop: its items, one step's loss terms, and validation.
pub(crate) trait Task {
    type Module: Module;
    /// Items of the training set (images, scenes); an epoch shuffles their indices.
    fn items(&self) -> usize;
    /// The loss terms of one step on the items `chunk` (one per trained stage, in order) and
    /// the number of examples they cover; `rng` is the epoch's generator, after the shuffle.
    fn step(&self, module: &Self::Module, chunk: &[usize], rng: &mut StdRng) -> (Vec<Term>, usize);
    /// An epoch's order, which `step` gets in chunks of `batch` (a dataset in files reads
    /// them ahead of the network).
    fn read_ahead(&self, _order: &[usize], _batch: usize) {}
    /// Validation loss and accuracy of each trained stage.
    fn validate(&self, module: &Self::Module) -> Vec<(f64, f64)>;
}

/// One module of a checkpoint being trained: its index there, its name on the progress bar,
/// and the description stages of its loss terms.
pub(crate) struct Unit {
    pub index: usize,
    pub label: String,
    pub stages: Vec<usize>,
}

/// The training state to start from: a fresh one (the description saved beside it), or, with
/// `resume` and a checkpoint in `ckpt`, the checkpoint's — which must hold this description,
/// this kind, these settings and as many training items (else an error that says so).
pub(crate) fn start(
    spec: &Spec,
    kind: NetworkKind,
    cfg: &TrainConfig,
    items: usize,
    modules: usize,
    ckpt: &Checkpoint,
    resume: bool,
) -> Result<TrainState, TrainError> {
    let mut state = TrainState {
        kind,
        epochs_done: vec![0; modules],
        epochs: cfg.epochs,
        seed: cfg.seed,
        config: Some(cfg.clone()),
        train_examples: items,
        log: vec![Vec::new(); modules],
        weights: Vec::new(),
    };
    if !(resume && ckpt.exists()) {
        ckpt.save_spec(spec)?;
        return Ok(state);
    }
    ckpt.check_spec(spec)?;
    let saved = ckpt.load_state()?;
    let path = ckpt.dir.join("train.json");
    if saved.kind != kind {
        return Err(CheckpointError::Mismatch {
            path,
            reason: format!("it holds a {} network, not {}", saved.kind, kind),
        }
        .into());
    }
    let mut differ = match &saved.config {
        Some(c) => c.differences(cfg),
        None => vec!["no settings stored".into()],
    };
    if saved.train_examples != items {
        differ.push(format!(
            "{} training examples (this run: {items})",
            saved.train_examples
        ));
    }
    if saved.epochs_done.len() != modules {
        differ.push(format!(
            "epochs_done has {} modules, the network {modules}",
            saved.epochs_done.len()
        ));
    }
    if !differ.is_empty() {
        return Err(CheckpointError::Mismatch {
            path,
            reason: format!(
                "cannot resume: it was trained with {} (use the same settings, or choose another output directory)",
                differ.join(", ")
            ),
        }
        .into());
    }
    state.epochs_done = saved.epochs_done;
    state.log = saved.log;
    state.weights = saved.weights;
    Ok(state)
}

/// The optimiser of module `i`, with its saved state where training stopped mid-way.
pub(crate) fn optimiser(
    cfg: &TrainConfig,
    state: &TrainState,
    i: usize,
    ckpt: &Checkpoint,
) -> Result<ModuleOptimizer, TrainError> {
    let optim = sgd(cfg).init();
    let done = state.epochs_done[i];
    match ckpt.load_optim(i)? {
        Some(bytes) if done > 0 && done < cfg.epochs => {
            Ok(optim
                .from_bytes(bytes)
                .map_err(|e| CheckpointError::Corrupt {
                    path: ckpt.dir.join(format!("optim{i}.bpk")),
                    reason: format!("{e:?}"),
                })?)
        }
        _ => Ok(optim),
    }
}

/// Trains `module` (module `unit.index` of the checkpoint) from its last completed epoch to
/// the last (or `cfg.stop_after` epochs more), saving the module, the optimiser and the state
/// after every epoch.
pub(crate) fn run<T: Task>(
    task: &T,
    mut module: T::Module,
    optim: &mut ModuleOptimizer,
    cfg: &TrainConfig,
    unit: &Unit,
    state: &mut TrainState,
    ckpt: &Checkpoint,
) -> Result<T::Module, TrainError> {
    let i = unit.index;
    let steps_per_epoch = task.items().div_ceil(cfg.batch_size);
    let total_steps = (steps_per_epoch * cfg.epochs).max(1);
    let stop = cfg
        .stop_after
        .map_or(cfg.epochs, |n| (state.epochs_done[i] + n).min(cfg.epochs));
    for epoch in state.epochs_done[i]..stop {
        let t0 = Instant::now();
        // per-epoch seed: a resumed run shuffles (and samples) exactly as an uninterrupted one
        let mut rng = StdRng::seed_from_u64(
            cfg.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let mut order: Vec<usize> = (0..task.items()).collect();
        order.shuffle(&mut rng);
        let pb = bar(
            steps_per_epoch as u64,
            format!("{} epoch {}/{}", unit.label, epoch + 1, cfg.epochs),
            cfg.quiet,
        );
        // a GPU compiles (and autotunes) its kernels during the first steps of a network
        if epoch == state.epochs_done[i]
            && module
                .devices()
                .first()
                .is_some_and(|d| !crate::device::is_cpu(d))
        {
            pb.set_message("compiling kernels…");
            pb.enable_steady_tick(std::time::Duration::from_millis(500));
        }
        task.read_ahead(&order, cfg.batch_size);
        let mut sums = vec![(0.0f64, 0usize); unit.stages.len()];
        let mut seen = 0usize;
        for (step, chunk) in order.chunks(cfg.batch_size).enumerate() {
            let global = epoch * steps_per_epoch + step;
            let lr = cfg.lr
                * 0.5
                * (1.0 + (std::f64::consts::PI * global as f64 / total_steps as f64).cos());
            let (terms, examples) = task.step(&module, chunk, &mut rng);
            let mut total: Option<Tensor<1>> = None;
            for (k, t) in terms.into_iter().enumerate() {
                let value = t.loss.clone().into_scalar::<f32>();
                if !value.is_finite() {
                    return Err(TrainError::Diverged {
                        what: format!(
                            "{}{}: loss = {value} at epoch {}, step {}",
                            unit.label,
                            if unit.stages.len() > 1 {
                                format!(", stage {}", unit.stages[k] + 1)
                            } else {
                                String::new()
                            },
                            epoch + 1,
                            step + 1
                        ),
                        lr: cfg.lr,
                    });
                }
                sums[k].0 += value as f64 * examples as f64;
                sums[k].1 += t.correct;
                let l = t.loss.mul_scalar(t.weight);
                total = Some(match total {
                    None => l,
                    Some(sum) => sum + l,
                });
            }
            seen += examples;
            let loss = total.expect("a stage to train");
            let grads = GradientsParams::from_grads(loss.backward(), &module);
            module = optim.step(lr, module, grads);
            pb.inc(1);
            pb.set_message(progress(
                unit.stages.iter().copied(),
                &sums,
                seen,
                "loss",
                "acc",
            ));
        }
        let valid = task.validate(&module);
        let stages = epoch_stages(&sums, &valid, seen);
        // (nothing non-finite is saved: a later command could not use it)
        if let Some(v) = stages.iter().flatten().find(|v| !v.is_finite()) {
            return Err(TrainError::Diverged {
                what: format!(
                    "{}: validation loss = {v} after epoch {}",
                    unit.label,
                    epoch + 1
                ),
                lr: cfg.lr,
            });
        }
        if !crate::model::finite_weights(&module) {
            return Err(TrainError::Diverged {
                what: format!(
                    "{}: weights not finite after epoch {}",
                    unit.label,
                    epoch + 1
                ),
                lr: cfg.lr,
            });
        }
        pb.finish_with_message(
            unit.stages
                .iter()
                .zip(&stages)
                .map(|(s, v)| format!("s{} val loss {:.3} acc {:.1}%", s + 1, v[2], 100.0 * v[3]))
                .collect::<Vec<_>>()
                .join(" | "),
        );
        state.log[i].push(EpochLog {
            epoch: epoch + 1,
            stages,
            seconds: t0.elapsed().as_secs_f64(),
        });
        state.epochs_done[i] = epoch + 1;
        let bytes = optim.into_bytes().map_err(|e| CheckpointError::Corrupt {
            path: ckpt.dir.join(format!("optim{i}.bpk")),
            reason: format!("{e:?}"),
        })?;
        ckpt.save_epoch(i, &module, &bytes, state)?;
    }
    Ok(module)
}
