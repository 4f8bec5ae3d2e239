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
    /// Instead of the target TPRs: the highest target whose expected cost (the cost model's, at
    /// the held-out pass fractions of one query per class) is at most this fraction of the
    /// monolithic network's, e.g. 0.3.
    #[arg(long, value_name = "R", conflicts_with = "budget_ms")]
    pub budget: Option<f64>,
    /// Instead of the target TPRs: the highest target whose expected time on this machine (each
    /// stage's time measured here, at the held-out pass fractions) is at most this many
    /// milliseconds per 1,000 inputs.
    #[arg(long, value_name = "B")]
    pub budget_ms: Option<f64>,
    /// Also show how often the calibration holds on unseen data: over N seeded splits of the
    /// held-out images into halves (one calibrates, the other tests), the fraction of draws
    /// whose TPR reaches the target, with and without --confidence.
    #[arg(long, value_name = "N")]
    pub coverage: Option<usize>,
    #[command(flatten)]
    pub data: DataArgs,
}

pub fn run(args: &CalibrateArgs, device: &Device) -> anyhow::Result<()> {
    // (image folders are read as the model's input; a model that cannot be read is reported
    // when it is loaded)
    let spec = Checkpoint::new(&args.model).load_spec().ok();
    let shape = spec.map_or([1, 28, 28], |s| s.input.dims());
    let splits = args.data.load(shape)?;
    let budget = match (args.budget, args.budget_ms) {
        (Some(r), _) => Some(crate::budget::Budget::Fraction(r)),
        (_, Some(ms)) => Some(crate::budget::Budget::MsPer1000(ms)),
        _ => None,
    };
    if let Some(budget) = budget {
        return calibrate_for_budget(args, &splits.calib, budget, device);
    }
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
    if let Some(draws) = args.coverage {
        print_coverage(args, &splits, draws, device)?;
    }
    Ok(())
}

/// The table of `--coverage`: per target TPR and confidence, the mean and lowest over the
/// (stage, s-class) pairs of the fraction of draws reaching the target.
fn print_coverage(
    args: &CalibrateArgs,
    splits: &crate::apps::retrieval::Splits,
    draws: usize,
    device: &Device,
) -> anyhow::Result<()> {
    anyhow::ensure!(draws >= 1, "--coverage {draws}: at least 1 draw");
    let model = Checkpoint::new(&args.model).load_model(device)?;
    let (scores, labels, classes) = crate::calibrate::early_scores(&model, &splits.calib, device)?;
    let (t_scores, t_labels, _) = crate::calibrate::early_scores(&model, &splits.test, device)?;
    let what = format!(
        "{draws} draws of half the {} held-out images, each calibrating; the fraction of draws whose TPR on the {} test images reaches the target",
        splits.calib.len(),
        splits.test.len()
    );
    coverage_table(
        &what,
        ((scores, labels), (t_scores, t_labels)),
        &classes,
        None,
        &args.tpr,
        args.confidence,
        draws,
    )
}

/// The coverage table: per target TPR, as a point estimate and at `confidence` where given,
/// the mean and lowest over the (stage, s-class) pairs (only s-class `of_interest` at every
/// early stage, where given) of the fraction of `draws` reaching the target on the test scores.
pub(crate) fn coverage_table(
    what: &str,
    (held, test): (crate::calibrate::Scored, crate::calibrate::Scored),
    classes: &[usize],
    of_interest: Option<usize>,
    tprs: &[f64],
    confidence: Option<f64>,
    draws: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(draws >= 1, "--coverage {draws}: at least 1 draw");
    println!("{what}");
    println!(
        "{:>10}  {:>10}  {:>12}  {:>14}",
        "target TPR", "confidence", "mean s-class", "lowest s-class"
    );
    let mut confidences = vec![None];
    confidences.extend(confidence.map(Some));
    for &tpr in tprs {
        for &confidence in &confidences {
            let target = crate::calibrate::Target { tpr, confidence };
            let mut held = crate::calibrate::coverage(&held, &test, classes, target, draws, 1)?;
            if let Some(c) = of_interest {
                // (the flattened (stage, s-class) pairs: stage s's start at the sum before it)
                let starts = classes.iter().scan(0, |at, &k| {
                    let start = *at;
                    *at += k;
                    Some(start)
                });
                held = starts.map(|start| held[start + c]).collect();
            }
            let mean = held.iter().sum::<f64>() / held.len() as f64;
            let low = held.iter().copied().fold(1.0, f64::min);
            let conf = confidence.map_or("-".to_string(), |c| c.to_string());
            println!("{tpr:>10}  {conf:>10}  {mean:>12.3}  {low:>14.3}");
        }
    }
    Ok(())
}

/// `--budget R` / `--budget-ms B`: the operating point chosen for the budget, written as the
/// only calibration.
fn calibrate_for_budget(
    args: &CalibrateArgs,
    calib: &crate::data::Dataset,
    budget: crate::budget::Budget,
    device: &Device,
) -> anyhow::Result<()> {
    let ckpt = Checkpoint::new(&args.model);
    let model = ckpt.load_model(device)?;
    let queries: Vec<usize> = (0..model.spec.classes).collect();
    let in_dir = |e: crate::error::CascadeError| anyhow::anyhow!("{}: {e}", args.model.display());
    let b = crate::budget::for_budgets(&model, calib, &[budget], args.confidence, &queries, device)
        .map_err(in_dir)?
        .pop()
        .expect("one result per budget")
        .map_err(in_dir)?;
    ckpt.save_thresholds(std::slice::from_ref(&b.calibration))?;
    println!("{}", super::budget_line(&b, args.confidence));
    eprintln!(
        "wrote {} (`onionnet eval` measures its time)",
        args.model.join("thresholds.json").display()
    );
    Ok(())
}
