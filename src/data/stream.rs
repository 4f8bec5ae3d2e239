//! Images read from their files on demand, so that training on an image folder holds a few
//! batches of pixels in memory whatever the folder's size: a [`Files`] keeps each row's path
//! and pixel sums (for the standardisation statistics), decodes the rows a batch asks for, and
//! a reader thread decodes the next batches of an epoch while the network trains on this one.
//!
//! Memory: the index (a path and two sums per image) plus at most [`AHEAD`] + 2 batches of
//! pixels (queued, being decoded, in use) — `(AHEAD + 2) x batch x C x H x W x 4` bytes.

use super::folder::{Labelled, decode};
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

/// Batches the reader thread decodes ahead of the one in use.
pub const AHEAD: usize = 2;

/// A batch read ahead: its rows and their standardised pixels.
type Batch = (Vec<usize>, Vec<f32>);

/// The rows of a dataset as image files.
#[derive(Debug, Clone)]
pub struct Files {
    paths: Arc<Vec<PathBuf>>,
    /// Per row: the sum and the sum of squares of its pixels (as decoded, in [0, 1]).
    sums: Vec<(f64, f64)>,
    /// `(mean, std)` applied to every decoded pixel.
    norm: (f32, f32),
    /// A reader thread's batches, in the order it was given.
    ahead: Arc<Mutex<Option<Receiver<Batch>>>>,
}

/// One pass over `items` (on every thread, `chunk` files at a time): the files that decode,
/// with their labels and pixel sums, and those that do not, with the reason.
pub fn check(
    items: &[Labelled],
    shape: [usize; 3],
    mut progress: impl FnMut(usize),
) -> (Files, Vec<usize>, Vec<(PathBuf, String)>) {
    let mut paths = Vec::with_capacity(items.len());
    let mut sums = Vec::with_capacity(items.len());
    let mut labels = Vec::with_capacity(items.len());
    let mut skipped = Vec::new();
    // (chunks bound the pixels alive at once; within one, every thread decodes)
    for chunk in items.chunks(1024) {
        let decoded: Vec<_> = chunk
            .par_iter()
            .map(|it| {
                decode(&it.path, shape).map(|px| {
                    px.iter().fold((0.0f64, 0.0f64), |(s, q), &v| {
                        (s + v as f64, q + v as f64 * v as f64)
                    })
                })
            })
            .collect();
        for (it, d) in chunk.iter().zip(decoded) {
            match d {
                Ok(s) => {
                    paths.push(it.path.clone());
                    sums.push(s);
                    labels.push(it.label);
                }
                Err(e) => skipped.push((it.path.clone(), e.to_string())),
            }
        }
        progress(chunk.len());
    }
    let files = Files {
        paths: Arc::new(paths),
        sums,
        norm: (0.0, 1.0),
        ahead: Arc::default(),
    };
    (files, labels, skipped)
}

impl Files {
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The rows `idx`, in that order (no reader thread carried over).
    pub fn subset(&self, idx: &[usize]) -> Files {
        Files {
            paths: Arc::new(idx.iter().map(|&i| self.paths[i].clone()).collect()),
            sums: idx.iter().map(|&i| self.sums[i]).collect(),
            norm: self.norm,
            ahead: Arc::default(),
        }
    }

    /// Mean and standard deviation of every pixel of every row, from the sums (no decoding).
    pub fn stats(&self, pixels_per_row: usize) -> (f32, f32) {
        let n = (self.len() * pixels_per_row).max(1) as f64;
        let (s, q) = self
            .sums
            .iter()
            .fold((0.0, 0.0), |(s, q), &(a, b)| (s + a, q + b));
        let mean = s / n;
        let var = (q / n - mean * mean).max(0.0);
        (mean as f32, var.sqrt().max(1e-6) as f32)
    }

    pub fn normalise(&mut self, norm: (f32, f32)) {
        self.norm = norm;
    }

    /// The pixels of rows `idx`, standardised: from the reader thread when it has just these
    /// rows ready, else decoded now. A file that has become unreadable since the check pass
    /// is named in a warning and reads as the mean image (zeros).
    pub fn rows(&self, idx: &[usize], shape: [usize; 3]) -> Vec<f32> {
        let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = ahead.as_ref() {
            match rx.recv() {
                Ok((rows, px)) if rows == idx => return px,
                // another order than the one read ahead: stop the reader
                _ => *ahead = None,
            }
        }
        drop(ahead);
        decode_rows(&self.paths, idx, shape, self.norm)
    }

    /// Starts a reader thread that decodes `batches` (rows, in the order they will be asked
    /// for) at most [`AHEAD`] ahead of the one in use; it stops when they are done or when a
    /// batch other than the next is asked for.
    pub fn read_ahead(&self, batches: Vec<Vec<usize>>, shape: [usize; 3]) {
        let (tx, rx) = sync_channel(AHEAD);
        let (paths, norm) = (Arc::clone(&self.paths), self.norm);
        *self.ahead.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
        std::thread::spawn(move || {
            for rows in batches {
                let px = decode_rows(&paths, &rows, shape, norm);
                if tx.send((rows, px)).is_err() {
                    return;
                }
            }
        });
    }
}

fn decode_rows(paths: &[PathBuf], idx: &[usize], shape: [usize; 3], norm: (f32, f32)) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let per: Vec<Vec<f32>> = idx
        .par_iter()
        .map(|&i| match decode(&paths[i], shape) {
            Ok(px) => px.into_iter().map(|v| (v - norm.0) / norm.1).collect(),
            Err(e) => {
                eprintln!("warning: {e}; read as the mean image");
                vec![0.0; n]
            }
        })
        .collect();
    per.concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::data::folder::load;

    /// Eleven real images (crops of a committed photograph) in a temporary folder.
    fn items(name: &str) -> (PathBuf, Vec<Labelled>) {
        let d = std::env::temp_dir().join(format!("onionnet-stream-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let photo = image::open("data/photos/camera.png").unwrap().to_luma8();
        let items = (0..11u32)
            .map(|i| {
                let path = d.join(format!("{i}.png"));
                image::imageops::crop_imm(&photo, 17 * i, 9 * i, 40 + i, 30)
                    .to_image()
                    .save(&path)
                    .unwrap();
                Labelled {
                    path,
                    label: i as usize % 3,
                }
            })
            .collect();
        (d, items)
    }

    fn streamed(items: &[Labelled], shape: [usize; 3]) -> Dataset {
        let (files, labels, skipped) = check(items, shape, |_| {});
        assert!(skipped.is_empty());
        Dataset {
            images: Vec::new(),
            labels,
            shape,
            classes: 3,
            files: Some(files),
        }
    }

    #[test]
    fn rows_in_files_are_the_rows_in_memory() {
        let (d, items) = items("same");
        let shape = [1, 12, 10];
        let device = burn::tensor::Device::flex();
        let (mut mem, _) = load(&items, shape, 3);
        let mut files = streamed(&items, shape);
        let (sm, sf) = (mem.stats(), files.stats());
        assert!(
            (sm.0 - sf.0).abs() < 1e-5 && (sm.1 - sf.1).abs() < 1e-5,
            "{sm:?} {sf:?}"
        );
        mem.normalise(sm);
        files.normalise(sm);
        let same = |a: &Dataset, b: &Dataset, idx: &[usize]| {
            let x = a
                .batch(idx, &device)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let y = b
                .batch(idx, &device)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            assert_eq!(x, y, "rows {idx:?}");
        };
        same(&mem, &files, &[3, 0, 7]);
        // read ahead in the order asked, then asked out of order: the same pixels either way
        let order = [5, 1, 10, 2, 4, 0, 9, 8];
        files.read_ahead(&order, 3);
        for rows in order.chunks(3).take(2) {
            same(&mem, &files, rows);
        }
        same(&mem, &files, &[6, 6]);
        same(&mem, &files, &order[6..]);
        // subsets, splits and the decoded copy keep rows and labels together
        let (a, b) = files.split(4, 1).unwrap();
        let (ma, mb) = mem.split(4, 1).unwrap();
        assert_eq!(
            (a.labels.clone(), b.labels.clone()),
            (ma.labels.clone(), mb.labels.clone())
        );
        same(&ma, &a, &[0, 1, 2]);
        let b = b.in_memory();
        assert!(b.files.is_none());
        assert_eq!(b.images, mb.images);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn unreadable_files_are_left_out_by_the_check_and_never_panic_later() {
        let (d, mut items) = items("bad");
        std::fs::write(d.join("broken.png"), b"\x89PNG not really").unwrap();
        items.push(Labelled {
            path: d.join("broken.png"),
            label: 1,
        });
        let (files, labels, skipped) = check(&items, [3, 8, 8], |_| {});
        assert_eq!((files.len(), labels.len()), (11, 11));
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].0.ends_with("broken.png"), "{skipped:?}");
        // a file gone after the check reads as the mean image (zeros), with a warning
        std::fs::remove_file(&items[4].path).unwrap();
        let px = files.rows(&[4, 5], [3, 8, 8]);
        assert_eq!(px.len(), 2 * 3 * 64);
        assert!(px[..192].iter().all(|&v| v == 0.0));
        assert!(px[192..].iter().any(|&v| v != 0.0));
        let _ = std::fs::remove_dir_all(&d);
    }
}
