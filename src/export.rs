//! A trained network's weights in safetensors, the format PyTorch, JAX and the Hugging Face
//! tools read (`safetensors.torch.load_file`): `onionnet export` and `onionnet import`.
//!
//! # Tensor names
//!
//! One name per branch, layer and parameter: `stage{k}.{layer}.{param}`, where `k` counts
//! the branches from 1 (the onion's branch B_k; the non-sharing cascade's k-th network; the
//! monolithic network has only `stage1`), `layer` is the description's layer name (`conv1`,
//! `fc1`, ... or `head` for the branch's output layer) and `param` is
//!
//! | layer          | params                                        | shape                          |
//! |----------------|-----------------------------------------------|--------------------------------|
//! | conv, fc, head | `weight`, `bias`                              | `[out, in, kh, kw]`, `[out]`   |
//! | add (projection) | `weight`, `bias` (a 1x1 conv of the source) | `[out, in, 1, 1]`, `[out]`     |
//! | batchnorm      | `gamma`, `beta`, `running_mean`, `running_var`| `[channels]`                   |
//!
//! An fc layer is stored as the convolution it is computed as (its kernel covers the whole
//! input map), so `weight.reshape(out, -1)` is the matrix of a `Linear` layer over the
//! flattened (channel, row, column) input. In the onion, a branch's `in` channels are the
//! maps it reads in order: stage 1's channels of the previous layer, then stage 2's, ... up
//! to its own. Values are `F32`; `import` also reads `F16`, `BF16` and `F64`.
//!
//! The file's metadata carries what a model directory needs besides weights (`kind`, the
//! description, the preprocessing, the thresholds), and a digest of the tensors: `import`
//! keeps the thresholds only when the tensors are the ones they were calibrated on.

use crate::checkpoint::{Checkpoint, Preprocess, Thresholds, TrainState};
use crate::error::CheckpointError;
use crate::files::{Fnv1a, read, write_atomic};
use crate::model::Model;
use crate::onion::{Net, NetworkKind, OnionModule, archs};
use crate::spec::Spec;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What `export` wrote or `import` read.
#[derive(Debug, Clone)]
pub struct Summary {
    pub kind: NetworkKind,
    pub tensors: usize,
    pub values: usize,
    /// `import`: whether the thresholds in the file's metadata were kept (see the module docs).
    pub thresholds: bool,
    pub preprocess: bool,
}

/// The documented name of the parameter at burn's module path `path` (`branches.0.convs.2.weight`)
/// of network `net` of `model`.
fn tensor_name(spec: &Spec, net: usize, path: &[String]) -> Option<String> {
    let (b, rest) = match path {
        [branches, b, rest @ ..] if branches == "branches" => (b.parse::<usize>().ok()?, rest),
        _ => return None,
    };
    let stage = net + b + 1;
    match rest {
        [head, param] if head == "head" => Some(format!("stage{stage}.head.{param}")),
        [list, l, param] if ["convs", "norms"].contains(&list.as_str()) => {
            let layer = &spec.layers.get(l.parse::<usize>().ok()?)?.name;
            Some(format!("stage{stage}.{layer}.{param}"))
        }
        _ => None,
    }
}

/// Collects every float parameter of a module with its documented name.
struct Collect<'a> {
    spec: &'a Spec,
    net: usize,
    path: Vec<String>,
    out: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl ModuleVisitor for Collect<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = tensor_name(self.spec, self.net, &self.path)
            .unwrap_or_else(|| panic!("unnamed parameter at {}", self.path.join(".")));
        let t = param.val();
        let shape = t.dims().to_vec();
        let values = t.into_data().iter::<f32>().collect();
        self.out.push((name, shape, values));
    }
}

/// The parameters of `model` by documented name: (name, shape, values), sorted by name.
pub fn tensors(model: &Model) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut all = Vec::new();
    for (i, net) in model.nets.iter().enumerate() {
        let mut c = Collect {
            spec: &model.spec,
            net: i,
            path: Vec::new(),
            out: Vec::new(),
        };
        net.module.visit(&mut c);
        all.append(&mut c.out);
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// The digest of named tensors that `export` stores and `import` checks: FNV-1a over each
/// tensor's name, shape and f32 values in name order.
fn digest<'a>(tensors: impl Iterator<Item = (&'a str, &'a [usize], &'a [f32])>) -> String {
    let mut h = Fnv1a::default();
    for (name, shape, values) in tensors {
        h.write(name.as_bytes());
        for d in shape {
            h.write(&(*d as u64).to_le_bytes());
        }
        for v in values {
            h.write(&v.to_le_bytes());
        }
    }
    h.hex()
}

/// A tensor to serialise.
struct F32View<'a> {
    shape: &'a [usize],
    bytes: Vec<u8>,
}

impl safetensors::View for &F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn mismatch(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Mismatch {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes the weights of the model directory `ckpt` to `out` (atomically), with the
/// description, kind, preprocessing and thresholds in the metadata.
pub fn export(ckpt: &Checkpoint, out: &Path, device: &Device) -> Result<Summary, CheckpointError> {
    if ckpt.load_spec()?.detector.is_some() {
        return Err(mismatch(
            &ckpt.dir.join("spec.toml"),
            "a detector (its description has [detector]): export writes classifiers only, a detector's backbone has no documented names yet",
        ));
    }
    let model = ckpt.load_model(device)?;
    let named = tensors(&model);
    let views: Vec<(String, F32View)> = named
        .iter()
        .map(|(n, shape, v)| {
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (n.clone(), F32View { shape, bytes })
        })
        .collect();
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "onionnet".to_string());
    meta.insert("kind".to_string(), model.kind.name().to_string());
    meta.insert("spec".to_string(), model.spec.to_toml());
    meta.insert(
        "weights".to_string(),
        digest(
            named
                .iter()
                .map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice())),
        ),
    );
    let preprocess = ckpt.load_preprocess().ok();
    if let Some(p) = &preprocess {
        meta.insert(
            "preprocess".into(),
            serde_json::to_string(p).expect("plain data"),
        );
    }
    let thresholds = ckpt.load_thresholds(&model.spec).ok();
    if let Some(t) = &thresholds {
        meta.insert(
            "thresholds".into(),
            serde_json::to_string(t).expect("plain data"),
        );
    }
    let bytes = safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), Some(meta))
        .map_err(|e| corrupt(out, e.to_string()))?;
    write_atomic(out, &bytes)?;
    Ok(Summary {
        kind: model.kind,
        tensors: named.len(),
        values: named.iter().map(|t| t.2.len()).sum(),
        thresholds: thresholds.is_some(),
        preprocess: preprocess.is_some(),
    })
}

/// The f32 values of a stored tensor.
fn values(view: &TensorView) -> Result<Vec<f32>, String> {
    let d = view.data();
    let chunks = |n: usize| d.chunks_exact(n);
    Ok(match view.dtype() {
        Dtype::F32 => chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F64 => chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Dtype::F16 => chunks(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => chunks(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(format!(
                "dtype {other:?}: onionnet reads F32, F16, BF16 and F64"
            ));
        }
    })
}

/// Replaces every parameter of a fresh module by the file's tensor of its name, recording
/// the first problem (missing, wrong shape, not finite).
struct Fill<'a> {
    spec: &'a Spec,
    net: usize,
    path: Vec<String>,
    file: &'a BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    used: Vec<String>,
    error: Option<String>,
}

impl ModuleMapper for Fill<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = tensor_name(self.spec, self.net, &self.path)
            .unwrap_or_else(|| panic!("unnamed parameter at {}", self.path.join(".")));
        let (id, t, _) = param.consume();
        let want = t.dims().to_vec();
        let t = match self.file.get(&name) {
            None => {
                self.error.get_or_insert(format!(
                    "no tensor {name:?} (shape {want:?}), which this description has"
                ));
                t
            }
            Some((shape, _)) if *shape != want => {
                self.error.get_or_insert(format!(
                    "tensor {name:?} has shape {shape:?}, this description's is {want:?}"
                ));
                t
            }
            Some((_, v)) if !v.iter().all(|x| x.is_finite()) => {
                self.error
                    .get_or_insert(format!("tensor {name:?} holds values that are not finite"));
                t
            }
            Some((shape, v)) => {
                self.used.push(name);
                Tensor::from_data(TensorData::new(v.clone(), shape.clone()), &t.device())
            }
        };
        Param::initialized(id, t)
    }
}

/// Reads a safetensors file into the model directory `out`: the network kind and the
/// description from the file's metadata, or from `kind` and `spec` where the file has none
/// (one written outside onionnet); given both, they must agree. Preprocessing and thresholds
/// come along when the metadata has them (thresholds only for the unchanged tensors).
pub fn import(
    file: &Path,
    spec: Option<&Spec>,
    kind: Option<NetworkKind>,
    out: &Checkpoint,
    device: &Device,
) -> Result<Summary, CheckpointError> {
    let bytes = read(file)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| corrupt(file, format!("not a safetensors file: {e}")))?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(file, e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();

    let spec = match (meta.get("spec"), spec) {
        (Some(text), given) => {
            let own = Spec::from_toml(text, &PathBuf::from(format!("{}:spec", file.display())))
                .map_err(|e| corrupt(file, format!("metadata spec: {e}")))?;
            if let Some(g) = given
                && !g.same_network(&own)
            {
                return Err(mismatch(
                    file,
                    format!(
                        "it holds the weights of description {:?}, not of {} (layers, split or stages differ)",
                        own.name,
                        g.source.display()
                    ),
                ));
            }
            own
        }
        (None, Some(g)) => g.clone(),
        (None, None) => {
            return Err(corrupt(
                file,
                "no description in its metadata: name one (`--spec`)",
            ));
        }
    };
    let kind = match (meta.get("kind"), kind) {
        (Some(k), given) => {
            let own = NetworkKind::parse(k)
                .ok_or_else(|| corrupt(file, format!("metadata kind = {k:?}: unknown")))?;
            if let Some(g) = given.filter(|g| *g != own) {
                return Err(mismatch(
                    file,
                    format!(
                        "kind = {:?} in its metadata, {:?} asked for",
                        own.name(),
                        g.name()
                    ),
                ));
            }
            own
        }
        (None, given) => given.unwrap_or(NetworkKind::Onion),
    };

    let mut file_tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let v = values(&view).map_err(|e| corrupt(file, format!("tensor {name:?}: {e}")))?;
        file_tensors.insert(name, (view.shape().to_vec(), v));
    }

    let mut used = Vec::new();
    let mut nets = Vec::new();
    for (i, arch) in archs(&spec, kind).into_iter().enumerate() {
        let mut fill = Fill {
            spec: &spec,
            net: i,
            path: Vec::new(),
            file: &file_tensors,
            used: Vec::new(),
            error: None,
        };
        let module = OnionModule::new(&arch, device).map(&mut fill);
        if let Some(e) = fill.error {
            return Err(mismatch(
                file,
                format!("{e} ({} {})", kind.name(), spec.name),
            ));
        }
        used.append(&mut fill.used);
        nets.push(Net { arch, module });
    }
    if let Some(extra) = file_tensors.keys().find(|n| !used.contains(n)) {
        return Err(mismatch(
            file,
            format!(
                "tensor {extra:?} is not a parameter of the {} of {} (see `onionnet export`'s names)",
                kind.name(),
                spec.name
            ),
        ));
    }

    if std::fs::read_dir(&out.dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(CheckpointError::Io {
            path: out.dir.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "not empty: import into a new directory",
            ),
        });
    }
    std::fs::create_dir_all(&out.dir).map_err(|source| CheckpointError::Io {
        path: out.dir.clone(),
        source,
    })?;
    out.save_spec(&spec)?;
    for (i, net) in nets.iter().enumerate() {
        out.save_module(i, &net.module)?;
    }
    out.save_state(&TrainState {
        kind,
        epochs_done: vec![0; nets.len()],
        epochs: 0,
        seed: 0,
        config: None,
        train_examples: 0,
        log: vec![Vec::new(); nets.len()],
        weights: Vec::new(),
    })?;
    let preprocess = match meta.get("preprocess") {
        Some(p) => {
            let p: Preprocess = serde_json::from_str(p)
                .map_err(|e| corrupt(file, format!("metadata preprocess: {e}")))?;
            out.save_preprocess(&p)?;
            true
        }
        None => false,
    };
    let same = meta.get("weights").is_some_and(|w| {
        *w == digest(
            file_tensors
                .iter()
                .map(|(n, (s, v))| (n.as_str(), s.as_slice(), v.as_slice())),
        )
    });
    let thresholds = match (meta.get("thresholds"), same) {
        (Some(t), true) => {
            let t: Thresholds = serde_json::from_str(t)
                .map_err(|e| corrupt(file, format!("metadata thresholds: {e}")))?;
            out.save_thresholds(&t.calibrations)?;
            out.load_thresholds(&spec)?;
            true
        }
        _ => false,
    };
    Ok(Summary {
        kind,
        tensors: file_tensors.len(),
        values: file_tensors.values().map(|t| t.1.len()).sum(),
        thresholds,
        preprocess,
    })
}
