//! Detection scenes composed from real images: Fashion-MNIST items pasted at random positions
//! and sizes onto random crops of real photographs. No box-annotated detection set can be
//! obtained here, so boxes come from the composition itself and are exact: an item's box is
//! the bounding box of every pixel it changed. Seeded, so a seed gives the same scenes.

use super::Dataset;
use super::image::GreyImage;
use rand::{Rng, SeedableRng};

/// An axis-aligned box in pixels, `[x0, y0, x1, y1)` (x1, y1 exclusive).
pub type BoxF = [f32; 4];

/// One pasted item: its Fashion-MNIST class (0..10) and its exact box.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub class: usize,
    pub bbox: BoxF,
}

/// A grey scene in [0, 1] with its objects.
#[derive(Debug, Clone)]
pub struct Scene {
    pub width: usize,
    pub height: usize,
    /// Row-major `[height][width]`.
    pub px: Vec<f32>,
    pub objects: Vec<Object>,
}

/// How scenes are composed.
#[derive(Debug, Clone)]
pub struct SceneConfig {
    /// Scenes are `size x size`.
    pub size: usize,
    /// Side of the pasted 28x28 item canvas, in pixels, drawn uniformly in this range.
    pub item_px: (usize, usize),
    /// Items per scene, drawn uniformly in this range (fewer when they do not fit).
    pub per_scene: (usize, usize),
    /// Largest IoU between two items' boxes ("overlapping a little").
    pub max_overlap: f32,
}

impl Default for SceneConfig {
    fn default() -> Self {
        SceneConfig {
            size: 192,
            item_px: (24, 80),
            per_scene: (2, 5),
            max_overlap: 0.15,
        }
    }
}

/// Intersection over union of two boxes (0 when either is empty).
pub fn iou(a: &BoxF, b: &BoxF) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &BoxF| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Below this, a resampled item pixel is the item's black canvas and leaves the scene as is.
const CANVAS: f32 = 0.02;
/// Item pixels at least this bright are opaque; darker ones blend with the photograph, so the
/// item's soft edge does not leave a black halo.
const OPAQUE: f32 = 0.15;

/// Pastes a 28x28 item (values in [0, 1], black canvas) scaled to `side` px with its top-left
/// corner at `(x, y)`; returns the box of the pixels it changed (`None` if none).
pub fn paste(scene: &mut Scene, item: &[f32], x: usize, y: usize, side: usize) -> Option<BoxF> {
    let src = GreyImage {
        width: 28,
        height: 28,
        px: item.to_vec(),
    };
    let scale = 28.0 / side as f64;
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for dy in 0..side {
        for dx in 0..side {
            let (px, py) = (x + dx, y + dy);
            if px >= scene.width || py >= scene.height {
                continue;
            }
            // pixel centres: (dx + 0.5) in the scene is (dx + 0.5) * scale - 0.5 in the item
            let v = src.sample(
                (dx as f64 + 0.5) * scale - 0.5,
                (dy as f64 + 0.5) * scale - 0.5,
            );
            if v <= CANVAS {
                continue;
            }
            let a = (v / OPAQUE).min(1.0);
            let p = &mut scene.px[py * scene.width + px];
            *p = a * v + (1.0 - a) * *p;
            (x0, y0, x1, y1) = (x0.min(px), y0.min(py), x1.max(px + 1), y1.max(py + 1));
        }
    }
    (x1 > 0).then_some([x0 as f32, y0 as f32, x1 as f32, y1 as f32])
}

/// A random `size x size` crop of a random photograph, flipped half the time, with a random
/// brightness/contrast change.
fn background(photos: &[GreyImage], size: usize, rng: &mut impl Rng) -> Vec<f32> {
    let p = &photos[rng.random_range(0..photos.len())];
    // photographs smaller than the scene are stretched to fit
    let s = (size as f64 / p.width.min(p.height) as f64).max(1.0);
    let (w, h) = (p.width as f64 / s, p.height as f64 / s);
    let ox = rng.random_range(0.0..=(w - size as f64).max(0.0));
    let oy = rng.random_range(0.0..=(h - size as f64).max(0.0));
    let flip = rng.random_bool(0.5);
    let (gain, bias) = (
        rng.random_range(0.7f32..1.1),
        rng.random_range(-0.1f32..0.1),
    );
    let mut px = Vec::with_capacity(size * size);
    for y in 0..size {
        for x in 0..size {
            let xs = if flip { size - 1 - x } else { x };
            let v = p.sample((ox + xs as f64) * s, (oy + y as f64) * s);
            px.push((v * gain + bias).clamp(0.0, 1.0));
        }
    }
    px
}

/// `n` scenes: backgrounds from `photos`, items drawn from `items` (Fashion-MNIST, labels
/// 0..10). Train and test scenes use disjoint photographs and disjoint item sets.
pub fn compose(
    photos: &[GreyImage],
    items: &Dataset,
    n: usize,
    cfg: &SceneConfig,
    seed: u64,
) -> Vec<Scene> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let item_len = 28 * 28;
    (0..n)
        .map(|_| {
            let mut scene = Scene {
                width: cfg.size,
                height: cfg.size,
                px: background(photos, cfg.size, &mut rng),
                objects: Vec::new(),
            };
            let want = rng.random_range(cfg.per_scene.0..=cfg.per_scene.1);
            let mut tries = 0;
            while scene.objects.len() < want && tries < 50 {
                tries += 1;
                let side = rng
                    .random_range(cfg.item_px.0..=cfg.item_px.1)
                    .min(cfg.size);
                let x = rng.random_range(0..=cfg.size - side);
                let y = rng.random_range(0..=cfg.size - side);
                let k = rng.random_range(0..items.len());
                let item = &items.images[k * item_len..(k + 1) * item_len];
                // try on a copy: a placement that overlaps too much is dropped
                let mut trial = scene.clone();
                let Some(bbox) = paste(&mut trial, item, x, y, side) else {
                    continue;
                };
                if scene
                    .objects
                    .iter()
                    .any(|o| iou(&o.bbox, &bbox) > cfg.max_overlap)
                {
                    continue;
                }
                scene.px = trial.px;
                scene.objects.push(Object {
                    class: items.labels[k],
                    bbox,
                });
            }
            scene
        })
        .collect()
}
