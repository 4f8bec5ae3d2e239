//! Command-line interface: `Cli` and its subcommands; one file per command's logic.

pub mod bench;
pub mod calibrate;
pub mod cost;
pub mod demo;
pub mod detect;
pub mod detect_images;
pub mod eval;
pub mod export;
pub mod fit;
pub mod matching;
pub mod models;
pub mod patches;
pub mod retrieve;
pub mod study;
pub mod train;

pub use crate::device::DeviceKind;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// OnionNet: cascades of feature-sharing deep classifiers.
#[derive(Debug, Parser)]
#[command(name = "onionnet", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Where tensors live and compute.
    #[arg(long, global = true, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The main job: train the monolithic baseline, the non-sharing cascade and the onion for
    /// retrieval on Fashion-MNIST, calibrate, evaluate and print the paper's table.
    Demo(demo::DemoArgs),
    /// The same on any description and data: Fashion-MNIST's IDX files or an image folder
    /// (`DIR/<class>/*.png|jpg`, optionally under train/ and test/).
    Fit(fit::FitArgs),
    /// Retrieve the images of query classes from files and folders with a trained cascade.
    Retrieve(retrieve::RetrieveArgs),
    /// The matches between two photographs found by a trained 2ch-deep cascade
    Match(matching::MatchArgs),
    /// The trained models shipped with onionnet (`--model NAME`)
    Models,
    /// Write a trained network's weights to a safetensors file (readable from Python), with
    /// its description, preprocessing and thresholds in the metadata
    Export(export::ExportArgs),
    /// Read a safetensors file (as `export` writes it) into a new model directory
    Import(export::ImportArgs),
    /// Patch matching: 2ch-deep, its non-sharing cascade and its onion on pairs from real
    /// photographs; FPR95 on a balanced set and on every Graffiti pair; time vs imbalance plot.
    Patches(patches::PatchesArgs),
    /// Object detection: Fast R-CNN-style detector on scenes composed of Fashion-MNIST items
    /// on real photographs, with a monolithic, non-sharing-cascade or onion classifier head;
    /// mAP at IoU 0.5, % of proposals passing stage 1, time per image, speed-ups.
    Detect(detect::DetectArgs),
    /// Train one network of a model description on Fashion-MNIST or an image folder.
    Train(train::TrainArgs),
    /// Thresholds of a trained cascade for target TPRs, from the held-out calibration split.
    Calibrate(calibrate::CalibrateArgs),
    /// Retrieval evaluation of trained networks: mAP, % passing stage 1, time, speed-ups.
    Eval(eval::EvalArgs),
    /// Multiply-adds per layer and stage, and theoretical speed-ups, of a model description.
    Cost(cost::CostArgs),
    /// The synthetic time-cost benchmark: forced pass fractions p, measured vs theoretical
    /// time of the three networks (table, CSV, PNG plot, time breakdown).
    Bench(bench::BenchArgs),
    /// The paper's analysis: width and depth variants of one description (a study file) trained,
    /// calibrated and evaluated on the retrieval data; stage 1 alone, cascade and 'full'
    /// precision, % passing, speed-ups; the variants' time-cost curves.
    Study(study::StudyArgs),
}

/// Where the data come from and how they are split (shared by train, calibrate, eval, demo).
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// The data: a folder of Fashion-MNIST's IDX files, or an image folder (a sub-folder of
    /// images per class, optionally under train/ and test/) (default: Debian's
    /// dataset-fashion-mnist if installed, else the committed subset under data/).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Training images held out for validation and calibration (default: 1/6 of the training
    /// file, at most 5000).
    #[arg(long)]
    pub calib_size: Option<usize>,
    /// Use at most this many training images (before the held-out split).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use at most this many test images.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Seed of the held-out split.
    #[arg(long, default_value_t = 7)]
    pub split_seed: u64,
}

impl DataArgs {
    /// The splits, as the description's input `shape`: Fashion-MNIST's IDX files, or an image
    /// folder (files that cannot be decoded are skipped, each named in a warning).
    pub fn load(&self, shape: [usize; 3]) -> anyhow::Result<crate::apps::retrieval::Splits> {
        use crate::apps::retrieval::Splits;
        let dir = crate::data::fashion::default_dir(self.data.as_deref())?;
        eprintln!("data: {}", dir.display());
        if !crate::data::folder::ImageFolder::looks_like(&dir) {
            return Splits::load(
                &dir,
                self.train_limit,
                self.calib_size,
                self.test_limit,
                self.split_seed,
            );
        }
        let (splits, skipped) = Splits::from_folder(
            &dir,
            shape,
            self.train_limit,
            self.calib_size,
            self.test_limit,
            self.split_seed,
        )?;
        for (path, why) in &skipped {
            eprintln!("warning: skipped {}: {why}", path.display());
        }
        eprintln!(
            "  {} classes ({}); {} images read, {} skipped",
            splits.class_names.len(),
            splits.class_names.join(", "),
            splits.train.len() + splits.calib.len() + splits.test.len(),
            skipped.len()
        );
        Ok(splits)
    }
}

/// Time budgets that choose operating points besides the target TPRs (`demo`, `fit`).
#[derive(Debug, Clone, Args)]
pub struct BudgetArgs {
    /// Also the highest target TPR whose expected cost (the cost model's, at the held-out
    /// pass fractions) is at most R of the monolithic network's; repeatable.
    #[arg(long = "budget", value_name = "R")]
    pub budget: Vec<f64>,
    /// Also the highest target TPR whose expected time on this machine (each stage's time
    /// measured here) is at most B ms per 1,000 inputs; repeatable.
    #[arg(long = "budget-ms", value_name = "B")]
    pub budget_ms: Vec<f64>,
}

impl BudgetArgs {
    pub fn budgets(&self) -> Vec<crate::budget::Budget> {
        use crate::budget::Budget;
        let r = self.budget.iter().map(|&r| Budget::Fraction(r));
        r.chain(self.budget_ms.iter().map(|&ms| Budget::MsPer1000(ms)))
            .collect()
    }
}

/// The operating points of `--budget` / `--budget-ms`, added to each cascade's (and to its
/// thresholds file under `out`), chosen on the held-out `calib` for `queries`; a budget no
/// target fits is a warning, the rest goes on.
pub(crate) fn add_budgets(
    args: &BudgetArgs,
    loaded: &mut crate::pipeline::Calibrated,
    (calib, queries): (&crate::data::Dataset, &[usize]),
    confidence: Option<f64>,
    out: &std::path::Path,
    device: &burn::tensor::Device,
) -> anyhow::Result<()> {
    let budgets = args.budgets();
    if budgets.is_empty() {
        return Ok(());
    }
    for (model, cals) in loaded.iter_mut().filter(|(m, _)| m.num_stages() > 1) {
        let chosen =
            crate::budget::for_budgets(model, calib, &budgets, confidence, queries, device)?;
        for got in chosen {
            match got {
                Ok(got) => {
                    eprintln!("  {}: {}", model.kind.name(), budget_line(&got, confidence));
                    cals.push(Some(got.calibration));
                }
                Err(e) => eprintln!("warning: {}: {e}", model.kind.name()),
            }
        }
        let all: Vec<_> = cals.iter().flatten().cloned().collect();
        crate::checkpoint::Checkpoint::new(&out.join(model.kind.name())).save_thresholds(&all)?;
    }
    Ok(())
}

/// What a budget chose, in one line.
pub(crate) fn budget_line(b: &crate::budget::Budgeted, confidence: Option<f64>) -> String {
    format!(
        "budget {}: target TPR {:.4}{}, expected cost {:.3} of the monolithic network's{} ({}; held-out pass fractions {:?})",
        b.calibration.budget.as_deref().unwrap_or("?"),
        b.calibration.target_tpr,
        confidence.map_or(String::new(), |c| format!(" at confidence {c}")),
        b.expected,
        b.expected_ms
            .map_or(String::new(), |ms| format!(", {ms:.1} ms per 1,000 inputs")),
        b.basis,
        b.pass
            .iter()
            .map(|p| (p * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>()
    )
}

/// Target TPRs, validated.
pub fn parse_tpr(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    crate::calibrate::check_tpr(v).map_err(|e| e.to_string())
}

/// `--confidence`, in (0, 1).
pub fn parse_confidence(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!("confidence {v} is outside (0, 1)"))
    }
}

/// The fraction-valued options (`--p`), validated.
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("p = {v} is outside [0, 1]"))
    }
}

/// Exit status of a panic: a bug of onionnet, not of the input (1 is a refused input).
pub const BUG_EXIT: i32 = 70;

/// A panic is a bug: print a short report request instead of a raw backtrace (set
/// `RUST_BACKTRACE=1` to get one) and exit with [`BUG_EXIT`], from whichever thread panicked.
pub fn report_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            default(info);
        }
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
        let args: Vec<String> = std::env::args().collect();
        eprintln!(
            "error: onionnet hit a bug ({what}{at}).\nPlease report it with the command and its input files: {}",
            args.join(" ")
        );
        std::process::exit(BUG_EXIT);
    }));
}
