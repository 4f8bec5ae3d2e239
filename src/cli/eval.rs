//! `onionnet eval DIR...`: the retrieval table for trained (and calibrated) networks.

use super::DataArgs;
use crate::apps::RunOptions;
use crate::apps::retrieval::{evaluate, rows};
use crate::checkpoint::Checkpoint;
use crate::error::CheckpointError;
use crate::model::Model;
use crate::onion::NetworkKind;
use crate::report::{json, table};
use burn::tensor::Device;
use clap::Args;
use std::path::PathBuf;

/// How the retrieval evaluation runs and prints (shared with the demo).
#[derive(Debug, Clone, Args)]
pub struct EvalOpts {
    /// An image is retrieved for class c when c is in the top-k of the final softmax.
    #[arg(long, default_value_t = 1)]
    pub top_k: usize,
    /// Images per inference batch.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Survivors of K consecutive batches wait for each other before the next stage runs
    /// (a stream: stage 2 on fuller blocks, same scores; throughput, not latency). 1: every
    /// batch on its own.
    #[arg(long, default_value_t = 1)]
    pub pool: usize,
    /// Print `{"rows": [...]}` on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Inference path: the own path or burn's modules.
    #[arg(long, value_enum, default_value_t = crate::infer::EngineKind::Own)]
    pub engine: crate::infer::EngineKind,
}

impl EvalOpts {
    /// Refuses options no evaluation can run with, naming the option and its value.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.top_k >= 1, "--top-k {} must be at least 1", self.top_k);
        anyhow::ensure!(self.batch >= 1, "--batch {} must be at least 1", self.batch);
        anyhow::ensure!(self.pool >= 1, "--pool {} must be at least 1", self.pool);
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Checkpoint directories (include a monolithic one for measured speed-ups).
    #[arg(required = true)]
    pub models: Vec<PathBuf>,
    #[command(flatten)]
    pub eval: EvalOpts,
    #[command(flatten)]
    pub data: DataArgs,
}

pub fn run(args: &EvalArgs, device: &Device) -> anyhow::Result<()> {
    args.eval.check()?;
    // (image folders are read as the first model's input; a model that cannot be read is
    // reported when it is loaded, below)
    let spec = args
        .models
        .first()
        .and_then(|d| Checkpoint::new(d).load_spec().ok());
    let shape = spec.map_or([1, 28, 28], |s| s.input.dims());
    let splits = args.data.load(shape)?;
    let mut loaded: Vec<(Model, Vec<Option<crate::calibrate::Calibration>>)> = Vec::new();
    for dir in &args.models {
        let ck = Checkpoint::new(dir);
        let model = ck.load_model(device)?;
        let cals = if model.kind == NetworkKind::Monolithic {
            vec![None]
        } else {
            let t = ck.load_thresholds(&model.spec).map_err(|e| match e {
                CheckpointError::Io { .. } => {
                    anyhow::anyhow!("{e}; run `onionnet calibrate {}` first", dir.display())
                }
                e => e.into(),
            })?;
            t.calibrations.into_iter().map(Some).collect()
        };
        loaded.push((model, cals));
    }
    print_results(&loaded, &splits.test, &args.eval, device)
}

/// Evaluates and prints the table (or JSON) — shared with the demo.
pub fn print_results(
    loaded: &[(Model, Vec<Option<crate::calibrate::Calibration>>)],
    test: &crate::data::Dataset,
    opts: &EvalOpts,
    device: &Device,
) -> anyhow::Result<()> {
    let (top_k, batch, as_json) = (opts.top_k, opts.batch, opts.json);
    opts.check()?;
    let refs: Vec<(&Model, Vec<Option<crate::calibrate::Calibration>>)> =
        loaded.iter().map(|(m, c)| (m, c.clone())).collect();
    let outcomes = evaluate(
        &refs,
        test,
        top_k,
        RunOptions {
            batch,
            pool: opts.pool,
            engine: opts.engine,
        },
        device,
        false,
    )?;
    let spec = &loaded
        .iter()
        .find(|(m, _)| m.kind != NetworkKind::Monolithic)
        .unwrap_or(&loaded[0])
        .0
        .spec;
    let rows = rows(spec, &outcomes);
    if as_json {
        println!("{}", json::to_string(&rows));
    } else {
        println!(
            "retrieval on {} test images, top-{top_k}, mean over {} class queries",
            test.len(),
            test.classes
        );
        print!("{}", table::to_string(&rows));
    }
    Ok(())
}
