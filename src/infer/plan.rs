//! The chunk planner: which leading layers of a stage run example-chunk by example-chunk, each
//! chunk through all of them on one thread, and that run.

use super::act::{Act, assume_init, uninit};
use super::pack::{Op, PackedConv};
use super::{ActMaps, FastNet, direct};
use crate::onion::Arch;

/// Examples per thread below which a batch runs chunk by chunk even where its maps fit L2:
/// see `FastNet::forward_branch_with`.
pub(super) const CHUNK_BELOW: usize = 8;

impl FastNet {
    /// The leading ops of branch `b` that run example-chunk by example-chunk (see
    /// [`Self::forward_chunked`]): direct convs with small weights, each with its fused ReLU and
    /// 2 x 2 pooling, whose sources are stored within the conv's padding. Their convs, with
    /// where each reads from, and the number of ops they cover.
    pub(super) fn chunkable(
        &self,
        b: usize,
        input: &Act,
        prev: &[ActMaps],
    ) -> (Vec<Step<'_>>, usize) {
        let ops = &self.branches[b].ops;
        let mut steps: Vec<Step> = Vec::new();
        // the step whose output is this branch's map after each layer so far
        let mut made: Vec<Option<usize>> = Vec::new();
        let mut weights = 0;
        let mut l = 0;
        while l < ops.len() {
            let c = match &ops[l] {
                None => {
                    made.push(None);
                    l += 1;
                    continue;
                }
                // (every chunk reads the weights of every chunked layer: together they stay
                // in the core's cache)
                Some(Op::Conv(c))
                    if c.direct() && weights + c.weights_len() * 4 <= CHUNK_WEIGHTS =>
                {
                    c
                }
                _ => break,
            };
            let pool_at = l + 1 + c.span;
            let pool = match ops.get(pool_at) {
                Some(Some(Op::Maxpool {
                    kernel,
                    stride,
                    ceil,
                })) if kernel == stride && *kernel <= 2 => Some((*kernel, *ceil)),
                Some(Some(Op::Maxpool { .. })) => break,
                _ => None,
            };
            // each source: where it is read from, its (unpadded) size and border
            let srcs: Vec<(Src, (usize, usize), usize)> = if l == 0 {
                vec![(Src::Input, (input.h, input.w), input.border)]
            } else {
                let mut v = Vec::new();
                for t in self.arch.sources(b, l - 1) {
                    if t == b {
                        let Some(j) = made[l - 1] else { break };
                        let (qh, qw) = steps[j].g.stored();
                        v.push((Src::Own(j), (qh, qw), steps[j].g.border));
                    } else {
                        let Some(m) = prev[t][l - 1].as_ref() else {
                            break;
                        };
                        v.push((Src::Prev(t, l - 1), (m.h, m.w), m.border));
                    }
                }
                v
            };
            if srcs.len() != c.parts.len() || srcs.iter().any(|s| s.2 != c.padding) {
                break;
            }
            let dest = match pool {
                Some(_) => pool_at,
                None => l + c.span,
            };
            // (a residual's source must stay: no fused-away maps)
            if self.kept[l..dest].contains(&true) {
                break;
            }
            let g = c.geometry(input.n, srcs[0].1, pool, self.border_after(b, dest));
            if g.out == (1, 1) {
                // an fc layer: one position per example, so a chunk's few examples would fill
                // the register tiles (12 positions) poorly; the batch's fill them
                break;
            }
            weights += c.weights_len() * 4;
            made.resize(dest, None);
            made.push(Some(steps.len()));
            steps.push(Step {
                conv: c,
                srcs: srcs.into_iter().map(|s| s.0).collect(),
                g,
                dest,
            });
            l = dest + 1;
        }
        let covered = made.len();
        (steps, covered)
    }

    /// The ops [`Self::chunkable`] found, run on chunks of examples in parallel, each chunk on
    /// one thread through all of them: a thin stage's maps then stay in the core's cache from
    /// one layer to the next, and no layer waits for the other thread at its end (measured on
    /// the retrieval stage 1, 128 examples: per-layer loops cost it 15–30% over the cost
    /// model). The chunks are shared out as the threads come for them
    /// ([`crate::workers::share`]). The branch's maps after those ops, each whole-batch.
    pub(super) fn forward_chunked(
        &self,
        input: &Act,
        prev: &[ActMaps],
        steps: &[Step],
        covered: usize,
    ) -> ActMaps {
        let n = input.n;
        let fit = chunk_fit(steps, input, prev).max(1);
        let mut bufs: Vec<Vec<std::mem::MaybeUninit<f32>>> = steps
            .iter()
            .map(|s| uninit(n * s.g.example_len()))
            .collect();
        let outs: Vec<direct::Out> = bufs
            .iter_mut()
            .map(|b| direct::Out(b.as_mut_ptr().cast()))
            .collect();
        // examples `rows` through every step
        let run = |rows: std::ops::Range<usize>| {
            let mut done: Vec<&[f32]> = Vec::with_capacity(steps.len());
            for (k, s) in steps.iter().enumerate() {
                let len = s.g.example_len();
                // SAFETY: the rows' piece of step k's buffer, written by this call only (the
                // calls get disjoint rows)
                let out = unsafe {
                    std::slice::from_raw_parts_mut(
                        outs[k]
                            .get()
                            .add(rows.start * len)
                            .cast::<std::mem::MaybeUninit<f32>>(),
                        rows.len() * len,
                    )
                };
                let g = direct::Geometry {
                    n: rows.len(),
                    ..s.g
                };
                let sources: Vec<direct::Source> = s
                    .srcs
                    .iter()
                    .zip(&s.conv.parts)
                    .zip(&s.conv.pairs)
                    .map(|((src, (c, w)), pw)| {
                        let len = g.h * g.w * c;
                        let data = match *src {
                            Src::Input => &input.values()[rows.start * len..rows.end * len],
                            Src::Prev(t, l) => {
                                let m = prev[t][l].as_ref().expect("checked by chunkable");
                                &m.values()[rows.start * len..rows.end * len]
                            }
                            Src::Own(j) => done[j],
                        };
                        direct::Source {
                            data,
                            c: *c,
                            weights: w,
                            blocks: None,
                            pairs: pw.as_ref().map(direct::Lines::values),
                            pair_width: None,
                            doubled: s.conv.doubled.as_ref().map(direct::Lines::values),
                        }
                    })
                    .collect();
                direct::conv(&sources, g, &s.conv.bias, s.conv.relu, out, false);
                // SAFETY: the direct kernel wrote every value of the piece
                done.push(unsafe { &*(out as *mut [std::mem::MaybeUninit<f32>] as *const [f32]) });
            }
        };
        // pieces shared out as the threads come for them, each run in chunks of at most `fit`
        // examples, as equal as they can be
        // (pieces of at least a chunk: a few rows go one piece a thread)
        let grain = fit.min(n.div_ceil(rayon::current_num_threads()));
        crate::workers::share(n, grain, |r| {
            let k = r.len().div_ceil(fit);
            for i in 0..k {
                run(r.start + i * r.len() / k..r.start + (i + 1) * r.len() / k);
            }
        });
        let mut own: ActMaps = vec![None; covered];
        for (s, buf) in steps.iter().zip(bufs) {
            let (qh, qw) = s.g.stored();
            // SAFETY: every chunk's piece was written
            let data = unsafe { assume_init(buf) };
            own[s.dest] = Some(Act::with_border(n, qh, qw, s.g.cout, s.g.border, data));
        }
        own
    }
}

/// A core's L2 (bytes, on the machine measured).
pub(super) const CORE_L2: usize = 1 << 20;

/// Weights of the layers run chunk by chunk, together (bytes): every chunk reads them again,
/// from the core's cache.
pub(super) const CHUNK_WEIGHTS: usize = 128 << 10;
/// A chunk's maps and the weights (bytes): a quarter of a core's L2 (1 MiB on the machine
/// measured).
pub(super) const CHUNK_CACHE: usize = 256 << 10;

/// Whether `n` examples run chunk by chunk on `threads` threads, the chunked layers writing
/// `written` bytes per example (the rule and its measurements: `FastNet::forward_branch_with`):
/// where the batch's maps spill a core's L2, or on fewer than `below` examples per thread, and
/// only where the examples split evenly.
pub(super) fn chunks_pay(n: usize, threads: usize, written: usize, below: usize) -> bool {
    let spills = n.div_ceil(threads) * written > CORE_L2;
    below > 0
        && (spills || n < threads.saturating_mul(below))
        && n >= 2 * threads
        && 20 * threads * n.div_ceil(threads) <= 21 * n
}

/// Examples whose maps (inputs read and outputs written by the chunked `steps`) fit within
/// [`CHUNK_CACHE`] beside the steps' weights.
pub(super) fn chunk_fit(steps: &[Step], input: &Act, prev: &[ActMaps]) -> usize {
    let weights: usize = steps.iter().map(|s| s.conv.weights_len()).sum();
    let per_example: usize = steps
        .iter()
        .map(|s| {
            let read: usize = s
                .srcs
                .iter()
                .map(|src| match *src {
                    Src::Input => input.example_len(),
                    Src::Prev(t, l) => prev[t][l].as_ref().map_or(0, Act::example_len),
                    Src::Own(_) => 0,
                })
                .sum();
            read + s.g.example_len()
        })
        .sum();
    (CHUNK_CACHE / 4).saturating_sub(weights) / per_example.max(1)
}

/// Where a chunked conv reads a source: the branch input, a map of an earlier branch, or the
/// output of an earlier chunked conv.
#[derive(Debug, Clone, Copy)]
pub(super) enum Src {
    Input,
    Prev(usize, usize),
    Own(usize),
}

/// A conv of a chunked run: its sources, geometry (for the whole batch) and the layer whose
/// map its output is.
pub(super) struct Step<'a> {
    pub(super) conv: &'a PackedConv,
    pub(super) srcs: Vec<Src>,
    pub(super) g: direct::Geometry,
    pub(super) dest: usize,
}

/// What layer `l + 1` (or the head) of branch `b` reads: the maps after layer `l` of branches
/// 1..=b that have some there, in order — the parts of its packed weights.
pub(super) fn sources<'a>(
    arch: &Arch,
    b: usize,
    l: usize,
    own: &'a ActMaps,
    prev: &'a [ActMaps],
) -> Vec<&'a Act> {
    arch.sources(b, l)
        .map(|t| {
            if t == b {
                own[l].as_ref()
            } else {
                prev[t][l].as_ref()
            }
        })
        .map(|a| a.expect("wiring: a source branch has maps at this layer"))
        .collect()
}
