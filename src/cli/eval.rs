//! `onionnet eval DIR...`: the retrieval table for trained (and calibrated) networks.

use super::DataArgs;
use crate::apps::RunOptions;
use crate::apps::retrieval::{evaluate, rows, same_monolithic};
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
    /// Send this fraction of the inputs an early stage rejects (seeded) through the remaining
    /// stages anyway, and estimate the live TPR from what the last stage finds (its time is
    /// reported apart), e.g. 0.05.
    #[arg(long, value_name = "F", value_parser = super::parse_fraction)]
    pub audit: Option<f64>,
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
    same_monolithic(&refs.iter().map(|(m, _)| *m).collect::<Vec<_>>())?;
    let outcomes = evaluate(
        &refs,
        test,
        top_k,
        RunOptions {
            batch,
            pool: opts.pool,
            engine: opts.engine,
            audit: opts.audit,
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
    if let Some(f) = opts.audit {
        let audits: Vec<_> = outcomes
            .iter()
            .map(|o| (o.kind, o.target_tpr, o.audit))
            .collect();
        print_audit(&audits, f, "images", as_json);
    }
    Ok(())
}

/// The audit's table (on stderr with `--json`), and a warning for each operating point whose
/// live TPR's interval lies wholly below its target: per (network, target TPR, audit).
pub(crate) fn print_audit(
    audits: &[(NetworkKind, Option<f64>, Option<crate::audit::Audit>)],
    fraction: f64,
    what: &str,
    to_stderr: bool,
) {
    let mut text = format!(
        "\naudit of {:.1}% of the rejected {what} (seeded; its time is not in ms/1000):\n{:<12} {:>10} {:>8} {:>15} {:>9} {:>8} {:>7} {:>5} {:>8}\n",
        100.0 * fraction,
        "network",
        "target TPR",
        "live TPR",
        "95% interval",
        "confirmed",
        "rejected",
        "audited",
        "found",
        "audit ms"
    );
    let mut warnings = Vec::new();
    for &(kind, target, audit) in audits {
        let (Some(a), Some(target)) = (audit, target) else {
            continue;
        };
        let live = a.live_tpr().map_or("-".into(), |t| format!("{t:.3}"));
        let (lo, hi) = a.interval().unwrap_or((f64::NAN, f64::NAN));
        text.push_str(&format!(
            "{:<12} {:>10} {:>8} {:>15} {:>9} {:>8} {:>7} {:>5} {:>8.1}\n",
            kind.name(),
            target,
            live,
            format!("{lo:.3}-{hi:.3}"),
            a.confirmed,
            a.rejected,
            a.audited,
            a.found,
            a.seconds * 1000.0
        ));
        if a.below(target) {
            warnings.push(format!(
                "warning: {} at target TPR {target}: the live TPR is below the target (95% interval {lo:.3}-{hi:.3}): the data may have drifted; calibrate again",
                kind.name()
            ));
        }
    }
    if to_stderr {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    for w in warnings {
        eprintln!("{w}");
    }
}
