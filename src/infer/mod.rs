//! The project's own inference path for trained networks (training stays on burn). Why:
//! burn-flex converts every conv's input to channels-last and back and im2cols it, per layer;
//! at 2 threads that reached 40% of the GEMM peak. Here activations stay channels-last (NHWC)
//! from layer to layer, and each example is stored within the zero border its next conv pads
//! with (written by the conv that makes it), so no pass pads a map. Convs, fc layers and
//! heads run on the direct kernels of `infer/direct/` (no im2col; the onion's source branches summed
//! in the register tile; a following 2x2 max pooling fused in). Layers with large weights run
//! as an im2col built in cache-sized tiles of output rows, each consumed at once by one GEMM
//! (the `gemm` crate burn-flex itself uses) with bias and ReLU applied while the tile is in
//! cache; the branches are written side by side inside that im2col copy. Weights are packed
//! once from the trained burn modules. A stage's thin leading layers run chunk by chunk of
//! examples, each chunk through all of them on one thread (`FastNet::forward_chunked`), the
//! others layer by layer with each layer's positions split between the threads.
//!
//! [`FastModel`] implements [`Engine`], so the same cascade runner (compaction, scatter,
//! pooling across batches) drives it; a map is a window of its buffer, so compaction moves
//! only the survivors outside the plan's window, in place.

use crate::cascade::{Block, Engine, prune_maps};
use crate::compaction::Compaction;
use crate::model::Model;
use crate::onion::{Arch, Net, NetworkKind};
use crate::spec::{LayerKind, Loss, Spec, Stage};
use burn::tensor::Tensor;
use rayon::prelude::*;
use std::time::{Duration, Instant};

mod act;
mod direct;
mod gemm;
mod pack;
mod plan;
#[cfg(test)]
mod tests;

pub use act::Act;
use gemm::maxpool;
use pack::{Op, PackedConv, host, pack, pack_folded};
use plan::{CHUNK_BELOW, chunk_fit, chunks_pay, sources};

/// Which inference path runs trained networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EngineKind {
    /// The project's own inference path (`src/infer/`: direct conv kernels, GEMM for large
    /// layers), weights packed from the burn modules.
    #[default]
    Own,
    /// burn's modules (flex backend).
    Burn,
}

/// One branch: an op per layer up to its depth (`None` where it has no map) and its head.
#[derive(Debug, Clone)]
struct FastBranch {
    ops: Vec<Option<Op>>,
    head: PackedConv,
}

/// Maps of one branch after each layer.
pub type ActMaps = Vec<Option<Act>>;

/// A [`Net`] with its weights packed for the own path.
#[derive(Debug, Clone)]
pub struct FastNet {
    pub arch: Arch,
    branches: Vec<FastBranch>,
    /// `kept[l]`: the maps after layer l are a residual's source, so no conv fuses them away
    /// (its ReLU or pooling applied in the same pass).
    kept: Vec<bool>,
}

/// A batch norm at inference as `x * scale + shift` per channel.
fn affine_of(bn: &burn::nn::BatchNorm) -> (Vec<f32>, Vec<f32>) {
    let (g, beta) = (host(bn.gamma.val()), host(bn.beta.val()));
    let (mean, var) = (host(bn.running_mean.value()), host(bn.running_var.value()));
    let scale: Vec<f32> = g
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + bn.epsilon as f32).sqrt())
        .collect();
    let shift = beta
        .iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    (scale, shift)
}

/// Which layers' maps a residual (`add`) reads.
fn kept_maps(arch: &Arch) -> Vec<bool> {
    let mut kept = vec![false; arch.layers.len()];
    for l in &arch.layers {
        if let LayerKind::Add { from, .. } = l.kind {
            kept[from] = true;
        }
    }
    kept
}

impl FastNet {
    pub fn from_net(net: &Net) -> FastNet {
        let arch = net.arch.clone();
        let m = &net.module;
        let widths = |b: usize, l: usize| -> Vec<usize> {
            if l == 0 {
                vec![arch.input.channels]
            } else {
                arch.sources(b, l - 1)
                    .map(|t| arch.branches[t].channels[l - 1])
                    .collect()
            }
        };
        let kept = kept_maps(&arch);
        let branches = arch
            .branches
            .iter()
            .enumerate()
            .map(|(b, br)| {
                let mut ops: Vec<Option<Op>> = Vec::with_capacity(br.depth);
                // the layers up to this one are applied by the conv (or add) before them
                let mut absorbed = 0;
                let is = |i: usize, kind: &LayerKind| {
                    i < br.depth && arch.layers.get(i).is_some_and(|n| n.kind == *kind)
                };
                for (l, layer) in arch.layers.iter().enumerate().take(br.depth) {
                    // A conv absorbs a batch norm right after it (folded into its weights and
                    // bias) and then a ReLU, unless a residual reads the maps between.
                    let fold = is(l + 1, &LayerKind::Batchnorm) && !kept[l];
                    let relu_at = l + 1 + usize::from(fold);
                    let relu = is(relu_at, &LayerKind::Relu) && !kept[relu_at - 1];
                    let affine = if fold {
                        m.norm(b, l + 1).map(affine_of)
                    } else {
                        None
                    };
                    let conv = |c, stride, padding| {
                        let mut p =
                            pack_folded(c, &widths(b, l), stride, padding, relu, affine.as_ref());
                        p.span = usize::from(fold) + usize::from(relu);
                        p
                    };
                    let op = if l <= absorbed && l > 0 && ops[l - 1].is_some() {
                        Some(Op::Fused)
                    } else {
                        match &layer.kind {
                            LayerKind::Conv {
                                stride, padding, ..
                            } => m.conv(b, l).map(|c| {
                                Op::Conv(conv(c, *stride, *padding).with_narrow_outputs())
                            }),
                            LayerKind::Fc => m.conv(b, l).map(|c| Op::Conv(conv(c, 1, 0).for_fc())),
                            LayerKind::Relu => ops[l - 1].as_ref().map(|_| Op::Relu),
                            LayerKind::Maxpool {
                                kernel,
                                stride,
                                ceil,
                            } => ops[l - 1].as_ref().map(|_| Op::Maxpool {
                                kernel: *kernel,
                                stride: *stride,
                                ceil: *ceil,
                            }),
                            LayerKind::Batchnorm => m.norm(b, l).map(|bn| {
                                let (scale, shift) = affine_of(bn);
                                Op::Affine { scale, shift }
                            }),
                            LayerKind::Dropout { .. } => ops[l - 1].as_ref().map(|_| Op::Identity),
                            // (and the ReLU right after, unless a residual reads the sum)
                            LayerKind::Add { from, stride, .. } => {
                                ops[l - 1].as_ref().map(|_| Op::Add {
                                    from: *from,
                                    projection: m.conv(b, l).map(|c| {
                                        pack(c, &widths(b, from + 1), *stride, 0, false)
                                            .with_narrow_outputs()
                                    }),
                                    relu: is(l + 1, &LayerKind::Relu) && !kept[l],
                                })
                            }
                            LayerKind::Avgpool => ops[l - 1].as_ref().map(|_| Op::GlobalAvg),
                        }
                    };
                    absorbed = match &op {
                        Some(Op::Conv(c)) => l + c.span,
                        Some(Op::Add { relu: true, .. }) => l + 1,
                        _ => absorbed,
                    };
                    ops.push(op);
                }
                let head_widths: Vec<usize> = arch
                    .sources(b, br.depth - 1)
                    .map(|t| arch.branches[t].channels[br.depth - 1])
                    .collect();
                FastBranch {
                    ops,
                    head: pack(m.head(b), &head_widths, 1, 0, false).widened(),
                }
            })
            .collect();
        FastNet {
            arch,
            branches,
            kept,
        }
    }

    /// The zero border to store around the maps after layer `l` of branch `b`: the padding
    /// of the conv that reads them next, unless a head reads them too (or other ops come
    /// between: ReLU keeps a zero border zero, the others are given maps without one).
    fn border_after(&self, b: usize, l: usize) -> usize {
        let read_by_head = self.arch.branches.iter().any(|br| br.depth == l + 1);
        match self.branches[b].ops.get(l + 1) {
            Some(Some(Op::Conv(next))) if !read_by_head => next.padding,
            _ => 0,
        }
    }

    /// Branch `b` on `input`, reading the earlier branches' maps `prev`: its maps and its
    /// head's logits `[n, outputs]` row-major (as [`crate::onion::OnionModule::forward_branch`]).
    pub fn forward_branch(&self, b: usize, input: &Act, prev: &[ActMaps]) -> (ActMaps, Vec<f32>) {
        self.forward_branch_with(b, input, prev, None, None)
    }

    /// [`Self::forward_branch`], with the leading layers that allow it run chunk by chunk
    /// where `chunked` says so (`None`: where it pays), else layer by layer. With `times`,
    /// layer by layer, each op's time recorded at its index (the head's after the ops; `None`
    /// for ops that do no work of their own: absent, or fused into the conv before).
    fn forward_branch_with(
        &self,
        b: usize,
        input: &Act,
        prev: &[ActMaps],
        chunked: Option<bool>,
        mut times: Option<&mut Vec<Option<Duration>>>,
    ) -> (ActMaps, Vec<f32>) {
        let chunked = if times.is_some() {
            Some(false)
        } else {
            chunked
        };
        if let Some(t) = times.as_deref_mut() {
            t.clear();
            t.resize(self.branches[b].ops.len() + 1, None);
        }
        let arch = &self.arch;
        let br = &self.branches[b];
        let (steps, covered) = self.chunkable(b, input, prev);
        // where it pays: where the maps the chunked layers write for the whole batch would
        // not fit in the cores' L2 (chunks keep them in cache from one layer to the next), or
        // on fewer than 8 examples per thread (a compacted batch: one parallel loop instead
        // of one per layer); elsewhere the per-layer loops balance the threads at a finer
        // grain; and only where two examples' maps fit in the cache budget (see `chunks_pay`)
        let chunked = chunked.unwrap_or_else(|| {
            let written: usize = steps.iter().map(|s| s.g.example_len() * 4).sum();
            !steps.is_empty()
                && chunk_fit(&steps, input, prev) >= 2
                && chunks_pay(input.n, rayon::current_num_threads(), written, CHUNK_BELOW)
        });
        let mut own: ActMaps = if chunked && !steps.is_empty() {
            self.forward_chunked(input, prev, &steps, covered)
        } else {
            Vec::new()
        };
        own.reserve(br.ops.len());
        // a conv's output already max-pooled, kept for the pooling layer
        let mut pooled: Option<Act> = None;
        for (l, op) in br.ops.iter().enumerate().skip(own.len()) {
            // (the clock read only when profiling: forward passes run this loop per layer)
            let clock = times.is_some().then(|| {
                // ops that do no work of their own: absent, or fused into the conv before
                let works = match op {
                    None | Some(Op::Fused) | Some(Op::Identity) => false,
                    Some(Op::Maxpool { .. }) => pooled.is_none(),
                    _ => true,
                };
                (works, Instant::now())
            });
            let out = self.apply_op(b, l, input, prev, &mut own, &mut pooled);
            if let (Some(t), Some((works, clock))) = (times.as_deref_mut(), clock) {
                t[l] = works.then(|| clock.elapsed());
            }
            own.push(out);
        }
        let clock = times.is_some().then(Instant::now);
        let srcs = sources(arch, b, br.ops.len() - 1, &own, prev);
        let logits = br.head.forward(&srcs, None, 0);
        if let (Some(t), Some(clock)) = (times, clock) {
            t[br.ops.len()] = Some(clock.elapsed());
        }
        // the head's columns past its outputs are the zero padding of `widened`
        let outputs = br.head.outputs;
        let logits = if logits.c == outputs {
            logits.into_values()
        } else {
            logits
                .values()
                .chunks_exact(logits.c)
                .flat_map(|row| &row[..outputs])
                .copied()
                .collect()
        };
        (own, logits)
    }

    /// Layer `l` of branch `b` on the maps so far (`own`: this branch's, `prev`: the branches
    /// before); a conv with a non-overlapping max pooling after it leaves its pooled maps in
    /// `pooled` for that pooling layer.
    fn apply_op(
        &self,
        b: usize,
        l: usize,
        input: &Act,
        prev: &[ActMaps],
        own: &mut ActMaps,
        pooled: &mut Option<Act>,
    ) -> Option<Act> {
        let arch = &self.arch;
        let br = &self.branches[b];
        match &br.ops[l] {
            None => None,
            Some(Op::Conv(c)) => {
                let srcs: Vec<&Act> = if l == 0 {
                    vec![input]
                } else {
                    sources(arch, b, l - 1, own, prev)
                };
                // a non-overlapping pooling right after (past a fused ReLU) is fused: the
                // maps between are read by nobody else, since every branch has the
                // pooling there and other branches read maps after it
                let pool_at = l + 1 + c.span;
                match br.ops.get(pool_at) {
                    Some(Some(Op::Maxpool {
                        kernel,
                        stride,
                        ceil,
                    })) if kernel == stride && !self.kept[l..pool_at].contains(&true) => {
                        let border = self.border_after(b, pool_at);
                        let pool = Some((*kernel, *ceil));
                        *pooled = Some(c.forward(&srcs, pool, border));
                        None
                    }
                    _ => {
                        let border = self.border_after(b, pool_at - 1);
                        Some(c.forward(&srcs, None, border))
                    }
                }
            }
            Some(Op::Maxpool { .. }) if pooled.is_some() => pooled.take(),
            // the conv before applied it; its pre-ReLU maps are read by nobody else
            Some(Op::Fused) => own[l - 1].take(),
            Some(Op::Relu) => own[l - 1].as_ref().map(|x| {
                let mut y = x.slice(0..x.n);
                y.values_mut().par_chunks_mut(1 << 14).for_each(|p| {
                    for v in p {
                        *v = v.max(0.0);
                    }
                });
                y
            }),
            Some(Op::Maxpool {
                kernel,
                stride,
                ceil,
            }) => own[l - 1]
                .as_ref()
                .map(|x| maxpool(x, *kernel, *stride, *ceil)),
            Some(Op::Affine { scale, shift }) => own[l - 1].as_ref().map(|x| {
                // (a border would not stay zero)
                let mut y = x.unbordered().into_owned();
                y.values_mut().par_chunks_mut(x.c).for_each(|px| {
                    for ((v, s), t) in px.iter_mut().zip(scale).zip(shift) {
                        *v = *v * s + t;
                    }
                });
                y
            }),
            Some(Op::Identity) => own[l - 1].clone(),
            Some(Op::Add {
                from,
                projection,
                relu,
            }) => {
                // the maps before are read by nobody else (no stage ends before an add), unless
                // a residual reads them too: summed in place
                let x = if self.kept[l - 1] {
                    own[l - 1].clone()
                } else {
                    own[l - 1].take()
                }?;
                let z =
                    match projection {
                        Some(p) => std::borrow::Cow::Owned(p.forward(
                            &sources(arch, b, *from, own, prev),
                            None,
                            0,
                        )),
                        None => std::borrow::Cow::Borrowed(own[*from].as_ref().expect(
                            "validated: an identity residual's branch has maps at its source",
                        )),
                    };
                // (made without a border, as the batch norm's maps: the next conv pads)
                let mut y = x.into_unbordered();
                y.add_residual(&z, *relu);
                Some(y)
            }
            Some(Op::GlobalAvg) => own[l - 1].as_ref().map(|x| {
                let x = x.unbordered();
                let (c, positions) = (x.c, x.h * x.w);
                let means = x
                    .values()
                    .par_chunks_exact(positions * c)
                    .flat_map_iter(|e| {
                        let mut sum = vec![0f32; c];
                        for px in e.chunks_exact(c) {
                            for (s, v) in sum.iter_mut().zip(px) {
                                *s += v;
                            }
                        }
                        sum.into_iter().map(move |s| s / positions as f32)
                    })
                    .collect();
                Act::new(x.n, 1, 1, c, means)
            }),
        }
    }
}

/// A trained [`Model`] on the own path.
#[derive(Debug, Clone)]
pub struct FastModel {
    pub kind: NetworkKind,
    pub spec: Spec,
    pub nets: Vec<FastNet>,
}

impl FastModel {
    pub fn from_model(m: &Model) -> FastModel {
        FastModel {
            kind: m.kind,
            spec: m.spec.clone(),
            nets: m.nets.iter().map(FastNet::from_net).collect(),
        }
    }

    /// A batch in this path's input layout: channels-last, stored within the first conv's
    /// padding as a zero border (made in the same conversion, so the first layer does not
    /// copy the batch into a padded one: measured, 8% of the retrieval stage 1).
    pub fn input(&self, x: &Tensor<4>) -> Act {
        let x = Act::from_tensor(x);
        match self.spec.layers.first().map(|l| &l.kind) {
            Some(LayerKind::Conv { padding, .. }) if *padding > 0 => {
                x.bordered(*padding).into_owned()
            }
            _ => x,
        }
    }

    /// Stage `s` run layer by layer with each op timed: the ops' times (index `l`: layer `l`
    /// of the description, `None` where no work of its own; the last: the head) and the
    /// stage's maps. The layer-by-layer run gives up the chunked one's cache reuse (see
    /// `FastNet::forward_chunked`), so the times show each layer's own cost, not the share
    /// it takes in a cascade run.
    pub fn stage_profile(
        &self,
        s: usize,
        input: &Act,
        prev: &[ActMaps],
    ) -> (ActMaps, Vec<Option<Duration>>) {
        let mut times = Vec::new();
        let (net, b, prev) = match self.kind {
            NetworkKind::Onion => (&self.nets[0], s, prev),
            NetworkKind::Monolithic => (&self.nets[0], 0, &[][..]),
            NetworkKind::NonSharing => (&self.nets[s], 0, &[][..]),
        };
        let (own, _) =
            rayon::scope(|_| net.forward_branch_with(b, input, prev, None, Some(&mut times)));
        (own, times)
    }
}

/// Runs `model` as a cascade over a stream on the chosen engine: burn's modules, or `fast`
/// (the same model packed for the own path; the rows are turned channels-last inside the
/// timed run, as a caller holding tensors would have to). `x` runs in batches of `batch`
/// rows, survivors pooled across them ([`crate::cascade::run_pooled`]; `batch` >= the rows
/// of `x`: one batch); every row gets the scores it gets alone.
pub fn run_stream_on(
    model: &Model,
    fast: Option<&FastModel>,
    x: &Tensor<4>,
    batch: usize,
    gate: &crate::cascade::Gate,
) -> crate::cascade::CascadeOutput {
    match fast {
        Some(f) => crate::cascade::run_stream(f, f.input(x), batch, gate),
        None => crate::cascade::run_stream(model, x.clone(), batch, gate),
    }
}

/// The models packed for the own path when `engine` asks for it.
pub fn prepare(engine: EngineKind, models: &[&Model]) -> Vec<Option<FastModel>> {
    models
        .iter()
        .map(|m| {
            (engine == EngineKind::Own).then(|| {
                use burn::module::Module;
                if let Some(d) = m
                    .nets
                    .first()
                    .and_then(|n| n.module.devices().into_iter().next())
                {
                    crate::device::note_own_engine_on_cpu(&d);
                }
                FastModel::from_model(m)
            })
        })
        .collect()
}

/// Per-s-class scores from logits on the host, as [`crate::cascade::stage_scores`] computes
/// them on tensors.
fn host_scores(loss: Loss, logits: Vec<f32>, outputs: usize) -> Vec<f32> {
    match loss {
        Loss::Hinge => logits.into_iter().flat_map(|f| [-f, f]).collect(),
        Loss::CrossEntropy => {
            let mut v = logits;
            for row in v.chunks_mut(outputs) {
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for x in row.iter_mut() {
                    *x = (*x - m).exp();
                    sum += *x;
                }
                row.iter_mut().for_each(|x| *x /= sum);
            }
            v
        }
    }
}

impl Engine for FastModel {
    type Input = Act;
    type Maps = ActMaps;
    fn kind(&self) -> NetworkKind {
        self.kind
    }
    fn num_stages(&self) -> usize {
        match self.kind {
            NetworkKind::Monolithic => 1,
            _ => self.spec.num_stages(),
        }
    }
    fn stage(&self, s: usize) -> &Stage {
        match self.kind {
            NetworkKind::Monolithic => self.spec.stages.last().expect("validated spec has stages"),
            _ => &self.spec.stages[s],
        }
    }
    fn stage_scores(&self, s: usize, input: &Act, prev: &[ActMaps]) -> (ActMaps, Vec<f32>) {
        // on a pool thread: each layer's parallel loop then starts where it is called instead
        // of being handed to a (possibly sleeping) worker while the caller waits
        let (own, logits) = rayon::scope(|_| match self.kind {
            NetworkKind::Onion => self.nets[0].forward_branch(s, input, prev),
            NetworkKind::Monolithic => (Vec::new(), self.nets[0].forward_branch(0, input, &[]).1),
            NetworkKind::NonSharing => (Vec::new(), self.nets[s].forward_branch(0, input, &[]).1),
        });
        let st = Engine::stage(self, s);
        (own, host_scores(st.loss, logits, st.outputs()))
    }
    fn prune(&self, own: &mut ActMaps) {
        prune_maps(&self.spec, own)
    }
    fn gather(&self, mut x: Act, prev: &mut [ActMaps], plan: &Compaction) -> Act {
        let mut maps: Vec<&mut Act> = prev.iter_mut().flatten().flatten().collect();
        maps.push(&mut x);
        Act::compact_all(&mut maps, plan);
        x
    }
    fn rows(&self, x: &Act) -> usize {
        x.n
    }
    fn slice(&self, x: &Act, range: std::ops::Range<usize>) -> Act {
        x.slice(range)
    }
    fn gather_onto(
        &self,
        (mut x0, mut maps0): Block<Self>,
        x: &Act,
        prev: &[ActMaps],
        plan: &Compaction,
    ) -> Block<Self> {
        let src = plan.window_sources();
        let into: Vec<&mut Act> = std::iter::once(&mut x0)
            .chain(maps0.iter_mut().flatten().flatten())
            .collect();
        let from: Vec<&Act> = std::iter::once(x)
            .chain(prev.iter().flatten().flatten())
            .collect();
        assert_eq!(into.len(), from.len(), "blocks pruned alike");
        Act::push_rows_all(&mut { into }, &from, &src);
        (x0, maps0)
    }
}
