//! Matching two photographs with a trained 2ch-deep cascade (`onionnet match`), patch matching
//! as a user meets it: Harris corners in both images, every pair of their patches through the
//! cascade (stage 1 rejects most non-matching pairs cheaply), and the pairs that are each
//! other's best partner with a final score above a minimum are the matches.

pub mod show;

use crate::calibrate::Calibration;
use crate::data::image::GreyImage;
use crate::data::keypoints::harris;
use crate::data::patches::{SIZE, patch_at};
use crate::error::CascadeError;
use crate::infer::{EngineKind, prepare};
use crate::model::Model;
use burn::tensor::{Device, Tensor, TensorData};

/// Pairs scored per block: bounds memory (a pair is 2 x 64 x 64 f32, 32 KiB) whatever the
/// number of corners.
const BLOCK_PAIRS: usize = 2048;

#[derive(Debug, Clone, Copy)]
pub struct MatchOptions {
    /// Corners taken in each image (strongest first).
    pub corners: usize,
    /// A pair is a match only above this final score (2ch-deep's hinge output: 0 is the
    /// decision boundary).
    pub min_score: f32,
    pub batch: usize,
    pub engine: EngineKind,
}

/// A corner of the first image matched to one of the second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    pub a: (usize, usize),
    pub b: (usize, usize),
    pub score: f32,
}

#[derive(Debug, Clone)]
pub struct Matching {
    pub corners: [Vec<(usize, usize)>; 2],
    /// Pairs scored, and those that passed stage 1.
    pub pairs: usize,
    pub passed: usize,
    /// Best first.
    pub matches: Vec<Match>,
    /// Time in the cascade.
    pub seconds: f64,
}

/// Refuses a network that is not a patch matcher: 2 x 64 x 64 input, 2 classes.
pub fn check_model(model: &Model) -> Result<(), CascadeError> {
    let want = [2, SIZE, SIZE];
    if model.spec.input.dims() != want || model.spec.classes != 2 {
        return Err(CascadeError::Mismatch(format!(
            "description {:?} has input {:?} and {} classes; a patch matcher has input {want:?} (two stacked 64x64 grey patches) and 2 classes (no match, match)",
            model.spec.name,
            model.spec.input.dims(),
            model.spec.classes
        )));
    }
    Ok(())
}

/// Matches `images[0]` against `images[1]` with `model` at the operating point `cal` (none:
/// the monolithic network, every pair through); `progress` hears (pairs scored, pairs) after
/// each block. Errors: not a patch matcher, or an image without corners (smaller than 83 x 83
/// pixels, or flat).
pub fn match_images(
    model: &Model,
    cal: Option<&Calibration>,
    images: [&GreyImage; 2],
    opts: MatchOptions,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<Matching, CascadeError> {
    check_model(model)?;
    if opts.corners == 0 || opts.batch == 0 {
        return Err(CascadeError::Empty(format!(
            "{} corners in batches of {} (both must be at least 1)",
            opts.corners, opts.batch
        )));
    }
    let corners = images.map(|img| harris(img, opts.corners, 8, 40));
    for (i, c) in corners.iter().enumerate() {
        if c.is_empty() {
            return Err(CascadeError::Empty(format!(
                "no corner in image {} ({} x {} pixels: patches need 40 pixels of margin, and some texture)",
                i + 1,
                images[i].width,
                images[i].height
            )));
        }
    }
    let patches = [0, 1].map(|i| {
        corners[i]
            .iter()
            .map(|&c| patch_at(images[i], c))
            .collect::<Vec<_>>()
    });
    let (n1, n2) = (corners[0].len(), corners[1].len());
    let fast = prepare(opts.engine, &[model]);
    let cal = cal.cloned();
    let rows_per_block = (BLOCK_PAIRS / n2).max(1);
    let mut scores = Vec::with_capacity(n1 * n2);
    let (mut passed, mut seconds) = (0, 0.0);
    for start in (0..n1).step_by(rows_per_block) {
        let rows = start..(start + rows_per_block).min(n1);
        let k = rows.len() * n2;
        let mut px = Vec::with_capacity(k * 2 * SIZE * SIZE);
        for i in rows {
            for p2 in &patches[1] {
                px.extend_from_slice(&patches[0][i]);
                px.extend_from_slice(p2);
            }
        }
        let x = Tensor::<4>::from_data(TensorData::new(px, [k, 2, SIZE, SIZE]), device);
        let (s, p, t) = crate::apps::patches::score(
            model,
            fast[0].as_ref(),
            &cal,
            &[((0..k).collect(), x)],
            opts.batch,
            k,
        );
        scores.extend(s);
        passed += p.iter().filter(|&&x| x).count();
        seconds += t;
        progress(scores.len(), n1 * n2);
    }
    let matches = mutual_best(&scores, n1, n2, opts.min_score)
        .into_iter()
        .map(|(i, j)| Match {
            a: corners[0][i],
            b: corners[1][j],
            score: scores[i * n2 + j],
        })
        .collect();
    Ok(Matching {
        corners,
        pairs: n1 * n2,
        passed,
        matches,
        seconds,
    })
}

/// The pairs (i, j) of a row-major `n1 x n2` score matrix that are each other's best (highest
/// score in row i and in column j, first on ties) and score above `min`; best first.
pub fn mutual_best(scores: &[f32], n1: usize, n2: usize, min: f32) -> Vec<(usize, usize)> {
    let argmax = |it: &mut dyn Iterator<Item = (usize, f32)>| {
        it.fold(None, |best: Option<(usize, f32)>, (k, s)| match best {
            Some((_, b)) if b >= s => best,
            _ => Some((k, s)),
        })
    };
    let mut out: Vec<(usize, usize)> = (0..n1)
        .filter_map(|i| {
            let (j, s) = argmax(&mut (0..n2).map(|j| (j, scores[i * n2 + j])))?;
            let (i2, _) = argmax(&mut (0..n1).map(|r| (r, scores[r * n2 + j])))?;
            (i2 == i && s > min).then_some((i, j))
        })
        .collect();
    out.sort_by(|a, b| scores[b.0 * n2 + b.1].total_cmp(&scores[a.0 * n2 + a.1]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: every (i, j) checked against its whole row and column.
    fn brute(scores: &[f32], n1: usize, n2: usize, min: f32) -> Vec<(usize, usize)> {
        let mut v: Vec<(usize, usize)> = (0..n1)
            .flat_map(|i| (0..n2).map(move |j| (i, j)))
            .filter(|&(i, j)| {
                let s = scores[i * n2 + j];
                s > min
                    && (0..n2)
                        .all(|k| scores[i * n2 + k] < s || (scores[i * n2 + k] == s && k >= j))
                    && (0..n1)
                        .all(|r| scores[r * n2 + j] < s || (scores[r * n2 + j] == s && r >= i))
            })
            .collect();
        v.sort_by(|a, b| scores[b.0 * n2 + b.1].total_cmp(&scores[a.0 * n2 + a.1]));
        v
    }

    #[test]
    fn mutual_best_agrees_with_brute_force() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for case in 0..200 {
            let (n1, n2) = (rng.random_range(1..9), rng.random_range(1..9));
            // few distinct values, so ties and rejected pairs (-inf) occur
            let scores: Vec<f32> = (0..n1 * n2)
                .map(|_| match rng.random_range(0..5) {
                    0 => f32::NEG_INFINITY,
                    v => v as f32 - 2.0,
                })
                .collect();
            assert_eq!(
                mutual_best(&scores, n1, n2, 0.0),
                brute(&scores, n1, n2, 0.0),
                "case {case}: {scores:?} ({n1} x {n2})"
            );
        }
    }

    #[test]
    fn each_corner_is_matched_at_most_once() {
        let scores = [5.0, 4.0, 1.0, 6.0, 3.0, 2.0];
        // row 0's best is column 0 (5) but column 0's best is row 1 (6): no match for row 0
        assert_eq!(mutual_best(&scores, 2, 3, 0.0), vec![(1, 0)]);
        assert_eq!(mutual_best(&scores, 2, 3, 6.0), vec![]);
    }
}
