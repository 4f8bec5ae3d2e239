//! `onionnet calibrate DIR --tpr T...`: per-stage thresholds from the held-out split.

use super::{DataArgs, parse_confidence, parse_tpr};
use crate::apps::retrieval::calibrate_dir;
use crate::calibrate::targets;
use crate::checkpoint::Checkpoint;
use burn::tensor::Device;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// A trained cascade's checkpoint directory (onion or non-sharing).
    pub model: PathBuf,
    /// Target true-positive rates of the early stages, in (0, 1].
    #[arg(long = "tpr", value_parser = parse_tpr, default_values_t = [0.95, 0.99])]
    pub tpr: Vec<f64>,
    /// Guarantee each target TPR at this confidence (exact Clopper–Pearson lower bound over the
    /// held-out positives) instead of reaching it as a point estimate, e.g. 0.95.
    #[arg(long, value_parser = parse_confidence)]
    pub confidence: Option<f64>,
    #[command(flatten)]
    pub data: DataArgs,
}

pub fn run(args: &CalibrateArgs, device: &Device) -> anyhow::Result<()> {
    // (image folders are read as the model's input; a model that cannot be read is reported
    // when it is loaded)
    let spec = Checkpoint::new(&args.model).load_spec().ok();
    let shape = spec.map_or([1, 28, 28], |s| s.input.dims());
    let splits = args.data.load(shape)?;
    for cal in calibrate_dir(
        &args.model,
        &splits.calib,
        &targets(&args.tpr, args.confidence),
        device,
    )? {
        let how = cal
            .confidence
            .map_or(String::new(), |c| format!(" at confidence {c}"));
        eprintln!(
            "target TPR {}{how}: thresholds {:?} (held-out positives {:?})",
            cal.target_tpr, cal.thresholds, cal.positives
        );
    }
    eprintln!("wrote {}", args.model.join("thresholds.json").display());
    Ok(())
}
