//! The project's own inference path for trained networks (training stays on burn). Why:
//! burn-flex converts every conv's input to channels-last and back and im2cols it, per layer;
//! at 2 threads that reached 40% of the GEMM peak. Here activations stay channels-last (NHWC)
//! from layer to layer, and each example is stored within the zero border its next conv pads
//! with (written by the conv that makes it), so no pass pads a map. Convs, fc layers and
//! heads run on the direct kernels of `infer/direct.rs` (no im2col; the onion's source branches summed
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

use crate::cascade::{Block, Engine, Model, prune_maps};
use crate::compaction::Compaction;
use crate::onion::{Arch, Net, NetworkKind};
use crate::spec::{LayerKind, Loss, Spec, Stage, out_size};
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use rayon::prelude::*;
use std::borrow::Cow;
use std::cell::RefCell;
use std::time::{Duration, Instant};

mod direct;

/// Runs the direct kernels' 8-lane tiles where 16-lane ones would run (`true`), for
/// benchmarks that compare the two in one process (`examples/ab_lanes.rs`).
#[doc(hidden)]
pub fn force_8_lanes(on: bool) {
    direct::UNPAIRED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Runs the one-channel kernel's column-vectorised blocks where the channel-vectorised tiles
/// would run (`true`), for benchmarks that compare the two in one process.
#[doc(hidden)]
pub fn force_column_blocks(on: bool) {
    direct::COLUMNS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Runs every stage layer by layer where its leading convs would run example-chunk by
/// example-chunk (`true`), for benchmarks that compare the two in one process.
#[doc(hidden)]
pub fn force_layer_by_layer(on: bool) {
    chunk_below(Some(0).filter(|_| on));
}

/// Runs the leading convs chunk by chunk, where the rest of the rule allows, on batches whose
/// maps spill L2 and on batches of fewer than `per_thread` examples per thread (`None`:
/// [`CHUNK_BELOW`], the default; 0: never, `usize::MAX`: wherever they fit), for benchmarks.
#[doc(hidden)]
pub fn chunk_below(per_thread: Option<usize>) {
    CHUNKED_BELOW.store(
        per_thread.unwrap_or(CHUNK_BELOW),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// Examples per thread below which a batch runs chunk by chunk even where its maps fit L2:
/// see `FastNet::forward_branch_with`.
const CHUNK_BELOW: usize = 8;

static CHUNKED_BELOW: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(CHUNK_BELOW);

/// Which inference path runs trained networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EngineKind {
    /// The project's own inference path (`infer.rs`: direct conv kernels, GEMM for large
    /// layers), weights packed from the burn modules.
    #[default]
    Own,
    /// burn's modules (flex backend).
    Burn,
}

/// Activations `[n, h, w, c]`, channels last: examples `first..first + n` of a buffer, so
/// that compaction can move survivors within it ([`Act::compact`]) instead of copying them
/// all out. Each example may be stored with a zero border of `border` pixels: the padding of
/// the conv that reads it, written by the conv that makes it, so that no pass copies the map
/// into a padded one.
#[derive(Debug, Clone)]
pub struct Act {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    buf: Vec<f32>,
    first: usize,
    border: usize,
}

impl PartialEq for Act {
    fn eq(&self, other: &Act) -> bool {
        let (a, b) = (self.unbordered(), other.unbordered());
        (a.n, a.h, a.w, a.c) == (b.n, b.h, b.w, b.c) && a.values() == b.values()
    }
}

impl Act {
    /// `data` holds `[n, h, w, c]` values.
    pub fn new(n: usize, h: usize, w: usize, c: usize, data: Vec<f32>) -> Act {
        Act::with_border(n, h, w, c, 0, data)
    }

    /// `data` holds `[n, h + 2 border, w + 2 border, c]` values, zero on the border.
    fn with_border(n: usize, h: usize, w: usize, c: usize, border: usize, data: Vec<f32>) -> Act {
        let x = Act {
            n,
            h,
            w,
            c,
            buf: data,
            first: 0,
            border,
        };
        assert_eq!(
            x.buf.len(),
            n * x.example_len(),
            "values of an [n, h, w, c] map"
        );
        x
    }

    /// The map with a zero border of `b` pixels (a map stored with it is borrowed).
    fn bordered(&self, b: usize) -> Cow<'_, Act> {
        if self.border == b {
            return Cow::Borrowed(self);
        }
        let (h, w, c) = (self.h + 2 * b, self.w + 2 * b, self.c);
        let (sh, sw) = (self.h + 2 * self.border, self.w + 2 * self.border);
        let mut data = vec![0f32; self.n * h * w * c];
        let row = self.w * c;
        data.par_chunks_mut(h * w * c)
            .zip(self.values().par_chunks(sh * sw * c))
            .for_each(|(dst, src)| {
                for y in 0..self.h {
                    let from = ((y + self.border) * sw + self.border) * c;
                    let to = ((y + b) * w + b) * c;
                    dst[to..to + row].copy_from_slice(&src[from..from + row]);
                }
            });
        Cow::Owned(Act::with_border(self.n, self.h, self.w, c, b, data))
    }

    /// The map without a border.
    fn unbordered(&self) -> Cow<'_, Act> {
        self.bordered(0)
    }

    /// From a burn `[n, c, h, w]` tensor.
    pub fn from_tensor(x: &Tensor<4>) -> Act {
        let [n, c, h, w] = x.dims();
        let data = x
            .clone()
            .permute([0, 2, 3, 1])
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 input");
        Act::new(n, h, w, c, data)
    }

    /// The stored values: `[n, h, w, c]`, each example within its zero border (none for
    /// maps that leave the own path: inputs, logits).
    pub fn values(&self) -> &[f32] {
        let e = self.example_len();
        &self.buf[self.first * e..(self.first + self.n) * e]
    }

    fn values_mut(&mut self) -> &mut [f32] {
        let e = self.example_len();
        &mut self.buf[self.first * e..(self.first + self.n) * e]
    }

    /// The `[n, h, w, c]` values, owned (no copy when the map is its whole buffer).
    pub fn into_values(self) -> Vec<f32> {
        if self.border > 0 {
            return self.unbordered().values().to_vec();
        }
        if self.first == 0 && self.buf.len() == self.n * self.example_len() {
            self.buf
        } else {
            self.values().to_vec()
        }
    }

    /// Rows `rows` of `src` (a map of the same shape) copied after this map's rows.
    pub fn push_rows(&mut self, src: &Act, rows: &[usize]) {
        Act::push_rows_all(&mut [self], &[src], rows);
    }

    /// [`Act::push_rows`] on every map of a waiting block (`into[k]` gets rows `rows` of
    /// `from[k]`), the copies of all of them shared among the pool's threads as in
    /// [`Act::compact_all`]. The new rows go straight after the waiting ones where the
    /// buffer has room (a block compacted in place is a window of its batch's buffer: room
    /// after the window), else the waiting rows and the new ones go once each into a buffer
    /// with room for one and a half of `from`'s batches: a stage runs once half a batch of
    /// rows waits, so the rows then gather without another copy (growing by doubling copied
    /// the waiting rows once more on average: at p = 0.05, 16 batches pooled, measured 60%
    /// more gather time than gathering then stacking). Measured (`onionnet bench ... --pool`,
    /// the onion's gather per batch at p = 0.3 / 0.4): moving the window to the buffer's
    /// start, then growing the buffer, then appending, all on one thread, cost 0.136–0.155 ms
    /// on the retrieval network (16 batches) and 2.06–2.12 ms on 2ch-deep (4 batches).
    pub fn push_rows_all(into: &mut [&mut Act], from: &[&Act], rows: &[usize]) {
        use direct::Out;
        assert_eq!(into.len(), from.len(), "a source per map");
        let mut copies: Vec<(Out, Out, usize)> = Vec::new();
        // per map, its new buffer where the rows do not fit its own
        let mut fresh: Vec<Option<Vec<f32>>> = Vec::with_capacity(into.len());
        for (a, b) in into.iter_mut().zip(from) {
            assert!(
                (a.h, a.w, a.c, a.border) == (b.h, b.w, b.c, b.border),
                "stacked maps share a shape"
            );
            let e = a.example_len();
            let need = a.n + rows.len();
            let src = b.buf.as_ptr().wrapping_add(b.first * e).cast_mut();
            // SAFETY (all `add`s): rows lie inside their buffers' capacity
            let row = |base: *mut f32, r: usize| Out(unsafe { base.add(r * e) });
            let (to, at) = if (a.first + need) * e <= a.buf.capacity() {
                fresh.push(None);
                (a.buf.as_mut_ptr(), a.first + a.n)
            } else {
                let mut buf = Vec::with_capacity(need.max(b.n + b.n / 2) * e);
                let (to, old) = (buf.as_mut_ptr(), a.buf.as_mut_ptr());
                for j in 0..a.n {
                    copies.push((row(old, a.first + j), row(to, j), e));
                }
                fresh.push(Some(buf));
                (to, a.n)
            };
            for (j, &r) in rows.iter().enumerate() {
                assert!(r < b.n, "row {r} of a map of {} rows", b.n);
                copies.push((row(src, r), row(to, at + j), e));
            }
        }
        // SAFETY: sources lie in live maps, destinations in the capacity of a map's buffer past
        // its rows or of one of `fresh` (whose heap storage stays put while the Vec moves); no
        // two copies write one row, none reads a row another writes
        unsafe { copy_rows(&copies) };
        for (a, buf) in into.iter_mut().zip(fresh) {
            let e = a.example_len();
            let need = a.n + rows.len();
            match buf {
                Some(mut buf) => {
                    // SAFETY: the copies above wrote rows 0..need of it
                    unsafe { buf.set_len(need * e) };
                    (a.buf, a.first) = (buf, 0);
                }
                // SAFETY: the copies above wrote the rows up to first + need
                None => unsafe { a.buf.set_len((a.first + need) * e) },
            }
            a.n = need;
        }
    }

    /// Stored values per example (border included).
    fn example_len(&self) -> usize {
        (self.h + 2 * self.border) * (self.w + 2 * self.border) * self.c
    }

    /// Examples `range`, copied.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Act {
        let e = self.example_len();
        Act {
            n: range.len(),
            buf: self.values()[range.start * e..range.end * e].to_vec(),
            first: 0,
            ..*self
        }
    }

    /// The survivors of `plan` made contiguous in place with its fewest moves: each survivor
    /// outside the plan's window is copied onto a hole inside it, and the window becomes the
    /// map. Rows already in the window do not move (a gather would copy every survivor: at
    /// p = 0.5 about twice the rows, for the retrieval onion a few % of its stage 2).
    pub fn compact(&mut self, plan: &Compaction) {
        Act::compact_all(&mut [self], plan);
    }

    /// [`Act::compact`] on every map of a block (the input and the earlier stages' maps) with
    /// one plan, the copies of all of them shared among the pool's threads (no two copies
    /// touch one row: each goes from a survivor outside the window to a hole inside it, or,
    /// where a quarter of the rows or fewer survive, into a buffer of the map's own). Measured
    /// (`cargo bench --bench compaction`, retrieval onion, 15 KB per moved row, p = 0.5):
    /// 76–83 µs on one thread, 58–63 µs shared, against 2.9–3.6 ms for the stage 2 they feed.
    pub fn compact_all(maps: &mut [&mut Act], plan: &Compaction) {
        use direct::Out;
        // (source, destination, values)
        let mut copies: Vec<(Out, Out, usize)> = Vec::new();
        // the maps whose few survivors are copied out, so that the batch's buffer is freed
        // instead of waiting, whole, for the next stage (pooled, at p = 0.05 a stage waits for
        // the survivors of ~10 batches); their new buffers, filled by the copies
        let mut fresh: Vec<(usize, Vec<std::mem::MaybeUninit<f32>>)> = Vec::new();
        let sources = plan.window_sources();
        for (k, m) in maps.iter_mut().enumerate() {
            assert!(plan.start + plan.len <= m.n, "the plan fits the map");
            let e = m.example_len();
            let base = m.buf.as_mut_ptr();
            // SAFETY (all `add`s): rows of the plan lie inside the map's buffer
            let row = |b: *mut f32, r: usize| Out(unsafe { b.add(r * e) });
            if 4 * plan.len <= m.n {
                let mut rows = uninit(plan.len * e);
                let to = rows.as_mut_ptr().cast::<f32>();
                for (j, &i) in sources.iter().enumerate() {
                    copies.push((row(base, m.first + i), row(to, j), e));
                }
                fresh.push((k, rows));
                continue;
            }
            for &(from, to) in &plan.moves {
                copies.push((row(base, m.first + from), row(base, m.first + to), e));
            }
            m.first += plan.start;
            m.n = plan.len;
        }
        // SAFETY: both rows of a copy lie in live buffers (a map's, or one of `fresh`, whose
        // heap storage stays put while the Vec moves), are distinct, and no other copy reads
        // or writes row `to` or writes row `from`
        unsafe { copy_rows(&copies) };
        for (k, rows) in fresh {
            // SAFETY: the copies above wrote every row
            (maps[k].buf, maps[k].first, maps[k].n) = (unsafe { assume_init(rows) }, 0, plan.len);
        }
    }
}

/// Row copies `(from, to, values)`, shared among the pool's threads from 128 KB in all (less
/// is not worth handing to the other thread; measured with `examples/gather_few.rs` on the
/// retrieval onion's maps copied out, one thread against shared: 6 rows (90 KB) 7.9–8.4
/// against 8.4–9.2 µs, 13 rows 14.7–17.4 against 12.8–14.7, 26 rows 30–33 against 21–24).
///
/// # Safety
/// Every row lies in a live allocation, no two copies write one row, and no copy reads a row
/// another writes.
unsafe fn copy_rows(copies: &[(direct::Out, direct::Out, usize)]) {
    let bytes: usize = copies.iter().map(|c| c.2 * 4).sum();
    // SAFETY: the caller's
    let copy = |&(from, to, len): &(direct::Out, direct::Out, usize)| unsafe {
        std::ptr::copy_nonoverlapping(from.get(), to.get(), len)
    };
    if bytes < 128 << 10 || !parallel_copies() {
        copies.iter().for_each(copy);
    } else {
        copies.par_iter().with_min_len(4).for_each(copy);
    }
}

/// Whether [`copy_rows`] shares its copies among the threads: on unless
/// `ONIONNET_PARALLEL_COPIES=0`, for A/B runs.
fn parallel_copies() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("ONIONNET_PARALLEL_COPIES").as_deref() != Ok("0"))
}

/// A conv/fc layer or a head, its weights packed with rows `(dy * kw + dx) * c + ci` and the
/// output channels as columns: per source (`parts`, for a kernel over the whole map, where each
/// source's maps are used in place) and over all sources' channels in order (`all`, for an
/// im2col that writes every source's channels side by side — the concatenation happens inside
/// the im2col copy, which is made anyway, and one GEMM covers every source).
#[derive(Debug, Clone)]
struct PackedConv {
    parts: Vec<(usize, Vec<f32>)>,
    /// Each part's weights also in blocks of output channels (see `direct::Source::blocks`):
    /// fc layers, which run on a few rows after compaction.
    blocks: Vec<Option<(usize, direct::Lines)>>,
    /// Each part's weights with rows paired (see `direct::Source::pairs`): convs whose kernel
    /// rows' runs `kw * c` are even, for the 16-lane tiles.
    pairs: Vec<Option<direct::Lines>>,
    /// The width of the blocks `pairs` are cut into (fc layers, see `for_fc`).
    pair_width: Option<usize>,
    /// A one-channel 3 x 3 layer's weights doubled (see `direct::Source::doubled`).
    doubled: Option<direct::Lines>,
    all: Vec<f32>,
    bias: Vec<f32>,
    cout: usize,
    /// Output channels that mean something: `cout` but for a [`PackedConv::widened`] head.
    outputs: usize,
    kernel: (usize, usize),
    stride: usize,
    padding: usize,
    relu: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Conv(PackedConv),
    Relu,
    /// A ReLU already applied by the conv before it.
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
}

fn host(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 weights")
}

/// Packs a burn conv `[cout, cin, kh, kw]` whose input channels are the concatenation of
/// sources with `widths` channels.
fn pack(conv: &Conv2d, widths: &[usize], stride: usize, padding: usize, relu: bool) -> PackedConv {
    let [cout, cin, kh, kw] = conv.weight.val().dims();
    debug_assert_eq!(cin, widths.iter().sum::<usize>());
    let w = conv
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 weights");
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
    let all = stack(&parts, kh * kw, cout);
    let bias = conv
        .bias
        .as_ref()
        .map_or(vec![0.0; cout], |b| host(b.val()));
    PackedConv {
        blocks: vec![None; parts.len()],
        pairs: pairs_of(&parts, kw, cout),
        pair_width: None,
        doubled: doubled_of(&parts, (kh, kw), cout),
        parts,
        all,
        bias,
        cout,
        outputs: cout,
        kernel: (kh, kw),
        stride,
        padding,
        relu,
    }
}

/// Each part's weights with rows paired ([`direct::paired`]) where a kernel row's run of
/// input values (`kw * c`) is even, so that no pair straddles two runs.
fn pairs_of(parts: &[(usize, Vec<f32>)], kw: usize, cout: usize) -> Vec<Option<direct::Lines>> {
    parts
        .iter()
        .map(|(c, w)| {
            ((kw * c).is_multiple_of(2) && cout.is_multiple_of(8)).then(|| direct::paired(w, cout))
        })
        .collect()
}

/// A one-channel 3 x 3 layer's weights doubled for the channel-vectorised kernel
/// ([`direct::doubled_weights`]).
fn doubled_of(
    parts: &[(usize, Vec<f32>)],
    kernel: (usize, usize),
    cout: usize,
) -> Option<direct::Lines> {
    match parts {
        [(1, w)] if kernel == (3, 3) && cout.is_multiple_of(8) => {
            Some(direct::Lines::new(&direct::doubled_weights(w, cout)))
        }
        _ => None,
    }
}

/// The parts' weights as one matrix over all sources' channels: per kernel position, the rows
/// of every source in order (the layout of an im2col that writes the sources side by side).
fn stack(parts: &[(usize, Vec<f32>)], positions: usize, cout: usize) -> Vec<f32> {
    let cin: usize = parts.iter().map(|p| p.0).sum();
    let mut all = Vec::with_capacity(positions * cin * cout);
    for pos in 0..positions {
        for (c, w) in parts {
            all.extend_from_slice(&w[pos * c * cout..(pos + 1) * c * cout]);
        }
    }
    all
}

thread_local! {
    /// The im2col buffer, reused across layers and calls.
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out[m, n] (+)= lhs[m, k] · rhs[k, n]`, all row-major and contiguous; `k` is given, `m` and
/// `n` follow from the lengths. `threads`: let gemm split a large product over the rayon pool.
fn gemm_rows(out: &mut [f32], lhs: &[f32], rhs: &[f32], k: usize, accumulate: bool, threads: bool) {
    let n = rhs.len() / k;
    let m = out.len() / n;
    assert!(
        lhs.len() == m * k && rhs.len() == k * n && out.len() == m * n,
        "GEMM operand sizes"
    );
    let par = if threads && m * n * k >= 64 * 64 * 64 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the sizes are checked above; the strides describe contiguous row-major matrices
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

impl PackedConv {
    /// The layer with zero output channels added up to a multiple of 8, so that the direct
    /// kernel runs it: a head has 1–10 outputs, and a GEMM that narrow costs more in set-up
    /// than in arithmetic (measured: 44 µs for a 192 -> 1 hinge head over 128 examples, on one
    /// thread). Readers keep the first `outputs` channels.
    fn widened(mut self) -> PackedConv {
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
    /// here, and the paired weights too where its 16-lane tiles run (`direct::paired_blocks`;
    /// measured in one process, blocked against not, on an fc layer 3136 -> 128: 14 / 22 µs
    /// on 1 row, 51 / 85 µs on 13, 108 / 178 µs on 32, 509 / 505 µs on 128).
    fn for_fc(mut self) -> PackedConv {
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

    /// The weights this layer streams from memory on `n` rows, for the layer before it to
    /// prefetch ([`direct::Ahead`]): an fc layer (the only one with blocks) that runs
    /// weight-bound there, whose weights fit half of each thread's L2 (larger ones, 34 MB on
    /// the AlexNet-like network, would evict each other before they are read).
    fn streamed(&self, n: usize) -> Option<Vec<&[f32]>> {
        // (the blocks its tiles read: the paired ones where the 16-lane tiles run)
        let blocks: Option<Vec<&[f32]>> = if self.pair_width.is_some() && direct::wide() {
            self.pairs
                .iter()
                .map(|p| p.as_ref().map(direct::Lines::values))
                .collect()
        } else {
            self.blocks
                .iter()
                .map(|b| b.as_ref().map(|(_, w)| w.values()))
                .collect()
        };
        let fits = self.weights_len() * 4 <= rayon::current_num_threads() * PREFETCH_PER_THREAD;
        blocks.filter(|b| !b.is_empty() && fits && direct::weight_bound(self.cout, n))
    }

    /// Weight values (all parts).
    fn weights_len(&self) -> usize {
        self.parts.iter().map(|(_, w)| w.len()).sum()
    }

    /// Adds the bias to output rows and applies the fused ReLU.
    fn finish(&self, rows: &mut [f32]) {
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
    /// at 1.3 and loses from 1.8 MiB, where the GEMM's cache blocking pays). The environment
    /// variable `ONIONNET_CONV=direct|gemm` forces one (for A/B benchmarks).
    fn direct(&self) -> bool {
        if !self.direct_runs() {
            return false;
        }
        static FORCED: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
        let forced = FORCED.get_or_init(|| match std::env::var("ONIONNET_CONV").as_deref() {
            Ok("direct") => Some(true),
            Ok("gemm") => Some(false),
            _ => None,
        });
        forced.unwrap_or(self.weights_len() * 4 <= 3 << 19)
    }

    /// Whether the direct kernel can run this layer on this CPU (8-wide output vectors).
    fn direct_runs(&self) -> bool {
        self.cout.is_multiple_of(8) && direct::available()
    }

    /// The layer on its sources (one [`Act`] per part, same n, h, w), then the max pooling
    /// `pool` (side = stride, ceil) where one follows: fused into the direct kernel, which
    /// also stores its output with a zero `border` (the reader's padding) where asked.
    fn forward(&self, srcs: &[&Act], pool: Option<(usize, bool)>, border: usize) -> Act {
        self.forward_ahead(srcs, pool, border, direct::Ahead::default())
    }

    /// [`Self::forward`], prefetching `ahead` (the next layer's weights) meanwhile where the
    /// direct kernel runs.
    fn forward_ahead(
        &self,
        srcs: &[&Act],
        pool: Option<(usize, bool)>,
        border: usize,
        ahead: direct::Ahead,
    ) -> Act {
        // an fc layer on a few rows (a compacted batch) is bound by reading its weights: the
        // direct kernel reads each once, in sequence, split between the threads, whatever
        // their size
        let x0 = srcs[0];
        let few = self.kernel == (x0.h, x0.w)
            && self.padding == 0
            && direct::weight_bound(self.cout, x0.n);
        let few = few && self.blocks.iter().all(Option::is_some);
        self.forward_via(srcs, self.direct() || few, pool, border, ahead)
    }

    /// [`Self::forward`] with the kernel chosen: direct (where it applies) or im2col + GEMM
    /// (no border: the reader pads).
    fn forward_via(
        &self,
        srcs: &[&Act],
        direct: bool,
        pool: Option<(usize, bool)>,
        border: usize,
        ahead: direct::Ahead,
    ) -> Act {
        let direct = direct && self.direct_runs();
        // the direct kernel fuses pooling windows up to 2 x 2; others pool afterwards
        let fused = pool.filter(|&(side, _)| direct && side <= 2);
        let y = if direct {
            self.direct_conv(srcs, fused, if pool == fused { border } else { 0 }, ahead)
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
    fn direct_conv(
        &self,
        srcs: &[&Act],
        pool: Option<(usize, bool)>,
        border: usize,
        ahead: direct::Ahead,
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
        direct::conv(&sources, g, &self.bias, self.relu, &mut out, true, ahead);
        // SAFETY: the direct kernel writes every value, border included
        let out = unsafe { assume_init(out) };
        let (qh, qw) = g.stored();
        Act::with_border(x0.n, qh, qw, self.cout, border, out)
    }

    /// The direct kernel's geometry for this layer on `n` maps of `hw` (unpadded), with the
    /// max pooling `pool` fused in and each output example stored within `border` pixels.
    fn geometry(
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

    /// The layer on im2col + GEMM (an fc layer: GEMMs on the maps in place).
    fn gemm_conv(&self, srcs: &[&Act]) -> Act {
        // (the im2col pads as it copies)
        let plain: Vec<Cow<Act>> = srcs.iter().map(|x| x.unbordered()).collect();
        let srcs: Vec<&Act> = plain.iter().map(|x| x.as_ref()).collect();
        let x0 = srcs[0];
        let (kh, kw) = self.kernel;
        let (p, s) = (self.padding, self.stride);
        let oh = (x0.h + 2 * p - kh) / s + 1;
        let ow = (x0.w + 2 * p - kw) / s + 1;
        let rows = x0.n * oh * ow;
        let cout = self.cout;
        let mut out = vec![0f32; rows * cout];
        if kh == x0.h && kw == x0.w && p == 0 {
            // a kernel over the whole unpadded map: each example's NHWC map is its row, so
            // every source is used in place and the GEMMs accumulate
            for (i, ((c, wp), x)) in self.parts.iter().zip(srcs).enumerate() {
                gemm_rows(&mut out, x.values(), wp, kh * kw * c, i > 0, true);
            }
            out.par_chunks_mut(cout * 64)
                .for_each(|block| self.finish(block));
        } else {
            // tiles of output rows: each tile's im2col stays in cache while its GEMM reads it,
            // and tiles run in parallel (one GEMM thread each)
            let kk = kh * kw * self.parts.iter().map(|p| p.0).sum::<usize>();
            assert_eq!(
                self.all.len(),
                kk * cout,
                "fc layers (no `all`) cover their whole map"
            );
            // (fewer rows per tile where the batch is small, so that every thread gets some)
            let tile = (TILE_FLOATS / kk)
                .clamp(16, 1024)
                .min(rows.div_ceil(2 * rayon::current_num_threads()).max(8));
            out.par_chunks_mut(tile * cout)
                .enumerate()
                .for_each(|(t, out_tile)| {
                    let m = out_tile.len() / cout;
                    COLUMNS.with(|cols| {
                        let mut col = cols.borrow_mut();
                        col.resize(m * kk, 0.0);
                        im2col(
                            &srcs,
                            (kh, kw),
                            s,
                            p,
                            (oh, ow),
                            t * tile,
                            &mut col[..m * kk],
                        );
                        gemm_rows(out_tile, &col[..m * kk], &self.all, kk, false, false);
                    });
                    // bias and ReLU while the tile is still in cache
                    self.finish(out_tile);
                });
        }
        Act::new(x0.n, oh, ow, cout, out)
    }
}

/// A buffer of `len` values left uninitialised, for a kernel that writes all of them: a
/// zeroed map costs a pass over memory as large as the kernel's own output (measured: a tenth
/// of a thin stage 1's time, whose layers have a quarter of the channels but a sixteenth of
/// the multiply-adds).
fn uninit(len: usize) -> Vec<std::mem::MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: MaybeUninit needs no initialisation
    unsafe { v.set_len(len) };
    v
}

/// The buffer of [`uninit`] once every value has been written.
///
/// # Safety
/// Every value of `v` must be initialised.
unsafe fn assume_init(v: Vec<std::mem::MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same allocation, layout and length; MaybeUninit<f32> has f32's layout, and the
    // caller guarantees the values are initialised
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast(), v.len(), v.capacity()) }
}

/// Floats of one tile's im2col (256 KiB: within a core's L2 cache).
const TILE_FLOATS: usize = 64 * 1024;

/// Rows `first..` of the im2col matrix, as many as `col` holds: `col[(b, oy, ox), (dy, dx,
/// ci)]` = the input at `(oy * s + dy - p, ox * s + dx - p, ci)`, zero outside; `ci` runs over
/// the channels of every source in order (the concatenation happens here).
fn im2col(
    srcs: &[&Act],
    (kh, kw): (usize, usize),
    s: usize,
    p: usize,
    (oh, ow): (usize, usize),
    first: usize,
    col: &mut [f32],
) {
    let (h, w) = (srcs[0].h, srcs[0].w);
    let c: usize = srcs.iter().map(|x| x.c).sum();
    let kk = kh * kw * c;
    for (i, row) in col.chunks_mut(kk).enumerate() {
        let r = first + i;
        let (b, oy, ox) = (r / (oh * ow), (r / ow) % oh, r % ow);
        let x0 = (ox * s) as isize - p as isize;
        for dy in 0..kh {
            let y = (oy * s + dy) as isize - p as isize;
            // one source and the kernel's row inside the map: its kw pixels are contiguous
            if srcs.len() == 1
                && y >= 0
                && y < h as isize
                && x0 >= 0
                && x0 + kw as isize <= w as isize
            {
                let src = ((b * h + y as usize) * w + x0 as usize) * c;
                row[dy * kw * c..(dy + 1) * kw * c]
                    .copy_from_slice(&srcs[0].values()[src..src + kw * c]);
                continue;
            }
            for dx in 0..kw {
                let xx = (ox * s + dx) as isize - p as isize;
                let dst = &mut row[(dy * kw + dx) * c..(dy * kw + dx + 1) * c];
                if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                    dst.fill(0.0);
                } else {
                    let mut off = 0;
                    for x in srcs {
                        let src = ((b * h + y as usize) * w + xx as usize) * x.c;
                        dst[off..off + x.c].copy_from_slice(&x.values()[src..src + x.c]);
                        off += x.c;
                    }
                }
            }
        }
    }
}

fn maxpool(x: &Act, kernel: usize, stride: usize, ceil: bool) -> Act {
    let x = x.unbordered();
    let kind = LayerKind::Maxpool {
        kernel,
        stride,
        ceil,
    };
    let (oh, ow) = out_size(&kind, x.h, x.w).expect("validated: the pooling fits");
    let c = x.c;
    let mut data = vec![0f32; x.n * oh * ow * c];
    data.par_chunks_mut(oh * ow * c)
        .zip(x.values().par_chunks(x.h * x.w * c))
        .for_each(|(ex, src)| {
            for (oy, dst_row) in ex.chunks_mut(ow * c).enumerate() {
                // the window's first input row initialises the output row, the others max in
                let rows = oy * stride..(oy * stride + kernel).min(x.h);
                for (i, y) in rows.enumerate() {
                    let line = &src[y * x.w * c..(y + 1) * x.w * c];
                    for (ox, dst) in dst_row.chunks_exact_mut(c).enumerate() {
                        let x0 = ox * stride;
                        let x1 = (x0 + kernel).min(x.w);
                        let mut pixels = line[x0 * c..x1 * c].chunks_exact(c);
                        if i == 0 {
                            dst.copy_from_slice(pixels.next().expect("a window has a pixel"));
                        }
                        for px in pixels {
                            for (d, &v) in dst.iter_mut().zip(px) {
                                *d = d.max(v);
                            }
                        }
                    }
                }
            }
        });
    Act::new(x.n, oh, ow, c, data)
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
        let branches = arch
            .branches
            .iter()
            .enumerate()
            .map(|(b, br)| {
                let mut ops: Vec<Option<Op>> = Vec::with_capacity(br.depth);
                for (l, layer) in arch.layers.iter().enumerate().take(br.depth) {
                    let next_relu = arch
                        .layers
                        .get(l + 1)
                        .is_some_and(|n| n.kind == LayerKind::Relu)
                        && l + 1 < br.depth;
                    let op = match &layer.kind {
                        LayerKind::Conv {
                            stride, padding, ..
                        } => m.conv(b, l).map(|c| {
                            Op::Conv(pack(c, &widths(b, l), *stride, *padding, next_relu))
                        }),
                        LayerKind::Fc => m
                            .conv(b, l)
                            .map(|c| Op::Conv(pack(c, &widths(b, l), 1, 0, next_relu).for_fc())),
                        LayerKind::Relu => ops[l - 1].as_ref().map(|prev| {
                            if matches!(prev, Op::Conv(c) if c.relu) {
                                Op::Fused
                            } else {
                                Op::Relu
                            }
                        }),
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
                            let (g, beta) = (host(bn.gamma.val()), host(bn.beta.val()));
                            let (mean, var) =
                                (host(bn.running_mean.value()), host(bn.running_var.value()));
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
                            Op::Affine { scale, shift }
                        }),
                        LayerKind::Dropout { .. } => ops[l - 1].as_ref().map(|_| Op::Identity),
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
        FastNet { arch, branches }
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

    /// The weights the conv before op `l` of branch `b` prefetches on `n` rows: where
    /// prefetching is on (see [`prefetch`]), [`Self::fc_streamed_after`].
    fn streamed_after(&self, b: usize, l: usize, n: usize) -> Option<Vec<&[f32]>> {
        prefetch()
            .then(|| self.fc_streamed_after(b, l, n))
            .flatten()
    }

    /// The weights the first conv of branch `b` from op `l` on streams on `n` rows (see
    /// [`PackedConv::streamed`]).
    fn fc_streamed_after(&self, b: usize, l: usize, n: usize) -> Option<Vec<&[f32]>> {
        self.branches[b]
            .ops
            .get(l..)?
            .iter()
            .find_map(|op| match op {
                Some(Op::Conv(c)) => Some(c.streamed(n)),
                Some(_) => None,
                None => Some(None),
            })?
    }

    /// The leading ops of branch `b` that run example-chunk by example-chunk (see
    /// [`Self::forward_chunked`]): direct convs with small weights, each with its fused ReLU and
    /// 2 x 2 pooling, whose sources are stored within the conv's padding. Their convs, with
    /// where each reads from, and the number of ops they cover.
    fn chunkable(&self, b: usize, input: &Act, prev: &[ActMaps]) -> (Vec<Step<'_>>, usize) {
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
            let pool_at = if c.relu { l + 2 } else { l + 1 };
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
            let dest = match (pool, c.relu) {
                (Some(_), _) => pool_at,
                (None, true) => l + 1,
                (None, false) => l,
            };
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
    fn forward_chunked(
        &self,
        input: &Act,
        prev: &[ActMaps],
        steps: &[Step],
        covered: usize,
        ahead: direct::Ahead,
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
                // (the next layer's weights prefetched during the last, largest step)
                let ahead = if k + 1 == steps.len() {
                    ahead.span(rows.start, rows.end, n)
                } else {
                    direct::Ahead::default()
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
                direct::conv(&sources, g, &s.conv.bias, s.conv.relu, out, false, ahead);
                // SAFETY: the direct kernel wrote every value of the piece
                done.push(unsafe { &*(out as *mut [std::mem::MaybeUninit<f32>] as *const [f32]) });
            }
        };
        // pieces shared out as the threads come for them, each run in chunks of at most `fit`
        // examples, as equal as they can be
        if direct::shared() {
            // (pieces of at least a chunk: on a few rows, one a thread as before, measured a
            // 6-row stage 2 2% slower in pieces of one row)
            let grain = fit.min(n.div_ceil(rayon::current_num_threads()));
            crate::workers::share(n, grain, |r| {
                let k = r.len().div_ceil(fit);
                for i in 0..k {
                    run(r.start + i * r.len() / k..r.start + (i + 1) * r.len() / k);
                }
            });
        } else {
            let threads = rayon::current_num_threads();
            let chunks = n
                .div_ceil(fit)
                .max(threads)
                .next_multiple_of(threads)
                .min(n);
            (0..chunks)
                .into_par_iter()
                .for_each(|i| run(i * n / chunks..(i + 1) * n / chunks));
        }
        let mut own: ActMaps = vec![None; covered];
        for (s, buf) in steps.iter().zip(bufs) {
            let (qh, qw) = s.g.stored();
            // SAFETY: every chunk's piece was written
            let data = unsafe { assume_init(buf) };
            own[s.dest] = Some(Act::with_border(n, qh, qw, s.g.cout, s.g.border, data));
        }
        own
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
        // grain than whole chunks (measured on the retrieval networks, whole cascades
        // interleaved in one process, `awake_ab ... chunks`, against chunked wherever it
        // fitted: the onion at p = 0.05 0.4–1.6% faster in four of six runs, slower in two;
        // its stage 1's maps, 0.7 MB per thread, now layer by layer; the monolithic
        // network's, 2.8 MB, still chunked: layer by layer it ran 1.4–2% slower); and only
        // where the examples split evenly between the threads (within 5%: else layer by layer,
        // splitting positions evenly; measured on the retrieval onion's stage 2, 13 examples:
        // 8% slower chunked, 6 examples: 12% faster) and two examples' maps fit in the cache
        // budget (fewer gain nothing: measured on 2ch-deep, whose stage 1 maps take 120 KB per
        // example, 2–9% slower)
        let chunked = chunked.unwrap_or_else(|| {
            let written: usize = steps.iter().map(|s| s.g.example_len() * 4).sum();
            !steps.is_empty()
                && chunk_fit(&steps, input, prev) >= 2
                && chunks_pay(
                    input.n,
                    rayon::current_num_threads(),
                    written,
                    CHUNKED_BELOW.load(std::sync::atomic::Ordering::Relaxed),
                )
        });
        let mut own: ActMaps = if chunked && !steps.is_empty() {
            let streamed = self.streamed_after(b, covered, input.n).unwrap_or_default();
            self.forward_chunked(input, prev, &steps, covered, direct::Ahead::new(&streamed))
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
            let out = match op {
                None => None,
                Some(Op::Conv(c)) => {
                    let srcs: Vec<&Act> = if l == 0 {
                        vec![input]
                    } else {
                        sources(arch, b, l - 1, &own, prev)
                    };
                    // a non-overlapping pooling right after (past a fused ReLU) is fused: the
                    // maps between are read by nobody else, since every branch has the
                    // pooling there and other branches read maps after it
                    let pool_at = if c.relu { l + 2 } else { l + 1 };
                    let streamed = self.streamed_after(b, l + 1, input.n).unwrap_or_default();
                    let ahead = direct::Ahead::new(&streamed);
                    match br.ops.get(pool_at) {
                        Some(Some(Op::Maxpool {
                            kernel,
                            stride,
                            ceil,
                        })) if kernel == stride => {
                            let border = self.border_after(b, pool_at);
                            let pool = Some((*kernel, *ceil));
                            pooled = Some(c.forward_ahead(&srcs, pool, border, ahead));
                            None
                        }
                        _ => {
                            let border = self.border_after(b, pool_at - 1);
                            Some(c.forward_ahead(&srcs, None, border, ahead))
                        }
                    }
                }
                Some(Op::Maxpool { .. }) if pooled.is_some() => pooled.take(),
                // the conv before applied it; its pre-ReLU maps are read by nobody else
                Some(Op::Fused) => own[l - 1].take(),
                Some(Op::Relu) => own[l - 1].as_ref().map(|x| {
                    let mut y = x.slice(0..x.n);
                    y.values_mut().par_iter_mut().for_each(|v| *v = v.max(0.0));
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
            };
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
}

/// Whether layers prefetch the next one's weights ([`PackedConv::streamed`]): off unless
/// `ONIONNET_PREFETCH=1`. Measured with both settings interleaved call by call in one process
/// (each call after a 128-row stage 1, as in a cascade run), the retrieval networks' stage 2
/// on 6 rows took 2–4% longer with it (the fc layer gains less than the conv whose tiles
/// issue the loads loses), and 2ch-deep's the same within 1%.
fn prefetch() -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    match PREFETCH.load(Relaxed) {
        UNSET => {
            let on = std::env::var("ONIONNET_PREFETCH").as_deref() == Ok("1");
            PREFETCH.store(on as u8, Relaxed);
            on
        }
        on => on == 1,
    }
}

const UNSET: u8 = 2;
static PREFETCH: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(UNSET);

/// Runs convs with 16 output channels on tiles with their lanes over the channels (`true`, the
/// default) or on the paired tiles, for A/B benchmarks.
#[doc(hidden)]
pub fn set_lanes16(on: bool) {
    direct::LANES16.store(on, std::sync::atomic::Ordering::Relaxed);
}

#[doc(hidden)]
pub fn set_shared(on: bool) {
    direct::SHARED.store(on, std::sync::atomic::Ordering::Relaxed);
}

#[doc(hidden)]
pub fn set_reuse(on: bool) {
    direct::REUSE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// How far ahead (bytes) fc layers that stream their weights prefetch them (default 16 KB; 0:
/// not at all), for A/B benchmarks.
#[doc(hidden)]
pub fn set_fc_ahead(bytes: usize) {
    direct::FC_AHEAD.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// Turns the prefetching of the next layer's weights on or off, for A/B benchmarks.
#[doc(hidden)]
pub fn set_prefetch(on: bool) {
    PREFETCH.store(on as u8, std::sync::atomic::Ordering::Relaxed);
}

/// Weights a layer prefetches for the next one, per thread (bytes): at most a core's L2 (1 MiB
/// on the machine measured).
const PREFETCH_PER_THREAD: usize = 1 << 20;

/// A core's L2 (bytes, on the machine measured).
const CORE_L2: usize = 1 << 20;

/// Weights of the layers run chunk by chunk, together (bytes): every chunk reads them again,
/// from the core's cache.
const CHUNK_WEIGHTS: usize = 128 << 10;
/// A chunk's maps and the weights (bytes): a quarter of a core's L2 (1 MiB on the machine
/// measured).
const CHUNK_CACHE: usize = 256 << 10;

/// Whether `n` examples run chunk by chunk on `threads` threads, the chunked layers writing
/// `written` bytes per example (the rule and its measurements: `FastNet::forward_branch_with`):
/// where the batch's maps spill a core's L2, or on fewer than `below` examples per thread, and
/// only where the examples split evenly.
fn chunks_pay(n: usize, threads: usize, written: usize, below: usize) -> bool {
    let spills = n.div_ceil(threads) * written > CORE_L2;
    below > 0
        && (spills || n < threads.saturating_mul(below))
        && n >= 2 * threads
        && 20 * threads * n.div_ceil(threads) <= 21 * n
}

/// Examples whose maps (inputs read and outputs written by the chunked `steps`) fit within
/// [`CHUNK_CACHE`] beside the steps' weights.
fn chunk_fit(steps: &[Step], input: &Act, prev: &[ActMaps]) -> usize {
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
enum Src {
    Input,
    Prev(usize, usize),
    Own(usize),
}

/// A conv of a chunked run: its sources, geometry (for the whole batch) and the layer whose
/// map its output is.
struct Step<'a> {
    conv: &'a PackedConv,
    srcs: Vec<Src>,
    g: direct::Geometry,
    dest: usize,
}

/// What layer `l + 1` (or the head) of branch `b` reads: the maps after layer `l` of branches
/// 1..=b that have some there, in order — the parts of its packed weights.
fn sources<'a>(
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
        .map(|m| (engine == EngineKind::Own).then(|| FastModel::from_model(m)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn random(rng: &mut StdRng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// A layer over sources of `widths` channels, weights packed as [`pack`] does.
    fn layer(
        rng: &mut StdRng,
        widths: &[usize],
        cout: usize,
        k: usize,
        s: usize,
        p: usize,
    ) -> PackedConv {
        let parts = widths
            .iter()
            .map(|&c| (c, random(rng, k * k * c * cout)))
            .collect::<Vec<_>>();
        let all = stack(&parts, k * k, cout);
        PackedConv {
            blocks: vec![None; parts.len()],
            pairs: pairs_of(&parts, k, cout),
            pair_width: None,
            doubled: doubled_of(&parts, (k, k), cout),
            parts,
            all,
            bias: random(rng, cout),
            cout,
            outputs: cout,
            kernel: (k, k),
            stride: s,
            padding: p,
            relu: true,
        }
    }

    /// The direct kernel (16-lane tiles, 8-lane ones with either register file) and im2col +
    /// GEMM agree: thin and wide layers, stride, padding, two sources, a position count that
    /// no register tile divides, fused 2 x 2 max pooling on odd maps (floor and ceil: windows
    /// cut by the edge).
    #[test]
    fn direct_matches_gemm() {
        if !direct::available() {
            eprintln!("no AVX2/FMA: the direct kernel does not run here");
            return;
        }
        let mut rng = StdRng::seed_from_u64(3);
        for (widths, cout, k, s, p, n, (h, w)) in [
            (vec![1], 8, 3, 1, 1, 3, (7, 7)),
            (vec![2], 24, 4, 3, 0, 2, (13, 13)),
            (vec![24], 24, 3, 1, 0, 3, (9, 9)),
            (vec![72, 24], 72, 3, 1, 0, 2, (8, 8)),
            (vec![16, 48], 64, 5, 1, 2, 1, (6, 6)),
            (vec![3], 16, 5, 2, 2, 2, (11, 11)),
            // 16 output channels: one 16-lane vector a position (two sources, as an onion
            // layer; 14 x 14 pooled, as the retrieval stage 1's middle conv)
            (vec![8, 8], 16, 3, 1, 1, 3, (14, 14)),
            (vec![16], 32, 3, 1, 1, 2, (10, 10)),
            (vec![48], 48, 3, 2, 1, 5, (5, 5)),
            // one input channel, even output >= 8 wide: the column-vectorised kernel when
            // pooled (10 columns: the last block overlaps; 28 as the retrieval networks: the
            // last 4 columns of two row pairs at once; 10 x 12: as many, with an odd number
            // of row pairs, so that the last pair's 4 columns overlap instead)
            (vec![1], 16, 3, 1, 1, 2, (10, 10)),
            (vec![1], 8, 5, 1, 2, 3, (28, 28)),
            (vec![1], 8, 3, 1, 1, 2, (10, 12)),
            // 16 columns and more: 16-column blocks (28: the last overlapping by 4; 16; 20 x
            // 18: overlapping by 12, an odd number of row pairs; 24 channels: three groups),
            // 3 x 3 kernels unrolled, the 5 x 5 one above in loops
            (vec![1], 24, 3, 1, 1, 2, (28, 28)),
            (vec![1], 8, 3, 1, 1, 1, (16, 16)),
            (vec![1], 16, 3, 1, 1, 2, (18, 20)),
            // the channel-vectorised tiles: 4 filter groups at once, then 1 (4 rows a tile:
            // 6 rows overlap); 4 groups; one group on 2 rows (2 rows a tile)
            (vec![1], 40, 3, 1, 1, 2, (6, 8)),
            (vec![1], 32, 3, 1, 1, 2, (12, 14)),
            (vec![1], 8, 3, 1, 1, 2, (2, 8)),
            // a kernel over the whole map (an fc layer); on a few rows, with its output
            // channels shared between the threads (in equal blocks, and in blocks of 32 and 24)
            (vec![48, 16], 16, 4, 1, 0, 5, (4, 4)),
            (vec![16, 48], 96, 3, 1, 0, 3, (3, 3)),
            (vec![8], 56, 2, 1, 0, 2, (2, 2)),
            // (weight-bound on 1 and 4 rows: tiles of exactly those rows)
            (vec![32], 64, 2, 1, 0, 1, (2, 2)),
            (vec![24, 8], 48, 3, 1, 0, 4, (3, 3)),
            // (rows past the last whole tile: 12 + 1, and 12 + 6 + 1)
            (vec![8, 8], 32, 2, 1, 0, 13, (2, 2)),
            (vec![16], 8, 2, 1, 0, 19, (2, 2)),
            // weights beyond a quarter of L2 (590 KB): tiles in groups, pooled: two groups a
            // task, the second partial
            (vec![64, 64], 128, 3, 1, 1, 8, (14, 14)),
        ] {
            let conv = layer(&mut rng, &widths, cout, k, s, p);
            let xs: Vec<Act> = widths
                .iter()
                .map(|&c| Act::new(n, h, w, c, random(&mut rng, n * h * w * c)))
                .collect();
            let srcs: Vec<&Act> = xs.iter().collect();
            // the kernels: 16-lane tiles (where the CPU has AVX-512), 8-lane tiles with 32
            // registers, AVX2's
            for (narrow, blocked) in [
                (0, false),
                (1, false),
                (2, false),
                (0, true),
                (1, true),
                (2, true),
            ] {
                direct::UNPAIRED_HERE.set(narrow >= 1);
                direct::NARROW.set(narrow == 2);
                // (with the 8-lane tiles, also the fixed tasks and the one-channel tiles that
                // broadcast per tap)
                direct::FIXED_HERE.set(narrow == 1);
                direct::PER_TAP_HERE.set(narrow == 1);
                // an fc layer's weights also in blocks of the tile's width (made after NARROW
                // is set, as the tile width depends on it)
                let whole = (k, k) == (h, w) && p == 0;
                if blocked && !whole {
                    continue;
                }
                let conv = if blocked {
                    conv.clone().for_fc()
                } else {
                    conv.clone()
                };
                let pools = if whole {
                    vec![None]
                } else {
                    vec![None, Some((2, false)), Some((2, true))]
                };
                // inputs stored with the layer's padding as their border read the same
                let bordered: Vec<Act> = xs.iter().map(|x| x.bordered(p).into_owned()).collect();
                let bsrcs: Vec<&Act> = bordered.iter().collect();
                // (one-channel layers: the channel-vectorised tiles where they apply, the
                // 16-column blocks, and 8 only)
                let single8 = if widths == [1] {
                    vec![(false, false), (true, false), (true, true)]
                } else {
                    vec![(false, false)]
                };
                let (plain_srcs, bordered_srcs) = (&srcs, &bsrcs);
                let cases: Vec<_> = pools
                    .iter()
                    .flat_map(|&pool| {
                        single8.iter().flat_map(move |&s8| {
                            [(pool, 0, plain_srcs, s8), (pool, 2, bordered_srcs, s8)]
                        })
                    })
                    .collect();
                for (pool, border, srcs, single8) in cases {
                    let (columns, single8) = single8;
                    direct::COLUMNS_HERE.set(columns);
                    direct::NARROW_SINGLE.set(single8);
                    let a = conv.forward_via(srcs, true, pool, border, direct::Ahead::default());
                    let b = conv.forward_via(srcs, false, None, 0, direct::Ahead::default());
                    let b = match pool {
                        Some((side, ceil)) => maxpool(&b, side, side, ceil),
                        None => b,
                    };
                    assert_eq!((a.n, a.h, a.w, a.c, a.border), (b.n, b.h, b.w, b.c, border));
                    let plain = a.unbordered();
                    let worst = plain
                        .values()
                        .iter()
                        .zip(b.values())
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0, f32::max);
                    assert!(
                        worst <= 1e-4,
                        "{widths:?} cout {cout} k {k} s {s} p {p} pool {pool:?} border {border} narrow {narrow} blocked {blocked} columns {columns} 8-column {single8}: differ by {worst}"
                    );
                    // the border is zero: the stored values hold exactly the map's
                    let sum = |v: &[f32]| v.iter().map(|x| x.abs() as f64).sum::<f64>();
                    assert_eq!(sum(a.values()), sum(plain.values()), "border values");
                }
            }
            direct::NARROW.set(false);
            direct::UNPAIRED_HERE.set(false);
            direct::NARROW_SINGLE.set(false);
            direct::COLUMNS_HERE.set(false);
            direct::FIXED_HERE.set(false);
            direct::PER_TAP_HERE.set(false);
        }
    }

    proptest::proptest! {
        /// In-place compaction leaves the survivors in the order of the plan's window
        /// sources (what a gather would copy), also on a map compacted before; and so does
        /// the compaction of a block's maps together (rows of 3 values and of 32 KB: copies
        /// shared among the threads from the fourth copied row on, moved in place or, where
        /// a quarter or fewer survive, copied out).
        #[test]
        fn compaction_in_place_is_the_gather(
            keep in proptest::collection::vec(proptest::bool::ANY, 1..40),
            again in proptest::collection::vec(proptest::bool::ANY, 40),
        ) {
            let n = keep.len();
            let e = 3;
            let values: Vec<f32> = (0..n * e).map(|v| v as f32).collect();
            let mut x = Act::new(n, 1, 1, e, values.clone());
            let plan = crate::compaction::compact(&keep);
            let src = plan.window_sources();
            let big = 8192;
            let big_values: Vec<f32> = (0..n * big).map(|v| -(v as f32)).collect();
            let mut y = Act::new(n, 1, 1, big, big_values.clone());
            let mut z = Act::new(n, 1, 1, e, values.clone());
            Act::compact_all(&mut [&mut z, &mut y], &plan);
            let want_big: Vec<f32> = src.iter().flat_map(|&i| big_values[i * big..(i + 1) * big].to_vec()).collect();
            proptest::prop_assert_eq!(y.values(), &want_big[..]);
            x.compact(&plan);
            let want: Vec<f32> = src.iter().flat_map(|&i| values[i * e..(i + 1) * e].to_vec()).collect();
            proptest::prop_assert_eq!(x.values(), &want[..]);
            proptest::prop_assert_eq!(z.values(), &want[..]);
            // a second compaction of the compacted map
            let plan2 = crate::compaction::compact(&again[..x.n]);
            x.compact(&plan2);
            let want2: Vec<f32> = plan2
                .window_sources()
                .iter()
                .flat_map(|&i| want[i * e..(i + 1) * e].to_vec())
                .collect();
            proptest::prop_assert_eq!(x.values(), &want2[..]);
            // a later batch's survivors copied after the compacted rows (a window of its
            // buffer, or a buffer of their own)
            let later: Vec<f32> = (0..n * e).map(|v| 1000.0 + v as f32).collect();
            let rows = plan2.window_sources();
            x.push_rows(&Act::new(n, 1, 1, e, later.clone()), &rows);
            let mut want3 = want2.clone();
            want3.extend(rows.iter().flat_map(|&i| later[i * e..(i + 1) * e].to_vec()));
            proptest::prop_assert_eq!(x.n, want3.len() / e);
            proptest::prop_assert_eq!(x.values(), &want3[..]);
        }
    }

    /// Few survivors (a quarter of the rows at most) are copied out into buffers of their
    /// own, the copies shared among the threads where they are large (here 3 rows of 64 KB),
    /// alongside a small map of the same block.
    #[test]
    fn few_survivors_copied_out_in_parallel() {
        let (n, big) = (16, 16384);
        let mut keep = vec![false; n];
        for i in [1, 9, 14] {
            keep[i] = true;
        }
        let plan = crate::compaction::compact(&keep);
        let big_values: Vec<f32> = (0..n * big).map(|v| v as f32).collect();
        let small_values: Vec<f32> = (0..n * 2).map(|v| -(v as f32)).collect();
        let mut y = Act::new(n, 1, 1, big, big_values.clone());
        let mut z = Act::new(n, 1, 1, 2, small_values.clone());
        Act::compact_all(&mut [&mut y, &mut z], &plan);
        let rows = |v: &[f32], e: usize| -> Vec<f32> {
            plan.window_sources()
                .iter()
                .flat_map(|&i| v[i * e..(i + 1) * e].to_vec())
                .collect()
        };
        assert_eq!((y.n, z.n), (3, 3));
        assert!(y.values() == rows(&big_values, big).as_slice(), "big rows");
        assert_eq!(z.values(), rows(&small_values, 2).as_slice());
        // (their own buffers: the batch's are freed)
        assert_eq!(y.buf.len(), 3 * big);
    }

    /// A later batch's survivors stacked after a waiting block's rows, on every map of the
    /// block at once (copies shared among the threads: here 64 KB rows): after a window of
    /// the batch's buffer where it has room, else in a buffer of their own with the waiting
    /// rows moved once; a second stacking then appends in place.
    #[test]
    fn survivors_stacked_after_waiting_rows() {
        let (n, big) = (16, 16384);
        let batch =
            |seed: f32, e: usize| -> Vec<f32> { (0..n * e).map(|v| seed + v as f32).collect() };
        let rows_of = |v: &[f32], e: usize, rows: &[usize]| -> Vec<f32> {
            rows.iter()
                .flat_map(|&i| v[i * e..(i + 1) * e].to_vec())
                .collect()
        };
        // waiting: rows 2..7 compacted in place (a window at 2, room for 9 rows after it) or
        // rows 8..13 (a window at 8, room for 3)
        for (window, later, fits) in [
            (2..7, vec![0, 3, 15], true),
            (8..13, vec![1, 4, 6, 9], false),
        ] {
            let keep: Vec<bool> = (0..n).map(|i| window.contains(&i)).collect();
            let plan = crate::compaction::compact(&keep);
            let (b0, s0) = (batch(0.0, big), batch(-1e6, 2));
            let mut y = Act::new(n, 1, 1, big, b0.clone());
            let mut z = Act::new(n, 1, 1, 2, s0.clone());
            Act::compact_all(&mut [&mut y, &mut z], &plan);
            assert_eq!((y.first, y.n), (window.start, 5), "compacted in place");
            let (b1, s1) = (batch(1e7, big), batch(-2e6, 2));
            let (y1, z1) = (
                Act::new(n, 1, 1, big, b1.clone()),
                Act::new(n, 1, 1, 2, s1.clone()),
            );
            Act::push_rows_all(&mut [&mut y, &mut z], &[&y1, &z1], &later);
            let w: Vec<usize> = window.clone().collect();
            let mut want_y = rows_of(&b0, big, &w);
            want_y.extend(rows_of(&b1, big, &later));
            let mut want_z = rows_of(&s0, 2, &w);
            want_z.extend(rows_of(&s1, 2, &later));
            assert_eq!(y.n, 5 + later.len());
            assert!(
                y.values() == want_y.as_slice(),
                "big rows, window at {}",
                window.start
            );
            assert_eq!(z.values(), want_z.as_slice());
            assert_eq!(
                y.first == window.start,
                fits,
                "in place where there is room"
            );
            // a third batch's rows: in place now (a buffer of their own has room for 24 rows)
            let (b2, s2) = (batch(2e7, big), batch(-3e6, 2));
            let (y2, z2) = (
                Act::new(n, 1, 1, big, b2.clone()),
                Act::new(n, 1, 1, 2, s2.clone()),
            );
            let ptr = y.buf.as_ptr();
            Act::push_rows_all(&mut [&mut y, &mut z], &[&y2, &z2], &[5]);
            want_y.extend(rows_of(&b2, big, &[5]));
            want_z.extend(rows_of(&s2, 2, &[5]));
            assert!(y.values() == want_y.as_slice(), "third batch's row");
            assert_eq!(z.values(), want_z.as_slice());
            if !fits {
                assert_eq!(y.buf.as_ptr(), ptr, "appended in place");
            }
        }
    }

    /// A one-channel layer's tasks: about 1M multiply-adds each, yet short enough that rayon's
    /// halving gives every thread a share.
    #[test]
    fn one_channel_tasks_share_every_thread() {
        // the tasks rayon's `with_min_len(min)` makes of `len` items, at most: it halves a
        // range while both halves keep `min` items
        fn tasks(len: usize, min: usize) -> usize {
            if len / 2 >= min {
                tasks(len / 2, min) + tasks(len - len / 2, min)
            } else {
                1
            }
        }
        // the retrieval stage 1's first conv: 28 x 28 outputs x 9 taps x 8 filters
        let macs = 28 * 28 * 9 * 8;
        assert_eq!(direct::examples_per_task(128, macs, 2), 18);
        // (32 examples: two halves of 16; one task of 32 before)
        assert_eq!(direct::examples_per_task(32, macs, 2), 16);
        assert_eq!(direct::examples_per_task(33, macs, 2), 16);
        for threads in 1..=6 {
            for n in 1..200 {
                for macs in [1, 1000, macs, 1 << 20, 1 << 22] {
                    let per = direct::examples_per_task(n, macs, threads);
                    assert!(per >= 1);
                    assert!(
                        tasks(n, per) >= threads.min(n),
                        "n {n} threads {threads} macs {macs}: {} tasks",
                        tasks(n, per)
                    );
                    assert!(per == 1 || per * macs <= 1 << 20);
                }
            }
        }
    }

    /// Chunk by chunk where the maps spill L2 or on few examples per thread, evenly split.
    #[test]
    fn chunks_pay_where_maps_spill_or_rows_are_few() {
        // the retrieval networks on 2 threads, 128 rows: the monolithic network's leading
        // convs write 44 KB per example (2.8 MB per thread: chunked), the onion's stage 1
        // 11 KB (0.7 MB: layer by layer)
        assert!(chunks_pay(128, 2, 44 << 10, CHUNK_BELOW));
        assert!(!chunks_pay(128, 2, 11 << 10, CHUNK_BELOW));
        // a compacted batch: 6 rows chunked, 26 layer by layer, 13 split unevenly
        assert!(chunks_pay(6, 2, 11 << 10, CHUNK_BELOW));
        assert!(!chunks_pay(26, 2, 11 << 10, CHUNK_BELOW));
        assert!(!chunks_pay(13, 2, 11 << 10, CHUNK_BELOW));
        // fewer than two examples per thread, or forced off
        assert!(!chunks_pay(3, 2, 44 << 10, CHUNK_BELOW));
        assert!(!chunks_pay(128, 2, 44 << 10, 0));
        // forced on wherever it fits, without overflow
        assert!(chunks_pay(128, 2, 11 << 10, usize::MAX));
    }

    /// A head widened to 8 outputs gives the narrow head's outputs in its first columns.
    /// Chunk by chunk (each chunk's examples through every thin layer on one thread) gives
    /// the maps and logits of layer by layer, bit for bit (each position's sums run in the
    /// same order), on every branch of the shipped onions: the first (reading the input) and
    /// later ones (reading the earlier branches' maps), with batches that the chunks do not
    /// divide.
    #[test]
    fn chunked_matches_layer_by_layer() {
        let device = burn::tensor::Device::default();
        for name in ["fashion-retrieval", "2ch-deep", "alexnet-64"] {
            let path =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("specs/{name}.toml"));
            let spec = Spec::from_file(&path).unwrap();
            let onion = crate::bench::random_models(&spec, &device, 3)
                .into_iter()
                .find(|m| m.kind == NetworkKind::Onion)
                .unwrap();
            let net = &FastModel::from_model(&onion).nets[0];
            for n in [5, 9] {
                let [c, h, w] = spec.input.dims();
                let x = Tensor::<4>::random(
                    [n, c, h, w],
                    burn::tensor::Distribution::Normal(0.0, 1.0),
                    &device,
                );
                let input = FastModel::from_model(&onion).input(&x);
                let mut prev: Vec<ActMaps> = Vec::new();
                for b in 0..net.branches.len() {
                    let (steps, _) = net.chunkable(b, &input, &prev);
                    if b == 0 {
                        assert!(!steps.is_empty(), "{name}: stage 1 runs chunked");
                    }
                    let (maps0, logits0) =
                        net.forward_branch_with(b, &input, &prev, Some(false), None);
                    // (the chunks shared out as the threads come, and in fixed tasks)
                    for fixed in [true, false] {
                        direct::FIXED_HERE.set(fixed);
                        let (maps, logits) =
                            net.forward_branch_with(b, &input, &prev, Some(true), None);
                        // (no Debug dump of the maps: thousands of values)
                        assert!(
                            maps == maps0,
                            "{name} branch {b}, {n} examples, fixed {fixed}: maps differ"
                        );
                        assert!(
                            logits == logits0,
                            "{name} branch {b}, {n} examples, fixed {fixed}: logits"
                        );
                    }
                    prev.push(maps0);
                }
            }
        }
    }

    #[test]
    fn prefetch_targets_weight_bound_fc_layers() {
        // the retrieval onion: the conv before each fc layer prefetches the fc's weights (all
        // its blocks, every source's) where the fc runs weight-bound on few rows, and nothing
        // on a full batch or for the head
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/fashion-retrieval.toml");
        let spec = Spec::from_file(&path).unwrap();
        let device = burn::tensor::Device::default();
        let onion = crate::bench::random_models(&spec, &device, 3)
            .into_iter()
            .find(|m| m.kind == NetworkKind::Onion)
            .unwrap();
        let net = &FastModel::from_model(&onion).nets[0];
        let at = |name: &str| spec.layers.iter().position(|l| l.name == name).unwrap();
        let (conv2, fc) = (at("conv2"), at("fc1"));
        for b in 0..2 {
            let Some(Op::Conv(c)) = &net.branches[b].ops[fc] else {
                panic!("fc1 is a conv op")
            };
            let few = net
                .fc_streamed_after(b, conv2 + 1, 6)
                .expect("fc1 prefetched on 6 rows");
            assert_eq!(few.len(), b + 1, "one weight array per source");
            let len: usize = few.iter().map(|w| w.len()).sum();
            assert_eq!(len, c.weights_len(), "branch {b}: all of fc1's weights");
            assert!(
                net.fc_streamed_after(b, 1, 6).is_none(),
                "conv2 is not an fc layer"
            );
            assert!(
                net.fc_streamed_after(b, conv2 + 1, 128).is_none(),
                "full batch: compute-bound"
            );
            assert!(
                net.fc_streamed_after(b, fc + 1, 6).is_none(),
                "no fc after fc1"
            );
        }
    }

    #[test]
    fn ahead_shares_cover_every_line_once() {
        let (a, b) = (vec![0f32; 100], vec![0f32; 33]);
        let parts: [&[f32]; 2] = [&a, &b];
        let all = direct::Ahead::new(&parts);
        assert_eq!(all.lines, (0, 7 + 3));
        for n in [1, 3, 4, 11, 40] {
            let mut next = 0;
            for i in 0..n {
                let (from, to) = all.share(i, n).lines;
                assert_eq!(from, next, "{n} shares: contiguous");
                next = to;
            }
            assert_eq!(next, 10, "{n} shares: every line");
        }
    }

    #[test]
    fn widened_head_keeps_outputs() {
        let mut rng = StdRng::seed_from_u64(5);
        for outputs in [1, 4, 10] {
            let head = layer(&mut rng, &[12, 20], outputs, 3, 1, 0);
            let xs: Vec<Act> = [12, 20]
                .iter()
                .map(|&c| Act::new(7, 3, 3, c, random(&mut rng, 7 * 9 * c)))
                .collect();
            let srcs: Vec<&Act> = xs.iter().collect();
            let narrow = head.forward_via(&srcs, false, None, 0, direct::Ahead::default());
            let wide = head.clone().widened();
            assert_eq!(
                (wide.cout, wide.outputs),
                (outputs.next_multiple_of(8), outputs)
            );
            let y = wide.forward(&srcs, None, 0);
            for (a, b) in y
                .values()
                .chunks_exact(wide.cout)
                .zip(narrow.values().chunks_exact(outputs))
            {
                for (x, z) in a[..outputs].iter().zip(b) {
                    assert!((x - z).abs() <= 1e-4, "{outputs} outputs: {x} vs {z}");
                }
                assert!(a[outputs..].iter().all(|&v| v == 0.0), "padding stays zero");
            }
        }
    }
}
