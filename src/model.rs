//! A trained network of one kind (monolithic, non-sharing cascade, onion) built from one
//! description, run on burn's modules: stage by stage, or through the cascade runner
//! ([`crate::cascade`]) as an [`Engine`].

use crate::cascade::{Block, Engine, gather_rows, prune_maps, stack_maps, stage_scores};
use crate::compaction::Compaction;
use crate::onion::{Maps, Net, NetworkKind};
use crate::spec::{Spec, Stage};
use burn::tensor::Tensor;
use std::ops::Range;

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
                let n = &self.nets[if self.kind == NetworkKind::Monolithic {
                    0
                } else {
                    s
                }];
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
    pub fn prune(&self, own: &mut Maps) {
        prune_maps(&self.spec, own)
    }
}

impl Engine for Model {
    type Input = Tensor<4>;
    type Maps = Maps;
    fn kind(&self) -> NetworkKind {
        self.kind
    }
    fn num_stages(&self) -> usize {
        Model::num_stages(self)
    }
    fn stage(&self, s: usize) -> &Stage {
        Model::stage(self, s)
    }
    fn stage_scores(&self, s: usize, input: &Tensor<4>, prev: &[Maps]) -> (Maps, Vec<f32>) {
        let (own, logits) = self.run_stage(s, input, prev);
        (own, stage_scores(Model::stage(self, s).loss, logits))
    }
    fn prune(&self, own: &mut Maps) {
        Model::prune(self, own)
    }
    fn gather(&self, x: Tensor<4>, prev: &mut [Maps], plan: &Compaction) -> Tensor<4> {
        gather_rows(x, prev, &plan.window_sources())
    }
    fn rows(&self, x: &Tensor<4>) -> usize {
        x.dims()[0]
    }
    fn slice(&self, x: &Tensor<4>, range: Range<usize>) -> Tensor<4> {
        x.clone().slice(range)
    }
    fn gather_onto(
        &self,
        (x0, maps0): Block<Self>,
        x: &Tensor<4>,
        prev: &[Maps],
        plan: &Compaction,
    ) -> Block<Self> {
        // (burn's tensors: selected, then stacked)
        let mut maps = prev.to_vec();
        let x = gather_rows(x.clone(), &mut maps, &plan.window_sources());
        (
            Tensor::cat(vec![x0, x], 0),
            stack_maps(vec![maps0, maps], |m| Tensor::cat(m, 0)),
        )
    }
}

/// Whether every float parameter of `module` is finite (a diverged training's are not).
pub fn finite_weights<M: burn::module::Module>(module: &M) -> bool {
    struct Finite(bool);
    impl burn::module::ModuleVisitor for Finite {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if self.0 {
                self.0 = param.val().into_data().iter::<f32>().all(f32::is_finite);
            }
        }
    }
    let mut v = Finite(true);
    module.visit(&mut v);
    v.0
}
