//! A trained cascade as a library user meets it: load one by its directory or a shipped
//! model's name, turn image files or pixels into its input, and ask which examples are of a
//! class — stage 1 rejects most of the others on its group score, the last stage scores the
//! rest. (The commands `retrieve`, `match` and `detect` are built from the same pieces.)
//!
//! ```
//! use burn::tensor::Device;
//! use onionnet::data::fashion::{load_split, subset_dir};
//! use onionnet::trained::Trained;
//!
//! let device = Device::default();
//! let fashion = Trained::load("fashion", &device)?; // the shipped retrieval onion
//! let trouser = fashion.class("Trouser")?;
//!
//! // 200 test images of the committed Fashion-MNIST subset: 28x28 grey, values in [0, 1]
//! let test = load_split(&subset_dir(), "t10k")?;
//! let x = fashion.input_pixels(test.images[..200 * 784].to_vec())?;
//! let answers = fashion.query(trouser, &x);
//!
//! let rejected = answers.iter().filter(|a| a.stages == 1).count();
//! let found = (0..200).filter(|&i| answers[i].retrieved && test.labels[i] == trouser).count();
//! let trousers = test.labels[..200].iter().filter(|&&l| l == trouser).count();
//! println!("{rejected} of 200 rejected at stage 1; {found} of {trousers} trousers retrieved");
//! assert!(rejected > 100 && found + 2 >= trousers);
//! # Ok::<(), anyhow::Error>(())
//! ```

use crate::apps::retrieval::query_gate;
use crate::calibrate::Calibration;
use crate::checkpoint::{Checkpoint, Preprocess};
use crate::data::folder::decode;
use crate::error::DataError;
use crate::infer::{FastModel, run_stream_on};
use crate::model::Model;
use crate::onion::NetworkKind;
use burn::tensor::{Device, Tensor, TensorData};
use std::path::{Path, PathBuf};

/// A trained network at an operating point, with what turns images into its input.
pub struct Trained {
    /// The model directory it was loaded from.
    pub dir: PathBuf,
    pub model: Model,
    pub preprocess: Preprocess,
    /// The thresholds of the early stages (`None` for a monolithic network; set to `None`,
    /// every example goes through every stage).
    pub calibration: Option<Calibration>,
    fast: FastModel,
    device: Device,
}

/// What the cascade said about one example for one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Answer {
    /// Stages it went through (1: rejected by stage 1).
    pub stages: usize,
    /// Its last-stage score for the class (softmax probability, or the hinge output); `None`
    /// where an early stage rejected it.
    pub score: Option<f32>,
    /// Whether the class is the last stage's top prediction for it.
    pub retrieved: bool,
}

impl Trained {
    /// Loads a model directory, the output directory of `fit` / `demo` (its onion) or a
    /// shipped model by name (`"fashion"`), at the highest target TPR it was calibrated for.
    pub fn load(model: impl AsRef<Path>, device: &Device) -> anyhow::Result<Trained> {
        let dir = crate::models::resolve(model.as_ref(), NetworkKind::Onion)?;
        let ckpt = Checkpoint::new(&dir);
        let m = ckpt.load_model(device)?;
        let preprocess = ckpt.load_preprocess()?;
        let calibration = crate::models::operating_point(&ckpt, &m, None)?;
        Ok(Trained {
            fast: FastModel::from_model(&m),
            model: m,
            dir,
            preprocess,
            calibration,
            device: device.clone(),
        })
    }

    /// The same network at another calibrated operating point.
    pub fn at_target_tpr(mut self, tpr: f64) -> anyhow::Result<Trained> {
        self.calibration =
            crate::models::operating_point(&Checkpoint::new(&self.dir), &self.model, Some(tpr))?;
        Ok(self)
    }

    /// The class names, in the order of the network's outputs.
    pub fn classes(&self) -> &[String] {
        &self.preprocess.classes
    }

    /// A class by name (any case) or index; an error lists the names.
    pub fn class(&self, name: &str) -> anyhow::Result<usize> {
        self.preprocess.class_index(name).ok_or_else(|| {
            anyhow::anyhow!(
                "{name:?} is not a class of the model ({})",
                self.classes().join(", ")
            )
        })
    }

    /// Image files (PNG or JPEG, any size or colour) as the network's input: converted to its
    /// channels and size, standardised as in training.
    pub fn input_files(&self, paths: &[impl AsRef<Path>]) -> Result<Tensor<4>, DataError> {
        let mut px = Vec::new();
        for p in paths {
            px.extend(decode(p.as_ref(), self.preprocess.input)?);
        }
        self.input_pixels(px)
    }

    /// Pixels already of the network's input shape, `[n, channels, height, width]` row-major
    /// with values in [0, 1], standardised as in training.
    pub fn input_pixels(&self, mut px: Vec<f32>) -> Result<Tensor<4>, DataError> {
        let [c, h, w] = self.preprocess.input;
        if px.is_empty() || !px.len().is_multiple_of(c * h * w) {
            return Err(DataError::Mismatch {
                what: "pixels".into(),
                reason: format!(
                    "{} values are not a whole number of {c}x{h}x{w} inputs",
                    px.len()
                ),
            });
        }
        for v in &mut px {
            *v = (*v - self.preprocess.mean) / self.preprocess.std;
        }
        let n = px.len() / (c * h * w);
        Ok(Tensor::from_data(
            TensorData::new(px, [n, c, h, w]),
            &self.device,
        ))
    }

    /// Runs the cascade on `x` for class `class` (its stage-1 group's threshold decides who
    /// goes on); one answer per row.
    pub fn query(&self, class: usize, x: &Tensor<4>) -> Vec<Answer> {
        let gate = query_gate(&self.model, self.calibration.as_ref(), class);
        let n = x.dims()[0];
        let out = run_stream_on(&self.model, Some(&self.fast), x, n.max(1), &gate);
        let last = self.model.num_stages() - 1;
        let k = self.model.stage(last).classes;
        (0..n)
            .map(|i| {
                if out.reached[i] < last {
                    return Answer {
                        stages: out.reached[i] + 1,
                        score: None,
                        retrieved: false,
                    };
                }
                let row = &out.scores[last][i * k..(i + 1) * k];
                let top = (0..k).max_by(|&a, &b| row[a].total_cmp(&row[b]));
                Answer {
                    stages: last + 1,
                    score: Some(row[class]),
                    retrieved: top == Some(class),
                }
            })
            .collect()
    }
}
