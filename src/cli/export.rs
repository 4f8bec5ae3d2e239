//! `onionnet export DIR --out FILE.safetensors` and `onionnet import FILE --out DIR`: a trained
//! network's weights to and from safetensors (names in [`crate::export`]).

use crate::checkpoint::Checkpoint;
use crate::export::{Summary, export, import};
use crate::onion::NetworkKind;
use burn::tensor::Device;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A model directory, the output directory of `fit` / `demo` (then its `--network`), or
    /// the name of a shipped model (`onionnet models`).
    pub model: PathBuf,
    /// With an output directory of `fit` / `demo`: which of its networks.
    #[arg(long, value_enum, default_value_t = NetworkKind::Onion)]
    pub network: NetworkKind,
    /// The safetensors file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A safetensors file, as `export` writes it (or with the same tensor names).
    pub file: PathBuf,
    /// The model directory to create (it must not exist or be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// The description the weights belong to: required when the file's metadata has none;
    /// checked against it when it has one.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// The network kind, likewise [default: the file's, else onion].
    #[arg(long, value_enum)]
    pub kind: Option<NetworkKind>,
}

fn describe(s: &Summary) -> String {
    let mut extra = Vec::new();
    if s.preprocess {
        extra.push("preprocessing");
    }
    if s.thresholds {
        extra.push("thresholds");
    }
    format!(
        "{} tensors, {} values of the {}{}",
        s.tensors,
        s.values,
        s.kind,
        if extra.is_empty() {
            String::new()
        } else {
            format!(", with its {}", extra.join(" and "))
        }
    )
}

pub fn run_export(args: &ExportArgs, device: &Device) -> anyhow::Result<()> {
    let dir = crate::models::resolve(&args.model, args.network)?;
    let s = export(&Checkpoint::new(&dir), &args.out, device)?;
    eprintln!("{}: {}", args.out.display(), describe(&s));
    Ok(())
}

pub fn run_import(args: &ImportArgs, device: &Device) -> anyhow::Result<()> {
    let spec = args
        .spec
        .as_deref()
        .map(crate::shipped::load_spec)
        .transpose()?;
    let s = import(
        &args.file,
        spec.as_ref(),
        args.kind,
        &Checkpoint::new(&args.out),
        device,
    )?;
    eprintln!("{}: {}", args.out.display(), describe(&s));
    if !s.thresholds {
        eprintln!(
            "  no thresholds kept (none in the file, or its tensors are not the ones they were calibrated on): run `onionnet calibrate {}` before using it as a cascade",
            args.out.display()
        );
    }
    if !s.preprocess {
        eprintln!(
            "  no preprocessing in the file: `retrieve` needs a preprocess.json (see the README)"
        );
    }
    Ok(())
}
