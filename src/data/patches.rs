//! Patch pairs for patch matching, from real photographs with ground truth.
//!
//! A patch is 64x64 grey pixels cut around a scene point c through a local warp W: pixel
//! (u, v) shows the image at c + W(u − 31.5, v − 31.5). A **positive** pair is one scene
//! point (a Harris corner) seen through two different random homographies with photometric
//! jitter; a **negative** pair is two different points. The two patches are stacked as the 2
//! channels of one example (2ch-deep's input), each standardised to zero mean and unit
//! variance. The Graffiti pair supplies the real-world test: corners in both images, every
//! pair of them, positive when the ground-truth homography maps one within a few pixels of
//! the other.

use super::Dataset;
use super::homography::Homography;
use super::image::GreyImage;
use super::keypoints::harris;
use crate::error::DataError;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

pub const SIZE: usize = 64;

/// Photographs committed under `data/photos/` (CC0 / public domain, from scikit-image).
pub const TRAIN_PHOTOS: [&str; 6] = [
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "brick.png",
    "grass.png",
];
/// Disjoint photographs for the balanced test set.
pub const TEST_PHOTOS: [&str; 2] = ["camera.png", "gravel.png"];

/// The repository's `data/` folder with the photographs (see [`crate::shipped::data_dir`]).
pub fn data_dir() -> Result<PathBuf, DataError> {
    crate::shipped::data_dir("photos")
}

/// Cuts a patch around `c` through `warp` (patch-centred coordinates → image offsets).
pub fn extract(img: &GreyImage, c: (f64, f64), warp: &Homography) -> Vec<f32> {
    let half = (SIZE as f64 - 1.0) / 2.0;
    let mut out = Vec::with_capacity(SIZE * SIZE);
    for v in 0..SIZE {
        for u in 0..SIZE {
            let (dx, dy) = warp
                .apply(u as f64 - half, v as f64 - half)
                .unwrap_or((1e9, 1e9));
            out.push(img.sample(c.0 + dx, c.1 + dy));
        }
    }
    out
}

/// The standardised, unwarped patch around the corner `c` of a photograph (one channel of a
/// test pair, as 2ch-deep sees it).
pub fn patch_at(img: &GreyImage, c: (usize, usize)) -> Vec<f32> {
    finish(
        extract(img, (c.0 as f64, c.1 as f64), &Homography::IDENTITY),
        None,
    )
}

/// Contrast, brightness and noise jitter, then standardisation.
fn finish(mut p: Vec<f32>, rng: Option<&mut rand::rngs::StdRng>) -> Vec<f32> {
    if let Some(rng) = rng {
        let a: f32 = rng.random_range(0.7..1.3);
        let b: f32 = rng.random_range(-0.15..0.15);
        for v in &mut p {
            // uniform noise of the same variance as N(0, 0.02²)
            *v = a * *v + b + rng.random_range(-0.0346..0.0346);
        }
    }
    let n = p.len() as f32;
    let mean = p.iter().sum::<f32>() / n;
    let std = (p.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n)
        .sqrt()
        .max(1e-3);
    p.iter().map(|v| (v - mean) / std).collect()
}

/// One generated pair with its ground truth (kept for tests and inspection).
#[derive(Debug, Clone)]
pub struct PairTruth {
    pub photo: usize,
    pub points: [(f64, f64); 2],
    pub warps: [Homography; 2],
    pub positive: bool,
}

/// Loads photographs (grey) by file name from `dir`.
pub fn load_photos(dir: &Path, names: &[&str]) -> Result<Vec<GreyImage>, DataError> {
    names
        .iter()
        .map(|n| GreyImage::load(&dir.join(n)))
        .collect()
}

/// `n` pairs (half positive, shuffled) from `photos`, seeded. Labels: 1 = match, 0 = not.
pub fn generate_pairs(photos: &[GreyImage], n: usize, seed: u64) -> (Dataset, Vec<PairTruth>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let corners: Vec<Vec<(usize, usize)>> = photos.iter().map(|p| harris(p, 400, 6, 24)).collect();
    let mut images = Vec::with_capacity(n * 2 * SIZE * SIZE);
    let mut labels = Vec::with_capacity(n);
    let mut truth = Vec::with_capacity(n);
    for i in 0..n {
        let positive = i % 2 == 0;
        let ph = rng.random_range(0..photos.len());
        let pick = |rng: &mut rand::rngs::StdRng| {
            let (x, y) = corners[ph][rng.random_range(0..corners[ph].len())];
            (x as f64, y as f64)
        };
        let a = pick(&mut rng);
        let b = if positive {
            a
        } else {
            // a different point, at least 16 px away
            loop {
                let b = pick(&mut rng);
                if (b.0 - a.0).hypot(b.1 - a.1) >= 16.0 {
                    break b;
                }
            }
        };
        let warps = [
            Homography::random_local(&mut rng, 1.0),
            Homography::random_local(&mut rng, 1.0),
        ];
        let pa = finish(extract(&photos[ph], a, &warps[0]), Some(&mut rng));
        let pb = finish(extract(&photos[ph], b, &warps[1]), Some(&mut rng));
        images.extend(pa);
        images.extend(pb);
        labels.push(positive as usize);
        truth.push(PairTruth {
            photo: ph,
            points: [a, b],
            warps,
            positive,
        });
    }
    // shuffle so batches mix positives and negatives
    let mut order: Vec<usize> = (0..n).collect();
    rand::seq::SliceRandom::shuffle(&mut order[..], &mut rng);
    let ds = Dataset {
        images,
        labels,
        shape: [2, SIZE, SIZE],
        classes: 2,
        files: None,
    }
    .subset(&order);
    let truth = order.iter().map(|&i| truth[i].clone()).collect();
    (ds, truth)
}

/// The Graffiti test: every pair of corners of graf1 and graf3.
pub struct Graffiti {
    /// All pairs, row-major over (corner in graf1, corner in graf3).
    pub pairs: Dataset,
    pub corners: [Vec<(usize, usize)>; 2],
}

/// Loads `graf1.png`, `graf3.png` and `H1to3p.xml` from `dir`, takes `n` corners in each and
/// labels every pair: positive when H maps the graf1 corner within `tol` px of the graf3 one.
pub fn graffiti(dir: &Path, n: usize, tol: f64) -> Result<Graffiti, DataError> {
    let g1 = GreyImage::load(&dir.join("graf1.png"))?;
    let g3 = GreyImage::load(&dir.join("graf3.png"))?;
    let hp = dir.join("H1to3p.xml");
    let text = std::fs::read_to_string(&hp).map_err(|source| DataError::Io {
        path: hp.clone(),
        source,
    })?;
    let h = Homography::parse_opencv_xml(&text).map_err(|reason| DataError::Format {
        path: hp.clone(),
        reason,
    })?;
    let c1 = harris(&g1, n, 8, 40);
    let c3 = harris(&g3, n, 8, 40);
    let p1: Vec<Vec<f32>> = c1.iter().map(|&c| patch_at(&g1, c)).collect();
    let p3: Vec<Vec<f32>> = c3.iter().map(|&c| patch_at(&g3, c)).collect();
    let mut images = Vec::with_capacity(c1.len() * c3.len() * 2 * SIZE * SIZE);
    let mut labels = Vec::with_capacity(c1.len() * c3.len());
    for (i, &(x1, y1)) in c1.iter().enumerate() {
        let m = h.apply(x1 as f64, y1 as f64);
        for (j, &(x3, y3)) in c3.iter().enumerate() {
            images.extend_from_slice(&p1[i]);
            images.extend_from_slice(&p3[j]);
            let pos = m.is_some_and(|(mx, my)| (mx - x3 as f64).hypot(my - y3 as f64) <= tol);
            labels.push(pos as usize);
        }
    }
    Ok(Graffiti {
        pairs: Dataset {
            images,
            labels,
            shape: [2, SIZE, SIZE],
            classes: 2,
            files: None,
        },
        corners: [c1, c3],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured image with one bright dot at `(cx, cy)`.
    fn dotted(cx: usize, cy: usize) -> GreyImage {
        let (w, h) = (160, 160);
        let mut px: Vec<f32> = (0..w * h)
            .map(|i| 0.3 + 0.1 * (((i % w) / 7 + (i / w) / 5) % 2) as f32)
            .collect();
        for y in cy - 1..=cy + 1 {
            for x in cx - 1..=cx + 1 {
                px[y * w + x] = 1.0;
            }
        }
        GreyImage {
            width: w,
            height: h,
            px,
        }
    }

    #[test]
    fn a_positive_shows_the_same_point_in_both_patches() {
        let img = dotted(83, 71);
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for _ in 0..20 {
            let w = Homography::random_local(&mut rng, 1.0);
            let p = extract(&img, (83.0, 71.0), &w);
            let (best, _) = p
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap();
            let (u, v) = (best % SIZE, best / SIZE);
            // the dot sits at the patch centre (31.5, 31.5) whatever the warp
            assert!(
                (u as f64 - 31.5).abs() <= 2.0 && (v as f64 - 31.5).abs() <= 2.0,
                "dot at ({u}, {v})"
            );
        }
    }

    #[test]
    fn generated_pairs_match_their_ground_truth() {
        let photos = load_photos(&data_dir().unwrap().join("photos"), &["camera.png"]).unwrap();
        let (ds, truth) = generate_pairs(&photos, 40, 3);
        assert_eq!(ds.len(), 40);
        assert_eq!(ds.labels.iter().sum::<usize>(), 20);
        for (t, &l) in truth.iter().zip(&ds.labels) {
            assert_eq!(t.positive, l == 1);
            let d = (t.points[0].0 - t.points[1].0).hypot(t.points[0].1 - t.points[1].1);
            if t.positive {
                assert_eq!(d, 0.0);
                // both warps keep the point at the patch centre
                assert_eq!(t.warps[0].apply(0.0, 0.0), Some((0.0, 0.0)));
                assert_eq!(t.warps[1].apply(0.0, 0.0), Some((0.0, 0.0)));
            } else {
                assert!(d >= 16.0);
            }
        }
        // standardised channels
        let ch = &ds.images[..SIZE * SIZE];
        let mean = ch.iter().sum::<f32>() / ch.len() as f32;
        assert!(mean.abs() < 1e-3);
    }

    #[test]
    fn graffiti_positives_agree_with_the_ground_truth_homography() {
        let g = graffiti(&data_dir().unwrap().join("graffiti"), 40, 4.0).unwrap();
        let (n1, n3) = (g.corners[0].len(), g.corners[1].len());
        assert_eq!(g.pairs.len(), n1 * n3);
        let pos = g.pairs.labels.iter().sum::<usize>();
        assert!(
            pos >= 1 && pos * 20 < g.pairs.len(),
            "{pos} positives of {}: realistic imbalance",
            g.pairs.len()
        );
    }
}
