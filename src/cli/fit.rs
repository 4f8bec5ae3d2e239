//! `onionnet fit SPEC --data DIR`: `demo` on any description and any classification data —
//! Fashion-MNIST's IDX files or an image folder (a sub-folder of images per class).

use super::DataArgs;
use super::demo::Fit;
use super::eval::EvalOpts;
use super::train::OptimArgs;
use super::{parse_confidence, parse_tpr};
use burn::tensor::Device;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct FitArgs {
    /// Model description (a file, or a shipped description's name); its `input` is what the
    /// images are converted to, its `classes` must be the data's number of classes.
    pub spec: PathBuf,
    /// Where the three trained networks go [default: runs/fit/NAME, NAME the description's
    /// file name] (an existing run with the same settings is reused).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Target TPRs of stage 1.
    #[arg(long = "tpr", value_parser = parse_tpr, default_values_t = [0.95, 0.99])]
    pub tpr: Vec<f64>,
    /// Guarantee each target TPR at this confidence (exact Clopper–Pearson lower bound over the
    /// held-out positives) instead of reaching it as a point estimate, e.g. 0.95.
    #[arg(long, value_parser = parse_confidence)]
    pub confidence: Option<f64>,
    #[command(flatten)]
    pub budget: super::BudgetArgs,
    #[command(flatten)]
    pub eval: EvalOpts,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub data: DataArgs,
}

pub fn run(args: &FitArgs, device: &Device) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.data.data.is_some(),
        "fit needs --data DIR (an image folder, or a folder of Fashion-MNIST's IDX files)"
    );
    let name = args
        .spec
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/fit").join(name));
    Fit {
        spec: &args.spec,
        out: &out,
        tpr: &args.tpr,
        confidence: args.confidence,
        budget: &args.budget,
        eval: &args.eval,
        optim: &args.optim,
        data: &args.data,
    }
    .run(device)
}
