//! Detection metrics: per-class non-maximum suppression and mean average precision at IoU
//! 0.5 with PASCAL VOC's all-point interpolation (the area under the precision envelope).

use crate::data::scenes::{BoxF, Object, iou};

/// One scored box of one class in one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub image: usize,
    pub class: usize,
    pub score: f32,
    pub bbox: BoxF,
}

/// Greedy NMS: keeps the best-scoring box, drops every box overlapping it by more than `thr`,
/// repeats. Returns the kept indices of `boxes`, best first.
pub fn nms(boxes: &[BoxF], scores: &[f32], thr: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut keep: Vec<usize> = Vec::new();
    for i in order {
        if keep.iter().all(|&k| iou(&boxes[k], &boxes[i]) <= thr) {
            keep.push(i);
        }
    }
    keep
}

/// VOC all-point average precision from detections sorted by score (true = true positive)
/// and the number of ground-truth objects.
pub fn average_precision(tp_sorted: &[bool], n_gt: usize) -> f64 {
    if n_gt == 0 {
        return 0.0;
    }
    let mut tp = 0usize;
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(tp_sorted.len()); // (recall, precision)
    for (i, &t) in tp_sorted.iter().enumerate() {
        tp += t as usize;
        points.push((tp as f64 / n_gt as f64, tp as f64 / (i + 1) as f64));
    }
    // precision envelope: the best precision at this recall or any higher one
    let mut best = 0.0f64;
    for p in points.iter_mut().rev() {
        best = best.max(p.1);
        p.1 = best;
    }
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for (r, p) in points {
        ap += (r - prev_recall) * p;
        prev_recall = r;
    }
    ap
}

/// AP of each class (0..classes) and their mean. `objects[i]` are image i's ground truth;
/// a detection is a true positive when it overlaps a not-yet-claimed object of its class in its
/// image by IoU >= 0.5 (highest scores claim first), else a false positive.
pub fn mean_average_precision(
    detections: &[Detection],
    objects: &[Vec<Object>],
    classes: usize,
) -> (Vec<f64>, f64) {
    let aps: Vec<f64> = (0..classes)
        .map(|c| {
            let mut dets: Vec<&Detection> = detections.iter().filter(|d| d.class == c).collect();
            dets.sort_by(|a, b| b.score.total_cmp(&a.score));
            let mut claimed: Vec<Vec<bool>> =
                objects.iter().map(|o| vec![false; o.len()]).collect();
            let tp: Vec<bool> = dets
                .iter()
                .map(|d| {
                    let best = objects[d.image]
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| o.class == c)
                        .map(|(j, o)| (j, iou(&d.bbox, &o.bbox)))
                        .max_by(|a, b| a.1.total_cmp(&b.1));
                    match best {
                        Some((j, v)) if v >= 0.5 && !claimed[d.image][j] => {
                            claimed[d.image][j] = true;
                            true
                        }
                        _ => false,
                    }
                })
                .collect();
            let n_gt = objects.iter().flatten().filter(|o| o.class == c).count();
            average_precision(&tp, n_gt)
        })
        .collect();
    let present: Vec<f64> = (0..classes)
        .filter(|&c| objects.iter().flatten().any(|o| o.class == c))
        .map(|c| aps[c])
        .collect();
    let mean = if present.is_empty() {
        0.0
    } else {
        present.iter().sum::<f64>() / present.len() as f64
    };
    (aps, mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_by_hand() {
        // two 10x10 squares overlapping in a 5x10 strip: 50 / 150
        assert!((iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
        // 4x4 inside 8x8: 16 / 64
        assert!((iou(&[0.0, 0.0, 8.0, 8.0], &[2.0, 2.0, 6.0, 6.0]) - 0.25).abs() < 1e-6);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[1.0, 1.0, 2.0, 2.0]), 0.0);
        assert_eq!(iou(&[3.0, 3.0, 9.0, 9.0], &[3.0, 3.0, 9.0, 9.0]), 1.0);
    }

    #[test]
    fn ap_by_hand() {
        // TP, FP, TP with 2 objects: points (0.5, 1), (0.5, 0.5), (1, 2/3);
        // envelope (0.5, 1), (0.5, 2/3), (1, 2/3) -> 0.5 * 1 + 0.5 * 2/3
        let ap = average_precision(&[true, false, true], 2);
        assert!((ap - (0.5 + 1.0 / 3.0)).abs() < 1e-12, "{ap}");
        // a missed object caps recall: one TP of 2 objects -> 0.5
        assert!((average_precision(&[true], 2) - 0.5).abs() < 1e-12);
        assert_eq!(average_precision(&[false, false], 1), 0.0);
        // FP first: (0, 0), (1, 0.5) -> 0.5
        assert!((average_precision(&[false, true], 1) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn map_matches_objects_once_and_by_class() {
        let objects = vec![
            vec![
                Object {
                    class: 0,
                    bbox: [0.0, 0.0, 10.0, 10.0],
                },
                Object {
                    class: 1,
                    bbox: [20.0, 20.0, 30.0, 30.0],
                },
            ],
            vec![Object {
                class: 0,
                bbox: [0.0, 0.0, 10.0, 10.0],
            }],
        ];
        let d = |image, class, score, bbox| Detection {
            image,
            class,
            score,
            bbox,
        };
        let dets = vec![
            d(0, 0, 0.9, [0.0, 0.0, 10.0, 10.0]),   // TP
            d(0, 0, 0.8, [1.0, 0.0, 10.0, 10.0]),   // duplicate of a claimed object: FP
            d(1, 0, 0.7, [0.0, 0.0, 10.0, 11.0]),   // TP
            d(0, 1, 0.6, [0.0, 0.0, 10.0, 10.0]),   // right place for class 0, wrong class: FP
            d(0, 1, 0.5, [20.0, 20.0, 30.0, 30.0]), // TP
        ];
        let (aps, mean) = mean_average_precision(&dets, &objects, 3);
        // class 0: TP FP TP over 2 objects; class 1: FP TP over 1 object; class 2 absent
        assert!((aps[0] - (0.5 + 1.0 / 3.0)).abs() < 1e-9, "{aps:?}");
        assert!((aps[1] - 0.5).abs() < 1e-9);
        assert!((mean - (aps[0] + aps[1]) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 1.0, 11.0, 11.0],
            [30.0, 30.0, 40.0, 40.0],
            [0.0, 0.0, 10.0, 9.0],
        ];
        let scores = [0.5, 0.9, 0.3, 0.4];
        assert_eq!(nms(&boxes, &scores, 0.3), vec![1, 2]);
        assert_eq!(nms(&boxes, &scores, 1.0), vec![1, 0, 3, 2]);
    }
}
