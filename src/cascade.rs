//! Batched cascade inference. A batch runs through stage 1 whole; rows whose scores pass no
//! threshold of interest are rejected and cost nothing more. The survivors are made contiguous
//! with the fewest moves ([`crate::compaction`]); the same rows are gathered from the input and,
//! for the onion, from the earlier branches' maps the next stage reads; the next stage runs on
//! that block only and its scores are scattered back to the original positions. The
//! non-sharing cascade uses the same runner but its stages recompute from the input.

use crate::compaction::compact;
use crate::onion::{Maps, Net, NetworkKind};
use crate::spec::{Loss, Spec, Stage};
use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};
use std::time::{Duration, Instant};

/// One trained network of a kind: the onion or the monolithic net (one [`Net`]), or the
/// non-sharing cascade (one [`Net`] per stage).
#[derive(Debug, Clone)]
pub struct Model {
    pub kind: NetworkKind,
    pub spec: Spec,
    pub nets: Vec<Net>,
}

impl Model {
    /// Stages this network runs (the monolithic network has one: the spec's last).
    pub fn num_stages(&self) -> usize {
        match self.kind {
            NetworkKind::Monolithic => 1,
            _ => self.spec.num_stages(),
        }
    }

    /// The description's stage behind this network's stage `s`.
    pub fn stage(&self, s: usize) -> &Stage {
        match self.kind {
            NetworkKind::Monolithic => self.spec.stages.last().unwrap(),
            _ => &self.spec.stages[s],
        }
    }

    /// Runs stage `s` on `input`, reading `prev` (the onion's earlier branches' maps).
    pub fn run_stage(&self, s: usize, input: &Tensor<4>, prev: &[Maps]) -> (Maps, Tensor<2>) {
        match self.kind {
            NetworkKind::Onion => {
                let n = &self.nets[0];
                n.module.forward_branch(&n.arch, s, input, prev)
            }
            NetworkKind::Monolithic | NetworkKind::NonSharing => {
                let n = &self.nets[if self.kind == NetworkKind::Monolithic { 0 } else { s }];
                let (_, logits) = n.module.forward_branch(&n.arch, 0, input, &[]);
                (Vec::new(), logits)
            }
        }
    }

    /// Every stage on every row: per-stage scores `[n, classes_s]` (row-major).
    pub fn scores_all(&self, input: &Tensor<4>) -> Vec<Vec<f32>> {
        let mut maps = Vec::new();
        (0..self.num_stages())
            .map(|s| {
                let (own, logits) = self.run_stage(s, input, &maps);
                maps.push(own);
                stage_scores(self.stage(s).loss, logits)
            })
            .collect()
    }

    /// Only the maps a later branch reads are kept (and gathered) after each stage.
    fn prune(&self, own: &mut Maps) {
        let layers = &self.spec.layers;
        let depths: Vec<usize> = self.spec.stages.iter().map(|s| s.depth).collect();
        for (l, m) in own.iter_mut().enumerate() {
            let read_by_layer = l + 1 < layers.len() && layers[l + 1].kind.is_weighted();
            let read_by_head = depths.contains(&(l + 1));
            if !(read_by_layer || read_by_head) {
                *m = None;
            }
        }
    }
}

/// Per-s-class scores from a head's logits: softmax probabilities (cross-entropy) or `[-f, f]`
/// (hinge), row-major `[n, classes]`.
pub fn stage_scores(loss: Loss, logits: Tensor<2>) -> Vec<f32> {
    match loss {
        Loss::CrossEntropy => softmax(logits, 1).into_data().try_to_vec::<f32>().expect("f32 scores"),
        Loss::Hinge => logits
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 scores")
            .into_iter()
            .flat_map(|f| [-f, f])
            .collect(),
    }
}

/// Which rows pass each early stage: a row passes stage s if any of its scores for the
/// s-classes of interest reaches that class's threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// `per_stage[s]`: `(s-class, threshold)` pairs of interest for early stage s.
    pub per_stage: Vec<Vec<(usize, f32)>>,
}

impl Gate {
    /// Every row passes every stage (all thresholds at −∞).
    pub fn open(spec: &Spec) -> Gate {
        Gate::uniform(spec, f32::NEG_INFINITY)
    }

    /// No row passes stage 1 (all thresholds at +∞).
    pub fn closed(spec: &Spec) -> Gate {
        Gate::uniform(spec, f32::INFINITY)
    }

    fn uniform(spec: &Spec, t: f32) -> Gate {
        Gate {
            per_stage: spec.stages[..spec.num_stages() - 1]
                .iter()
                .map(|st| (0..st.classes).map(|c| (c, t)).collect())
                .collect(),
        }
    }

    fn passes(&self, s: usize, scores: &[f32], classes: usize, row: usize) -> bool {
        self.per_stage[s].iter().any(|&(c, t)| scores[row * classes + c] >= t)
    }
}

/// Where the time of one cascade run went.
#[derive(Debug, Clone, Default)]
pub struct Timing {
    /// Forward time of each stage (including moving its scores to the host).
    pub stage: Vec<Duration>,
    /// Thresholding, compaction planning, gathering the survivors' rows and maps, scattering.
    pub overhead: Duration,
}

impl Timing {
    pub fn total(&self) -> Duration {
        self.stage.iter().sum::<Duration>() + self.overhead
    }

    pub fn add(&mut self, other: &Timing) {
        if self.stage.len() < other.stage.len() {
            self.stage.resize(other.stage.len(), Duration::ZERO);
        }
        for (a, b) in self.stage.iter_mut().zip(&other.stage) {
            *a += *b;
        }
        self.overhead += other.overhead;
    }
}

/// What a cascade run gives back, in the batch's original row order.
#[derive(Debug, Clone)]
pub struct CascadeOutput {
    /// `scores[s]`: `[n, classes_s]`, NaN for rows that did not reach stage s.
    pub scores: Vec<Vec<f32>>,
    /// The last stage (0-based) each row reached.
    pub reached: Vec<usize>,
    pub timing: Timing,
}

impl CascadeOutput {
    /// Rows that reached the last stage.
    pub fn passed_all(&self, stages: usize) -> usize {
        self.reached.iter().filter(|&&r| r + 1 == stages).count()
    }
}

/// Runs `model` as a cascade over one batch.
pub fn run(model: &Model, input: Tensor<4>, gate: &Gate) -> CascadeOutput {
    let n = input.dims()[0];
    let stages = model.num_stages();
    let classes: Vec<usize> = (0..stages).map(|s| model.stage(s).classes).collect();
    let mut out = CascadeOutput {
        scores: classes.iter().map(|&c| vec![f32::NAN; n * c]).collect(),
        reached: vec![0; n],
        timing: Timing {
            stage: vec![Duration::ZERO; stages],
            overhead: Duration::ZERO,
        },
    };
    let device = input.device();
    let mut rows: Vec<usize> = (0..n).collect();
    let mut x = input;
    let mut prev: Vec<Maps> = Vec::new();
    for s in 0..stages {
        let t0 = Instant::now();
        let (mut own, logits) = model.run_stage(s, &x, &prev);
        let scores = stage_scores(model.stage(s).loss, logits);
        out.timing.stage[s] += t0.elapsed();

        let t1 = Instant::now();
        let c = classes[s];
        for (i, &r) in rows.iter().enumerate() {
            out.scores[s][r * c..(r + 1) * c].copy_from_slice(&scores[i * c..(i + 1) * c]);
            out.reached[r] = s;
        }
        if s + 1 == stages {
            out.timing.overhead += t1.elapsed();
            break;
        }
        let keep: Vec<bool> = (0..rows.len()).map(|i| gate.passes(s, &scores, c, i)).collect();
        let plan = compact(&keep);
        if plan.len == 0 {
            out.timing.overhead += t1.elapsed();
            break;
        }
        if model.kind == NetworkKind::Onion {
            model.prune(&mut own);
            prev.push(own);
        }
        if plan.len < rows.len() {
            let src = plan.window_sources();
            let idx = Tensor::<1, Int>::from_data(
                TensorData::new(src.iter().map(|&i| i as i64).collect::<Vec<_>>(), [src.len()]),
                &device,
            );
            x = x.select(0, idx.clone());
            for maps in &mut prev {
                for m in maps.iter_mut() {
                    *m = m.take().map(|t| t.select(0, idx.clone()));
                }
            }
            rows = src.iter().map(|&i| rows[i]).collect();
        }
        out.timing.overhead += t1.elapsed();
    }
    out
}
