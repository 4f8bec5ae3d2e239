//! Datasets: images as `f32` in `[N, C, H, W]` order with fine labels, plus the readers.

pub mod fashion;
pub mod folder;
pub mod homography;
pub mod idx;
pub mod image;
pub mod keypoints;
pub mod patches;
pub mod scenes;
pub mod stream;

use crate::error::DataError;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;

/// Images (row-major `[N, C, H, W]`) and fine labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The pixels, when in memory (empty when `files` holds the rows).
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    pub shape: [usize; 3],
    pub classes: usize,
    /// The rows as image files, decoded when a batch asks for them (training on an image
    /// folder: bounded memory whatever its size).
    pub files: Option<stream::Files>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn item_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The rows `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        if let Some(f) = &self.files {
            return Dataset {
                images: Vec::new(),
                labels: idx.iter().map(|&i| self.labels[i]).collect(),
                shape: self.shape,
                classes: self.classes,
                files: Some(f.subset(idx)),
            };
        }
        let n = self.item_len();
        let mut images = Vec::with_capacity(idx.len() * n);
        for &i in idx {
            images.extend_from_slice(&self.images[i * n..(i + 1) * n]);
        }
        Dataset {
            images,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            shape: self.shape,
            classes: self.classes,
            files: None,
        }
    }

    /// The first `n` rows (or all).
    pub fn take(&self, n: usize) -> Dataset {
        self.subset(&(0..n.min(self.len())).collect::<Vec<_>>())
    }

    /// Splits into (first, second) with `second_len` rows chosen at random (seeded) for the
    /// second part — used to hold out a calibration split.
    pub fn split(&self, second_len: usize, seed: u64) -> Result<(Dataset, Dataset), DataError> {
        if second_len == 0 || second_len >= self.len() {
            return Err(DataError::Mismatch {
                what: "held-out split".into(),
                reason: format!("cannot hold out {second_len} of {} examples", self.len()),
            });
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let (b, a) = order.split_at(second_len);
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        a.sort_unstable();
        b.sort_unstable();
        Ok((self.subset(&a), self.subset(&b)))
    }

    /// Per-channel standardisation with statistics of `self` (call on the training split and
    /// apply the same to the others).
    pub fn stats(&self) -> (f32, f32) {
        if let Some(f) = &self.files {
            return f.stats(self.item_len());
        }
        let n = self.images.len().max(1) as f64;
        let mean = self.images.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = self
            .images
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean as f32, var.sqrt().max(1e-6) as f32)
    }

    pub fn normalise(&mut self, (mean, std): (f32, f32)) {
        if let Some(f) = &mut self.files {
            f.normalise((mean, std));
        }
        for v in &mut self.images {
            *v = (*v - mean) / std;
        }
    }

    /// The whole set as tensors of at most `batch` rows, with the rows each holds (built once
    /// before timed inference, so every network is timed on the same ready batches; rows in
    /// files are decoded into memory here).
    pub fn batches(&self, batch: usize, device: &Device) -> Vec<(Vec<usize>, Tensor<4>)> {
        let all: Vec<usize> = (0..self.len()).collect();
        all.chunks(batch.max(1))
            .map(|c| (c.to_vec(), self.batch(c, device)))
            .collect()
    }

    /// The images of rows `idx` as a tensor `[len, C, H, W]`.
    pub fn batch(&self, idx: &[usize], device: &Device) -> Tensor<4> {
        let n = self.item_len();
        let buf = match &self.files {
            Some(f) => f.rows(idx, self.shape),
            None => {
                let mut buf = Vec::with_capacity(idx.len() * n);
                for &i in idx {
                    buf.extend_from_slice(&self.images[i * n..(i + 1) * n]);
                }
                buf
            }
        };
        let [c, h, w] = self.shape;
        Tensor::from_data(TensorData::new(buf, [idx.len(), c, h, w]), device)
    }

    /// Tells a dataset in files the rows an epoch will ask for, in `order`, `batch` at a time,
    /// so that a reader thread decodes them ahead of the network (nothing to do in memory).
    pub fn read_ahead(&self, order: &[usize], batch: usize) {
        if let Some(f) = &self.files {
            let batches = order.chunks(batch.max(1)).map(<[usize]>::to_vec).collect();
            f.read_ahead(batches, self.shape);
        }
    }

    /// The rows in memory (a dataset in files decoded; one in memory as it is).
    pub fn in_memory(self) -> Dataset {
        let Some(f) = &self.files else { return self };
        let all: Vec<usize> = (0..self.len()).collect();
        let images = f.rows(&all, self.shape);
        Dataset {
            images,
            files: None,
            ..self
        }
    }
}
