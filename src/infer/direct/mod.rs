//! Direct convolution on channels-last maps, without an im2col copy: for thin layers (a stage
//! 1 keeps a quarter of the channels) the im2col copy of a GEMM convolution weighs as much as
//! the multiply-adds it feeds, since each copied value meets only `cout` filters. Here a
//! register tile of `P` output positions x `V` vectors of 8 output channels reads the input
//! where it lies — for one kernel row, `kw * c` contiguous values per position — and the
//! weights packed `[(dy * kw + dx) * c + ci][cout]`, the same layout as the GEMM path. Sources
//! of an onion layer are summed inside the tile, so nothing is concatenated. A following
//! non-overlapping max pooling is fused in: the tile's positions are whole pooling windows and
//! only their maximum is stored, so the full-size map is never written nor read back (it is
//! read by nobody else: other branches read maps after the pooling). Outputs are stored within
//! the zero border their reader pads with. One-channel inputs with 2x2 pooling get their own
//! kernels on AVX-512: 3 x 3 ones vectorised over output channels, two columns per vector
//! (`channels_example`), others over output columns, 16 at a time
//! (`single_channel_example`). x86-64 with AVX2 and FMA only (checked at run time; AVX-512VL, where present,
//! gives more registers and larger tiles, and 16-lane arithmetic: each 512-bit vector holds 8
//! output channels for two input values, see [`paired`]); elsewhere the GEMM path runs.

#[cfg(test)]
use std::cell::Cell;
use std::mem::MaybeUninit;

/// The least work (multiply-adds) of a piece of a shared layer: a few µs, so that the threads
/// end within that of each other while a piece's set-up stays small beside it.
const GRAIN: usize = 1 << 18;

/// How far ahead (bytes) an fc layer that streams its weights (a few rows: [`weight_bound`])
/// prefetches them into L2, line by line as its tile walks them: the stream is a cold one
/// (stage 1 ran in between and evicted it), longer than the hardware prefetcher looks ahead.
const FC_AHEAD: usize = 16 << 10;

/// [`FC_AHEAD`] where the layer streams its weights, else 0.
#[inline]
fn fc_ahead(g: Geometry) -> usize {
    if g.out == (1, 1) && weight_bound(g.cout, g.n) {
        FC_AHEAD
    } else {
        0
    }
}

#[cfg(test)]
thread_local! {
    /// Tests' choices of the kernels for the layers this thread starts (the tests cover every
    /// kernel, and run concurrently): the AVX2 tiles where AVX-512VL is present, the 8-lane
    /// tiles where the 16-lane ones would run, the one-channel kernel's 8-column blocks where
    /// 16 would run, its column-vectorised blocks where the channel-vectorised tiles would.
    pub(super) static NARROW: Cell<bool> = const { Cell::new(false) };
    pub(super) static UNPAIRED_HERE: Cell<bool> = const { Cell::new(false) };
    pub(super) static NARROW_SINGLE: Cell<bool> = const { Cell::new(false) };
    pub(super) static COLUMNS_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Whether a test on this thread asked for the kernel choice `$flag` (never outside tests).
macro_rules! forced {
    ($flag:ident) => {{
        #[cfg(test)]
        let on = $flag.get();
        #[cfg(not(test))]
        let on = false;
        on
    }};
}

/// The kernels a layer runs on, chosen on the thread that starts it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Kernels {
    /// AVX-512VL's 32 registers (where the CPU has them) or AVX2's 16.
    pub wide: bool,
    /// The 16-lane tiles (AVX-512, with [`Source::pairs`]).
    pub pairs: bool,
    /// The one-channel kernel's 16-column blocks.
    pub sixteen: bool,
    /// The one-channel kernel vectorised over output channels (3 x 3 kernels).
    pub channels: bool,
}

impl Kernels {
    pub(super) fn here() -> Kernels {
        #[cfg(target_arch = "x86_64")]
        let wide = x86::wide() && !forced!(NARROW);
        #[cfg(not(target_arch = "x86_64"))]
        let wide = false;
        Kernels {
            wide,
            pairs: wide && !forced!(UNPAIRED_HERE),
            sixteen: wide && !forced!(NARROW_SINGLE),
            channels: wide && !forced!(COLUMNS_HERE),
        }
    }
}

/// One input source of a layer: an unpadded NHWC map and its weights.
#[derive(Clone, Copy)]
pub(super) struct Source<'a> {
    pub data: &'a [f32],
    /// Channels.
    pub c: usize,
    /// Weights `[(dy * kw + dx) * c + ci][cout]`.
    pub weights: &'a [f32],
    /// The same weights cut into blocks of `width` output channels, each block's rows
    /// contiguous (`[co / width][row][co % width]`), read instead where the register tile is
    /// that wide: an fc layer on a few rows streams its weights from memory, and a block's
    /// rows in sequence waste no cache line (rows of `cout` touch two lines per block row).
    pub blocks: Option<(usize, &'a [f32])>,
    /// The same weights with rows paired ([`paired`]), for the 16-lane tiles: where a kernel
    /// row's run of input values (`kw * c`) is even.
    pub pairs: Option<&'a [f32]>,
    /// `Some(width)` where `pairs` are also cut into blocks of `width` output channels (see
    /// [`paired_blocks`]): fc layers, as `blocks` for the 8-lane tiles.
    pub pair_width: Option<usize>,
    /// The weights of a one-channel 3 x 3 layer doubled ([`doubled_weights`]) for the
    /// channel-vectorised kernel, which runs where they are given. Made once with the packing
    /// (made per call, they took 1% of the retrieval stage 1's profile: a chunked run calls
    /// the layer once per chunk).
    pub doubled: Option<&'a [f32]>,
}

/// Paired weights ([`paired`]) of `cout` output channels cut into blocks of `width` channels,
/// each block's pairs of rows contiguous (`[co / width][row / 2][co % width][row % 2]`): an fc
/// layer's 16-lane tiles on a few rows then stream their weights in sequence (with rows of
/// `2 * cout` values, a tile read 64 bytes of every 1 KB: on 7–24 rows of a 3136 -> 128 fc
/// layer, measured 21–33% slower than the 8-lane tiles on blocks, which do half the work per
/// instruction).
pub(super) fn paired_blocks(w: &[f32], cout: usize, width: usize) -> Lines {
    Lines::new(&blocked(paired(w, cout).values(), 2 * cout, 2 * width))
}

/// `w` (`[rows][cout]`, an even number of rows) with each two consecutive rows interleaved:
/// `[row / 2][co][row % 2]`, so that 16 lanes hold 8 output channels' weights for the two
/// input values that a 64-bit broadcast puts in alternate lanes (see the 16-lane tiles).
pub(super) fn paired(w: &[f32], cout: usize) -> Lines {
    assert!(cout.is_multiple_of(8) && w.len().is_multiple_of(2 * cout));
    let mut out = Vec::with_capacity(w.len());
    for two in w.chunks_exact(2 * cout) {
        let (even, odd) = two.split_at(cout);
        for (e, o) in even.iter().zip(odd) {
            out.push(*e);
            out.push(*o);
        }
    }
    Lines::new(&out)
}

/// Values in whole 64-byte cache lines, the first one aligned: a 16-lane load of weights
/// that straddles two lines costs two (measured: the same network 10–16% slower or faster from
/// one packing to the next, as the allocator placed its weights).
#[derive(Debug, Clone)]
pub(super) struct Lines {
    lines: Vec<Line>,
    len: usize,
}

#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

impl Lines {
    pub(super) fn new(values: &[f32]) -> Lines {
        let lines = values
            .chunks(16)
            .map(|c| {
                let mut l = [0.0; 16];
                l[..c.len()].copy_from_slice(c);
                Line(l)
            })
            .collect();
        Lines {
            lines,
            len: values.len(),
        }
    }

    #[inline]
    pub(super) fn values(&self) -> &[f32] {
        // SAFETY: `Line` is 16 f32 with no padding (repr(C), size 64), `len` <= 16 x lines
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.len) }
    }
}

/// `w` (`[rows][cout]`) cut into blocks of `width` columns, each block's rows contiguous (see
/// [`Source::blocks`]); `cout` a multiple of `width`.
pub(super) fn blocked(w: &[f32], cout: usize, width: usize) -> Vec<f32> {
    assert!(cout.is_multiple_of(width) && w.len().is_multiple_of(cout));
    let mut out = Vec::with_capacity(w.len());
    for b in (0..cout).step_by(width) {
        for row in w.chunks_exact(cout) {
            out.extend_from_slice(&row[b..b + width]);
        }
    }
    out
}

/// The width of the register tile an fc layer of `cout` outputs runs with on this CPU (its
/// blocks, for [`Source::blocks`]).
pub(super) fn fc_tile_width(cout: usize) -> usize {
    8 * vectors(cout / 8, Kernels::here().wide, false)
}

/// The width of the 16-lane register tile an fc layer of `cout` outputs runs with (which runs
/// on AVX-512VL only): its blocks, for [`Source::pair_width`].
pub(super) fn fc_pair_width(cout: usize) -> usize {
    8 * vectors(cout / 8, true, false)
}

/// The layer's geometry: input `h x w` (shared by the sources), kernel, stride, output.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: (usize, usize),
    pub stride: usize,
    pub out: (usize, usize),
    pub cout: usize,
    /// A fused max pooling: window side (= its stride) and the pooled map's size (windows
    /// cut by the map's edge, `ceil` pooling, use the pixels they have).
    pub pool: Option<(usize, (usize, usize))>,
    /// Zero pixels around each stored output example: the padding of the conv that reads it.
    pub border: usize,
}

impl Geometry {
    /// The stored map's size: pooled, or the convolution's.
    #[inline]
    pub fn stored(&self) -> (usize, usize) {
        self.pool.map_or(self.out, |(_, hw)| hw)
    }

    /// Stored output values per example, border included.
    #[inline]
    pub fn example_len(&self) -> usize {
        let (qh, qw) = self.stored();
        (qh + 2 * self.border) * (qw + 2 * self.border) * self.cout
    }

    /// Where stored position (b, y, x) starts in the output.
    #[inline]
    fn at(&self, b: usize, y: usize, x: usize) -> usize {
        let (qh, qw) = self.stored();
        let (bh, bw) = (qh + 2 * self.border, qw + 2 * self.border);
        ((b * bh + y + self.border) * bw + x + self.border) * self.cout
    }

    /// Convolution positions per stored position.
    #[inline]
    fn window(&self) -> usize {
        self.pool.map_or(1, |(k, _)| k * k)
    }
}

/// Whether layers started on this thread run the AVX-512VL kernels (16-lane tiles among them).
pub(super) fn wide() -> bool {
    Kernels::here().wide
}

/// Whether this CPU runs the direct kernels.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[(b, oy, ox)][co]` = bias + the sum over sources of the convolution, ReLU'd when asked,
/// max-pooled when `g.pool` says so, each example stored within a zero border of `g.border`
/// pixels. Needs [`available`], `cout % 8 == 0` and a pooling window of at most 2 x 2; the
/// sources come padded (their border is the layer's padding). Every value of `out` is written,
/// border included (it may come uninitialised: zeroing a map first costs as much memory
/// traffic as writing it, a tenth of a thin stage 1's time). `parallel`: split the work over
/// the rayon pool, or run it all on this thread (a caller that splits examples itself).
pub(super) fn conv(
    srcs: &[Source],
    g: Geometry,
    bias: &[f32],
    relu: bool,
    out: &mut [MaybeUninit<f32>],
    parallel: bool,
) {
    conv_with(srcs, g, bias, relu, out, Kernels::here(), parallel);
}

/// [`conv`] with the kernels chosen. One function of ~170 lines on purpose: the split of the
/// work into tasks and the safety argument of the kernels' raw writes (every task writes only
/// its own stored positions) are read together.
#[allow(clippy::too_many_arguments)]
fn conv_with(
    srcs: &[Source],
    g: Geometry,
    bias: &[f32],
    relu: bool,
    out: &mut [MaybeUninit<f32>],
    k: Kernels,
    parallel: bool,
) {
    use rayon::prelude::*;
    let (qh, qw) = g.stored();
    assert!(available() && g.cout.is_multiple_of(8) && out.len() == g.n * g.example_len());
    assert!(g.window() <= 4, "fused pooling windows up to 2 x 2");
    for s in srcs {
        assert_eq!(s.data.len(), g.n * g.h * g.w * s.c, "source size");
        assert_eq!(
            s.weights.len(),
            g.kernel.0 * g.kernel.1 * s.c * g.cout,
            "weight size"
        );
        if let Some((width, b)) = s.blocks {
            assert!(
                b.len() == s.weights.len() && g.cout.is_multiple_of(width),
                "blocks"
            );
        }
    }
    assert_eq!(bias.len(), g.cout);
    let positions = g.n * qh * qw;
    // an fc layer on a few rows streams its weights: in blocks of the tiles' width (16-lane
    // where its paired weights are blocked, else 8-lane)
    let blocked_pairs = srcs.iter().all(|s| s.pair_width.is_some());
    let k = Kernels {
        pairs: k.pairs && (blocked_pairs || !(g.out == (1, 1) && weight_bound(g.cout, positions))),
        ..k
    };
    let wide = k.wide;
    // tasks of about 4M multiply-adds (thin layers: many positions, so the scheduling cost
    // stays small), yet a few per thread on small batches (a stage 2 after compaction)
    let macs = g.kernel.0 * g.kernel.1 * srcs.iter().map(|s| s.c).sum::<usize>() * g.cout;
    let chunk = if positions * macs * g.window() < 1 << 18 {
        // a few µs of work (a head): one task, no other thread woken and waited for
        // (measured: a 32 -> 4 head over 128 examples took 2.4–3.6 µs split, for 0.2 µs of
        // multiply-adds)
        positions
    } else {
        ((4 << 20) / (macs * g.window()))
            .clamp(12, 1024)
            .min(positions.div_ceil(4 * rayon::current_num_threads()))
            .next_multiple_of(12)
    };
    // (grouped tiles: tasks of whole groups where there are enough positions)
    let chunk = if grouped(srcs, g, g.cout) {
        chunk
            .max(GROUP * 12)
            .min(positions.div_ceil(2 * rayon::current_num_threads()))
            .next_multiple_of(12)
    } else {
        chunk
    };
    // (a one-channel layer's tasks write whole examples, border included)
    let whole_examples = cfg!(target_arch = "x86_64") && wide && single_channel(srcs, g);
    if !whole_examples {
        zero_border(g, out, parallel);
    }
    // tasks own disjoint stored positions; the border is written above
    let base = Out(out.as_mut_ptr().cast());
    if !parallel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in the tasks below, with one task writing every position
        unsafe {
            if wide && single_channel(srcs, g) {
                let d = doubled(srcs, g, bias, k);
                let len = g.example_len();
                for b in 0..g.n {
                    // (each example's border right before it: measured, the whole chunk's
                    // borders first took 2.9% of the retrieval stage 1's samples)
                    let ex = base.get().add(b * len).cast::<MaybeUninit<f32>>();
                    zero_example_border(g, std::slice::from_raw_parts_mut(ex, len));
                    x86::one_channel_example(srcs[0], g, bias, relu, b, base.get(), k, &d);
                }
            } else {
                x86::chunk(srcs, g, bias, relu, 0..positions, 0..g.cout, base.get(), k);
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if wide && single_channel(srcs, g) {
        let d = doubled(srcs, g, bias, k);
        let len = g.example_len();
        let example = |b: usize| {
            // SAFETY: AVX-512VL (`k.wide`) and the shape checked; each call writes example b
            unsafe {
                let ex = base.get().add(b * len).cast::<MaybeUninit<f32>>();
                zero_example_border(g, std::slice::from_raw_parts_mut(ex, len));
                x86::one_channel_example(srcs[0], g, bias, relu, b, base.get(), k, &d)
            };
        };
        let grain = (GRAIN / (g.out.0 * g.out.1 * macs).max(1)).max(1);
        crate::workers::share(g.n, grain, |r| r.for_each(example));
        return;
    }
    // few positions (an fc layer on a compacted batch: one per example) leave threads idle
    // while one streams all the weights from memory: split the output channels too; and
    // where an fc layer's weights outweigh its inputs, split only those, so that every
    // weight is read from memory once (by one thread)
    let threads = rayon::current_num_threads();
    let tasks = if g.out == (1, 1) && weight_bound(g.cout, positions) {
        1
    } else {
        // as many tasks per thread where there are enough tiles (a thread left with one task
        // more than the other waits a task's time at the end of every layer)
        let tasks = positions.div_ceil(chunk);
        let even = tasks.next_multiple_of(threads);
        if even <= positions.div_ceil(12) {
            even
        } else {
            tasks
        }
    };
    // task t's positions: whole blocks of 12 (the register tiles hold 1, 2, 3, 6 or 12
    // stored positions), the blocks dealt out evenly
    let blocks = positions.div_ceil(12);
    let span = |t: usize| {
        (t * blocks / tasks * 12).min(positions)..((t + 1) * blocks / tasks * 12).min(positions)
    };
    // (narrower layers have too few blocks of channels to share)
    let parts = if tasks < threads && g.cout >= 48 {
        threads.div_ceil(tasks)
    } else {
        1
    };
    // (whole register tiles of 8 x V channels)
    let group = (g.cout / parts).next_multiple_of(8 * vectors(g.cout / 8, wide, g.window() > 1));
    // positions `range` x channels `cos`
    let run = |range: std::ops::Range<usize>, cos: std::ops::Range<usize>| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2/FMA checked above (AVX-512VL by the caller of `wide`); sizes checked
        // above; every read stays inside its source because each window lies inside the
        // padded map, and pooling windows are clamped to the convolution's output; each
        // call writes only its own positions `range` (channels `cos`)
        unsafe {
            x86::chunk(srcs, g, bias, relu, range, cos, base.get(), k)
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (range, cos, &base, wide);
    };
    if parts == 1 && tasks > 1 {
        // whole blocks, at least a `GRAIN` (and a group of tiles where grouped)
        let grain = (GRAIN / (macs * g.window() * 12)).max(1);
        let grain = if grouped(srcs, g, g.cout) {
            grain.max(GROUP)
        } else {
            grain
        };
        crate::workers::share(blocks, grain, |r| {
            let range = (r.start * 12).min(positions)..(r.end * 12).min(positions);
            run(range, 0..g.cout);
        });
        return;
    }
    (0..tasks * parts).into_par_iter().for_each(|t| {
        let (t, part) = (t / parts, t % parts);
        let cos = (part * group).min(g.cout)..((part + 1) * group).min(g.cout);
        run(span(t), cos);
    });
}

/// Register tiles per group where a conv's weights are large ([`grouped`]).
const GROUP: usize = 32;

/// Whether a conv computing output channels `cos` (a count) has weights too large to be read
/// again for every register tile: more than a quarter of a core's L2 (512 KiB on the machine
/// measured), so its tiles run in groups of [`GROUP`].
#[inline]
fn grouped(srcs: &[Source], g: Geometry, cos: usize) -> bool {
    let k: usize = g.kernel.0 * g.kernel.1 * srcs.iter().map(|s| s.c).sum::<usize>();
    g.out != (1, 1) && k * cos * 4 > 512 << 10
}

/// Whether an fc layer of `cout` outputs on `positions` rows (one per example) reads more
/// weights (K x cout values) than inputs (positions x K), 4 to 1: bound by streaming them.
#[inline]
pub(super) fn weight_bound(cout: usize, positions: usize) -> bool {
    cout >= 4 * positions
}

/// The register tile's width V (vectors of 8 output channels) for `nv` vectors of output
/// channels: P x V accumulators + V weight vectors + 1 broadcast within the vector registers
/// (AVX-512VL's 32 where `wide`, AVX2's 16); with pooling, P holds whole windows (a multiple
/// of 4), so AVX2 keeps V <= 2 there.
#[inline]
fn vectors(nv: usize, wide: bool, pooled: bool) -> usize {
    if nv.is_multiple_of(3) && (wide || !pooled) {
        3
    } else if nv.is_multiple_of(2) {
        2
    } else {
        1
    }
}

/// Whether a one-channel kernel runs the layer ([`x86::one_channel_example`]): one input
/// channel (a grey image), stride 1, a fused 2 x 2 pooling of an even-sized output at least
/// 8 wide.
fn single_channel(srcs: &[Source], g: Geometry) -> bool {
    let (oh, ow) = g.out;
    srcs.len() == 1
        && srcs[0].c == 1
        && g.stride == 1
        && matches!(g.pool, Some((2, _)))
        && oh.is_multiple_of(2)
        && ow.is_multiple_of(2)
        && ow >= 8
}

/// A one-channel layer's weights and bias for [`x86::channels_example`], each value twice in
/// a row: weights `[co / 8][dy * kw + dx][co % 8][2]` (see [`doubled_weights`]), bias
/// `[co / 8][2][co % 8]` (a filter group's 8 biases for each of two pooled columns).
pub(super) struct Doubled<'a> {
    weights: &'a [f32],
    bias: Vec<f32>,
}

/// A one-channel layer's weights `[dy * kw + dx][cout]` doubled for the channel-vectorised
/// kernel: `[co / 8][dy * kw + dx][co % 8][2]` (a filter group's taps contiguous, at offsets
/// known at compile time: with the packed layout's rows of `cout` values, a copy of the kernel
/// compiled on its own spilled the tap offsets and ran 1.3x slower; in the engine the two
/// measured the same within noise).
pub(super) fn doubled_weights(w: &[f32], cout: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(2 * w.len());
    for gr in 0..cout / 8 {
        for tap in w.chunks_exact(cout) {
            for &v in &tap[gr * 8..gr * 8 + 8] {
                out.extend([v, v]);
            }
        }
    }
    out
}

/// [`Doubled`] where the channel-vectorised kernel runs the layer (see [`single_channel`]:
/// a 3 x 3 kernel, `k.channels`, and the source's doubled weights made by the packing).
fn doubled<'a>(srcs: &[Source<'a>], g: Geometry, bias: &[f32], k: Kernels) -> Option<Doubled<'a>> {
    let weights = srcs[0].doubled?;
    (k.wide && k.channels && single_channel(srcs, g) && g.kernel == (3, 3)).then(|| {
        let mut b = Vec::with_capacity(2 * bias.len());
        for group in bias.chunks_exact(8) {
            b.extend_from_slice(group);
            b.extend_from_slice(group);
        }
        Doubled { weights, bias: b }
    })
}

/// The output pointer, shared by tasks that write disjoint positions (or, compacting a
/// block, copy between disjoint rows).
#[derive(Clone, Copy)]
pub(super) struct Out(pub(super) *mut f32);
// SAFETY: tasks write disjoint positions of one live buffer that outlives them
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    #[inline]
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Writes the zero border of every stored example (the kernel writes the rest): a row's right
/// border and the next row's left border are one run, written by vector-sized stores (a
/// `memset` call per run of a few channels cost 2% of a thin stage's time).
fn zero_border(g: Geometry, out: &mut [MaybeUninit<f32>], parallel: bool) {
    use rayon::prelude::*;
    if g.border == 0 {
        return;
    }
    // split between the threads: on a thin layer's output the border is a quarter of the
    // values (a 14 x 14 map stored 16 x 16); written by one thread, measured (layer by layer,
    // interleaved in one process) 40% of the retrieval stage 1's first conv
    if parallel {
        out.par_chunks_mut(g.example_len())
            .with_min_len(8)
            .for_each(|ex| zero_example_border(g, ex));
    } else {
        out.chunks_mut(g.example_len())
            .for_each(|ex| zero_example_border(g, ex));
    }
}

/// [`zero_border`] of one example's stored output `ex`.
fn zero_example_border(g: Geometry, ex: &mut [MaybeUninit<f32>]) {
    let (qh, qw) = g.stored();
    let (b, c) = (g.border, g.cout);
    let bw = qw + 2 * b;
    let zero = |run: &mut [MaybeUninit<f32>]| {
        // (c is a multiple of 8: so is every run)
        for v in run.chunks_exact_mut(8) {
            v.copy_from_slice(&[MaybeUninit::new(0.0); 8]);
        }
    };
    // the top rows and the first row's left border; the last row's right border and the
    // bottom rows
    zero(&mut ex[..(b * bw + b) * c]);
    zero(&mut ex[((b + qh - 1) * bw + b + qw) * c..]);
    for y in b..b + qh - 1 {
        zero(&mut ex[(y * bw + b + qw) * c..((y + 1) * bw + b) * c]);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;
