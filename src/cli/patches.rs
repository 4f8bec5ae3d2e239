//! `onionnet patches`: the patch-matching experiment — generate pairs from real photographs,
//! train 2ch-deep, its non-sharing cascade and its onion, calibrate stage 1, and print FPR95,
//! % passing, time and speed-ups on a balanced test set and on every Graffiti pair; plot time
//! against the imbalance.

use super::train::OptimArgs;
use super::{parse_confidence, parse_tpr};
use crate::apps::RunOptions;
use crate::apps::patches::{PatchOutcome, evaluate, imbalance_sweep, rows};
use crate::data::Dataset;
use crate::data::patches::{
    Graffiti, TEST_PHOTOS, TRAIN_PHOTOS, data_dir, generate_pairs, graffiti, load_photos,
};
use crate::onion::NetworkKind;
use crate::pipeline::Experiment;
use crate::report::plot::{Series, line_plot};
use crate::report::{json, table};
use burn::tensor::Device;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PatchesArgs {
    /// Model description (a file, or a shipped description's name; default: 2ch-deep).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Where the trained networks, thresholds and the imbalance plot go.
    #[arg(long, default_value = "runs/patches")]
    pub out: PathBuf,
    /// A run of a few minutes: 2,000 training pairs, 3 epochs, 60 Graffiti corners per image.
    #[arg(long)]
    pub quick: bool,
    /// Training pairs [default: 12,000; --quick: 2,000].
    #[arg(long)]
    pub pairs: Option<usize>,
    /// Pairs of the balanced test set [default: 4,000; --quick: 1,000].
    #[arg(long)]
    pub test_pairs: Option<usize>,
    /// Corners per Graffiti image (every pair is evaluated) [default: 150; --quick: 60].
    #[arg(long)]
    pub corners: Option<usize>,
    /// A Graffiti pair matches when the ground truth maps one corner within this many px.
    #[arg(long, default_value_t = 4.0)]
    pub tolerance: f64,
    /// Target TPRs of stage 1.
    #[arg(long = "tpr", value_parser = parse_tpr, default_values_t = [0.99, 0.995])]
    pub tpr: Vec<f64>,
    /// Guarantee each target TPR at this confidence (exact Clopper–Pearson lower bound over the
    /// held-out positives) instead of reaching it as a point estimate, e.g. 0.95.
    #[arg(long, value_parser = parse_confidence)]
    pub confidence: Option<f64>,
    #[command(flatten)]
    pub budget: super::BudgetArgs,
    /// Pairs per inference batch.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Survivors of K consecutive batches wait for each other before the next stage runs
    /// (a stream: stage 2 on fuller blocks, same scores; throughput, not latency). 1: every
    /// batch on its own.
    #[arg(long, default_value_t = 1)]
    pub pool: usize,
    /// Inference path: the own path or burn's modules.
    #[arg(long, value_enum, default_value_t = crate::infer::EngineKind::Own)]
    pub engine: crate::infer::EngineKind,
    /// Print `{"rows": [...]}` on stdout instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Also show how often the calibration holds on unseen pairs: over N seeded halves of the
    /// held-out pairs (each calibrates), the fraction whose TPR on the balanced test pairs
    /// reaches the target, with and without --confidence.
    #[arg(long, value_name = "N")]
    pub coverage: Option<usize>,
    /// Send this fraction of the pairs stage 1 rejects through the remaining stages anyway
    /// (seeded) and report the live TPR they imply, with its interval; a warning when it lies
    /// below the target (the Graffiti pairs are another distribution than the training pairs).
    #[arg(long, value_name = "F", value_parser = super::parse_fraction)]
    pub audit: Option<f64>,
    #[command(flatten)]
    pub optim: OptimArgs,
}

pub fn run(args: &PatchesArgs, device: &Device) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch >= 1, "--batch {} must be at least 1", args.batch);
    anyhow::ensure!(args.pool >= 1, "--pool {} must be at least 1", args.pool);
    let spec_path = args
        .spec
        .clone()
        .unwrap_or_else(|| PathBuf::from("2ch-deep"));
    let spec = crate::shipped::load_spec(&spec_path)?;
    check_spec(&spec, &spec_path)?;
    let q = args.quick;
    let n_train = args.pairs.unwrap_or(if q { 2000 } else { 12000 });
    let n_test = args.test_pairs.unwrap_or(if q { 1000 } else { 4000 });
    let corners = args.corners.unwrap_or(if q { 60 } else { 150 });
    anyhow::ensure!(
        n_train >= 100,
        "--pairs {n_train}: at least 100 training pairs"
    );
    anyhow::ensure!(
        n_test >= 20,
        "--test-pairs {n_test}: at least 20 test pairs"
    );
    let mut cfg = args.optim.config(n_train)?;
    if args.optim.epochs.is_none() {
        cfg.epochs = if q { 3 } else { 5 };
    }
    if args.optim.lr.is_none() {
        // the deep hinge-loss network diverges to dead units at the retrieval default (0.05)
        cfg.lr = 0.01;
    }
    let (train_set, calib, balanced, graf) = pairs(n_train, n_test, corners, args.tolerance)?;
    eprintln!(
        "  training: {} epochs, batch {}, lr {} (cosine), seed {}",
        cfg.epochs, cfg.batch_size, cfg.lr, cfg.seed
    );

    let exp = Experiment {
        train: &train_set,
        held_out: &calib,
        cfg: &cfg,
        out: &args.out,
        device,
    };
    eprintln!("[2/5] monolithic 2ch-deep");
    let mono = exp.monolithic(&spec)?;
    eprintln!("[3/5] non-sharing cascade and onion (joint hinge loss)");
    let cascades = exp.cascades(&mono, &spec)?;
    eprintln!("[4/5] stage-1 thresholds on the held-out pairs");
    let mut loaded = exp.calibrate(
        mono,
        cascades,
        &crate::calibrate::targets(&args.tpr, args.confidence),
    )?;
    // (the s-class of interest is "match" at every early stage)
    super::add_budgets(
        &args.budget,
        &mut loaded,
        (&calib, &[1]),
        args.confidence,
        &args.out,
        device,
    )?;
    let refs: Vec<_> = loaded.iter().map(|(m, c)| (m, c.clone())).collect();
    if let Some(draws) = args.coverage {
        for (model, _) in loaded.iter().filter(|(m, _)| m.num_stages() > 1) {
            let held = crate::calibrate::early_scores(model, &calib, device)?;
            let test = crate::calibrate::early_scores(model, &balanced, device)?;
            let what = format!(
                "\n{}: {draws} draws of half the {} held-out pairs, each calibrating; the fraction of draws whose TPR on the {} balanced test pairs reaches the target (s-class match)",
                model.kind.name(),
                calib.len(),
                balanced.len()
            );
            super::calibrate::coverage_table(
                &what,
                ((held.0, held.1), (test.0, test.1)),
                &held.2,
                Some(1),
                &args.tpr,
                args.confidence,
                draws,
            )?;
        }
    }

    eprintln!("[5/5] evaluation");
    let run = RunOptions {
        batch: args.batch,
        pool: args.pool,
        engine: args.engine,
        audit: args.audit,
    };
    let settings = [
        ("balanced", &balanced, 3),
        ("graffiti (all pairs)", &graf.pairs, 1),
    ];
    let mut all_rows = Vec::new();
    let mut tables = String::new();
    let mut audits = Vec::new();
    for (name, data, reps) in settings {
        let out: Vec<PatchOutcome> = evaluate(&refs, data, reps, run, device, name)?;
        let r = rows(&spec, &out, name);
        let pos = data.labels.iter().sum::<usize>();
        tables.push_str(&format!(
            "\n{name}: {} pairs, {} matches\n{}",
            data.len(),
            pos,
            table::to_string(&r)
        ));
        all_rows.extend(r);
        audits.push((name, out));
    }
    // running time against the imbalance (negatives per positive), first target TPR
    let sweep = imbalance_sweep(&refs, &graf.pairs, &[1, 3, 10, 30, 100, 300], run, device)?;
    let lines = imbalance_table(&sweep);
    let png = args.out.join("imbalance.png");
    if sweep.len() >= 2 {
        let title = format!(
            "{}: running time vs imbalance (TPR {})",
            spec.name, args.tpr[0]
        );
        imbalance_plot(&png, &title, &sweep)?;
    }
    if args.json {
        println!("{}", json::to_string(&all_rows));
    } else {
        print!("{tables}{lines}");
    }
    if let Some(f) = args.audit {
        for (name, out) in &audits {
            if args.json {
                eprint!("\n{name}:");
            } else {
                print!("\n{name}:");
            }
            let a: Vec<_> = out
                .iter()
                .map(|o| (o.kind, o.target_tpr, o.audit))
                .collect();
            super::eval::print_audit(&a, f, "pairs", args.json);
        }
    }
    eprintln!(
        "\nnetworks, thresholds and {} saved under {}",
        png.file_name().unwrap().to_string_lossy(),
        args.out.display()
    );
    Ok(())
}

/// Patch matching needs two stacked 64x64 patches in and two classes out.
fn check_spec(spec: &crate::spec::Spec, path: &std::path::Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        spec.input.dims() == [2, 64, 64],
        "{}: input must be 2 x 64 x 64 (two stacked 64x64 patches), it is {:?}",
        path.display(),
        spec.input.dims()
    );
    anyhow::ensure!(
        spec.classes == 2,
        "{}: classes = {} but patch matching has 2 (non-match, match)",
        path.display(),
        spec.classes
    );
    Ok(())
}

/// The sweep as a text table: one row per ratio, one column per network kind.
fn imbalance_table(sweep: &[(usize, Vec<f64>)]) -> String {
    let mut lines = String::from(
        "\ntime per 1,000 pairs (ms) against negatives per positive (Graffiti pairs):\n",
    );
    lines.push_str(&format!("  {:>6}", "ratio"));
    for k in NetworkKind::ALL {
        lines.push_str(&format!(" {:>12}", k.name()));
    }
    lines.push('\n');
    for (r, ms) in sweep {
        lines.push_str(&format!("  {r:>6}"));
        for m in ms {
            lines.push_str(&format!(" {m:>12.1}"));
        }
        lines.push('\n');
    }
    lines
}

/// The sweep as a line plot over log10 of the ratio.
fn imbalance_plot(
    png: &std::path::Path,
    title: &str,
    sweep: &[(usize, Vec<f64>)],
) -> anyhow::Result<()> {
    let series: Vec<Series> = NetworkKind::ALL
        .iter()
        .enumerate()
        .map(|(i, k)| Series {
            label: k.name().into(),
            points: sweep
                .iter()
                .map(|(r, ms)| ((*r as f64).log10(), ms[i]))
                .collect(),
            colour: i,
            dashed: false,
            bars: Vec::new(),
        })
        .collect();
    line_plot(
        png,
        title,
        "log10(negatives per positive)",
        "ms per 1,000 pairs",
        &series,
    )
}

/// The pairs of the experiment, with a summary on stderr: training pairs and held-out pairs
/// (other seed) of the training photographs, a balanced test set from two other photographs,
/// and every corner pair of Graffiti.
fn pairs(
    n_train: usize,
    n_test: usize,
    corners: usize,
    tolerance: f64,
) -> anyhow::Result<(Dataset, Dataset, Dataset, Graffiti)> {
    let photos = data_dir()?.join("photos");
    eprintln!("[1/5] pairs from real photographs under random homographies");
    let train_photos = load_photos(&photos, &TRAIN_PHOTOS)?;
    let (train_set, _) = generate_pairs(&train_photos, n_train, 1);
    // held out: other pairs (other seed) of the training photographs, for validation and calibration
    let (calib, _) = generate_pairs(&train_photos, (n_train / 6).max(400), 2);
    let (balanced, _) = generate_pairs(&load_photos(&photos, &TEST_PHOTOS)?, n_test, 3);
    let graf = graffiti(&data_dir()?.join("graffiti"), corners, tolerance)?;
    let gpos = graf.pairs.labels.iter().sum::<usize>();
    eprintln!(
        "  train {} pairs ({}), held out {}, balanced test {} ({}), Graffiti {} x {} corners = {} pairs, {} matches (1 : {:.0})",
        train_set.len(),
        TRAIN_PHOTOS.join(", "),
        calib.len(),
        balanced.len(),
        TEST_PHOTOS.join(", "),
        graf.corners[0].len(),
        graf.corners[1].len(),
        graf.pairs.len(),
        gpos,
        (graf.pairs.len() - gpos) as f64 / gpos.max(1) as f64
    );
    Ok((train_set, calib, balanced, graf))
}
