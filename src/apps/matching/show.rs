//! A picture of the matches: the two images side by side (scaled to a common height), every
//! corner a small dot, every match a line from its corner in the first image to its corner
//! in the second, greener the higher its score.

use super::Matching;
use crate::data::image::GreyImage;
use plotters::prelude::*;
use std::path::Path;

/// Height of the picture's images, in pixels (width follows each image's aspect ratio).
const HEIGHT: usize = 480;

pub fn draw(path: &Path, images: [&GreyImage; 2], m: &Matching, title: &str) -> anyhow::Result<()> {
    crate::report::plot::register()?;
    let scale = images.map(|i| HEIGHT as f64 / i.height as f64);
    let widths = [0, 1].map(|k| ((images[k].width as f64 * scale[k]).round() as usize).max(1));
    let (gap, top) = (8, 28);
    let (w, h) = (widths[0] + gap + widths[1], HEIGHT + top);
    let mut buf = vec![255u8; w * h * 3];
    let mut left = 0;
    for k in 0..2 {
        for y in 0..HEIGHT {
            for x in 0..widths[k] {
                let v = images[k].sample(x as f64 / scale[k], y as f64 / scale[k]);
                let v = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                let i = ((y + top) * w + left + x) * 3;
                buf[i..i + 3].copy_from_slice(&[v, v, v]);
            }
        }
        left += widths[k] + gap;
    }
    let at = |k: usize, (x, y): (usize, usize)| {
        let dx = if k == 0 { 0 } else { widths[0] + gap };
        (
            (x as f64 * scale[k]) as i32 + dx as i32,
            (y as f64 * scale[k]) as i32 + top as i32,
        )
    };
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w as u32, h as u32)).into_drawing_area();
        root.draw(&Text::new(
            title.to_string(),
            (6, 6),
            ("sans-serif", 16).into_font().color(&BLACK),
        ))?;
        for k in 0..2 {
            for &c in &m.corners[k] {
                root.draw(&Circle::new(at(k, c), 2, RGBColor(255, 200, 0).filled()))?;
            }
        }
        let (lo, hi) = m
            .matches
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), x| {
                (a.min(x.score), b.max(x.score))
            });
        for x in &m.matches {
            let t = if hi > lo {
                (x.score - lo) / (hi - lo)
            } else {
                1.0
            };
            let colour = RGBColor((230.0 * (1.0 - t)) as u8, (60.0 + 170.0 * t) as u8, 40);
            root.draw(&PathElement::new(
                vec![at(0, x.a), at(1, x.b)],
                colour.stroke_width(2),
            ))?;
        }
        root.present()?;
    }
    crate::report::plot::write_rgb_png(path, w, h, buf)
}
