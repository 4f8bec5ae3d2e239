//! The trained detector on images it has not seen (`onionnet detect --model DIR IMAGE...`):
//! each image becomes a scene of the detector's size (grey, bilinear resize, aspect ratio not
//! kept), the proposals run through the backbone and the cascade head, and the boxes are
//! mapped back to the image's own pixels.

use super::detector::{Detector, object_gate};
use super::proposals::{WindowConfig, sliding_windows};
use crate::calibrate::Calibration;
use crate::cascade::Gate;
use crate::data::image::GreyImage;
use crate::data::scenes::{BoxF, Scene};
use burn::tensor::Device;

/// One detection in an image's own pixel coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Fine class (Fashion-MNIST order).
    pub class: usize,
    pub score: f32,
    /// `[x0, y0, x1, y1]` in the image's pixels.
    pub bbox: BoxF,
}

/// What the detector saw of one image and what it found there.
pub struct ImageDetections {
    /// The image as the detector's scene (for pictures).
    pub scene: Scene,
    /// The detections in scene coordinates (`(class, score, box)`, best first) and in the
    /// image's own pixels, both of at least the minimum score.
    pub in_scene: Vec<(usize, f32, BoxF)>,
    pub found: Vec<Found>,
    /// Fraction of proposals that passed stage 1.
    pub passed: f64,
    pub seconds: f64,
}

/// `img` resized to the `size x size` scene the detector reads.
pub fn scene_of(img: &GreyImage, size: usize) -> Scene {
    let (sx, sy) = (
        img.width as f64 / size as f64,
        img.height as f64 / size as f64,
    );
    let px = (0..size * size)
        .map(|i| {
            let (x, y) = ((i % size) as f64, (i / size) as f64);
            img.sample((x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5)
        })
        .collect();
    Scene {
        width: size,
        height: size,
        px,
        objects: Vec::new(),
    }
}

/// Runs `det` at the operating point `cal` (none: every proposal through) on `img` and keeps
/// the detections scoring at least `min_score`.
pub fn detect_image(
    det: &Detector,
    cal: Option<&Calibration>,
    img: &GreyImage,
    min_score: f32,
    device: &Device,
) -> ImageDetections {
    let size = det
        .spec
        .detector
        .as_ref()
        .expect("a loaded detector has a layout")
        .image
        .height;
    let scene = scene_of(img, size);
    let proposals = sliding_windows(size, size, &WindowConfig::default());
    let gate = match cal {
        Some(c) => object_gate(&det.spec, c),
        None => Gate {
            per_stage: Vec::new(),
        },
    };
    let t0 = std::time::Instant::now();
    let out = det.detect(&scene, &proposals, &gate, device);
    let seconds = t0.elapsed().as_secs_f64();
    let (fx, fy) = (
        img.width as f32 / size as f32,
        img.height as f32 / size as f32,
    );
    let in_scene: Vec<_> = out
        .detections
        .into_iter()
        .filter(|d| d.1 >= min_score)
        .collect();
    let found = in_scene
        .iter()
        .map(|&(class, score, b)| Found {
            class,
            score,
            bbox: [b[0] * fx, b[1] * fy, b[2] * fx, b[3] * fy],
        })
        .collect();
    ImageDetections {
        passed: out.passed.iter().filter(|&&p| p).count() as f64 / proposals.len() as f64,
        scene,
        in_scene,
        found,
        seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scene_of_the_same_size_is_the_image() {
        let img = GreyImage {
            width: 5,
            height: 5,
            px: (0..25).map(|i| i as f32 / 25.0).collect(),
        };
        assert_eq!(scene_of(&img, 5).px, img.px);
        // a 2x larger image: each scene pixel is the mean of a 2x2 block (bilinear at its centre)
        let big = GreyImage {
            width: 4,
            height: 4,
            px: (0..16).map(|i| i as f32).collect(),
        };
        let s = scene_of(&big, 2);
        assert_eq!(s.px, vec![2.5, 4.5, 10.5, 12.5]);
    }
}
