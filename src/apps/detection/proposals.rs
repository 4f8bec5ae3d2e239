//! Class-agnostic object proposals: multi-scale sliding windows with a few aspect ratios,
//! tuned for recall at IoU 0.5 on the composed scenes. The windows do not depend on the
//! image's content, so every scene of one size gets the same list; what tells objects from
//! background is the classifier's job (stage 1 of the onion).

use crate::data::scenes::{BoxF, Object, iou};

/// How the windows are laid out.
#[derive(Debug, Clone)]
pub struct WindowConfig {
    /// Window sides (px), each used as width and as height of the windows.
    pub sides: Vec<usize>,
    /// Largest width/height (or height/width) ratio of a window.
    pub max_aspect: f32,
    /// Windows step by `side / steps_per_side` along each axis (at least `min_step` px).
    pub steps_per_side: usize,
    pub min_step: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            sides: vec![18, 30, 48, 76],
            max_aspect: 2.7,
            steps_per_side: 3,
            min_step: 11,
        }
    }
}

/// Every window of `cfg` inside a `width x height` image.
pub fn sliding_windows(width: usize, height: usize, cfg: &WindowConfig) -> Vec<BoxF> {
    let mut out = Vec::new();
    for &w in &cfg.sides {
        for &h in &cfg.sides {
            let aspect = w.max(h) as f32 / w.min(h) as f32;
            // windows smaller than the smallest objects (both sides short) are skipped
            if aspect > cfg.max_aspect || w.max(h) < 20 || w > width || h > height {
                continue;
            }
            let sx = (w / cfg.steps_per_side).max(cfg.min_step);
            let sy = (h / cfg.steps_per_side).max(cfg.min_step);
            let xs = positions(width, w, sx);
            let ys = positions(height, h, sy);
            for &y in &ys {
                for &x in &xs {
                    out.push([x as f32, y as f32, (x + w) as f32, (y + h) as f32]);
                }
            }
        }
    }
    out
}

/// Start positions of a window of length `len` stepping by `step`, the last flush with the end.
fn positions(total: usize, len: usize, step: usize) -> Vec<usize> {
    let last = total - len;
    let mut v: Vec<usize> = (0..=last).step_by(step).collect();
    if *v.last().unwrap() != last {
        v.push(last);
    }
    v
}

/// Best IoU of each proposal with any ground-truth object and that object's index.
pub fn best_match(proposals: &[BoxF], objects: &[Object]) -> Vec<(f32, Option<usize>)> {
    proposals
        .iter()
        .map(|p| {
            objects
                .iter()
                .enumerate()
                .map(|(i, o)| (iou(p, &o.bbox), Some(i)))
                .fold((0.0, None), |a, b| if b.0 > a.0 { b } else { a })
        })
        .collect()
}

/// Fraction of objects some proposal covers at IoU >= `thr` (the proposals' recall).
pub fn recall<'a>(
    proposals: &[BoxF],
    objects: impl IntoIterator<Item = &'a Object>,
    thr: f32,
) -> f64 {
    let (mut hit, mut n) = (0usize, 0usize);
    for o in objects {
        n += 1;
        if proposals.iter().any(|p| iou(p, &o.bbox) >= thr) {
            hit += 1;
        }
    }
    if n == 0 { 0.0 } else { hit as f64 / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_lie_inside_the_image_and_respect_the_aspect_limit() {
        let cfg = WindowConfig::default();
        let w = sliding_windows(192, 160, &cfg);
        assert!(!w.is_empty());
        for b in &w {
            assert!(
                b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 192.0 && b[3] <= 160.0,
                "{b:?}"
            );
            let (bw, bh) = (b[2] - b[0], b[3] - b[1]);
            assert!(bw.max(bh) / bw.min(bh) <= cfg.max_aspect + 1e-6);
        }
        // the last window of each size is flush with the right and bottom edges
        assert!(w.iter().any(|b| b[2] == 192.0) && w.iter().any(|b| b[3] == 160.0));
    }

    #[test]
    fn recall_counts_objects_with_a_good_enough_window() {
        let props = vec![[0.0, 0.0, 10.0, 10.0]];
        let objs = [
            Object {
                class: 0,
                bbox: [0.0, 0.0, 10.0, 12.0],
            },
            Object {
                class: 1,
                bbox: [50.0, 50.0, 60.0, 60.0],
            },
        ];
        assert_eq!(recall(&props, &objs, 0.5), 0.5);
        assert_eq!(best_match(&props, &objs)[0].1, Some(0));
    }
}
