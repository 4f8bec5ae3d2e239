//! The model description: one TOML file that states the monolithic network (a list of layers)
//! and the cascade (how each weighted layer's channels split among stages, where each stage
//! ends, its head, loss, label space and loss weight). Everything else — the monolithic
//! baseline, the non-sharing cascade and the onion — is derived from it (see `onion.rs`).
//!
//! Raw TOML is read into plain serde structs (every field optional where a default makes
//! sense), then validated into [`Spec`]; each error names the file, the field and the value.

use crate::error::SpecError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The input every network of the description takes: `[channels, height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl InputShape {
    pub fn dims(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }
}

/// What a layer computes. Conv and FC carry weights and are split among stages; the others act
/// channel-wise on each branch's own maps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LayerKind {
    Conv {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// Fully connected = a convolution whose kernel covers the whole input map (output 1x1).
    Fc,
    Relu,
    Maxpool {
        kernel: usize,
        stride: usize,
        ceil: bool,
    },
    Batchnorm,
    Dropout {
        prob: f64,
    },
    /// Residual connection: the maps before this layer plus the maps after layer `from`
    /// (0-based, earlier) — as they are where their channels, split among stages and size
    /// match the maps before this layer (identity), else through a 1x1 convolution of stride
    /// `stride` (a projection, with weights). In the onion each branch adds to its own
    /// channels: its own maps of `from` (identity), or the projection of the maps of `from`
    /// of branches 1..=s (one-way, like every weighted layer).
    Add {
        from: usize,
        projection: bool,
        stride: usize,
    },
    /// Global average pooling: each channel's mean over the map (output 1x1).
    Avgpool,
}

impl LayerKind {
    /// Conv and fc layers: they set the channels of the maps after them, and read the maps of
    /// the branches before theirs.
    pub fn is_weighted(&self) -> bool {
        matches!(self, LayerKind::Conv { .. } | LayerKind::Fc)
    }

    /// The residual layer's source layer and its projection's stride, if it has a
    /// projection.
    pub fn projection(&self) -> Option<(usize, usize)> {
        match *self {
            LayerKind::Add {
                from,
                projection: true,
                stride,
            } => Some((from, stride)),
            _ => None,
        }
    }
}

/// One validated layer of the monolithic network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    pub name: String,
    pub kind: LayerKind,
    /// Output channels of the monolithic layer (weighted layers only; 0 otherwise).
    pub width: usize,
    /// Output channels of each stage's branch (weighted layers only; empty otherwise).
    pub split: Vec<usize>,
}

/// Per-stage loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Softmax cross-entropy over the stage's s-classes; scores are softmax probabilities.
    CrossEntropy,
    /// Binary hinge max(0, 1 - y f) on labels ±1 (s-class 1 is +1); one output f, the score of
    /// s-class 1 is f and of s-class 0 is -f.
    Hinge,
}

/// How a stage's s-classes come from the task's fine labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LabelMap {
    /// s-class = fine label.
    Identity,
    /// s-class = map[fine label].
    Explicit(Vec<usize>),
    /// Filled in by the application: k-means on class-averaged activations of a trained
    /// monolithic network (retrieval). A description with this cannot train until resolved.
    KMeans,
}

/// One validated stage of the cascade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    /// Number of layers of the stage's branch: it ends after layer `depth` (1-based).
    pub depth: usize,
    pub loss: Loss,
    pub weight: f64,
    /// Number of s-classes.
    pub classes: usize,
    pub label_map: LabelMap,
}

impl Stage {
    /// Outputs of the stage's head.
    pub fn outputs(&self) -> usize {
        match self.loss {
            Loss::CrossEntropy => self.classes,
            Loss::Hinge => 1,
        }
    }

    /// The s-class of a fine label.
    pub fn s_class(&self, fine: usize) -> usize {
        match &self.label_map {
            LabelMap::Explicit(m) => m[fine],
            LabelMap::Identity | LabelMap::KMeans => fine,
        }
    }
}

/// A validated model description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub name: String,
    pub input: InputShape,
    /// Fine classes of the task.
    pub classes: usize,
    pub layers: Vec<Layer>,
    pub stages: Vec<Stage>,
    /// Detection only: the backbone under the classifier the layers above describe.
    pub detector: Option<Detector>,
    /// The file it came from (for error messages).
    #[serde(skip)]
    pub source: PathBuf,
}

/// Detection (`[detector]` with `[[detector.backbone]]` layers): a backbone runs once on the
/// whole image; every proposal is RoI max-pooled from its last maps to the `input` grid of the
/// description's layers, which are then the per-proposal classifier the stages split (the
/// paper's Fast R-CNN setting: only the fully connected classifier becomes an onion).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    /// The whole image.
    pub image: InputShape,
    /// conv / batchnorm / relu / maxpool layers (`width` = filters, no split: every stage shares them).
    pub backbone: Vec<Layer>,
    /// Image pixels per cell of the backbone's last maps.
    pub stride: usize,
}

#[cfg(test)]
mod tests;
mod validate;

use validate::validate;

impl Spec {
    /// Whether `other` builds the same networks (layers, split, stages and input; the name
    /// and source may differ): weights of one fit the other.
    pub fn same_network(&self, other: &Spec) -> bool {
        self.layers == other.layers && self.stages == other.stages && self.input == other.input
    }

    /// Reads and validates a model description file.
    pub fn from_file(path: &Path) -> Result<Spec, SpecError> {
        Spec::from_toml(&read_text(path)?, path)
    }

    /// Parses and validates a description; `path` is only used in error messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Spec, SpecError> {
        validate(parse_toml(text, path)?, path)
    }

    /// Number of stages S.
    pub fn num_stages(&self) -> usize {
        self.stages.len()
    }

    /// Writes the validated description back as TOML (used next to checkpoints, with k-means
    /// label maps resolved, so a trained model carries the exact description it was built from).
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("name = {:?}\n", self.name));
        out.push_str(&format!("classes = {}\n", self.classes));
        out.push_str("free_width = true\n");
        out.push_str(&format!(
            "input = {{ channels = {}, height = {}, width = {} }}\n",
            self.input.channels, self.input.height, self.input.width
        ));
        for l in &self.layers {
            out.push_str("\n[[layer]]\n");
            out.push_str(&format!("name = {:?}\n", l.name));
            let split = |s: &[usize]| {
                format!(
                    "split = [{}]\n",
                    s.iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            match &l.kind {
                LayerKind::Conv {
                    kernel,
                    stride,
                    padding,
                } => {
                    out.push_str(&format!(
                        "type = \"conv\"\nfilters = {}\nkernel = {kernel}\nstride = {stride}\npadding = {padding}\n",
                        l.width
                    ));
                    out.push_str(&split(&l.split));
                }
                LayerKind::Fc => {
                    out.push_str(&format!("type = \"fc\"\nunits = {}\n", l.width));
                    out.push_str(&split(&l.split));
                }
                LayerKind::Relu => out.push_str("type = \"relu\"\n"),
                LayerKind::Maxpool {
                    kernel,
                    stride,
                    ceil,
                } => out.push_str(&format!(
                    "type = \"maxpool\"\nkernel = {kernel}\nstride = {stride}\nceil = {ceil}\n"
                )),
                LayerKind::Batchnorm => out.push_str("type = \"batchnorm\"\n"),
                LayerKind::Dropout { prob } => {
                    out.push_str(&format!("type = \"dropout\"\nprob = {prob:?}\n"))
                }
                LayerKind::Add { from, .. } => out.push_str(&format!(
                    "type = \"add\"\nfrom = {:?}\n",
                    self.layers[*from].name
                )),
                LayerKind::Avgpool => out.push_str("type = \"avgpool\"\n"),
            }
        }
        for s in &self.stages {
            out.push_str("\n[[stage]]\n");
            out.push_str(&format!("name = {:?}\n", s.name));
            out.push_str(&format!("ends_at = {}\n", s.depth));
            let loss = match s.loss {
                Loss::CrossEntropy => "cross_entropy",
                Loss::Hinge => "hinge",
            };
            out.push_str(&format!("loss = \"{loss}\"\nweight = {:?}\n", s.weight));
            out.push_str(&format!("classes = {}\n", s.classes));
            match &s.label_map {
                LabelMap::Identity => {}
                LabelMap::KMeans => out.push_str("label_map = \"kmeans\"\n"),
                LabelMap::Explicit(m) => out.push_str(&format!(
                    "label_map = [{}]\n",
                    m.iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
        if let Some(d) = &self.detector {
            let i = d.image;
            out.push_str(&format!(
                "\n[detector]\nimage = {{ channels = {}, height = {}, width = {} }}\n",
                i.channels, i.height, i.width
            ));
            for l in &d.backbone {
                out.push_str("\n[[detector.backbone]]\n");
                out.push_str(&format!("name = {:?}\n", l.name));
                match &l.kind {
                    LayerKind::Conv { kernel, stride, padding } => out.push_str(&format!(
                        "type = \"conv\"\nfilters = {}\nkernel = {kernel}\nstride = {stride}\npadding = {padding}\n",
                        l.width
                    )),
                    LayerKind::Maxpool { kernel, stride, ceil } => out.push_str(&format!(
                        "type = \"maxpool\"\nkernel = {kernel}\nstride = {stride}\nceil = {ceil}\n"
                    )),
                    LayerKind::Batchnorm => out.push_str("type = \"batchnorm\"\n"),
                    _ => out.push_str("type = \"relu\"\n"),
                }
            }
        }
        out
    }

    /// Spatial size `(height, width)` of the maps after each layer (index 0 = the input).
    pub fn spatial_sizes(&self) -> Vec<(usize, usize)> {
        let mut sizes = vec![(self.input.height, self.input.width)];
        for l in &self.layers {
            let (h, w) = *sizes.last().unwrap();
            sizes.push(out_size(&l.kind, h, w).unwrap_or((0, 0)));
        }
        sizes
    }
}

/// The text of a description file (or a study file): at most 1 MiB of UTF-8, errors naming the
/// file and, for a bad byte, its line and column.
pub fn read_text(path: &Path) -> Result<String, SpecError> {
    // (bounded: a description is a few kilobytes, and a device file never ends)
    const LIMIT: u64 = 1 << 20;
    let io = |source| SpecError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open(path).map_err(io)?, LIMIT + 1),
        &mut bytes,
    )
    .map_err(io)?;
    if bytes.len() as u64 > LIMIT {
        return Err(SpecError::Toml {
            path: path.to_path_buf(),
            message: format!("longer than {LIMIT} bytes: not a model description"),
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = good.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
        SpecError::Toml {
            path: path.to_path_buf(),
            message: format!(
                "not UTF-8 text: invalid byte 0x{:02x} at line {line}, column {column}",
                e.as_bytes()[good.len()]
            ),
        }
    })?;
    Ok(text)
}

/// TOML `text` into `T`; a malformed file is an error naming `path`.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, SpecError> {
    toml::from_str(text).map_err(|e| SpecError::Toml {
        path: path.to_path_buf(),
        message: e.to_string().trim().replace('\n', " "),
    })
}

/// After each layer of `layers` on `input`: the weights so far and the values of one
/// example's maps so far (input included), counted in 128 bits so that nothing wraps.
pub fn running_values(input: &InputShape, layers: &[Layer]) -> Vec<(u128, u128)> {
    let (mut c, mut h, mut w) = (input.channels as u128, input.height, input.width);
    let (mut weights, mut maps) = (0u128, c * h as u128 * w as u128);
    let mut out = Vec::with_capacity(layers.len());
    for l in layers {
        let (nh, nw) = out_size(&l.kind, h, w).unwrap_or((0, 0));
        let fan_in = match l.kind {
            LayerKind::Conv { kernel, .. } => c * (kernel as u128 * kernel as u128),
            LayerKind::Fc => c * h as u128 * w as u128,
            _ => 0,
        };
        if l.kind.is_weighted() {
            weights += (fan_in + 1) * l.width as u128;
            c = l.width as u128;
        }
        // (a projection: 1x1 from the source's channels, at most as many as the widest layer)
        if l.kind.projection().is_some() {
            let widest = layers.iter().map(|o| o.width as u128).max().unwrap_or(0);
            weights += (widest + 1) * c;
        }
        (h, w) = (nh, nw);
        maps += c * h as u128 * w as u128;
        out.push((weights, maps));
    }
    out
}

/// Output spatial size of a layer, or `None` when the kernel does not fit.
pub fn out_size(kind: &LayerKind, h: usize, w: usize) -> Option<(usize, usize)> {
    let conv = |n: usize, k: usize, s: usize, p: usize| {
        (n + 2 * p >= k && s > 0).then(|| (n + 2 * p - k) / s + 1)
    };
    match kind {
        LayerKind::Conv {
            kernel,
            stride,
            padding,
        } => Some((
            conv(h, *kernel, *stride, *padding)?,
            conv(w, *kernel, *stride, *padding)?,
        )),
        LayerKind::Fc | LayerKind::Avgpool => Some((1, 1)),
        LayerKind::Maxpool {
            kernel,
            stride,
            ceil,
        } => {
            let pool = |n: usize| {
                if n < *kernel {
                    return None;
                }
                let span = n - kernel;
                let mut out = span / stride + 1;
                // ceil mode: one more window when the last one starts inside the input
                if *ceil && !span.is_multiple_of(*stride) {
                    out += 1;
                }
                Some(out)
            };
            Some((pool(h)?, pool(w)?))
        }
        LayerKind::Relu
        | LayerKind::Batchnorm
        | LayerKind::Dropout { .. }
        | LayerKind::Add { .. } => Some((h, w)),
    }
}
