//! The experiments' pipeline, as a library: train the monolithic baseline, the non-sharing
//! cascade and the onion on one data set, and calibrate both cascades on the held-out split.
//! `onionnet demo` is [`retrieval`] on Fashion-MNIST; `onionnet patches` runs the same steps
//! on patch pairs; `onionnet detect` is [`detection`] on composed scenes. Each network is
//! checkpointed under the output directory, and a finished one is reused by a later run with
//! the same settings.

use crate::apps::detection::Scenes;
use crate::apps::detection::detector::{self, DetectTrainConfig, Detector};
use crate::apps::retrieval::{Splits, groups_from, resolve_groups};
use crate::calibrate::{Calibration, Target, calibrate_model};
use crate::checkpoint::Checkpoint;
use crate::data::Dataset;
use crate::error::TrainError;
use crate::model::Model;
use crate::onion::{NetworkKind, archs};
use crate::spec::Spec;
use crate::train::{TrainConfig, TrainJob, train};
use burn::module::Module;
use burn::tensor::Device;
use std::path::Path;

/// Where and on what the networks of one experiment train.
pub struct Experiment<'a> {
    pub train: &'a Dataset,
    /// The held-out split: validation during training, then calibration.
    pub held_out: &'a Dataset,
    pub cfg: &'a TrainConfig,
    /// Checkpoints go to `out/monolithic`, `out/non-sharing` and `out/onion`.
    pub out: &'a Path,
    pub device: &'a Device,
}

/// The three networks with their operating points: one calibration per target TPR for each
/// cascade, `[None]` for the monolithic network (it has no threshold).
pub type Calibrated = Vec<(Model, Vec<Option<Calibration>>)>;

/// A step of [`retrieval`], reported as it starts.
pub enum Step<'a> {
    Monolithic,
    /// The stage-1 groups found (the group of each fine class).
    Groups(&'a [usize]),
    Cascades,
    Calibration,
}

impl Experiment<'_> {
    fn train(
        &self,
        spec: &Spec,
        kind: NetworkKind,
        pretrained: Vec<Option<crate::onion::OnionModule>>,
    ) -> Result<Model, TrainError> {
        let dir = self.out.join(kind.name());
        let ckpt = Checkpoint::new(&dir);
        train(TrainJob {
            spec,
            kind,
            train_set: self.train,
            valid_set: self.held_out,
            cfg: self.cfg,
            ckpt: &ckpt,
            resume: true,
            pretrained,
            device: self.device,
        })
    }

    /// The monolithic baseline.
    pub fn monolithic(&self, spec: &Spec) -> Result<Model, TrainError> {
        self.train(spec, NetworkKind::Monolithic, Vec::new())
    }

    /// The two cascades of `spec` after the monolithic network `mono`: the non-sharing cascade
    /// — whose last stage is `mono` itself when the split adds up, so it is reused rather than
    /// trained twice — and the onion.
    pub fn cascades(&self, mono: &Model, spec: &Spec) -> Result<[Model; 2], TrainError> {
        Ok([self.non_sharing(mono, spec)?, self.onion(spec)?])
    }

    /// The non-sharing cascade of `spec`, its last stage `mono` when the split adds up.
    pub fn non_sharing(&self, mono: &Model, spec: &Spec) -> Result<Model, TrainError> {
        let ns_archs = archs(spec, NetworkKind::NonSharing);
        let mut pretrained = vec![None; ns_archs.len()];
        if ns_archs.last() == Some(&mono.nets[0].arch) {
            *pretrained.last_mut().expect("a stage") = Some(mono.nets[0].module.clone().train());
        }
        self.train(spec, NetworkKind::NonSharing, pretrained)
    }

    /// The onion of `spec`, trained jointly.
    pub fn onion(&self, spec: &Spec) -> Result<Model, TrainError> {
        self.train(spec, NetworkKind::Onion, Vec::new())
    }

    /// The onion of `spec`, trained stage-wise ([`crate::train::train_stagewise`]).
    pub fn onion_stagewise(&self, spec: &Spec) -> Result<Model, TrainError> {
        let ckpt = Checkpoint::new(&self.out.join(NetworkKind::Onion.name()));
        crate::train::train_stagewise(TrainJob {
            spec,
            kind: NetworkKind::Onion,
            train_set: self.train,
            valid_set: self.held_out,
            cfg: self.cfg,
            ckpt: &ckpt,
            resume: true,
            pretrained: Vec::new(),
            device: self.device,
        })
    }

    /// Calibrates the cascades on the held-out split at every target TPR, saves
    /// `thresholds.json` next to each, and lists the three networks with their operating points.
    pub fn calibrate(
        &self,
        mono: Model,
        cascades: [Model; 2],
        targets: &[Target],
    ) -> anyhow::Result<Calibrated> {
        let mut loaded = vec![(mono, vec![None])];
        for model in cascades {
            let cals = self.calibrate_cascade(&model, targets)?;
            loaded.push((model, cals.into_iter().map(Some).collect()));
        }
        Ok(loaded)
    }

    /// A cascade's thresholds on the held-out split at every target TPR, saved as
    /// `thresholds.json` in its directory (`out/<kind>`).
    pub fn calibrate_cascade(
        &self,
        model: &Model,
        targets: &[Target],
    ) -> anyhow::Result<Vec<Calibration>> {
        let cals = calibrate_model(model, self.held_out, targets, self.device)?;
        Checkpoint::new(&self.out.join(model.kind.name())).save_thresholds(&cals)?;
        Ok(cals)
    }
}

/// The retrieval experiment on `splits`: the monolithic network, the stage-1 groups from it
/// (k-means on its class-averaged activations, where the description asks for them), the two
/// cascades trained with those groups, and their calibration at the target TPRs.
pub fn retrieval(
    spec: &Spec,
    splits: &Splits,
    cfg: &TrainConfig,
    targets: &[Target],
    out: &Path,
    device: &Device,
    mut step: impl FnMut(Step<'_>),
) -> anyhow::Result<Calibrated> {
    let exp = Experiment {
        train: &splits.train,
        held_out: &splits.calib,
        cfg,
        out,
        device,
    };
    step(Step::Monolithic);
    let mono = exp.monolithic(spec)?;
    let groups = groups_from(&mono, spec, &splits.train, cfg.seed, device);
    step(Step::Groups(&groups));
    let spec = resolve_groups(spec, &groups);
    step(Step::Cascades);
    let cascades = exp.cascades(&mono, &spec)?;
    step(Step::Calibration);
    let calibrated = exp.calibrate(mono, cascades, targets)?;
    // (each model directory then holds everything needed to apply it to new images)
    for kind in NetworkKind::ALL {
        Checkpoint::new(&out.join(kind.name())).save_preprocess(&splits.preprocess())?;
    }
    Ok(calibrated)
}

/// The detection experiment on composed scenes: the detector of each network kind trained end
/// to end (backbone and head), then the cascades' stage 1 calibrated on the held-out scenes
/// at every target TPR (`thresholds.json` beside each). `step` hears of each kind as its
/// training starts.
pub fn detection(
    spec: &Spec,
    scenes: &Scenes,
    cfg: &DetectTrainConfig,
    targets: &[Target],
    out: &Path,
    device: &Device,
    mut step: impl FnMut(NetworkKind),
) -> anyhow::Result<Vec<(Detector, Vec<Option<Calibration>>)>> {
    let mut dets = Vec::new();
    for kind in NetworkKind::ALL {
        step(kind);
        let ckpt = Checkpoint::new(&out.join(kind.name()));
        let det = detector::train(spec, kind, scenes, cfg, &ckpt, device)?;
        let cals = if kind == NetworkKind::Monolithic {
            vec![None]
        } else {
            let cals = crate::apps::detection::calibrate(
                &det,
                &scenes.valid,
                &scenes.proposals,
                targets,
                50,
                device,
            )?;
            ckpt.save_thresholds(&cals)?;
            cals.into_iter().map(Some).collect()
        };
        dets.push((det, cals));
    }
    Ok(dets)
}
