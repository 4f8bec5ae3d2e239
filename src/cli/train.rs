//! `onionnet train SPEC --network KIND --out DIR`: one network on Fashion-MNIST.

use super::DataArgs;
use crate::apps::retrieval::{groups_from, needs_groups, resolve_groups};
use crate::checkpoint::Checkpoint;
use crate::onion::NetworkKind;
use crate::train::{TrainConfig, TrainJob, train};
use burn::tensor::Device;
use clap::Args;
use std::path::PathBuf;

/// Optimisation settings (the same defaults for every network, so comparisons are fair).
#[derive(Debug, Clone, Args)]
pub struct OptimArgs {
    /// Epochs over the training split [default: 60000 / training images, clamped to 3..=12:
    /// 12 on the committed subset, 3 on the full set — a few minutes on 2 cores either way].
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    pub batch_size: usize,
    /// Initial learning rate, cosine decay to 0 [default: 0.05; `patches`: 0.01].
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = TrainConfig::default().momentum)]
    pub momentum: f64,
    #[arg(long, default_value_t = TrainConfig::default().weight_decay)]
    pub weight_decay: f64,
    /// Seed of initialisation and shuffling.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    pub seed: u64,
}

impl OptimArgs {
    /// The settings for a training split of `n_train` images.
    pub fn config(&self, n_train: usize) -> anyhow::Result<TrainConfig> {
        let cfg = TrainConfig {
            epochs: self.epochs.unwrap_or_else(|| default_epochs(n_train)),
            batch_size: self.batch_size,
            lr: self.lr.unwrap_or(TrainConfig::default().lr),
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            seed: self.seed,
            quiet: false,
            stop_after: None,
        };
        cfg.check().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }
}

/// Epochs that keep training to a few minutes on 2 cores: 60000 / n, clamped to 3..=12.
pub fn default_epochs(n_train: usize) -> usize {
    (60_000 / n_train.max(1)).clamp(3, 12)
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Model description (TOML).
    pub spec: PathBuf,
    /// Which of the three networks to train.
    #[arg(long, value_enum)]
    pub network: NetworkKind,
    /// Checkpoint directory (created; written atomically after every epoch).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// A trained monolithic checkpoint whose class-averaged activations define the k-means
    /// groups of a `label_map = "kmeans"` stage.
    #[arg(long)]
    pub groups_from: Option<PathBuf>,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub data: DataArgs,
}

pub fn run(args: &TrainArgs, device: &Device) -> anyhow::Result<()> {
    let mut spec = crate::shipped::load_spec(&args.spec)?;
    let splits = args.data.load(spec.input.dims())?;
    let cfg = args.optim.config(splits.train.len())?;
    if args.network != NetworkKind::Monolithic && needs_groups(&spec) {
        let Some(dir) = &args.groups_from else {
            anyhow::bail!(
                "{}: a stage has label_map = \"kmeans\"; pass --groups-from DIR (a trained monolithic checkpoint)",
                args.spec.display()
            );
        };
        let mono = Checkpoint::new(dir).load_model(device)?;
        anyhow::ensure!(
            mono.kind == NetworkKind::Monolithic,
            "{}: --groups-from needs a monolithic checkpoint, this is {}",
            dir.display(),
            mono.kind
        );
        let groups = groups_from(&mono, &spec, &splits.train, cfg.seed, device);
        eprintln!("k-means groups of the fine classes: {groups:?}");
        spec = resolve_groups(&spec, &groups);
    }
    let ckpt = Checkpoint::new(&args.out);
    if ckpt.exists() && !args.resume {
        anyhow::bail!(
            "{} already holds a checkpoint; pass --resume to continue it or choose another --out",
            args.out.display()
        );
    }
    train(TrainJob {
        spec: &spec,
        kind: args.network,
        train_set: &splits.train,
        valid_set: &splits.calib,
        cfg: &cfg,
        ckpt: &ckpt,
        resume: args.resume,
        pretrained: Vec::new(),
        device,
    })?;
    ckpt.save_preprocess(&splits.preprocess())?;
    eprintln!("saved {} network to {}", args.network, args.out.display());
    Ok(())
}
