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
}

impl LayerKind {
    pub fn is_weighted(&self) -> bool {
        matches!(self, LayerKind::Conv { .. } | LayerKind::Fc)
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

// ---------------------------------------------------------------- raw TOML

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: Option<String>,
    input: InputShape,
    classes: usize,
    /// When true, a layer's split need not add up to its monolithic width.
    #[serde(default)]
    free_width: bool,
    #[serde(rename = "layer", default)]
    layers: Vec<RawLayer>,
    #[serde(rename = "stage", default)]
    stages: Vec<RawStage>,
    detector: Option<RawDetector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDetector {
    image: InputShape,
    #[serde(default)]
    backbone: Vec<RawLayer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    filters: Option<usize>,
    units: Option<usize>,
    kernel: Option<usize>,
    stride: Option<usize>,
    padding: Option<usize>,
    ceil: Option<bool>,
    prob: Option<f64>,
    split: Option<Vec<SplitValue>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum SplitValue {
    Count(i64),
    Fraction(f64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: Option<String>,
    ends_at: Option<LayerRef>,
    loss: Option<String>,
    weight: Option<f64>,
    classes: Option<usize>,
    label_map: Option<RawLabelMap>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum LayerRef {
    Index(i64),
    Name(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawLabelMap {
    Explicit(Vec<i64>),
    Named(String),
}

impl Spec {
    /// Reads and validates a model description file.
    pub fn from_file(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Spec::from_toml(&text, path)
    }

    /// Parses and validates a description; `path` is only used in error messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Spec, SpecError> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| SpecError::Toml {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        validate(raw, path)
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
        LayerKind::Fc => Some((1, 1)),
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
        LayerKind::Relu | LayerKind::Batchnorm | LayerKind::Dropout { .. } => Some((h, w)),
    }
}

fn validate(raw: RawSpec, path: &Path) -> Result<Spec, SpecError> {
    let err = |field: &str, value: &dyn std::fmt::Display, reason: &str| {
        SpecError::invalid(path, field, value, reason)
    };
    let s_count = raw.stages.len();
    if s_count < 2 {
        return Err(err(
            "stage",
            &format!("{s_count} stage(s)"),
            "a cascade needs at least 2 [[stage]] tables",
        ));
    }
    if raw.layers.is_empty() {
        return Err(err(
            "layer",
            &"[]",
            "the network needs at least one [[layer]]",
        ));
    }
    for (f, v) in [
        ("input.channels", raw.input.channels),
        ("input.height", raw.input.height),
        ("input.width", raw.input.width),
        ("classes", raw.classes),
    ] {
        if v == 0 {
            return Err(err(f, &v, "must be at least 1"));
        }
    }

    // ---- layers
    let mut layers = Vec::with_capacity(raw.layers.len());
    let (mut h, mut w) = (raw.input.height, raw.input.width);
    for (i, rl) in raw.layers.iter().enumerate() {
        let at = format!("layer[{i}]");
        let name = rl
            .name
            .clone()
            .unwrap_or_else(|| format!("{}{}", rl.kind, i + 1));
        let allowed: &[&str] = match rl.kind.as_str() {
            "conv" => &["filters", "kernel", "stride", "padding", "split"],
            "fc" => &["units", "split"],
            "relu" | "batchnorm" => &[],
            "maxpool" => &["kernel", "stride", "ceil"],
            "dropout" => &["prob"],
            other => {
                return Err(err(
                    &format!("{at}.type"),
                    &format!("{other:?}"),
                    "expected one of conv, fc, relu, maxpool, batchnorm, dropout",
                ));
            }
        };
        let present = [
            ("filters", rl.filters.is_some()),
            ("units", rl.units.is_some()),
            ("kernel", rl.kernel.is_some()),
            ("stride", rl.stride.is_some()),
            ("padding", rl.padding.is_some()),
            ("ceil", rl.ceil.is_some()),
            ("prob", rl.prob.is_some()),
            ("split", rl.split.is_some()),
        ];
        for (f, is) in present {
            if is && !allowed.contains(&f) {
                return Err(err(
                    &format!("{at}.{f}"),
                    &"(set)",
                    &format!("a {} layer has no field {f}", rl.kind),
                ));
            }
        }
        let need = |f: &str, v: Option<usize>| {
            v.ok_or_else(|| err(&format!("{at}.{f}"), &"(missing)", "required"))
                .and_then(|v| {
                    if v == 0 {
                        Err(err(&format!("{at}.{f}"), &v, "must be at least 1"))
                    } else {
                        Ok(v)
                    }
                })
        };
        let kind = match rl.kind.as_str() {
            "conv" => LayerKind::Conv {
                kernel: need("kernel", rl.kernel)?,
                stride: rl.stride.map_or(Ok(1), |v| need("stride", Some(v)))?,
                padding: rl.padding.unwrap_or(0),
            },
            "fc" => LayerKind::Fc,
            "relu" => LayerKind::Relu,
            "batchnorm" => LayerKind::Batchnorm,
            "maxpool" => {
                let kernel = need("kernel", rl.kernel)?;
                LayerKind::Maxpool {
                    kernel,
                    stride: rl.stride.map_or(Ok(kernel), |v| need("stride", Some(v)))?,
                    ceil: rl.ceil.unwrap_or(false),
                }
            }
            "dropout" => {
                let prob = rl.prob.unwrap_or(0.5);
                if !(0.0..1.0).contains(&prob) {
                    return Err(err(&format!("{at}.prob"), &prob, "must be in [0, 1)"));
                }
                LayerKind::Dropout { prob }
            }
            _ => unreachable!("checked above"),
        };
        if i == 0 && !kind.is_weighted() {
            return Err(err(
                &format!("{at}.type"),
                &rl.kind,
                "the first layer must be conv or fc (every branch starts by reading the input)",
            ));
        }
        let (width, split) = if kind.is_weighted() {
            let wf = if matches!(kind, LayerKind::Fc) {
                "units"
            } else {
                "filters"
            };
            let width = need(wf, if wf == "units" { rl.units } else { rl.filters })?;
            let raw_split = rl.split.as_ref().ok_or_else(|| {
                err(
                    &format!("{at}.split"),
                    &"(missing)",
                    &format!("layer {name:?} must say how its {width} channels split among the {s_count} stages"),
                )
            })?;
            let split = resolve_split(
                raw_split,
                width,
                s_count,
                raw.free_width,
                &format!("{at}.split"),
                path,
            )?;
            (width, split)
        } else {
            (0, Vec::new())
        };
        let Some((nh, nw)) = out_size(&kind, h, w) else {
            return Err(err(
                &at.to_string(),
                &name,
                &format!("does not fit its {h}x{w} input (kernel larger than the padded map)"),
            ));
        };
        (h, w) = (nh, nw);
        layers.push(Layer {
            name,
            kind,
            width,
            split,
        });
    }
    for (i, l) in layers.iter().enumerate() {
        if layers[..i].iter().any(|o| o.name == l.name) {
            return Err(err(
                &format!("layer[{i}].name"),
                &format!("{:?}", l.name),
                "duplicate layer name",
            ));
        }
    }

    // ---- stages
    let n_layers = layers.len();
    let mut stages = Vec::with_capacity(s_count);
    for (s, rs) in raw.stages.iter().enumerate() {
        let at = format!("stage[{s}]");
        let name = rs.name.clone().unwrap_or_else(|| format!("stage{}", s + 1));
        let depth = match &rs.ends_at {
            None => n_layers,
            Some(LayerRef::Index(i)) => {
                if *i < 1 || *i as usize > n_layers {
                    return Err(err(
                        &format!("{at}.ends_at"),
                        i,
                        &format!("the network has layers 1..={n_layers}"),
                    ));
                }
                *i as usize
            }
            Some(LayerRef::Name(n)) => layers
                .iter()
                .position(|l| &l.name == n)
                .map(|p| p + 1)
                .ok_or_else(|| {
                    err(
                        &format!("{at}.ends_at"),
                        &format!("{n:?}"),
                        "no layer has this name (a stage cannot be deeper than the network)",
                    )
                })?,
        };
        if let Some(prev) = stages.last().map(|p: &Stage| p.depth)
            && depth < prev
        {
            return Err(err(
                &format!("{at}.ends_at"),
                &depth,
                &format!(
                    "a later stage cannot end before an earlier one (previous ends at layer {prev})"
                ),
            ));
        }
        // later stages read this stage's last maps at the next layer, which must be weighted
        if depth < n_layers && !layers[depth].kind.is_weighted() {
            return Err(err(
                &format!("{at}.ends_at"),
                &depth,
                &format!(
                    "layer {} ({:?}) that follows is not conv/fc: end a stage after its ReLU/pooling, right before a conv or fc layer",
                    depth + 1,
                    layers[depth].name
                ),
            ));
        }
        let loss = match rs.loss.as_deref().unwrap_or("cross_entropy") {
            "cross_entropy" => Loss::CrossEntropy,
            "hinge" => Loss::Hinge,
            other => {
                return Err(err(
                    &format!("{at}.loss"),
                    &format!("{other:?}"),
                    "expected \"cross_entropy\" or \"hinge\"",
                ));
            }
        };
        let weight = rs.weight.unwrap_or(1.0);
        if !weight.is_finite() || weight < 0.0 {
            return Err(err(
                &format!("{at}.weight"),
                &weight,
                "must be a finite number >= 0",
            ));
        }
        let (classes, label_map) = match &rs.label_map {
            None => {
                let c = rs.classes.unwrap_or(raw.classes);
                if c != raw.classes {
                    return Err(err(
                        &format!("{at}.classes"),
                        &c,
                        &format!(
                            "without a label_map a stage predicts the {} fine classes",
                            raw.classes
                        ),
                    ));
                }
                (c, LabelMap::Identity)
            }
            Some(RawLabelMap::Named(n)) if n == "kmeans" => {
                let c = rs.classes.ok_or_else(|| {
                    err(
                        &format!("{at}.classes"),
                        &"(missing)",
                        "label_map = \"kmeans\" needs the number of groups",
                    )
                })?;
                if c < 2 || c > raw.classes {
                    return Err(err(
                        &format!("{at}.classes"),
                        &c,
                        &format!("k-means groups must be in 2..={}", raw.classes),
                    ));
                }
                (c, LabelMap::KMeans)
            }
            Some(RawLabelMap::Named(n)) => {
                return Err(err(
                    &format!("{at}.label_map"),
                    &format!("{n:?}"),
                    "expected a list of s-classes (one per fine class) or \"kmeans\"",
                ));
            }
            Some(RawLabelMap::Explicit(m)) => {
                if m.len() != raw.classes {
                    return Err(err(
                        &format!("{at}.label_map"),
                        &format!("{m:?}"),
                        &format!(
                            "has {} entries but the task has {} fine classes",
                            m.len(),
                            raw.classes
                        ),
                    ));
                }
                let c = rs
                    .classes
                    .unwrap_or_else(|| m.iter().copied().max().unwrap_or(0).max(0) as usize + 1);
                if let Some(bad) = m.iter().find(|&&v| v < 0 || v as usize >= c) {
                    return Err(err(
                        &format!("{at}.label_map"),
                        &format!("{m:?}"),
                        &format!("entry {bad} is not an s-class in 0..{c}"),
                    ));
                }
                if let Some(missing) = (0..c).find(|k| !m.iter().any(|&v| v as usize == *k)) {
                    return Err(err(
                        &format!("{at}.label_map"),
                        &format!("{m:?}"),
                        &format!("s-class {missing} of {c} receives no fine class"),
                    ));
                }
                (
                    c,
                    LabelMap::Explicit(m.iter().map(|&v| v as usize).collect()),
                )
            }
        };
        if loss == Loss::Hinge && classes != 2 {
            return Err(err(
                &format!("{at}.loss"),
                &"\"hinge\"",
                &format!(
                    "the binary hinge loss needs exactly 2 s-classes, this stage has {classes}"
                ),
            ));
        }
        if classes < 2 {
            return Err(err(
                &format!("{at}.classes"),
                &classes,
                "a stage needs at least 2 s-classes",
            ));
        }
        stages.push(Stage {
            name,
            depth,
            loss,
            weight,
            classes,
            label_map,
        });
    }
    if stages.last().unwrap().depth != n_layers {
        return Err(err(
            &format!("stage[{}].ends_at", s_count - 1),
            &stages.last().unwrap().depth,
            &format!(
                "the last stage is the full network and must end at the last layer ({n_layers})"
            ),
        ));
    }
    // A stage has channels in every weighted layer up to its depth unless an earlier stage feeds
    // it there; stage 1 reads nobody, so it needs channels everywhere it goes; nobody has
    // channels past its own depth.
    for (li, l) in layers.iter().enumerate() {
        if !l.kind.is_weighted() {
            continue;
        }
        for (s, st) in stages.iter().enumerate() {
            let c = l.split[s];
            if li + 1 > st.depth && c > 0 {
                return Err(err(
                    &format!("layer[{li}].split[{s}]"),
                    &c,
                    &format!(
                        "stage {} ends at layer {} and has no channels in layer {} ({:?})",
                        s + 1,
                        st.depth,
                        li + 1,
                        l.name
                    ),
                ));
            }
            if s == 0 && c == 0 && li < st.depth {
                return Err(err(
                    &format!("layer[{li}].split[0]"),
                    &c,
                    "stage 1 reads no earlier stage, so it needs at least one channel in every layer up to its depth",
                ));
            }
        }
    }
    // Every stage's head must have maps to read at its depth.
    for (s, st) in stages.iter().enumerate() {
        let last_weighted = (0..st.depth)
            .rev()
            .find(|&i| layers[i].kind.is_weighted())
            .unwrap();
        if (0..=s).all(|t| layers[last_weighted].split[t] == 0 || stages[t].depth != st.depth) {
            return Err(err(
                &format!("stage[{s}].ends_at"),
                &st.depth,
                "no branch has channels at this depth for the stage's head to read",
            ));
        }
    }
    let detector = match &raw.detector {
        None => None,
        Some(d) => Some(validate_detector(d, &raw.input, path)?),
    };
    Ok(Spec {
        name: raw.name.unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        input: raw.input,
        classes: raw.classes,
        layers,
        stages,
        detector,
        source: path.to_path_buf(),
    })
}

/// The `[detector]` table: conv/batchnorm/relu/maxpool layers that keep a whole number of image pixels
/// per cell (so a proposal's box maps onto cells) and end with `input.channels` maps.
fn validate_detector(
    raw: &RawDetector,
    input: &InputShape,
    path: &Path,
) -> Result<Detector, SpecError> {
    let err = |field: &str, value: &dyn std::fmt::Display, reason: &str| {
        SpecError::invalid(path, field, value, reason)
    };
    let img = raw.image;
    for (f, v) in [
        ("detector.image.channels", img.channels),
        ("detector.image.height", img.height),
        ("detector.image.width", img.width),
    ] {
        if v == 0 {
            return Err(err(f, &v, "must be at least 1"));
        }
    }
    if raw.backbone.is_empty() {
        return Err(err(
            "detector.backbone",
            &"[]",
            "the backbone needs at least one [[detector.backbone]] conv layer",
        ));
    }
    let (mut h, mut w, mut stride, mut channels) = (img.height, img.width, 1usize, img.channels);
    let mut backbone = Vec::with_capacity(raw.backbone.len());
    for (i, rl) in raw.backbone.iter().enumerate() {
        let at = format!("detector.backbone[{i}]");
        let name = rl
            .name
            .clone()
            .unwrap_or_else(|| format!("backbone_{}{}", rl.kind, i + 1));
        let pos = |f: &str, v: Option<usize>, default: Option<usize>| -> Result<usize, SpecError> {
            match v.or(default) {
                None => Err(err(&format!("{at}.{f}"), &"(missing)", "required")),
                Some(0) => Err(err(&format!("{at}.{f}"), &0, "must be at least 1")),
                Some(v) => Ok(v),
            }
        };
        if rl.split.is_some() || rl.units.is_some() || rl.prob.is_some() {
            return Err(err(
                &at,
                &name,
                "backbone layers are shared by every stage: no split, units or prob",
            ));
        }
        let (kind, width) = match rl.kind.as_str() {
            "conv" => {
                let kernel = pos("kernel", rl.kernel, None)?;
                let s = pos("stride", rl.stride, Some(1))?;
                let kind = LayerKind::Conv {
                    kernel,
                    stride: s,
                    padding: rl.padding.unwrap_or(0),
                };
                (kind, pos("filters", rl.filters, None)?)
            }
            "relu" => (LayerKind::Relu, 0),
            "batchnorm" => (LayerKind::Batchnorm, 0),
            "maxpool" => {
                let kernel = pos("kernel", rl.kernel, None)?;
                (
                    LayerKind::Maxpool {
                        kernel,
                        stride: pos("stride", rl.stride, Some(kernel))?,
                        ceil: rl.ceil.unwrap_or(false),
                    },
                    0,
                )
            }
            other => {
                return Err(err(
                    &format!("{at}.type"),
                    &format!("{other:?}"),
                    "a backbone layer is conv, batchnorm, relu or maxpool",
                ));
            }
        };
        if i == 0 && !matches!(kind, LayerKind::Conv { .. }) {
            return Err(err(
                &format!("{at}.type"),
                &rl.kind,
                "the backbone starts with a conv layer",
            ));
        }
        let s = match kind {
            LayerKind::Conv { stride, .. } | LayerKind::Maxpool { stride, .. } => stride,
            _ => 1,
        };
        let Some((nh, nw)) = out_size(&kind, h, w) else {
            return Err(err(&at, &name, &format!("does not fit its {h}x{w} input")));
        };
        if h % s != 0 || w % s != 0 || (nh, nw) != (h / s, w / s) {
            return Err(err(
                &at,
                &name,
                &format!(
                    "maps {h}x{w} -> {nh}x{nw}: each layer must divide the size exactly by its stride {s} (padding = kernel / 2 for odd kernels) so a box in pixels maps onto cells"
                ),
            ));
        }
        (h, w, stride) = (nh, nw, stride * s);
        if width > 0 {
            channels = width;
        }
        backbone.push(Layer {
            name,
            kind,
            width,
            split: Vec::new(),
        });
    }
    if channels != input.channels {
        return Err(err(
            "input.channels",
            &input.channels,
            &format!(
                "the classifier reads the backbone's last maps, which have {channels} channels"
            ),
        ));
    }
    Ok(Detector {
        image: img,
        backbone,
        stride,
    })
}

/// Turns a `split = [...]` (integer counts or float fractions) into channel counts per stage.
fn resolve_split(
    raw: &[SplitValue],
    width: usize,
    stages: usize,
    free_width: bool,
    field: &str,
    path: &Path,
) -> Result<Vec<usize>, SpecError> {
    let shown = format!(
        "[{}]",
        raw.iter()
            .map(|v| match v {
                SplitValue::Count(c) => c.to_string(),
                SplitValue::Fraction(f) => format!("{f:?}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let err = |reason: String| SpecError::invalid(path, field, &shown, reason);
    if raw.len() != stages {
        return Err(err(format!(
            "has {} entries, one per stage is needed ({stages})",
            raw.len()
        )));
    }
    let counts: Vec<usize> = if raw.iter().all(|v| matches!(v, SplitValue::Count(_))) {
        let mut out = Vec::new();
        for v in raw {
            let SplitValue::Count(c) = v else {
                unreachable!()
            };
            if *c < 0 {
                return Err(err(format!("channel count {c} is negative")));
            }
            out.push(*c as usize);
        }
        out
    } else if raw.iter().all(|v| matches!(v, SplitValue::Fraction(_))) {
        let fr: Vec<f64> = raw
            .iter()
            .map(|v| match v {
                SplitValue::Fraction(f) => *f,
                SplitValue::Count(_) => unreachable!(),
            })
            .collect();
        if fr.iter().any(|f| !f.is_finite() || *f < 0.0) {
            return Err(err("fractions must be finite and >= 0".into()));
        }
        let total: f64 = fr.iter().sum();
        if (total - 1.0).abs() > 1e-6 {
            return Err(err(format!("fractions add up to {total}, not 1")));
        }
        // largest remainder: counts add up to the width exactly
        let exact: Vec<f64> = fr.iter().map(|f| f * width as f64).collect();
        let mut counts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
        let mut left = width - counts.iter().sum::<usize>();
        let mut order: Vec<usize> = (0..fr.len()).collect();
        order.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor()))
        });
        for &i in order.iter().cycle() {
            if left == 0 {
                break;
            }
            if fr[i] > 0.0 {
                counts[i] += 1;
                left -= 1;
            }
        }
        counts
    } else {
        return Err(err(
            "mixes integer counts and fractions; use one or the other".into(),
        ));
    };
    let sum: usize = counts.iter().sum();
    if !free_width && sum != width {
        return Err(err(format!(
            "adds up to {sum} channels but the monolithic layer has {width} (set free_width = true to allow this)"
        )));
    }
    if sum == 0 {
        return Err(err("no stage has a channel in this layer".into()));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
classes = 4
input = { channels = 1, height = 8, width = 8 }
[[layer]]
type = "conv"
name = "c1"
filters = 8
kernel = 3
padding = 1
split = [2, 6]
[[layer]]
type = "relu"
[[layer]]
type = "maxpool"
kernel = 2
[[layer]]
type = "fc"
name = "f1"
units = 16
split = [0.25, 0.75]
[[stage]]
classes = 2
label_map = [0, 0, 1, 1]
[[stage]]
"#;

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::from_toml(text, Path::new("t.toml"))
    }

    #[test]
    fn parses_counts_and_fractions() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.layers[0].split, vec![2, 6]);
        assert_eq!(s.layers[3].split, vec![4, 12]);
        assert_eq!(s.stages[0].depth, 4);
        assert_eq!(s.stages[0].s_class(3), 1);
        assert_eq!(
            s.spatial_sizes(),
            vec![(8, 8), (8, 8), (8, 8), (4, 4), (1, 1)]
        );
    }

    #[test]
    fn round_trips_through_toml() {
        let s = parse(GOOD).unwrap();
        let again = parse(&s.to_toml()).unwrap();
        assert_eq!(s.layers, again.layers);
        assert_eq!(s.stages, again.stages);
    }

    fn expect_err(text: &str, needles: &[&str]) {
        let e = parse(text).unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "error {e:?} should mention {n:?}");
        }
        assert!(e.contains("t.toml"), "error {e:?} should name the file");
    }

    #[test]
    fn split_that_does_not_add_up() {
        expect_err(
            &GOOD.replace("split = [2, 6]", "split = [2, 5]"),
            &["layer[0].split", "[2, 5]", "adds up to 7"],
        );
    }

    #[test]
    fn stage_must_end_before_a_weighted_layer() {
        expect_err(
            &GOOD.replacen("classes = 2\n", "classes = 2\nends_at = \"c1\"\n", 1),
            &["stage[0].ends_at", "relu"],
        );
        let shallow = GOOD
            .replacen("classes = 2\n", "classes = 2\nends_at = 3\n", 1)
            .replace("[0.25, 0.75]", "[0, 16]");
        assert_eq!(parse(&shallow).unwrap().stages[0].depth, 3);
        // a stage cannot keep channels past its end
        expect_err(
            &GOOD.replacen("classes = 2\n", "classes = 2\nends_at = 3\n", 1),
            &["layer[3].split[0]", "ends at layer 3"],
        );
    }

    #[test]
    fn stage_deeper_than_network() {
        expect_err(
            &GOOD.replacen("classes = 2\n", "classes = 2\nends_at = \"nope\"\n", 1),
            &["stage[0].ends_at", "nope"],
        );
        expect_err(
            &GOOD.replacen("classes = 2\n", "classes = 2\nends_at = 9\n", 1),
            &["stage[0].ends_at", "9"],
        );
    }

    #[test]
    fn label_map_missing_a_class() {
        expect_err(
            &GOOD.replace("[0, 0, 1, 1]", "[0, 0, 1]"),
            &["stage[0].label_map", "3 entries"],
        );
        expect_err(
            &GOOD.replace("[0, 0, 1, 1]", "[0, 0, 0, 0]"),
            &["stage[0].label_map", "s-class 1"],
        );
    }

    #[test]
    fn shape_that_does_not_fit() {
        expect_err(
            &GOOD.replace("kernel = 3", "kernel = 11"),
            &["layer[0]", "does not fit"],
        );
    }

    #[test]
    fn unknown_fields_and_types() {
        expect_err(
            &GOOD.replace("type = \"relu\"", "type = \"gelu\""),
            &["layer[1].type", "gelu"],
        );
        expect_err(
            &GOOD.replace("type = \"relu\"", "type = \"relu\"\nkernel = 3"),
            &["layer[1].kernel"],
        );
        expect_err(&format!("{GOOD}\nbogus = 1"), &["malformed TOML"]);
    }

    #[test]
    fn single_stage_is_rejected() {
        let one = GOOD.replace("[[stage]]\nclasses = 2\nlabel_map = [0, 0, 1, 1]\n", "");
        expect_err(&one, &["stage", "at least 2"]);
    }
}
