//! `onionnet study FILE`: the paper's analysis of width and depth variants (its Section 5)
//! on the retrieval data — trains, calibrates and evaluates every variant the study file
//! lists, prints the table and draws the variants' time-cost curves.

use super::eval::EvalOpts;
use super::train::OptimArgs;
use super::{DataArgs, parse_tpr};
use crate::apps::RunOptions;
use crate::bench::BenchConfig;
use crate::calibrate::targets;
use crate::report::plot::{Series, line_plot};
use crate::report::{json, table};
use crate::study::{Curve, Settings, Step, Study, run};
use burn::tensor::Device;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct StudyArgs {
    /// The study file: `spec = "DESCRIPTION"` and a `[[variant]]` per variant (see
    /// specs/study/fashion.toml).
    pub study: PathBuf,
    /// Where the networks go [default: runs/study/NAME, NAME the study file's name; with
    /// --quick runs/study/NAME-quick] (an existing run with the same settings is reused).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A few minutes: 2 epochs on 2,400 training images (400 of them held out), 1,000 test
    /// images, a short benchmark.
    #[arg(long)]
    pub quick: bool,
    /// Target TPRs of the early stages.
    #[arg(long = "tpr", value_parser = parse_tpr, default_values_t = [0.95, 0.99])]
    pub tpr: Vec<f64>,
    /// The time-cost figure [default: OUT/time-cost.png].
    #[arg(long)]
    pub figure: Option<PathBuf>,
    /// Skip the synthetic benchmark (no figure).
    #[arg(long)]
    pub no_bench: bool,
    #[command(flatten)]
    pub eval: EvalOpts,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub data: DataArgs,
}

/// The study's default training: 6 epochs on at most 6,000 training images (the committed
/// subset's size), so that ten networks train in about 20 minutes on 2 cores, whatever the
/// data set.
const EPOCHS: usize = 6;
const TRAIN_IMAGES: usize = 6_000;

pub fn run_study(args: &StudyArgs, device: &Device) -> anyhow::Result<()> {
    args.eval.check()?;
    let study = Study::from_file(&args.study)?;
    let q = args.quick;
    let name = args
        .study
        .file_stem()
        .map_or("study".into(), |s| s.to_string_lossy().into_owned());
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs/study").join(if q { format!("{name}-quick") } else { name })
    });
    let mut data = args.data.clone();
    let limit = |given: Option<usize>, quick: usize, default: Option<usize>| {
        given.or(if q { Some(quick) } else { default })
    };
    data.train_limit = limit(data.train_limit, 2_400, Some(TRAIN_IMAGES));
    data.test_limit = limit(data.test_limit, 1_000, None);
    let splits = data.load(study.base.input.dims())?;
    anyhow::ensure!(
        splits.class_names.len() == study.base.classes,
        "{}: classes = {} but the data have {} classes",
        study.base.source.display(),
        study.base.classes,
        splits.class_names.len()
    );
    let mut optim = args.optim.clone();
    optim.epochs = optim.epochs.or(Some(if q { 2 } else { EPOCHS }));
    let cfg = optim.config(splits.train.len())?;
    let bench = (!args.no_bench).then(|| BenchConfig {
        reps: if q { 3 } else { 5 },
        warmup: 1,
        ps: if q {
            vec![0.05, 0.3, 1.0]
        } else {
            vec![0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]
        },
        engine: args.eval.engine,
        quiet: true,
        ..BenchConfig::default()
    });
    let networks = 2 + study.variants.len();
    eprintln!(
        "study {}: {} variants of {}; {} train, {} held out, {} test images; {} epochs, batch {}",
        args.study.display(),
        study.variants.len(),
        study.base.name,
        splits.train.len(),
        splits.calib.len(),
        splits.test.len(),
        cfg.epochs,
        cfg.batch_size
    );
    let mut trained = 0;
    let report = run(
        &study,
        &splits,
        &Settings {
            cfg: &cfg,
            targets: &targets(&args.tpr, None),
            out: &out,
            run: RunOptions {
                batch: args.eval.batch,
                pool: args.eval.pool,
                engine: args.eval.engine,
                audit: None,
            },
            bench,
            device,
        },
        |s| match s {
            Step::Train(what) => {
                trained += 1;
                eprintln!("\n[train {trained}/{networks}] {what}");
            }
            Step::Calibrate => eprintln!("\ncalibrating every cascade on the held-out split"),
            Step::Evaluate => eprintln!("evaluating: one retrieval query per class"),
            Step::Bench(what) => eprintln!("synthetic benchmark: {what}"),
        },
    )?;
    if args.eval.json {
        println!("{}", json::to_string(&report.rows));
    } else {
        println!(
            "\nstudy of {} on {} test images (mAP of one query per class; s1: stage 1 alone; full: every image passes; speed-ups against the baseline's monolithic network)",
            study.base.name,
            splits.test.len()
        );
        print!("{}", table::to_string(&report.rows));
    }
    if !report.curves.is_empty() {
        let figure = args
            .figure
            .clone()
            .unwrap_or_else(|| out.join("time-cost.png"));
        plot(&study, &report.curves, &figure)?;
        eprintln!("wrote {}", figure.display());
    }
    Ok(())
}

/// The paper's time-cost figure: per variant, time relative to its own monolithic network
/// against the fraction passing stage 1, measured (solid, with the interval of the median)
/// and from the cost model (dashed).
fn plot(study: &Study, curves: &[Curve], path: &Path) -> anyhow::Result<()> {
    let mut series = Vec::new();
    for (i, c) in curves.iter().enumerate() {
        let label = format!("{} {}", c.variant, c.network);
        series.push(Series {
            label: format!("{label} (measured)"),
            points: c.points.iter().map(|r| (r.p, r.measured_ratio)).collect(),
            colour: i,
            dashed: false,
            bars: c
                .points
                .iter()
                .map(|r| (r.p, r.measured_lo, r.measured_hi))
                .collect(),
        });
        series.push(Series {
            label: format!("{label} (theory)"),
            points: c.points.iter().map(|r| (r.p, r.theory_ratio)).collect(),
            colour: i,
            dashed: true,
            bars: Vec::new(),
        });
    }
    line_plot(
        path,
        &format!("{}: time-cost of the study's variants", study.base.name),
        "p (fraction of examples passing each early stage)",
        "time / monolithic time (solid measured, dashed theory)",
        &series,
    )
}
