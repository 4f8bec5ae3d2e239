//! Grey images as `f32` in [0, 1], loaded from PNG/JPEG, with bilinear sampling.

use crate::error::DataError;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct GreyImage {
    pub width: usize,
    pub height: usize,
    /// Row-major, `[height][width]`.
    pub px: Vec<f32>,
}

impl GreyImage {
    /// Loads and converts to grey (luma).
    pub fn load(path: &Path) -> Result<GreyImage, DataError> {
        let img = image::open(path).map_err(|e| DataError::Format {
            path: path.to_path_buf(),
            reason: format!("cannot decode image: {e}"),
        })?;
        let g = img.to_luma8();
        Ok(GreyImage {
            width: g.width() as usize,
            height: g.height() as usize,
            px: g.as_raw().iter().map(|&v| v as f32 / 255.0).collect(),
        })
    }

    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.px[y * self.width + x]
    }

    /// Bilinear sample at `(x, y)` (pixel centres at integers); outside the image the border
    /// pixels repeat.
    pub fn sample(&self, x: f64, y: f64) -> f32 {
        let x = x.clamp(0.0, (self.width - 1) as f64);
        let y = y.clamp(0.0, (self.height - 1) as f64);
        let (x0, y0) = (x.floor() as usize, y.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(self.width - 1), (y0 + 1).min(self.height - 1));
        let (fx, fy) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
        let top = self.at(x0, y0) * (1.0 - fx) + self.at(x1, y0) * fx;
        let bottom = self.at(x0, y1) * (1.0 - fx) + self.at(x1, y1) * fx;
        top * (1.0 - fy) + bottom * fy
    }
}
