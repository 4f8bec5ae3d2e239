//! PNG line plots (plotters, bitmap backend). Text uses the DejaVu Sans font compiled into
//! the binary, so plotting needs no system font libraries.

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use std::path::Path;

/// Makes the committed DejaVu Sans the "sans-serif" font (cheap; repeated calls are harmless).
pub(crate) fn register() -> anyhow::Result<()> {
    let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
    register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| {
        anyhow::anyhow!("assets/DejaVuSans.ttf compiled into the binary is not a valid font")
    })
}

/// One curve.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Index into the palette (curves of one network share a colour).
    pub colour: usize,
    pub dashed: bool,
    /// Vertical bars (x, low, high) drawn in the curve's colour: an interval around a point.
    pub bars: Vec<(f64, f64, f64)>,
}

/// Writes an RGB pixel buffer (`width x height`, row-major) as a PNG at `path`, atomically.
pub fn write_rgb_png(
    path: &std::path::Path,
    width: usize,
    height: usize,
    buf: Vec<u8>,
) -> anyhow::Result<()> {
    let img = image::RgbImage::from_raw(width as u32, height as u32, buf)
        .ok_or_else(|| anyhow::anyhow!("picture buffer of the wrong size"))?;
    let mut png = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut png),
        image::ImageOutputFormat::Png,
    )?;
    crate::files::write_atomic(path, &png)?;
    Ok(())
}

/// Draws `series` into a PNG at `path` (written to a temporary file, then renamed).
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> anyhow::Result<()> {
    register()?;
    // the encoder picks the format from the extension, so the temporary name ends in .png
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp.png"));
    {
        let root = BitMapBackend::new(&tmp, (900, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let ys = series.iter().flat_map(|s| {
            let bars = s.bars.iter().map(|b| b.2).filter(|y| y.is_finite());
            s.points.iter().map(|p| p.1).chain(bars)
        });
        let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
        let y1 = ys.fold(0.0f64, f64::max) * 1.08;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1, 0.0..y1.max(1e-9))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 15))
            .draw()?;
        let palette = [
            RGBColor(31, 119, 180),
            RGBColor(255, 127, 14),
            RGBColor(44, 160, 44),
            RGBColor(214, 39, 40),
            RGBColor(148, 103, 189),
            RGBColor(140, 86, 75),
            RGBColor(227, 119, 194),
            RGBColor(127, 127, 127),
            RGBColor(188, 189, 34),
            RGBColor(23, 190, 207),
        ];
        for s in series {
            let colour = palette[s.colour % palette.len()];
            let style = colour.stroke_width(2);
            let drawn = if s.dashed {
                chart.draw_series(DashedLineSeries::new(s.points.iter().copied(), 8, 6, style))?
            } else {
                chart.draw_series(LineSeries::new(s.points.iter().copied(), style))?
            };
            drawn.label(s.label.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
            // (a bar and its two caps, a hundredth of the x range wide)
            let cap = (x1 - x0) / 100.0;
            chart.draw_series(
                s.bars
                    .iter()
                    .filter(|b| b.1.is_finite() && b.2.is_finite())
                    .flat_map(|&(x, lo, hi)| {
                        [
                            vec![(x, lo), (x, hi)],
                            vec![(x - cap, lo), (x + cap, lo)],
                            vec![(x - cap, hi), (x + cap, hi)],
                        ]
                    })
                    .map(|path| PathElement::new(path, colour.stroke_width(1))),
            )?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot write the plot {}", path.display()))?;
    Ok(())
}
