//! A trained network on disk: one directory per network kind, holding the exact description
//! it was built from (`spec.toml`, label maps resolved), the weights of each of its modules
//! (`net{i}.bpk`, burn's burnpack format), the optimiser state for `--resume`
//! (`optim{i}.bpk`), the training log (`train.json`) and the thresholds (`thresholds.json`).
//! Every file is written atomically (temp file + rename): an interrupted run leaves the
//! previous version intact.

use crate::calibrate::Calibration;
use crate::error::CheckpointError;
use crate::files::{read, write_atomic};
use crate::model::Model;
use crate::onion::{Net, NetworkKind, OnionModule, archs};
use crate::spec::Spec;
use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Per-epoch record of training.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    /// Per trained stage: (train loss, train accuracy, validation loss, validation accuracy).
    pub stages: Vec<[f64; 4]>,
    pub seconds: f64,
}

/// `train.json`: what kind of network this is and how far training got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub kind: NetworkKind,
    /// Epochs completed by each module (the non-sharing cascade trains its stages one after
    /// the other).
    pub epochs_done: Vec<usize>,
    pub epochs: usize,
    pub seed: u64,
    /// The settings and data size it was trained with: a resumed run must match them.
    #[serde(default)]
    pub config: Option<crate::train::config::TrainConfig>,
    #[serde(default)]
    pub train_examples: usize,
    pub log: Vec<Vec<EpochLog>>,
    /// The fingerprint of each module's weights as of `epochs_done` (see
    /// [`Checkpoint::save_epoch`]).
    #[serde(default)]
    pub weights: Vec<String>,
}

/// The weights of `module` in burnpack bytes (`path` names it in errors).
fn record_bytes<M: Module>(module: &M, path: &Path) -> Result<Vec<u8>, CheckpointError> {
    module
        .clone()
        .into_record()
        .into_bytes()
        .map(|b| b.to_vec())
        .map_err(|e| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("{e:?}"),
        })
}

/// Where a file's next version waits until its epoch is committed.
fn next(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".next");
    PathBuf::from(s)
}

fn digest(bytes: &[u8]) -> String {
    let mut h = crate::files::Fnv1a::default();
    h.write(bytes);
    h.hex()
}

/// `preprocess.json`: what turns an image file into a network's input, so that a model
/// directory can be applied to new images on its own: the input shape (channels: 1 grey, 3
/// RGB; images are resized to height x width), the standardisation and the class names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// `[channels, height, width]`.
    pub input: [usize; 3],
    pub mean: f32,
    pub std: f32,
    pub classes: Vec<String>,
}

impl Preprocess {
    /// The class `q` names: by name (any case) or by index.
    pub fn class_index(&self, q: &str) -> Option<usize> {
        self.classes
            .iter()
            .position(|n| n.eq_ignore_ascii_case(q))
            .or_else(|| q.parse().ok().filter(|&i: &usize| i < self.classes.len()))
    }
}

/// `thresholds.json`: one calibration per target TPR, and the fingerprint of the description
/// and weights they were computed on ([`Checkpoint::fingerprint`]): thresholds are only
/// meaningful for the network that produced the scores.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Thresholds {
    pub calibrations: Vec<Calibration>,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

pub struct Checkpoint {
    pub dir: PathBuf,
}

impl Checkpoint {
    pub fn new(dir: &Path) -> Checkpoint {
        Checkpoint {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn exists(&self) -> bool {
        self.path("train.json").exists()
    }

    pub fn save_spec(&self, spec: &Spec) -> Result<(), CheckpointError> {
        write_atomic(&self.path("spec.toml"), spec.to_toml().as_bytes())
    }

    pub fn load_spec(&self) -> Result<Spec, CheckpointError> {
        let p = self.path("spec.toml");
        let text = String::from_utf8(read(&p)?).map_err(|e| CheckpointError::Corrupt {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        Spec::from_toml(&text, &p).map_err(|e| CheckpointError::Corrupt {
            path: p.clone(),
            reason: e.to_string(),
        })
    }

    pub fn save_module<M: Module>(&self, i: usize, module: &M) -> Result<(), CheckpointError> {
        let p = self.path(&format!("net{i}.bpk"));
        write_atomic(&p, &record_bytes(module, &p)?)
    }

    /// Commits one epoch of module `i`: its weights and optimiser state are written beside
    /// the current ones (`*.bpk.next`), then the state naming them by fingerprint (the commit
    /// point), then they take the current ones' place. A run killed at any moment leaves the
    /// previous epoch or this one, never a mix: the next load (`recover`) finishes or undoes
    /// what a killed run left.
    pub fn save_epoch<M: Module>(
        &self,
        i: usize,
        module: &M,
        optim: &[u8],
        state: &mut TrainState,
    ) -> Result<(), CheckpointError> {
        let (net, opt) = (
            self.path(&format!("net{i}.bpk")),
            self.path(&format!("optim{i}.bpk")),
        );
        let weights = record_bytes(module, &net)?;
        write_atomic(&next(&net), &weights)?;
        write_atomic(&next(&opt), optim)?;
        state.weights.resize(state.epochs_done.len(), String::new());
        state.weights[i] = digest(&weights);
        self.save_state(state)?;
        for p in [&net, &opt] {
            std::fs::rename(next(p), p).map_err(|source| CheckpointError::Io {
                path: p.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Finishes the epoch commit a killed run left half done (its `train.json` already names
    /// the new weights) or undoes it (it does not).
    fn recover(&self) -> Result<(), CheckpointError> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        let pending: Vec<usize> = entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_prefix("net")?
                    .strip_suffix(".bpk.next")?
                    .parse()
                    .ok()
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let state: Option<TrainState> = self.load_json("train.json").ok();
        for i in pending {
            let (net, opt) = (
                self.path(&format!("net{i}.bpk")),
                self.path(&format!("optim{i}.bpk")),
            );
            let committed = state
                .as_ref()
                .and_then(|s| s.weights.get(i))
                .is_some_and(|f| *f == digest(&read(&next(&net)).unwrap_or_default()));
            for p in [&net, &opt] {
                let io = |source| CheckpointError::Io {
                    path: p.clone(),
                    source,
                };
                match (committed, next(p).exists()) {
                    (true, true) => std::fs::rename(next(p), p).map_err(io)?,
                    (false, true) => std::fs::remove_file(next(p)).map_err(io)?,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Loads weights into a freshly built module of the right shape; a record from another
    /// description is a mismatch error, a damaged file a corruption error.
    pub fn load_module<M: Module>(&self, i: usize, module: M) -> Result<M, CheckpointError> {
        let p = self.path(&format!("net{i}.bpk"));
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(read(&p)?)).map_err(|e| {
            CheckpointError::Corrupt {
                path: p.clone(),
                reason: format!("{e:?}"),
            }
        })?;
        module
            .try_load_record(record)
            .map_err(|e| CheckpointError::Mismatch {
                path: p.clone(),
                reason: match e {
                    burn::store::RecordError::Validation(m) | burn::store::RecordError::Io(m) => m,
                },
            })
    }

    pub fn load_optim(&self, i: usize) -> Result<Option<Bytes>, CheckpointError> {
        let p = self.path(&format!("optim{i}.bpk"));
        if !p.exists() {
            return Ok(None);
        }
        Ok(Some(Bytes::from_bytes_vec(read(&p)?)))
    }

    fn save_json(&self, name: &str, value: &impl Serialize) -> Result<(), CheckpointError> {
        write_atomic(
            &self.path(name),
            &serde_json::to_vec_pretty(value).expect("plain data serialises"),
        )
    }

    fn load_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, CheckpointError> {
        let p = self.path(name);
        serde_json::from_slice(&read(&p)?).map_err(|e| CheckpointError::Corrupt {
            path: p,
            reason: e.to_string(),
        })
    }

    pub fn save_state(&self, state: &TrainState) -> Result<(), CheckpointError> {
        self.save_json("train.json", state)
    }

    /// The training state (after finishing or undoing a commit a killed run left).
    pub fn load_state(&self) -> Result<TrainState, CheckpointError> {
        self.recover()?;
        self.load_json("train.json")
    }

    /// A digest of the description and weights stored here (FNV-1a over `spec.toml` and
    /// every `net{i}.bpk`): what a `thresholds.json` says it was calibrated on.
    pub fn fingerprint(&self) -> Result<String, CheckpointError> {
        let mut h = crate::files::Fnv1a::default();
        h.write(&read(&self.path("spec.toml"))?);
        for i in 0.. {
            let p = self.path(&format!("net{i}.bpk"));
            if !p.exists() {
                break;
            }
            h.write(&read(&p)?);
        }
        Ok(h.hex())
    }

    /// Writes `thresholds.json` for the network stored here (with its fingerprint).
    pub fn save_thresholds(&self, calibrations: &[Calibration]) -> Result<(), CheckpointError> {
        let t = Thresholds {
            calibrations: calibrations.to_vec(),
            fingerprint: Some(self.fingerprint()?),
        };
        self.save_json("thresholds.json", &t)
    }

    /// Reads `thresholds.json`, refusing one that was not calibrated on this directory's
    /// description and weights, or whose counts and values do not fit `spec`.
    pub fn load_thresholds(&self, spec: &Spec) -> Result<Thresholds, CheckpointError> {
        let p = self.path("thresholds.json");
        let t: Thresholds = self.load_json("thresholds.json")?;
        let bad = |reason: String| CheckpointError::Mismatch {
            path: p.clone(),
            reason,
        };
        if t.calibrations.is_empty() {
            return Err(bad("calibrations = []: it holds no operating point".into()));
        }
        let early = spec.stages.len().saturating_sub(1);
        for (i, c) in t.calibrations.iter().enumerate() {
            if !(c.target_tpr.is_finite() && c.target_tpr > 0.0 && c.target_tpr <= 1.0) {
                return Err(bad(format!(
                    "calibrations[{i}].target_tpr = {}: must be in (0, 1]",
                    c.target_tpr
                )));
            }
            if c.thresholds.len() != early {
                return Err(bad(format!(
                    "calibrations[{i}].thresholds has {} stages, the description {early} early stages",
                    c.thresholds.len()
                )));
            }
            for (s, row) in c.thresholds.iter().enumerate() {
                let want = spec.stages[s].classes;
                if row.len() != want {
                    return Err(bad(format!(
                        "calibrations[{i}].thresholds[{s}] has {} values, stage {} has {want} s-classes",
                        row.len(),
                        s + 1
                    )));
                }
                if let Some(v) = row.iter().find(|v| !v.is_finite()) {
                    return Err(bad(format!(
                        "calibrations[{i}].thresholds[{s}] holds {v}: thresholds are finite scores"
                    )));
                }
            }
        }
        let here = self.fingerprint()?;
        match &t.fingerprint {
            None => {
                return Err(bad(
                    "it has no fingerprint of the network it was calibrated on: run `onionnet calibrate` again".into(),
                ));
            }
            Some(f) if *f != here => {
                return Err(bad(format!(
                    "fingerprint = {f:?}, but this directory's description and weights have {here:?}: the thresholds were calibrated on another network (run `onionnet calibrate` again)"
                )));
            }
            Some(_) => {}
        }
        Ok(t)
    }

    pub fn save_preprocess(&self, p: &Preprocess) -> Result<(), CheckpointError> {
        self.save_json("preprocess.json", p)
    }

    /// The preprocessing stored with the model; a model trained without it (before onionnet
    /// stored it) is an error that says how to get one.
    pub fn load_preprocess(&self) -> Result<Preprocess, CheckpointError> {
        let p = self.path("preprocess.json");
        if !p.exists() {
            return Err(CheckpointError::Corrupt {
                path: p,
                reason: "missing: the model does not say how to prepare images (train it with `onionnet fit` or `onionnet demo`)".into(),
            });
        }
        let pre: Preprocess = self.load_json("preprocess.json")?;
        let spec = self.load_spec()?;
        let reason = if pre.input != spec.input.dims() {
            Some(format!(
                "input = {:?}, but spec.toml's input is {:?}",
                pre.input,
                spec.input.dims()
            ))
        } else if pre.classes.len() != spec.classes {
            Some(format!(
                "classes has {} names, spec.toml has classes = {}",
                pre.classes.len(),
                spec.classes
            ))
        } else if !(pre.mean.is_finite() && pre.std.is_finite() && pre.std > 0.0) {
            Some(format!(
                "mean = {}, std = {}: a finite mean and a positive finite standard deviation",
                pre.mean, pre.std
            ))
        } else {
            None
        };
        match reason {
            Some(reason) => Err(CheckpointError::Mismatch { path: p, reason }),
            None => Ok(pre),
        }
    }

    /// Loads a trained network for inference (on a plain, non-autodiff device).
    pub fn load_model(&self, device: &Device) -> Result<Model, CheckpointError> {
        let spec = self.load_spec()?;
        let state = self.load_state()?;
        let nets = archs(&spec, state.kind)
            .into_iter()
            .enumerate()
            .map(|(i, arch)| {
                let fresh = OnionModule::new(&arch, device);
                Ok(Net {
                    module: self.load_module(i, fresh)?.valid(),
                    arch,
                })
            })
            .collect::<Result<Vec<_>, CheckpointError>>()?;
        Ok(Model {
            kind: state.kind,
            spec,
            nets,
        })
    }

    /// Fails unless the description stored here is `spec` (same layers, split and stages).
    pub fn check_spec(&self, spec: &Spec) -> Result<(), CheckpointError> {
        let saved = self.load_spec()?;
        if !saved.same_network(spec) {
            return Err(CheckpointError::Mismatch {
                path: self.path("spec.toml"),
                reason: format!(
                    "it was trained from a different description than {} (layers, split or stages differ)",
                    spec.source.display()
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> TrainState {
        TrainState {
            kind: NetworkKind::Monolithic,
            epochs_done: vec![0],
            epochs: 2,
            seed: 1,
            config: None,
            train_examples: 10,
            log: vec![Vec::new()],
            weights: Vec::new(),
        }
    }

    /// A run killed inside an epoch's commit leaves the previous epoch (killed before the
    /// state was written) or the new one (killed after), with weights and state matching.
    #[test]
    fn a_commit_cut_short_is_undone_or_finished() {
        let device = Device::default();
        let spec = crate::shipped::spec("fashion-retrieval");
        let arch = archs(&spec, NetworkKind::Monolithic).remove(0);
        let (a, b) = (
            OnionModule::new(&arch, &device),
            OnionModule::new(&arch, &device),
        );
        let dir = std::env::temp_dir().join(format!("onionnet-commit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ck = Checkpoint::new(&dir);
        let mut st = state();
        st.epochs_done[0] = 1;
        ck.save_epoch(0, &a, b"optim a", &mut st).unwrap();
        let bytes_a = read(&dir.join("net0.bpk")).unwrap();
        let bytes_b = record_bytes(&b, &dir).unwrap();
        assert_eq!(st.weights[0], digest(&bytes_a));

        // killed before the commit point: the next files are dropped
        write_atomic(&next(&dir.join("net0.bpk")), &bytes_b).unwrap();
        write_atomic(&next(&dir.join("optim0.bpk")), b"optim b").unwrap();
        assert_eq!(ck.load_state().unwrap().epochs_done, vec![1]);
        assert_eq!(read(&dir.join("net0.bpk")).unwrap(), bytes_a);
        assert_eq!(read(&dir.join("optim0.bpk")).unwrap(), b"optim a");
        assert!(!next(&dir.join("net0.bpk")).exists());

        // killed after it: the renames are finished
        write_atomic(&next(&dir.join("net0.bpk")), &bytes_b).unwrap();
        write_atomic(&next(&dir.join("optim0.bpk")), b"optim b").unwrap();
        let mut st2 = st.clone();
        st2.epochs_done[0] = 2;
        st2.weights[0] = digest(&bytes_b);
        ck.save_state(&st2).unwrap();
        assert_eq!(ck.load_state().unwrap().epochs_done, vec![2]);
        assert_eq!(read(&dir.join("net0.bpk")).unwrap(), bytes_b);
        assert_eq!(read(&dir.join("optim0.bpk")).unwrap(), b"optim b");
        assert!(!next(&dir.join("optim0.bpk")).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
