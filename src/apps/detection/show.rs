//! A picture of what the detector finds: the scene enlarged, ground-truth boxes in green,
//! detections above a score in red with their class and score.

use crate::data::fashion::CLASS_NAMES;
use crate::data::scenes::{BoxF, Scene};
use plotters::prelude::*;
use std::path::Path;

/// Pixels per scene pixel in the picture.
const ZOOM: usize = 3;

/// Writes `scene` with its objects and `detections` (`(class, score, box)`) of at least
/// `min_score` as a PNG at `path`.
pub fn draw(
    path: &Path,
    scene: &Scene,
    detections: &[(usize, f32, BoxF)],
    min_score: f32,
    title: &str,
) -> anyhow::Result<()> {
    crate::report::plot::register()?;
    let (w, h) = (scene.width * ZOOM, scene.height * ZOOM);
    let top = 28;
    let mut buf = vec![255u8; w * (h + top) * 3];
    for y in 0..h {
        for x in 0..w {
            let v = (scene.px[(y / ZOOM) * scene.width + x / ZOOM] * 255.0).round() as u8;
            let i = ((y + top) * w + x) * 3;
            buf[i..i + 3].copy_from_slice(&[v, v, v]);
        }
    }
    {
        let root =
            BitMapBackend::with_buffer(&mut buf, (w as u32, (h + top) as u32)).into_drawing_area();
        root.draw(&Text::new(
            title.to_string(),
            (6, 6),
            ("sans-serif", 16).into_font().color(&BLACK),
        ))?;
        let rect = |b: &BoxF| {
            let p = |x: f32, y: f32| {
                (
                    (x * ZOOM as f32) as i32,
                    (y * ZOOM as f32) as i32 + top as i32,
                )
            };
            (p(b[0], b[1]), p(b[2], b[3]))
        };
        for o in &scene.objects {
            let (a, b) = rect(&o.bbox);
            root.draw(&Rectangle::new([a, b], GREEN.stroke_width(2)))?;
        }
        for &(c, s, ref b) in detections.iter().filter(|d| d.1 >= min_score) {
            let (a, bb) = rect(b);
            root.draw(&Rectangle::new([a, bb], RED.stroke_width(2)))?;
            let label = format!("{} {:.2}", CLASS_NAMES[c], s);
            root.draw(&Rectangle::new(
                [(a.0, a.1), (a.0 + 7 * label.len() as i32, a.1 + 15)],
                RED.filled(),
            ))?;
            root.draw(&Text::new(
                label,
                (a.0 + 2, a.1 + 1),
                ("sans-serif", 13).into_font().color(&WHITE),
            ))?;
        }
        root.present()?;
    }
    crate::report::plot::write_rgb_png(path, w, h + top, buf)
}
