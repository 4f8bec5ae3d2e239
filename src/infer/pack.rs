//! Weight packing: a trained burn conv (or fc layer, or head) in the layouts its chosen kernel
//! reads, and the layer's forward on the direct kernel.

use super::act::{Act, assume_init, uninit};
use super::direct;
use super::gemm::maxpool;
use crate::spec::{LayerKind, out_size};
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use std::borrow::Cow;

/// A conv/fc layer or a head, its weights packed with rows `(dy * kw + dx) * c + ci` and the
/// output channels as columns: per source (`parts`, for a kernel over the whole map, where each
/// source's maps are used in place) and over all sources' channels in order (`all`, for an
/// im2col that writes every source's channels side by side — the concatenation happens inside
/// the im2col copy, which is made anyway, and one GEMM covers every source).
#[derive(Debug, Clone)]
pub(super) struct PackedConv {
    pub(super) parts: Vec<(usize, Vec<f32>)>,
    /// Each part's weights also in blocks of output channels (see `direct::Source::blocks`):
    /// fc layers, which run on a few rows after compaction.
    pub(super) blocks: Vec<Option<(usize, direct::Lines)>>,
    /// Each part's weights with rows paired (see `direct::Source::pairs`): convs whose kernel
    /// rows' runs `kw * c` are even, for the 16-lane tiles.
    pub(super) pairs: Vec<Option<direct::Lines>>,
    /// The width of the blocks `pairs` are cut into (fc layers, see `for_fc`).
    pub(super) pair_width: Option<usize>,
    /// A one-channel 3 x 3 layer's weights doubled (see `direct::Source::doubled`).
    pub(super) doubled: Option<direct::Lines>,
    pub(super) all: Vec<f32>,
    pub(super) bias: Vec<f32>,
    pub(super) cout: usize,
    /// The layers after it that it applies in the same pass: a batch norm folded into its
    /// weights and bias, and a ReLU (0, 1 or 2).
    pub(super) span: usize,
    /// Output channels that mean something: `cout` but for a [`PackedConv::widened`] head.
    pub(super) outputs: usize,
    pub(super) kernel: (usize, usize),
    pub(super) stride: usize,
    pub(super) padding: usize,
    pub(super) relu: bool,
    /// A conv whose outputs are not a multiple of 8: the same layer [`PackedConv::widened`],
    /// which runs in its place on the direct kernel, its output cut back to `cout` channels
    /// (see [`PackedConv::with_narrow_outputs`]).
    pub(super) wide: Option<Box<PackedConv>>,
}

#[derive(Debug, Clone)]
pub(super) enum Op {
    Conv(PackedConv),
    Relu,
    /// A layer already applied by the conv or add before it: a ReLU, or a batch norm folded
    /// into the conv's weights.
    Fused,
    Maxpool {
        kernel: usize,
        stride: usize,
        ceil: bool,
    },
    /// Batch norm at inference: `x * scale + shift` per channel.
    Affine {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    Identity,
    /// A residual: the maps before plus those after layer `from` (this branch's own), or
    /// plus their `projection` (reading the sources there, as a conv would).
    Add {
        from: usize,
        projection: Option<PackedConv>,
        /// The ReLU right after, applied in the same pass.
        relu: bool,
    },
    /// Global average pooling.
    GlobalAvg,
}

pub(super) fn host(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 weights")
}

/// Packs a burn conv `[cout, cin, kh, kw]` whose input channels are the concatenation of
/// sources with `widths` channels.
pub(super) fn pack(
    conv: &Conv2d,
    widths: &[usize],
    stride: usize,
    padding: usize,
    relu: bool,
) -> PackedConv {
    pack_folded(conv, widths, stride, padding, relu, None)
}

/// [`pack`], with the batch norm `x * scale + shift` after it folded into its weights and bias
/// where given (exact algebra: one pass over the maps fewer).
pub(super) fn pack_folded(
    conv: &Conv2d,
    widths: &[usize],
    stride: usize,
    padding: usize,
    relu: bool,
    affine: Option<&(Vec<f32>, Vec<f32>)>,
) -> PackedConv {
    let [cout, cin, kh, kw] = conv.weight.val().dims();
    debug_assert_eq!(cin, widths.iter().sum::<usize>());
    let mut w = conv
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 weights");
    let mut bias = conv
        .bias
        .as_ref()
        .map_or(vec![0.0; cout], |b| host(b.val()));
    if let Some((scale, shift)) = affine {
        for (co, row) in w.chunks_exact_mut(cin * kh * kw).enumerate() {
            row.iter_mut().for_each(|v| *v *= scale[co]);
            bias[co] = bias[co] * scale[co] + shift[co];
        }
    }
    let mut parts = Vec::with_capacity(widths.len());
    let mut off = 0;
    for &c in widths {
        let mut p = vec![0f32; kh * kw * c * cout];
        for co in 0..cout {
            for ci in 0..c {
                for dy in 0..kh {
                    for dx in 0..kw {
                        p[((dy * kw + dx) * c + ci) * cout + co] =
                            w[((co * cin + off + ci) * kh + dy) * kw + dx];
                    }
                }
            }
        }
        parts.push((c, p));
        off += c;
    }
    let mut packed = PackedConv {
        blocks: vec![None; parts.len()],
        pairs: pairs_of(&parts, kw, cout),
        pair_width: None,
        doubled: doubled_of(&parts, (kh, kw), cout),
        parts,
        all: Vec::new(),
        bias,
        cout,
        outputs: cout,
        kernel: (kh, kw),
        stride,
        padding,
        relu,
        span: usize::from(relu),
        wide: None,
    };
    // (the stacked matrix only where the GEMM path runs the layer)
    if !packed.direct() {
        packed.all = stack(&packed.parts, kh * kw, cout);
    }
    packed
}

/// Each part's weights with rows paired ([`direct::paired`]) where a kernel row's run of
/// input values (`kw * c`) is even, so that no pair straddles two runs; only where the 16-lane
/// tiles that read them run (AVX-512VL).
pub(super) fn pairs_of(
    parts: &[(usize, Vec<f32>)],
    kw: usize,
    cout: usize,
) -> Vec<Option<direct::Lines>> {
    parts
        .iter()
        .map(|(c, w)| {
            let even = (kw * c).is_multiple_of(2) && cout.is_multiple_of(8);
            (even && direct::wide()).then(|| direct::paired(w, cout))
        })
        .collect()
}

/// A one-channel 3 x 3 layer's weights doubled for the channel-vectorised kernel
/// ([`direct::doubled_weights`]), which runs on AVX-512VL only.
pub(super) fn doubled_of(
    parts: &[(usize, Vec<f32>)],
    kernel: (usize, usize),
    cout: usize,
) -> Option<direct::Lines> {
    match parts {
        [(1, w)] if kernel == (3, 3) && cout.is_multiple_of(8) && direct::wide() => {
            Some(direct::Lines::new(&direct::doubled_weights(w, cout)))
        }
        _ => None,
    }
}

/// The parts' weights as one matrix over all sources' channels: per kernel position, the rows
/// of every source in order (the layout of an im2col that writes the sources side by side).
pub(super) fn stack(parts: &[(usize, Vec<f32>)], positions: usize, cout: usize) -> Vec<f32> {
    let cin: usize = parts.iter().map(|p| p.0).sum();
    let mut all = Vec::with_capacity(positions * cin * cout);
    for pos in 0..positions {
        for (c, w) in parts {
            all.extend_from_slice(&w[pos * c * cout..(pos + 1) * c * cout]);
        }
    }
    all
}

impl PackedConv {
    /// The layer with zero output channels added up to a multiple of 8, so that the direct
    /// kernel runs it: a head has 1–10 outputs, and a GEMM that narrow costs more in set-up
    /// than in arithmetic (measured: 44 µs for a 192 -> 1 hinge head over 128 examples, on one
    /// thread). Readers keep the first `outputs` channels.
    /// A hidden conv with outputs not a multiple of 8 (a thin stage: 4 filters at 1/8 of
    /// fashion-retrieval's conv1) runs widened with zero filters on the direct kernel, then
    /// keeps its own channels: im2col + GEMM cost it 10-36 times its multiply-adds
    /// (`bench --layers` on that variant), the wider direct kernel at most 2 times.
    pub(super) fn with_narrow_outputs(mut self) -> PackedConv {
        if self.direct_runs() || !direct::available() {
            return self;
        }
        let wide = self.clone().widened();
        if wide.direct() {
            self.wide = Some(Box::new(wide));
        }
        self
    }

    pub(super) fn widened(mut self) -> PackedConv {
        let wide = self.cout.next_multiple_of(8);
        if wide == self.cout {
            return self;
        }
        let widen = |w: &[f32]| -> Vec<f32> {
            w.chunks_exact(self.cout)
                .flat_map(|row| {
                    row.iter()
                        .copied()
                        .chain(std::iter::repeat_n(0.0, wide - self.cout))
                })
                .collect()
        };
        for (_, w) in &mut self.parts {
            *w = widen(w);
        }
        self.all = widen(&self.all);
        self.bias.resize(wide, 0.0);
        self.cout = wide;
        // (a head narrower than 8 had no pairs and keeps the 8-lane tiles, as measured)
        if self.pairs.iter().any(Option::is_some) {
            self.pairs = pairs_of(&self.parts, self.kernel.1, wide);
        }
        self.doubled = doubled_of(&self.parts, self.kernel, wide);
        self
    }

    /// The layer as an fc layer: its kernel covers its whole input map, so the GEMM path reads
    /// each part in place and the stacked matrix `all` (for an im2col) is not kept (34 MB on
    /// the AlexNet-like network's first fc layer); the weights are also cut into blocks of the
    /// direct kernel's tile width (see `direct::Source::blocks`), where the direct kernel runs
    /// here, and the paired weights too where its 16-lane tiles run (`direct::paired_blocks`):
    /// on a few rows the tiles then read their weights in sequence (about 1.6x faster).
    pub(super) fn for_fc(mut self) -> PackedConv {
        self.all = Vec::new();
        if self.direct_runs() {
            let width = direct::fc_tile_width(self.cout);
            self.blocks = self
                .parts
                .iter()
                .map(|(_, w)| {
                    Some((
                        width,
                        direct::Lines::new(&direct::blocked(w, self.cout, width)),
                    ))
                })
                .collect();
            // (the 16-lane tiles: on AVX-512VL; the 8-lane blocks above run elsewhere)
            if direct::wide() && self.pairs.iter().all(Option::is_some) {
                let width = direct::fc_pair_width(self.cout);
                self.pairs = self
                    .parts
                    .iter()
                    .map(|(_, w)| Some(direct::paired_blocks(w, self.cout, width)))
                    .collect();
                self.pair_width = Some(width);
            }
        }
        self
    }

    /// Weight values (all parts).
    pub(super) fn weights_len(&self) -> usize {
        self.parts.iter().map(|(_, w)| w.len()).sum()
    }

    /// Adds the bias to output rows and applies the fused ReLU.
    pub(super) fn finish(&self, rows: &mut [f32]) {
        for row in rows.chunks_mut(self.cout) {
            for (v, b) in row.iter_mut().zip(&self.bias) {
                *v += b;
                if self.relu && *v < 0.0 {
                    *v = 0.0;
                }
            }
        }
    }

    /// Whether the direct kernel runs this layer rather than im2col + GEMM: up to 1.5 MiB of
    /// weights (measured on the shipped networks: the direct kernel wins up to 1.2 MiB, ties
    /// at 1.3 and loses from 1.8 MiB, where the GEMM's cache blocking pays).
    pub(super) fn direct(&self) -> bool {
        self.direct_runs() && self.weights_len() * 4 <= 3 << 19
    }

    /// Whether the direct kernel can run this layer on this CPU (8-wide output vectors).
    pub(super) fn direct_runs(&self) -> bool {
        self.cout.is_multiple_of(8) && direct::available()
    }

    /// The layer on its sources (one [`Act`] per part, same n, h, w), then the max pooling
    /// `pool` (side = stride, ceil) where one follows: fused into the direct kernel, which
    /// also stores its output with a zero `border` (the reader's padding) where asked.
    pub(super) fn forward(&self, srcs: &[&Act], pool: Option<(usize, bool)>, border: usize) -> Act {
        // an fc layer on a few rows (a compacted batch) is bound by reading its weights: the
        // direct kernel reads each once, in sequence, split between the threads, whatever
        // their size
        let x0 = srcs[0];
        let few = self.kernel == (x0.h, x0.w)
            && self.padding == 0
            && direct::weight_bound(self.cout, x0.n);
        let few = few && self.blocks.iter().all(Option::is_some);
        if let Some(wide) = self.wide.as_deref().filter(|_| !few) {
            return wide
                .forward_via(srcs, true, pool, border)
                .narrowed(self.cout);
        }
        self.forward_via(srcs, self.direct() || few, pool, border)
    }

    /// [`Self::forward`] with the kernel chosen: direct (where it applies) or im2col + GEMM
    /// (no border: the reader pads).
    pub(super) fn forward_via(
        &self,
        srcs: &[&Act],
        direct: bool,
        pool: Option<(usize, bool)>,
        border: usize,
    ) -> Act {
        let direct = direct && self.direct_runs();
        // the direct kernel fuses pooling windows up to 2 x 2; others pool afterwards
        let fused = pool.filter(|&(side, _)| direct && side <= 2);
        let y = if direct {
            self.direct_conv(srcs, fused, if pool == fused { border } else { 0 })
        } else {
            self.gemm_conv(srcs)
        };
        match pool {
            Some((side, ceil)) if fused.is_none() => maxpool(&y, side, side, ceil),
            _ => y,
        }
    }

    /// The layer on the direct kernel, with the max pooling `pool` fused in, each output
    /// example stored within a zero border of `border` pixels.
    pub(super) fn direct_conv(
        &self,
        srcs: &[&Act],
        pool: Option<(usize, bool)>,
        border: usize,
    ) -> Act {
        let x0 = srcs[0];
        let g = self.geometry(x0.n, (x0.h, x0.w), pool, border);
        let mut out = uninit(x0.n * g.example_len());
        // the sources with the layer's padding as their border (no copy where the conv that
        // made them stored it so)
        let srcs: Vec<Cow<Act>> = srcs.iter().map(|x| x.bordered(self.padding)).collect();
        let sources: Vec<direct::Source> = srcs
            .iter()
            .zip(&self.parts)
            .zip(&self.blocks)
            .zip(&self.pairs)
            .map(|(((x, (c, w)), b), pw)| direct::Source {
                data: x.values(),
                c: *c,
                weights: w,
                blocks: b.as_ref().map(|(width, b)| (*width, b.values())),
                pairs: pw.as_ref().map(direct::Lines::values),
                pair_width: self.pair_width,
                doubled: self.doubled.as_ref().map(direct::Lines::values),
            })
            .collect();
        direct::conv(&sources, g, &self.bias, self.relu, &mut out, true);
        // SAFETY: the direct kernel writes every value, border included
        let out = unsafe { assume_init(out) };
        let (qh, qw) = g.stored();
        Act::with_border(x0.n, qh, qw, self.cout, border, out)
    }

    /// The direct kernel's geometry for this layer on `n` maps of `hw` (unpadded), with the
    /// max pooling `pool` fused in and each output example stored within `border` pixels.
    pub(super) fn geometry(
        &self,
        n: usize,
        (h, w): (usize, usize),
        pool: Option<(usize, bool)>,
        border: usize,
    ) -> direct::Geometry {
        let (kh, kw) = self.kernel;
        let (p, s) = (self.padding, self.stride);
        let oh = (h + 2 * p - kh) / s + 1;
        let ow = (w + 2 * p - kw) / s + 1;
        let pool = pool.map(|(side, ceil)| {
            let kind = LayerKind::Maxpool {
                kernel: side,
                stride: side,
                ceil,
            };
            let stored = out_size(&kind, oh, ow).expect("validated: the pooling fits");
            (side, stored)
        });
        direct::Geometry {
            n,
            h: h + 2 * p,
            w: w + 2 * p,
            kernel: (kh, kw),
            stride: s,
            out: (oh, ow),
            cout: self.cout,
            pool,
            border,
        }
    }
}
