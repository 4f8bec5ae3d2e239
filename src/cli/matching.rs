//! `onionnet match --model DIR IMAGE1 IMAGE2 [--show OUT.png]`: the matches between two
//! photographs found by a trained 2ch-deep cascade.

use crate::apps::matching::{MatchOptions, match_images, show};
use crate::checkpoint::Checkpoint;
use crate::data::image::GreyImage;
use crate::infer::EngineKind;
use crate::onion::NetworkKind;
use burn::tensor::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct MatchArgs {
    /// A patch-matching model: a model directory, the output directory of `patches` (then
    /// its `--network`), or a shipped model (`2ch-deep`).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, value_enum, default_value_t = NetworkKind::Onion)]
    pub network: NetworkKind,
    /// The two images (PNG or JPEG; colour is converted to grey).
    #[arg(num_args = 2, required = true)]
    pub images: Vec<PathBuf>,
    /// Corners taken in each image, strongest first.
    #[arg(long, default_value_t = 150)]
    pub corners: usize,
    /// A pair is a match only above this final score (0: 2ch-deep's decision boundary).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub min_score: f32,
    /// The operating point: a target TPR the model was calibrated for [default: the highest].
    #[arg(long)]
    pub target_tpr: Option<f64>,
    /// Draw the two images side by side with the matches to this PNG.
    #[arg(long)]
    pub show: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    #[arg(long, value_enum, default_value_t = EngineKind::Own)]
    pub engine: EngineKind,
    /// JSON Lines on stdout: one object per match (x1, y1, x2, y2, score).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &MatchArgs, device: &Device) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.min_score.is_finite(),
        "--min-score {}: a finite number",
        args.min_score
    );
    let dir = crate::models::resolve(&args.model, args.network)?;
    let ckpt = Checkpoint::new(&dir);
    let model = ckpt.load_model(device)?;
    crate::apps::matching::check_model(&model)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let cal = crate::models::operating_point(&ckpt, &model, args.target_tpr)?;
    let images = [
        GreyImage::load(&args.images[0])?,
        GreyImage::load(&args.images[1])?,
    ];
    let opts = MatchOptions {
        corners: args.corners,
        min_score: args.min_score,
        batch: args.batch,
        engine: args.engine,
    };
    let pb = ProgressBar::new(0).with_prefix("pairs scored");
    pb.set_style(
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap()
            .progress_chars("=> "),
    );
    let pair = [&images[0], &images[1]];
    let m = match_images(&model, cal.as_ref(), pair, opts, device, |done, all| {
        pb.set_length(all as u64);
        pb.set_position(done as u64);
    });
    pb.finish_and_clear();
    let m = m.map_err(|e| {
        anyhow::anyhow!(
            "{} and {}: {e}",
            args.images[0].display(),
            args.images[1].display()
        )
    })?;
    if args.json {
        for x in &m.matches {
            println!(
                "{}",
                serde_json::json!({"x1": x.a.0, "y1": x.a.1, "x2": x.b.0, "y2": x.b.1, "score": x.score})
            );
        }
    } else {
        println!(
            "{:>6} {:>6}  {:>6} {:>6}  {:>7}",
            "x1", "y1", "x2", "y2", "score"
        );
        for x in &m.matches {
            println!(
                "{:>6} {:>6}  {:>6} {:>6}  {:>7.3}",
                x.a.0, x.a.1, x.b.0, x.b.1, x.score
            );
        }
    }
    let pass = m.passed as f64 / m.pairs as f64 * 100.0;
    eprintln!(
        "{} and {} corners, {} pairs, {:.1}% passed stage 1, {} matches; {:.0} ms in the {} ({} pairs/s)",
        m.corners[0].len(),
        m.corners[1].len(),
        m.pairs,
        pass,
        m.matches.len(),
        m.seconds * 1e3,
        model.kind,
        (m.pairs as f64 / m.seconds.max(1e-9)).round()
    );
    if let Some(p) = &args.show {
        let title = format!(
            "{} matches ({} pairs scored, {:.0}% past stage 1)",
            m.matches.len(),
            m.pairs,
            pass
        );
        show::draw(p, [&images[0], &images[1]], &m, &title)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
