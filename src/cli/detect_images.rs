//! `onionnet detect --model DIR IMAGE... [--show OUT.png]`: a trained detector on your own
//! images; boxes, classes and scores printed (`--json`: JSON Lines) and drawn.

use super::detect::DetectArgs;
use crate::apps::detection::detector::load;
use crate::apps::detection::new_images::detect_image;
use crate::apps::detection::show;
use crate::checkpoint::Checkpoint;
use crate::data::fashion::CLASS_NAMES;
use crate::data::image::GreyImage;
use burn::tensor::Device;
use std::path::{Path, PathBuf};

/// Where `--show` draws image `i` of `n`: the file itself for one image, else `OUT-<i>.png`.
fn picture(show: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return show.to_path_buf();
    }
    let stem = show
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("detect");
    show.with_file_name(format!("{stem}-{}.png", i + 1))
}

pub fn run(args: &DetectArgs, model: &Path, device: &Device) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.images.is_empty(),
        "--model {}: name the images to detect on",
        model.display()
    );
    anyhow::ensure!(
        args.min_score.is_finite(),
        "--min-score {}: a finite number",
        args.min_score
    );
    let dir = crate::models::resolve(model, args.network)?;
    let ckpt = Checkpoint::new(&dir);
    let mut det = load(&ckpt, device)?;
    det.engine = args.engine;
    let cal = crate::models::operating_point(&ckpt, &det.head, args.target_tpr)?;
    if !args.json {
        println!(
            "{:<40} {:<12} {:>6}  box (x0, y0, x1, y1)",
            "image", "class", "score"
        );
    }
    let n = args.images.len();
    for (i, path) in args.images.iter().enumerate() {
        let img = GreyImage::load(path)?;
        let d = detect_image(&det, cal.as_ref(), &img, args.min_score, device);
        for f in &d.found {
            let b = f.bbox.map(|v| v.round());
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"path": path, "class": CLASS_NAMES[f.class],
                        "score": f.score, "box": b})
                );
            } else {
                println!(
                    "{:<40} {:<12} {:>6.3}  {} {} {} {}",
                    path.display(),
                    CLASS_NAMES[f.class],
                    f.score,
                    b[0],
                    b[1],
                    b[2],
                    b[3]
                );
            }
        }
        eprintln!(
            "{}: {} detections, {:.1}% of proposals passed stage 1, {:.0} ms",
            path.display(),
            d.found.len(),
            100.0 * d.passed,
            d.seconds * 1e3
        );
        if let Some(show) = &args.show {
            let p = picture(show, i, n);
            let title = format!(
                "{} ({} x {} shown as {} x {}): {} detections >= {}",
                path.file_name().map_or("".into(), |f| f.to_string_lossy()),
                img.width,
                img.height,
                d.scene.width,
                d.scene.height,
                d.found.len(),
                args.min_score
            );
            show::draw(&p, &d.scene, &d.in_scene, args.min_score, &title)?;
            eprintln!("  wrote {}", p.display());
        }
    }
    Ok(())
}
