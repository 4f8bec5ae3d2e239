//! `onionnet retrieve --model DIR --query CLASS PATH...`: a trained cascade scans image files
//! and folders and prints the images of the query classes, best first.

use crate::apps::retrieve::{Operating, ScanOptions, scan};
use crate::checkpoint::Checkpoint;
use crate::infer::EngineKind;
use crate::onion::NetworkKind;
use anyhow::Context;
use burn::tensor::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct RetrieveArgs {
    /// A model directory written by `train`, the output directory of `fit` / `demo` (then its
    /// onion, or the network `--network` names), or a shipped model (`onionnet models`).
    #[arg(long)]
    pub model: PathBuf,
    /// With an output directory of `fit` / `demo`: which of its networks runs.
    #[arg(long, value_enum, default_value_t = NetworkKind::Onion)]
    pub network: NetworkKind,
    /// A class to retrieve, by name (as the data's folders name it) or index; repeat for more.
    #[arg(long = "query", required = true)]
    pub queries: Vec<String>,
    /// Image files and folders (searched recursively for .png, .jpg, .jpeg).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The operating point: a target TPR the model was calibrated for [default: the highest].
    #[arg(long)]
    pub target_tpr: Option<f64>,
    /// Images shown per query, best first.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    #[arg(long, value_enum, default_value_t = EngineKind::Own)]
    pub engine: EngineKind,
    /// Send this fraction of each query's rejected images (seeded) through the remaining
    /// stages anyway and estimate the live TPR, with a warning when it falls below the
    /// target (the audit's time is not in images/s), e.g. 0.05.
    #[arg(long, value_name = "F", value_parser = super::parse_fraction)]
    pub audit: Option<f64>,
    /// JSON Lines on stdout: one object per retrieved image (path, query, score, stages).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &RetrieveArgs, device: &Device) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch >= 1, "--batch {} must be at least 1", args.batch);
    anyhow::ensure!(args.top >= 1, "--top {} must be at least 1", args.top);
    if let Some(p) = args.paths.iter().find(|p| !p.exists()) {
        anyhow::bail!("{}: no such file or folder to search", p.display());
    }
    let dir = crate::models::resolve(&args.model, args.network)?;
    let ckpt = Checkpoint::new(&dir);
    let model = ckpt.load_model(device)?;
    let pre = ckpt.load_preprocess()?;
    let names = &pre.classes;
    let queries: Vec<usize> = args
        .queries
        .iter()
        .map(|q| {
            pre.class_index(q).with_context(|| {
                format!(
                    "--query {q}: not a class of the model ({})",
                    names.join(", ")
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let thresholds = crate::models::operating_point(&ckpt, &model, args.target_tpr)?;
    let pb = ProgressBar::new_spinner().with_prefix("images read");
    pb.set_style(ProgressStyle::with_template("{prefix:>24} {pos} {elapsed} {per_sec}").unwrap());
    let op = Operating {
        model: &model,
        preprocess: &pre,
        calibration: thresholds.as_ref(),
    };
    let opts = ScanOptions {
        batch: args.batch,
        top: args.top,
        engine: args.engine,
        audit: args.audit,
    };
    let sum = scan(op, &queries, args.paths.clone(), opts, device, |n| {
        pb.set_position(n as u64)
    });
    pb.finish_and_clear();
    for (i, hits) in sum.hits.iter().enumerate() {
        if !args.json {
            let (q, n) = (queries[i], sum.retrieved[i]);
            println!("{} (best {} of {n} retrieved):", names[q], hits.len());
        }
        for h in hits {
            if args.json {
                let line = serde_json::json!({"path": h.path, "query": names[h.query],
                    "score": h.score, "stages": h.stages});
                println!("{line}");
            } else {
                println!("  {:.3}  {}", h.score, h.path.display());
            }
        }
    }
    for (p, why) in &sum.skipped {
        eprintln!("warning: skipped {}: {why}", p.display());
    }
    eprintln!(
        "{} images read, {} skipped, {:.0} images/s ({} network of {}{})",
        sum.read,
        sum.skipped.len(),
        sum.read as f64 / sum.seconds.max(1e-9),
        model.kind,
        dir.display(),
        thresholds
            .as_ref()
            .map_or(String::new(), |c| format!(", target TPR {}", c.target_tpr))
    );
    for (i, q) in queries.iter().enumerate() {
        eprintln!(
            "  {}: {} retrieved, {:.1}% rejected at stage 1",
            names[*q],
            sum.retrieved[i],
            100.0 * sum.rejected[i] as f64 / sum.read.max(1) as f64
        );
        if args.audit.is_some() {
            let a = &sum.audit[i];
            eprintln!("    audit: {}", a.summary());
            if let Some(c) = thresholds.as_ref().filter(|c| a.below(c.target_tpr)) {
                eprintln!(
                    "warning: {}: the live TPR is below the target {} (95% interval wholly under it): these images differ from the calibration data; calibrate on images like them",
                    names[*q], c.target_tpr
                );
            }
        }
    }
    if args.audit.is_some() {
        eprintln!(
            "  the audit took {:.0} ms (not in images/s)",
            sum.audit_seconds * 1e3
        );
    }
    Ok(())
}
