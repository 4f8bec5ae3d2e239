//! Raw TOML into a validated [`Spec`]: every field checked, each error naming the file, the
//! field and the value.

use super::*;
use crate::error::SpecError;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpec {
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
pub(super) struct RawDetector {
    image: InputShape,
    #[serde(default)]
    backbone: Vec<RawLayer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLayer {
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
    /// `add`: the earlier layer whose maps are added.
    from: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum SplitValue {
    Count(i64),
    Fraction(f64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStage {
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

pub(super) fn validate(raw: RawSpec, path: &Path) -> Result<Spec, SpecError> {
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
    for (f, v, max) in [
        ("input.channels", raw.input.channels, MAX_WIDTH),
        ("input.height", raw.input.height, MAX_SIDE),
        ("input.width", raw.input.width, MAX_SIDE),
        ("classes", raw.classes, MAX_WIDTH),
    ] {
        if v > max {
            return Err(err(f, &v, &format!("must be at most {max}")));
        }
    }

    let mut layers = Vec::with_capacity(raw.layers.len());
    let mut hw = (raw.input.height, raw.input.width);
    for (i, rl) in raw.layers.iter().enumerate() {
        let (l, out) = layer(i, rl, s_count, raw.free_width, hw, path)?;
        layers.push(l);
        hw = out;
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

    resolve_adds(&raw.layers, &mut layers, &raw.input, path)?;

    let mut stages: Vec<Stage> = Vec::with_capacity(s_count);
    for (s, rs) in raw.stages.iter().enumerate() {
        let prev = stages.last().map(|p| p.depth);
        stages.push(stage(s, rs, raw.classes, &layers, prev, path)?);
    }
    check_channels(&layers, &stages, path)?;
    check_size(&raw.input, &layers, "layer", path)?;
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

/// Each `add` layer's source (`from`: an earlier layer's name, after the first conv or fc)
/// and whether it needs a projection: identity where the source's maps have the channels,
/// split among stages and size of the maps before the `add`, else a 1x1 convolution whose
/// stride brings the source's size to theirs.
fn resolve_adds(
    raw: &[RawLayer],
    layers: &mut [Layer],
    input: &InputShape,
    path: &Path,
) -> Result<(), SpecError> {
    let sizes = {
        let mut v = vec![(input.height, input.width)];
        for l in layers.iter() {
            let (h, w) = *v.last().unwrap();
            v.push(out_size(&l.kind, h, w).unwrap_or((0, 0)));
        }
        v
    };
    // the conv or fc layer that last set the channels of the maps after layer l
    let setter = |layers: &[Layer], l: usize| (0..=l).rev().find(|&j| layers[j].kind.is_weighted());
    for i in 0..layers.len() {
        if !matches!(layers[i].kind, LayerKind::Add { .. }) {
            continue;
        }
        let name = raw[i].from.as_deref().unwrap_or_default();
        let field = format!("layer[{i}].from");
        let err = |reason: String| SpecError::invalid(path, &field, format!("{name:?}"), reason);
        let Some(from) = layers[..i].iter().position(|l| l.name == name) else {
            return Err(err(format!(
                "not the name of a layer before this one ({})",
                layers[..i]
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let (Some(sz), Some(sx)) = (setter(layers, from), setter(layers, i - 1)) else {
            return Err(err(
                "the maps added must come after the first conv or fc layer (each stage's own channels)".into(),
            ));
        };
        if sz == sx {
            return Err(err(format!(
                "no conv or fc layer between {name:?} and this add: a residual adds a block's output to its input"
            )));
        }
        let ((hz, wz), (hx, wx)) = (sizes[from + 1], sizes[i]);
        let same = layers[sz].width == layers[sx].width
            && layers[sz].split == layers[sx].split
            && (hz, wz) == (hx, wx);
        let stride = (hz / hx.max(1)).max(1);
        if !same && ((hz - 1) / stride + 1, (wz - 1) / stride + 1) != (hx, wx) {
            return Err(err(format!(
                "its {hz}x{wz} maps cannot be brought to the {hx}x{wx} maps before the add by a 1x1 convolution of any stride"
            )));
        }
        layers[i].kind = LayerKind::Add {
            from,
            projection: !same,
            stride: if same { 1 } else { stride },
        };
    }
    Ok(())
}

/// The largest image side, kernel and stride a description may give: far beyond any network
/// that trains on a CPU, and small enough that no shape arithmetic can overflow.
pub(super) const MAX_SIDE: usize = 1 << 14;
/// The most channels (filters, units, classes) of one layer.
pub(super) const MAX_WIDTH: usize = 1 << 16;
/// The most weights of the monolithic network (8 GiB of f32) and values of one example's maps.
const MAX_VALUES: u128 = 1 << 31;

/// Refuses a description whose weights or one example's maps would not fit in memory
/// whatever the machine (counted exactly, in 128 bits, so nothing wraps), naming the layer
/// that crosses the limit.
fn check_size(
    input: &InputShape,
    layers: &[Layer],
    prefix: &str,
    path: &Path,
) -> Result<(), SpecError> {
    for (i, (l, (weights, maps))) in layers.iter().zip(running_values(input, layers)).enumerate() {
        for (what, v) in [("weights", weights), ("values of one example's maps", maps)] {
            if v > MAX_VALUES {
                return Err(SpecError::invalid(
                    path,
                    format!("{prefix}[{i}]"),
                    format!("{:?}", l.name),
                    format!(
                        "the network needs {v} {what} up to this layer ({:.1} GiB of f32), more than the {MAX_VALUES} onionnet accepts",
                        v as f64 * 4.0 / (1u64 << 30) as f64
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Layer `i` of the description on its `h x w` input: the validated layer and its output size.
fn layer(
    i: usize,
    rl: &RawLayer,
    s_count: usize,
    free_width: bool,
    (h, w): (usize, usize),
    path: &Path,
) -> Result<(Layer, (usize, usize)), SpecError> {
    let err = |field: &str, value: &dyn std::fmt::Display, reason: &str| {
        SpecError::invalid(path, field, value, reason)
    };
    let at = format!("layer[{i}]");
    let name = rl
        .name
        .clone()
        .unwrap_or_else(|| format!("{}{}", rl.kind, i + 1));
    let kind = kind_of(&at, rl, path)?;
    let need = |f: &str, v: Option<usize>| required(&format!("{at}.{f}"), v, path);
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
        if width > MAX_WIDTH {
            return Err(err(
                &format!("{at}.{wf}"),
                &width,
                &format!("must be at most {MAX_WIDTH}"),
            ));
        }
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
            free_width,
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
    Ok((
        Layer {
            name,
            kind,
            width,
            split,
        },
        (nh, nw),
    ))
}

/// The kind of layer `rl` (`at`: its field prefix, for errors), with only the fields that
/// kind has.
fn kind_of(at: &str, rl: &RawLayer, path: &Path) -> Result<LayerKind, SpecError> {
    let err = |field: &str, value: &dyn std::fmt::Display, reason: &str| {
        SpecError::invalid(path, field, value, reason)
    };
    let allowed: &[&str] = match rl.kind.as_str() {
        "conv" => &["filters", "kernel", "stride", "padding", "split"],
        "fc" => &["units", "split"],
        "relu" | "batchnorm" => &[],
        "maxpool" => &["kernel", "stride", "ceil"],
        "dropout" => &["prob"],
        "add" => &["from"],
        "avgpool" => &[],
        other => {
            return Err(err(
                &format!("{at}.type"),
                &format!("{other:?}"),
                "expected one of conv, fc, relu, maxpool, batchnorm, dropout, add, avgpool",
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
        ("from", rl.from.is_some()),
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
        let v = required(&format!("{at}.{f}"), v, path)?;
        if v > MAX_SIDE {
            return Err(err(
                &format!("{at}.{f}"),
                &v,
                &format!("must be at most {MAX_SIDE}"),
            ));
        }
        Ok(v)
    };
    let kind = match rl.kind.as_str() {
        "conv" => {
            let kernel = need("kernel", rl.kernel)?;
            let padding = rl.padding.unwrap_or(0);
            if padding >= kernel {
                return Err(err(
                    &format!("{at}.padding"),
                    &padding,
                    &format!(
                        "must be less than the kernel ({kernel}): a window inside the zero border sees no input"
                    ),
                ));
            }
            LayerKind::Conv {
                kernel,
                stride: rl.stride.map_or(Ok(1), |v| need("stride", Some(v)))?,
                padding,
            }
        }
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
        // (`from` is resolved once every layer is known: `resolve_adds`)
        "add" => {
            if rl.from.is_none() {
                return Err(err(
                    &format!("{at}.from"),
                    &"(missing)",
                    "required: the name of an earlier layer whose maps are added",
                ));
            }
            LayerKind::Add {
                from: usize::MAX,
                projection: false,
                stride: 1,
            }
        }
        "avgpool" => LayerKind::Avgpool,
        _ => unreachable!("checked above"),
    };
    Ok(kind)
}

/// A count the field `field` must give, at least 1.
fn required(field: &str, v: Option<usize>, path: &Path) -> Result<usize, SpecError> {
    match v {
        None => Err(SpecError::invalid(path, field, "(missing)", "required")),
        Some(0) => Err(SpecError::invalid(path, field, 0, "must be at least 1")),
        Some(v) => Ok(v),
    }
}

/// Stage `s` of the description over `layers`, after a stage ending at `prev_depth`.
fn stage(
    s: usize,
    rs: &RawStage,
    fine_classes: usize,
    layers: &[Layer],
    prev_depth: Option<usize>,
    path: &Path,
) -> Result<Stage, SpecError> {
    let err = |field: &str, value: &dyn std::fmt::Display, reason: &str| {
        SpecError::invalid(path, field, value, reason)
    };
    let at = format!("stage[{s}]");
    let name = rs.name.clone().unwrap_or_else(|| format!("stage{}", s + 1));
    let depth = stage_depth(&at, rs, layers, prev_depth, path)?;
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
    let (classes, label_map) = label_map(&at, rs, fine_classes, path)?;
    if loss == Loss::Hinge && classes != 2 {
        return Err(err(
            &format!("{at}.loss"),
            &"\"hinge\"",
            &format!("the binary hinge loss needs exactly 2 s-classes, this stage has {classes}"),
        ));
    }
    if classes < 2 {
        return Err(err(
            &format!("{at}.classes"),
            &classes,
            "a stage needs at least 2 s-classes",
        ));
    }
    Ok(Stage {
        name,
        depth,
        loss,
        weight,
        classes,
        label_map,
    })
}

/// The number of layers a stage covers (`ends_at`, default all), checked against the
/// previous stage's and against the layer that follows (`at`: the stage's field prefix).
fn stage_depth(
    at: &str,
    rs: &RawStage,
    layers: &[Layer],
    prev_depth: Option<usize>,
    path: &Path,
) -> Result<usize, SpecError> {
    let err = |field: &str, value: &dyn std::fmt::Display, reason: &str| {
        SpecError::invalid(path, field, value, reason)
    };
    let n_layers = layers.len();
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
    if let Some(prev) = prev_depth
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
    Ok(depth)
}

/// A stage's s-classes and label map (`at`: the stage's field prefix, for errors).
fn label_map(
    at: &str,
    rs: &RawStage,
    fine_classes: usize,
    path: &Path,
) -> Result<(usize, LabelMap), SpecError> {
    let err = |field: &str, value: &dyn std::fmt::Display, reason: &str| {
        SpecError::invalid(path, field, value, reason)
    };
    let r = match &rs.label_map {
        None => {
            let c = rs.classes.unwrap_or(fine_classes);
            if c != fine_classes {
                return Err(err(
                    &format!("{at}.classes"),
                    &c,
                    &format!(
                        "without a label_map a stage predicts the {} fine classes",
                        fine_classes
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
            if c < 2 || c > fine_classes {
                return Err(err(
                    &format!("{at}.classes"),
                    &c,
                    &format!("k-means groups must be in 2..={}", fine_classes),
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
            if m.len() != fine_classes {
                return Err(err(
                    &format!("{at}.label_map"),
                    &format!("{m:?}"),
                    &format!(
                        "has {} entries but the task has {} fine classes",
                        m.len(),
                        fine_classes
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
    Ok(r)
}

/// The stages against the layers' splits: the last stage is the full network; a stage has
/// channels in every weighted layer up to its depth unless an earlier stage feeds it there
/// (stage 1 reads nobody); nobody has channels past its own depth; every head has maps.
fn check_channels(layers: &[Layer], stages: &[Stage], path: &Path) -> Result<(), SpecError> {
    let err = |field: &str, value: &dyn std::fmt::Display, reason: &str| {
        SpecError::invalid(path, field, value, reason)
    };
    let (n_layers, s_count) = (layers.len(), stages.len());
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
    Ok(())
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
    for (f, v, max) in [
        ("detector.image.channels", img.channels, MAX_WIDTH),
        ("detector.image.height", img.height, MAX_SIDE),
        ("detector.image.width", img.width, MAX_SIDE),
    ] {
        if v > max {
            return Err(err(f, &v, &format!("must be at most {max}")));
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
        let (kind, width) = backbone_kind(&at, &name, rl, path)?;
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
    check_size(&img, &backbone, "detector.backbone", path)?;
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

/// The kind and width of backbone layer `rl` (`at`: its field prefix, for errors).
fn backbone_kind(
    at: &str,
    name: &str,
    rl: &RawLayer,
    path: &Path,
) -> Result<(LayerKind, usize), SpecError> {
    let err = |field: &str, value: &dyn std::fmt::Display, reason: &str| {
        SpecError::invalid(path, field, value, reason)
    };
    let pos = |f: &str, v: Option<usize>, default: Option<usize>| -> Result<usize, SpecError> {
        let max = if f == "filters" { MAX_WIDTH } else { MAX_SIDE };
        match v.or(default) {
            None => Err(err(&format!("{at}.{f}"), &"(missing)", "required")),
            Some(0) => Err(err(&format!("{at}.{f}"), &0, "must be at least 1")),
            Some(v) if v > max => Err(err(
                &format!("{at}.{f}"),
                &v,
                &format!("must be at most {max}"),
            )),
            Some(v) => Ok(v),
        }
    };
    if rl.split.is_some() || rl.units.is_some() || rl.prob.is_some() {
        return Err(err(
            at,
            &name,
            "backbone layers are shared by every stage: no split, units or prob",
        ));
    }
    let (kind, width) = match rl.kind.as_str() {
        "conv" => {
            let kernel = pos("kernel", rl.kernel, None)?;
            let s = pos("stride", rl.stride, Some(1))?;
            let padding = rl.padding.unwrap_or(0);
            if padding >= kernel {
                return Err(err(
                    &format!("{at}.padding"),
                    &padding,
                    &format!("must be less than the kernel ({kernel})"),
                ));
            }
            let kind = LayerKind::Conv {
                kernel,
                stride: s,
                padding,
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
    Ok((kind, width))
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
