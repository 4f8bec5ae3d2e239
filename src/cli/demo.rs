//! `onionnet demo` and `onionnet fit`: the whole retrieval experiment in one command — train
//! the monolithic baseline, derive the stage-1 groups from it by k-means, train the
//! non-sharing cascade and the onion, calibrate both on the held-out split, evaluate and print
//! the paper's table. `demo` is `fit` on the shipped description and Fashion-MNIST.

use super::eval::EvalOpts;
use super::train::OptimArgs;
use super::{DataArgs, parse_confidence, parse_tpr};
use crate::calibrate::targets;
use crate::pipeline::{self, Step};
use burn::tensor::Device;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Model description (a file, or a shipped description's name; default: fashion-retrieval).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Where the three trained networks go (an existing run with the same settings is reused).
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
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

pub fn default_spec() -> PathBuf {
    PathBuf::from("fashion-retrieval")
}

pub fn run(args: &DemoArgs, device: &Device) -> anyhow::Result<()> {
    let spec_path = args.spec.clone().unwrap_or_else(default_spec);
    let job = Fit {
        spec: &spec_path,
        out: &args.out,
        tpr: &args.tpr,
        confidence: args.confidence,
        budget: &args.budget,
        eval: &args.eval,
        optim: &args.optim,
        data: &args.data,
    };
    job.run(device)
}

/// The whole job on one description and one data set (`demo` and `fit`).
pub(crate) struct Fit<'a> {
    pub spec: &'a Path,
    pub out: &'a Path,
    pub tpr: &'a [f64],
    pub confidence: Option<f64>,
    pub budget: &'a super::BudgetArgs,
    pub eval: &'a EvalOpts,
    pub optim: &'a OptimArgs,
    pub data: &'a DataArgs,
}

impl Fit<'_> {
    pub fn run(&self, device: &Device) -> anyhow::Result<()> {
        self.eval.check()?;
        let spec = crate::shipped::load_spec(self.spec)?;
        let splits = self.data.load(spec.input.dims())?;
        anyhow::ensure!(
            splits.class_names.len() == spec.classes,
            "{}: classes = {} but the data have {} classes ({})",
            self.spec.display(),
            spec.classes,
            splits.class_names.len(),
            splits.class_names.join(", ")
        );
        let cfg = self.optim.config(splits.train.len())?;
        eprintln!(
            "splits: {} train, {} held out (validation + calibration), {} test",
            splits.train.len(),
            splits.calib.len(),
            splits.test.len()
        );
        eprintln!(
            "training: {} epochs, batch {}, lr {} (cosine), seed {}",
            cfg.epochs, cfg.batch_size, cfg.lr, cfg.seed
        );
        let step = |i: usize, what: &str| eprintln!("\n[{i}/5] {what}");
        let names = &splits.class_names;
        let mut loaded = pipeline::retrieval(
            &spec,
            &splits,
            &cfg,
            &targets(self.tpr, self.confidence),
            self.out,
            device,
            |s| match s {
                Step::Monolithic => step(1, "monolithic baseline"),
                Step::Groups(groups) => {
                    step(
                        2,
                        "stage-1 groups: k-means on the monolithic network's class-averaged activations",
                    );
                    let k = groups.iter().max().map_or(0, |g| g + 1);
                    for g in 0..k {
                        let these: Vec<&str> = (0..groups.len())
                            .filter(|&c| groups[c] == g)
                            .map(|c| names.get(c).map_or("?", String::as_str))
                            .collect();
                        eprintln!("  group {g}: {}", these.join(", "));
                    }
                }
                Step::Cascades => step(3, "non-sharing cascade and onion (joint loss)"),
                Step::Calibration => step(4, "calibration on the held-out split"),
            },
        )?;
        let queries: Vec<usize> = (0..spec.classes).collect();
        super::add_budgets(
            self.budget,
            &mut loaded,
            (&splits.calib, &queries),
            self.confidence,
            self.out,
            device,
        )?;
        step(5, "evaluation: one retrieval query per class");
        super::eval::print_results(&loaded, &splits.test, self.eval, device)?;
        eprintln!(
            "\nnetworks, thresholds and preprocessing saved under {}",
            self.out.display()
        );
        Ok(())
    }
}
