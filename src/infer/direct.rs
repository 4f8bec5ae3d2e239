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
//! (`single_channel_example`). A conv may prefetch the next layer's weights meanwhile
//! ([`Ahead`]). x86-64 with AVX2 and FMA only (checked at run time; AVX-512VL, where present,
//! gives more registers and larger tiles, and 16-lane arithmetic: each 512-bit vector holds 8
//! output channels for two input values, see [`paired`]); elsewhere the GEMM path runs.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};

/// Forces the 8-lane tiles where the 16-lane ones would run, in every thread (for in-process
/// A/B benchmarks).
pub(super) static UNPAIRED: AtomicBool = AtomicBool::new(false);

/// Forces the one-channel kernel's column-vectorised blocks where the channel-vectorised
/// ones would run, in every thread (for in-process A/B benchmarks).
pub(super) static COLUMNS: AtomicBool = AtomicBool::new(false);

/// Whether a conv with 16 output channels runs on tiles with their lanes over those channels
/// ([`x86`]'s `lanes16`; off: on the paired 16-lane tiles, for A/B benchmarks).
pub(super) static LANES16: AtomicBool = AtomicBool::new(true);

/// Whether layers (and chunked runs) share their positions (examples) out as the threads come
/// for them ([`crate::workers::share`]) rather than in fixed tasks, in every thread (for
/// in-process A/B benchmarks). With fixed tasks (4 a thread), the retrieval onion's stage 1
/// on 128 rows ran 12–36% slower on two threads than half its time on one (the monolithic
/// network 3–5%; `examples/two_threads.rs`), its middle conv's two threads ending a median
/// 9–20 µs apart (of 310); shared: 6–10%, 2 µs apart. Interleaved in one process, shared / fixed, of the monolithic
/// time: that stage 0.0766 / 0.0807, 0.0753 / 0.0817, 0.0761 / 0.0826 (`ab_lanes
/// specs/fashion-retrieval.toml 2 0 128 200 shared`); whole cascades at p = 0.05 (`awake_ab
/// ... 0.05 300 shared`): onion 0.1258 / 0.1290, 0.1254 / 0.1285, non-sharing 0.1400 /
/// 0.1432, 0.1394 / 0.1425; the monolithic network the same within 1%.
pub(super) static SHARED: AtomicBool = AtomicBool::new(true);

/// The least work (multiply-adds) of a piece of a shared layer: a few µs, so that the threads
/// end within that of each other while a piece's set-up stays small beside it.
const GRAIN: usize = 1 << 18;

/// Whether one-channel layers of 8 filters broadcast each input pair once per tile (`x86`'s
/// `reuse_tile`) rather than once per tap, in every thread (for in-process A/B benchmarks).
/// Measured interleaved in one process (`ab_lanes specs/fashion-retrieval.toml 2 0 128 200
/// reuse`), the retrieval onion's stage 1 (first conv: 8 filters), with / without, of the
/// monolithic time: 0.0813 / 0.0852, 0.0864 / 0.0893, 0.0714 / 0.0723; the conv alone 89 / 93
/// µs.
pub(super) static REUSE: AtomicBool = AtomicBool::new(true);

/// How far ahead (bytes) an fc layer that streams its weights (a few rows: [`weight_bound`])
/// prefetches them into L2, line by line as its tile walks them; 0: not at all (for in-process
/// A/B benchmarks). The stream is a cold one (stage 1 ran in between and evicted it), longer
/// than the hardware prefetcher looks ahead: measured interleaved in one process (`awake_ab
/// SPEC 0.05 300 fcahead`, the retrieval networks, eleven runs at 1–64 KB ahead), the
/// non-sharing cascade's stage 2 on 6 rows (1.6 MB of fc weights) took 2–10% less time, the
/// onion's (1.2 MB) 0–4% less, the most while the machine ran slow; 2ch-deep's and the
/// AlexNet-like network's the same within the noise.
pub(super) static FC_AHEAD: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(16 << 10);

/// [`FC_AHEAD`] where the layer streams its weights, else 0.
fn fc_ahead(g: Geometry) -> usize {
    if g.out == (1, 1) && weight_bound(g.cout, g.n) {
        FC_AHEAD.load(Ordering::Relaxed)
    } else {
        0
    }
}

thread_local! {
    /// Tests' choices of the kernels for the layers this thread starts (the tests cover every
    /// kernel, and run concurrently): the AVX2 tiles where AVX-512VL is present, the 8-lane
    /// tiles where the 16-lane ones would run, the one-channel kernel's 8-column blocks where
    /// 16 would run.
    pub(super) static NARROW: Cell<bool> = const { Cell::new(false) };
    pub(super) static UNPAIRED_HERE: Cell<bool> = const { Cell::new(false) };
    pub(super) static NARROW_SINGLE: Cell<bool> = const { Cell::new(false) };
    pub(super) static COLUMNS_HERE: Cell<bool> = const { Cell::new(false) };
    pub(super) static PER_TAP_HERE: Cell<bool> = const { Cell::new(false) };
    pub(super) static FIXED_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Whether the layers this thread starts share their work out ([`SHARED`]).
pub(super) fn shared() -> bool {
    SHARED.load(Ordering::Relaxed) && !FIXED_HERE.get()
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
    /// Its tiles of 8 filters broadcasting each input pair once ([`REUSE`]).
    pub reuse: bool,
}

impl Kernels {
    pub(super) fn here() -> Kernels {
        #[cfg(target_arch = "x86_64")]
        let wide = x86::wide() && !NARROW.get();
        #[cfg(not(target_arch = "x86_64"))]
        let wide = false;
        let env = |name: &str| std::env::var(name).as_deref() != Ok("0");
        static PAIRS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        static SIXTEEN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        Kernels {
            wide,
            pairs: wide
                && *PAIRS.get_or_init(|| env("ONIONNET_PAIRS"))
                && !UNPAIRED.load(Ordering::Relaxed)
                && !UNPAIRED_HERE.get(),
            sixteen: wide
                && *SIXTEEN.get_or_init(|| env("ONIONNET_SIXTEEN"))
                && !NARROW_SINGLE.get(),
            channels: wide && !COLUMNS.load(Ordering::Relaxed) && !COLUMNS_HERE.get(),
            reuse: REUSE.load(Ordering::Relaxed) && !PER_TAP_HERE.get(),
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

/// Another layer's weights to bring into the core's L2 while this one computes: an fc layer
/// on a few rows (a compacted batch) is bound by streaming its weights from memory, and the
/// conv before it is bound by arithmetic, so its tiles can issue those loads for it (measured
/// on the retrieval onion's stage 2 at 6 rows: its fc layer took 2.6x its full-batch time per
/// row). `lines`: the 64-byte lines, over the parts in order, that this one fetches.
#[derive(Clone, Copy, Default)]
pub(super) struct Ahead<'a> {
    pub parts: &'a [&'a [f32]],
    pub lines: (usize, usize),
}

impl<'a> Ahead<'a> {
    pub fn new(parts: &'a [&'a [f32]]) -> Ahead<'a> {
        let total = parts.iter().map(|p| p.len().div_ceil(16)).sum();
        Ahead {
            parts,
            lines: (0, total),
        }
    }

    /// Share `i` of `n` equal shares of the lines.
    pub fn share(self, i: usize, n: usize) -> Ahead<'a> {
        self.span(i, i + 1, n)
    }

    /// Shares `i..j` of `n` equal shares of the lines.
    pub fn span(self, i: usize, j: usize, n: usize) -> Ahead<'a> {
        let (a, b) = self.lines;
        // (nothing to fetch, the common case: every tile of every conv asks)
        if a == b {
            return self;
        }
        let at = |k: usize| a + (b - a) * k / n.max(1);
        Ahead {
            parts: self.parts,
            lines: (at(i), at(j)),
        }
    }

    /// Issues the prefetches (hints: nothing waits for them).
    fn fetch(self) {
        let (mut from, mut to) = self.lines;
        for p in self.parts {
            let n = p.len().div_ceil(16);
            for l in from.min(n)..to.min(n) {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: a prefetch reads nothing architecturally; the address lies in `p`
                unsafe {
                    use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
                    _mm_prefetch::<_MM_HINT_T1>(p.as_ptr().add(l * 16).cast());
                }
            }
            from = from.saturating_sub(n);
            to = to.saturating_sub(n);
            if to == 0 {
                break;
            }
        }
    }
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
    pub fn stored(&self) -> (usize, usize) {
        self.pool.map_or(self.out, |(_, hw)| hw)
    }

    /// Stored output values per example, border included.
    pub fn example_len(&self) -> usize {
        let (qh, qw) = self.stored();
        (qh + 2 * self.border) * (qw + 2 * self.border) * self.cout
    }

    /// Where stored position (b, y, x) starts in the output.
    fn at(&self, b: usize, y: usize, x: usize) -> usize {
        let (qh, qw) = self.stored();
        let (bh, bw) = (qh + 2 * self.border, qw + 2 * self.border);
        ((b * bh + y + self.border) * bw + x + self.border) * self.cout
    }

    /// Convolution positions per stored position.
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
/// `ahead`: another layer's weights to prefetch meanwhile, spread over the tiles.
pub(super) fn conv(
    srcs: &[Source],
    g: Geometry,
    bias: &[f32],
    relu: bool,
    out: &mut [MaybeUninit<f32>],
    parallel: bool,
    ahead: Ahead,
) {
    conv_with(srcs, g, bias, relu, out, Kernels::here(), parallel, ahead);
}

/// [`conv`] with the kernels chosen.
#[allow(clippy::too_many_arguments)]
fn conv_with(
    srcs: &[Source],
    g: Geometry,
    bias: &[f32],
    relu: bool,
    out: &mut [MaybeUninit<f32>],
    k: Kernels,
    parallel: bool,
    ahead: Ahead,
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
                    ahead.share(b, g.n).fetch();
                }
            } else {
                x86::chunk(
                    srcs,
                    g,
                    bias,
                    relu,
                    0..positions,
                    0..g.cout,
                    base.get(),
                    k,
                    ahead,
                );
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
            ahead.share(b, g.n).fetch();
        };
        if shared() {
            let grain = (GRAIN / (g.out.0 * g.out.1 * macs).max(1)).max(1);
            crate::workers::share(g.n, grain, |r| r.for_each(example));
        } else {
            let per =
                examples_per_task(g.n, g.out.0 * g.out.1 * macs, rayon::current_num_threads());
            (0..g.n).into_par_iter().with_min_len(per).for_each(example);
        }
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
    let run = |range: std::ops::Range<usize>, cos: std::ops::Range<usize>, ahead: Ahead| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2/FMA checked above (AVX-512VL by the caller of `wide`); sizes checked
        // above; every read stays inside its source because each window lies inside the
        // padded map, and pooling windows are clamped to the convolution's output; each
        // call writes only its own positions `range` (channels `cos`)
        unsafe {
            x86::chunk(srcs, g, bias, relu, range, cos, base.get(), k, ahead)
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (range, cos, &base, wide, ahead);
    };
    if parts == 1 && tasks > 1 && shared() {
        // whole blocks, at least a `GRAIN` (and a group of tiles where grouped)
        let grain = (GRAIN / (macs * g.window() * 12)).max(1);
        let grain = if grouped(srcs, g, g.cout) {
            grain.max(GROUP)
        } else {
            grain
        };
        crate::workers::share(blocks, grain, |r| {
            let range = (r.start * 12).min(positions)..(r.end * 12).min(positions);
            run(range, 0..g.cout, ahead.span(r.start, r.end, blocks));
        });
        return;
    }
    (0..tasks * parts).into_par_iter().for_each(|t| {
        let ahead = ahead.share(t, tasks * parts);
        let (t, part) = (t / parts, t % parts);
        let cos = (part * group).min(g.cout)..((part + 1) * group).min(g.cout);
        run(span(t), cos, ahead);
    });
}

/// The fewest examples a task of a one-channel layer takes (rayon's `with_min_len`) on `n`
/// examples of `example_macs` multiply-adds each: about 1M multiply-adds, so that scheduling
/// stays cheap, yet few enough that rayon's halving of the range (into halves of at least
/// that length) reaches a task per thread (a 32-example batch of 8 filters, 0.9M
/// multiply-adds per 16 examples, ran on one thread and took as long as 64 examples on two).
pub(super) fn examples_per_task(n: usize, example_macs: usize, threads: usize) -> usize {
    ((1 << 20) / example_macs.max(1))
        .min(n / threads.max(1).next_power_of_two())
        .max(1)
}

/// Register tiles per group where a conv's weights are large ([`grouped`]).
const GROUP: usize = 32;

/// Whether a conv computing output channels `cos` (a count) has weights too large to be read
/// again for every register tile: more than a quarter of a core's L2 (512 KiB on the machine
/// measured), so its tiles run in groups of [`GROUP`].
fn grouped(srcs: &[Source], g: Geometry, cos: usize) -> bool {
    let k: usize = g.kernel.0 * g.kernel.1 * srcs.iter().map(|s| s.c).sum::<usize>();
    g.out != (1, 1) && k * cos * 4 > 512 << 10
}

/// Whether an fc layer of `cout` outputs on `positions` rows (one per example) reads more
/// weights (K x cout values) than inputs (positions x K), 4 to 1: bound by streaming them.
pub(super) fn weight_bound(cout: usize, positions: usize) -> bool {
    cout >= 4 * positions
}

/// The register tile's width V (vectors of 8 output channels) for `nv` vectors of output
/// channels: P x V accumulators + V weight vectors + 1 broadcast within the vector registers
/// (AVX-512VL's 32 where `wide`, AVX2's 16); with pooling, P holds whole windows (a multiple
/// of 4), so AVX2 keeps V <= 2 there.
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
mod x86 {
    use super::{Ahead, Geometry, Source};

    /// Whether the CPU has AVX-512VL: 32 vector registers instead of 16, so larger register
    /// tiles (the same 8-wide arithmetic).
    pub(super) fn wide() -> bool {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl")
    }

    /// Steps through the stored positions from one, giving each register tile its input
    /// pixels and output pointers: the window origin and the output offset advance by
    /// additions, and only windows cut by the map's edge clamp each pixel (measured: working
    /// the positions out with clamps and multiplies for every pixel took a tenth of a thin
    /// conv's time).
    pub(super) struct Walk {
        g: Geometry,
        side: usize,
        /// stored positions whose windows lie wholly inside the conv output
        full: (usize, usize),
        b: usize,
        qy: usize,
        qx: usize,
        /// the input pixel of the window's top-left corner, and the output offset
        origin: usize,
        at: usize,
    }

    impl Walk {
        pub(super) fn new(g: Geometry, first: usize) -> Walk {
            let (qh, qw) = g.stored();
            let side = g.pool.map_or(1, |p| p.0);
            let (b, qy, qx) = (first / (qh * qw), (first / qw) % qh, first % qw);
            let mut w = Walk {
                g,
                side,
                full: (g.out.0 / side, g.out.1 / side),
                b,
                qy,
                qx,
                origin: 0,
                at: 0,
            };
            w.row();
            w
        }

        /// Origin and output offset at (b, qy, qx).
        fn row(&mut self) {
            let g = &self.g;
            let s = self.side * g.stride;
            self.origin = (self.b * g.h + self.qy * s) * g.w + self.qx * s;
            self.at = g.at(self.b, self.qy, self.qx);
        }

        /// The next `P / W` positions (of which `left` remain; the others repeat the last
        /// window and write to `spare`): their `W` pixels each, and output pointers.
        #[inline(always)]
        pub(super) unsafe fn fill<const P: usize, const W: usize>(
            &mut self,
            left: usize,
            out: *mut f32,
            spare: *mut f32,
            pix: &mut [usize; P],
            dst: &mut [*mut f32; P],
        ) {
            // (W is the window's size, side x side: 1 or 4)
            let side = if W == 4 { 2 } else { 1 };
            debug_assert_eq!(side, self.side);
            let g = self.g;
            let (qh, qw) = g.stored();
            for k in 0..P / W {
                if k < left {
                    // SAFETY: the offset of a stored position inside `out`
                    dst[k] = unsafe { out.add(self.at) };
                    if self.qy < self.full.0 && self.qx < self.full.1 {
                        for dy in 0..side {
                            for dx in 0..side {
                                pix[k * W + dy * side + dx] =
                                    self.origin + (dy * g.w + dx) * g.stride;
                            }
                        }
                    } else {
                        // the window, cut by the edge: repeat its first pixels
                        let (oh, ow) = g.out;
                        for dy in 0..side {
                            let y = (self.qy * side + dy).min(oh - 1);
                            for dx in 0..side {
                                let x = (self.qx * side + dx).min(ow - 1);
                                pix[k * W + dy * side + dx] =
                                    (self.b * g.h + y * g.stride) * g.w + x * g.stride;
                            }
                        }
                    }
                    self.qx += 1;
                    self.origin += side * g.stride;
                    self.at += g.cout;
                    if self.qx == qw {
                        self.qx = 0;
                        self.qy += 1;
                        if self.qy == qh {
                            self.qy = 0;
                            self.b += 1;
                        }
                        self.row();
                    }
                } else {
                    dst[k] = spare;
                    for t in 0..W {
                        pix[k * W + t] = pix[(k - 1) * W + t];
                    }
                }
            }
        }
    }

    /// Stored positions `positions`, output channels `cos` (of the whole output `out`).
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn chunk(
        srcs: &[Source],
        g: Geometry,
        bias: &[f32],
        relu: bool,
        positions: std::ops::Range<usize>,
        cos: std::ops::Range<usize>,
        out: *mut f32,
        k: super::Kernels,
        ahead: Ahead,
    ) {
        let wide = k.wide;
        let (first, m) = (positions.start, positions.len());
        let nv = g.cout / 8;
        let pooled = g.window() > 1;
        // the tile P x V: see `vectors`
        unsafe {
            let c = cos.clone();
            let pairs = k.pairs && srcs.iter().all(|s| s.pairs.is_some());
            // a conv of 16 output channels: one 16-lane vector a position (see `lanes16`)
            let l16 = super::LANES16.load(std::sync::atomic::Ordering::Relaxed);
            if wide && k.pairs && l16 && g.cout == 16 && cos.len() == 16 && g.out != (1, 1) {
                return if pooled {
                    lanes::tiles::<2, 16, 4>(srcs, g, bias, relu, first, m, c, out, ahead)
                } else {
                    lanes::tiles::<2, 16, 1>(srcs, g, bias, relu, first, m, c, out, ahead)
                };
            }
            match (wide, super::vectors(nv, wide, pooled), pooled) {
                (true, 3, false) if pairs => {
                    zmm::tiles::<3, 6, 1>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
                (true, 3, true) if pairs => {
                    zmm::tiles::<3, 8, 4>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
                (true, 2, false) if pairs => {
                    zmm::tiles::<2, 12, 1>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
                (true, 2, true) if pairs => {
                    zmm::tiles::<2, 12, 4>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
                (true, _, false) if pairs => {
                    zmm::tiles::<1, 12, 1>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
                (true, _, true) if pairs => {
                    zmm::tiles::<1, 12, 4>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
                (true, 3, false) => {
                    avx512::tiles::<3, 6, 1>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
                (true, 3, true) => {
                    avx512::tiles::<3, 8, 4>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
                (true, 2, false) => {
                    avx512::tiles::<2, 12, 1>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
                (true, 2, true) => {
                    avx512::tiles::<2, 12, 4>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
                (true, _, false) => {
                    avx512::tiles::<1, 12, 1>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
                (true, _, true) => {
                    avx512::tiles::<1, 12, 4>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
                (false, 3, _) => {
                    avx2::tiles::<3, 3, 1>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
                (false, 2, false) => {
                    avx2::tiles::<2, 6, 1>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
                (false, 2, true) => {
                    avx2::tiles::<2, 4, 4>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
                (false, _, false) => {
                    avx2::tiles::<1, 12, 1>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
                (false, _, true) => {
                    avx2::tiles::<1, 12, 4>(srcs, g, bias, relu, first, m, c, out, ahead)
                }
            }
        }
    }

    /// Example `b` of a [`super::single_channel`] layer: on the channel-vectorised tiles
    /// where `d` holds the doubled weights, else on the column-vectorised blocks.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn one_channel_example(
        s: Source,
        g: Geometry,
        bias: &[f32],
        relu: bool,
        b: usize,
        out: *mut f32,
        k: super::Kernels,
        d: &Option<super::Doubled>,
    ) {
        // SAFETY: the caller's (a one-channel layer, AVX-512VL)
        unsafe {
            match d {
                Some(d) => channels_example::<3>(s, g, d, relu, b, out, k.reuse),
                None => single_channel_example(s, g, bias, relu, b, out, k.sixteen),
            }
        }
    }

    /// Example `b` of a [`super::single_channel`] layer with a `K` x `K` kernel, vectorised
    /// over output channels: each 512-bit vector holds 8 output channels for two adjacent
    /// output columns (lanes 2i, 2i + 1: channel i at columns x, x + 1), so that one input
    /// load — the two input values under a tap, broadcast as a 64-bit pair — meets a vector
    /// of weights (each channel's twice, [`Doubled`]) in one multiply-add, and a column pair
    /// is a pooling pair. Against the column-vectorised blocks (`block16`): no transpose to
    /// channels-last (two permutes per two pooled positions, which come out contiguous), no
    /// columns computed twice (blocks of 4 columns: 28 = 7 x 4, where 16-column blocks
    /// compute 32), and inputs loaded once per tile for every kernel row and filter group.
    /// Tiles of 4 conv rows x 4 columns for 8 channels (where `reuse`: [`reuse_tile`]), 2 rows
    /// x 4 columns for 16–32.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn channels_example<const K: usize>(
        s: Source,
        g: Geometry,
        d: &super::Doubled,
        relu: bool,
        b: usize,
        out: *mut f32,
        reuse: bool,
    ) {
        let groups = g.cout / 8;
        let mut g0 = 0;
        // SAFETY: see `channels_tile`; the tiles' rows and columns lie in the output
        unsafe {
            while g0 < groups {
                let n = (groups - g0).min(4);
                match n {
                    1 if g.out.0 >= 4 && reuse => sweep::<K, 4, 1, true>(s, g, d, relu, b, out, g0),
                    1 if g.out.0 >= 4 => sweep::<K, 4, 1, false>(s, g, d, relu, b, out, g0),
                    1 => sweep::<K, 2, 1, false>(s, g, d, relu, b, out, g0),
                    2 => sweep::<K, 2, 2, false>(s, g, d, relu, b, out, g0),
                    3 => sweep::<K, 2, 3, false>(s, g, d, relu, b, out, g0),
                    _ => sweep::<K, 2, 4, false>(s, g, d, relu, b, out, g0),
                }
                g0 += n;
            }
        }
    }

    /// Every tile of example `b` for filter groups `g0..g0 + G` (on [`reuse_tile`]s where
    /// `REUSE`, one group): the last row (column) of tiles overlapping the one before where
    /// `ROWS` (4) does not divide the height (width): an even start, so whole pooling windows.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn sweep<const K: usize, const ROWS: usize, const G: usize, const REUSE: bool>(
        s: Source,
        g: Geometry,
        d: &super::Doubled,
        relu: bool,
        b: usize,
        out: *mut f32,
        g0: usize,
    ) {
        let (oh, ow) = g.out;
        let starts = |len: usize, step: usize| {
            (0..len - step + 1)
                .step_by(step)
                .chain((!len.is_multiple_of(step)).then_some(len - step))
        };
        for y in starts(oh, ROWS) {
            for x in starts(ow, 4) {
                // SAFETY: y + ROWS <= oh, x + 4 <= ow, both even (oh, ow, ROWS even)
                unsafe {
                    if REUSE {
                        reuse_tile::<K, ROWS>(s, g, d, relu, b, y, x, out, g0)
                    } else {
                        channels_tile::<K, ROWS, G>(s, g, d, relu, b, y, x, out, g0)
                    }
                };
            }
        }
    }

    /// [`channels_tile`] for one filter group, each input pair broadcast once for every tap
    /// that reads it (the kernel's K x K weight vectors held in registers): with 8 filters a
    /// broadcast meets one multiply-add per tap, and a broadcast per multiply-add runs at 75%
    /// of the register rate (`examples/broadcast_cost.rs`).
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn reuse_tile<const K: usize, const ROWS: usize>(
        s: Source,
        g: Geometry,
        d: &super::Doubled,
        relu: bool,
        b: usize,
        y: usize,
        x: usize,
        out: *mut f32,
        g0: usize,
    ) {
        use std::arch::x86_64::*;
        // SAFETY: as in `channels_tile` (the same input rows and columns, read in another
        // order)
        unsafe {
            let src = s.data.as_ptr().add(b * g.h * g.w + y * g.w + x);
            let wts = d.weights.as_ptr().add(g0 * K * K * 16);
            let zero = _mm512_setzero_ps();
            let w: [[__m512; K]; K] = std::array::from_fn(|dy| {
                std::array::from_fn(|dx| _mm512_loadu_ps(wts.add((dy * K + dx) * 16)))
            });
            // [conv row][column pair]
            let mut acc = [[zero; 2]; ROWS];
            // input row i, pair starting at column c: output (i - dy, (c - dx) / 2) at tap
            // (dy, dx)
            #[allow(clippy::needless_range_loop)]
            for i in 0..ROWS + K - 1 {
                for c in 0..2 + K {
                    let at = src.add(i * g.w + c).cast::<f64>();
                    let v = _mm512_castpd_ps(_mm512_set1_pd(at.read_unaligned()));
                    for dy in 0..K {
                        if i < dy || i - dy >= ROWS {
                            continue;
                        }
                        for dx in 0..K {
                            if c < dx || (c - dx) % 2 == 1 || (c - dx) / 2 >= 2 {
                                continue;
                            }
                            let (r, u) = (i - dy, (c - dx) / 2);
                            acc[r][u] = _mm512_fmadd_ps(v, w[dy][dx], acc[r][u]);
                        }
                    }
                }
            }
            pooled_store(
                &acc,
                d.bias.as_ptr().add(g0 * 16),
                relu,
                g,
                b,
                y,
                x,
                g0 * 8,
                out,
            );
        }
    }

    /// Conv rows `y..y + ROWS` x columns `x..x + 4` x filter groups `g0..g0 + G`, pooled to
    /// rows `y / 2..` x columns `x / 2, x / 2 + 1`.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn channels_tile<const K: usize, const ROWS: usize, const G: usize>(
        s: Source,
        g: Geometry,
        d: &super::Doubled,
        relu: bool,
        b: usize,
        y: usize,
        x: usize,
        out: *mut f32,
        g0: usize,
    ) {
        use std::arch::x86_64::*;
        // SAFETY: reads stay in example b's padded map (columns up to x + 3 + K - 1 <= w - 1,
        // since w = ow + K - 1 and x + 4 <= ow; rows up to y + ROWS - 1 + K - 1 <= h - 1) and
        // in the doubled weights (groups x taps x 16); writes go to example b's stored positions
        unsafe {
            let src = s.data.as_ptr().add(b * g.h * g.w + y * g.w + x);
            let wts = d.weights.as_ptr().add(g0 * K * K * 16);
            let zero = _mm512_setzero_ps();
            // [group][conv row][column pair]
            let mut acc = [[[zero; 2]; ROWS]; G];
            for dy in 0..K {
                for dx in 0..K {
                    let w: [__m512; G] = std::array::from_fn(|gi| {
                        _mm512_loadu_ps(wts.add((gi * K * K + dy * K + dx) * 16))
                    });
                    #[allow(clippy::needless_range_loop)]
                    for r in 0..ROWS {
                        for u in 0..2 {
                            let at = src.add((r + dy) * g.w + 2 * u + dx).cast::<f64>();
                            let v = _mm512_castpd_ps(_mm512_set1_pd(at.read_unaligned()));
                            for gi in 0..G {
                                acc[gi][r][u] = _mm512_fmadd_ps(v, w[gi], acc[gi][r][u]);
                            }
                        }
                    }
                }
            }
            for (gi, a) in acc.iter().enumerate() {
                let bias = d.bias.as_ptr().add((g0 + gi) * 16);
                pooled_store(a, bias, relu, g, b, y, x, (g0 + gi) * 8, out);
            }
        }
    }

    /// The channel-vectorised tiles' last step for one filter group: conv rows `y..y + ROWS`
    /// (`acc[row][column pair]`, lanes 2i, 2i + 1 channel i at two columns) max-pooled to rows
    /// `y / 2..` x columns `x / 2, x / 2 + 1`, the group's bias added (`bias`: its 8 values
    /// twice), ReLU'd where asked, stored at channels `cg..cg + 8`.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pooled_store<const ROWS: usize>(
        acc: &[[std::arch::x86_64::__m512; 2]; ROWS],
        bias: *const f32,
        relu: bool,
        g: Geometry,
        b: usize,
        y: usize,
        x: usize,
        cg: usize,
        out: *mut f32,
    ) {
        use std::arch::x86_64::*;
        // SAFETY: the caller's: 16 bias values at `bias`, the stored positions in example b
        unsafe {
            let zero = _mm512_setzero_ps();
            // even lanes of a then b, odd lanes of a then b: columns x / 2 + 0 and + 1
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            let bv = _mm512_loadu_ps(bias);
            for rp in 0..ROWS / 2 {
                let m0 = _mm512_max_ps(acc[2 * rp][0], acc[2 * rp + 1][0]);
                let m1 = _mm512_max_ps(acc[2 * rp][1], acc[2 * rp + 1][1]);
                let p = _mm512_max_ps(
                    _mm512_permutex2var_ps(m0, even, m1),
                    _mm512_permutex2var_ps(m0, odd, m1),
                );
                let mut v = _mm512_add_ps(p, bv);
                if relu {
                    v = _mm512_max_ps(v, zero);
                }
                let at = out.add(g.at(b, y / 2 + rp, x / 2) + cg);
                if g.cout == 8 {
                    // the two pooled columns' channels are contiguous
                    _mm512_storeu_ps(at, v);
                } else {
                    _mm256_storeu_ps(at, _mm512_castps512_ps256(v));
                    _mm256_storeu_ps(
                        at.add(g.cout),
                        _mm512_castps512_ps256(_mm512_castpd_ps(_mm512_castpd256_pd512(
                            _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)),
                        ))),
                    );
                }
            }
        }
    }

    /// Example `b` of a [`super::single_channel`] layer, vectorised over 8 output columns
    /// instead of 8 output channels: with one input channel, a channel-vector tile spends a
    /// load per multiply-add (each input value meets 8 filters once), here an input row
    /// vector meets 8 filters' weights for two output rows. Two conv rows x 8 columns x 8
    /// channels sit in 16 registers (AVX-512VL's 32 needed); the rows are max-pooled,
    /// transposed to channels-last, the column pairs max-pooled and stored. A last block of 4
    /// columns (a 28-wide map) is done for two row pairs at once (one in each 128-bit half);
    /// other remainders overlap the block before (recomputing a few positions) so that reads
    /// stay in the row.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    pub(super) unsafe fn single_channel_example(
        s: Source,
        g: Geometry,
        bias: &[f32],
        relu: bool,
        b: usize,
        out: *mut f32,
        sixteen: bool,
    ) {
        let (oh, ow) = g.out;
        if ow >= 16 && sixteen {
            // SAFETY: see `block16`; the blocks' columns (the last one overlapping the one
            // before where 16 does not divide the width: an even start, so whole pooling
            // windows) and rows lie in the output
            unsafe {
                // a 3 x 3 kernel's taps unrolled (measured, interleaved in one process: the
                // retrieval stage 1 0-8% faster, 3% in the median of three runs)
                if g.kernel == (3, 3) {
                    rows16::<3>(s, g, bias, relu, b, out);
                } else {
                    rows16::<0>(s, g, bias, relu, b, out);
                }
            }
            return;
        }
        let full = ow / 8 * 8;
        // SAFETY: see `block`; the blocks' columns and rows lie in the output
        unsafe {
            for y in (0..oh).step_by(2) {
                for x in (0..full).step_by(8) {
                    block::<false>(s, g, bias, relu, b, y, x, out);
                }
                match ow - full {
                    0 => {}
                    // a row pair of odd index was done with the one before
                    4 if (y / 2) % 2 == 1 => {}
                    4 if y + 2 < oh => block::<true>(s, g, bias, relu, b, y, full, out),
                    _ => block::<false>(s, g, bias, relu, b, y, ow - 8, out),
                }
            }
        }
    }

    /// Conv rows `y, y + 1` x columns `x..x + 8`, pooled to (y / 2, x / 2..x / 2 + 4); or,
    /// `PAIRED`, columns `x..x + 4` of rows `y..y + 4`, pooled to (y / 2, x / 2..x / 2 + 2)
    /// and (y / 2 + 1, x / 2..x / 2 + 2).
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const PAIRED: bool>(
        s: Source,
        g: Geometry,
        bias: &[f32],
        relu: bool,
        b: usize,
        y: usize,
        x: usize,
        out: *mut f32,
    ) {
        use std::arch::x86_64::*;
        // SAFETY: reads stay in example b's padded map (columns x + dx + 7 <= w - 1, or
        // x + dx + 3 when PAIRED, since w = ow + kw - 1; rows y + 1 + dy (y + 3 + dy when
        // PAIRED) <= h - 1); writes go to example b's stored positions
        unsafe {
            let (kh, kw) = g.kernel;
            let src = s.data.as_ptr().add(b * g.h * g.w);
            let zero = _mm256_setzero_ps();
            for cg in (0..g.cout).step_by(8) {
                let mut acc0 = [zero; 8];
                let mut acc1 = [zero; 8];
                for dy in 0..kh {
                    for dx in 0..kw {
                        let at = src.add((y + dy) * g.w + x + dx);
                        let (in0, in1) = if PAIRED {
                            // rows y + dy | y + 2 + dy, and y + 1 + dy | y + 3 + dy
                            (
                                _mm256_loadu2_m128(at.add(2 * g.w), at),
                                _mm256_loadu2_m128(at.add(3 * g.w), at.add(g.w)),
                            )
                        } else {
                            (_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(g.w)))
                        };
                        let w = s.weights.as_ptr().add((dy * kw + dx) * g.cout + cg);
                        for co in 0..8 {
                            let wv = _mm256_broadcast_ss(&*w.add(co));
                            acc0[co] = _mm256_fmadd_ps(in0, wv, acc0[co]);
                            acc1[co] = _mm256_fmadd_ps(in1, wv, acc1[co]);
                        }
                    }
                }
                // pool the row pair, then transpose: t[i] = lane i's 8 channels
                let mut m = [zero; 8];
                for co in 0..8 {
                    m[co] = _mm256_max_ps(acc0[co], acc1[co]);
                }
                let t = transpose8(m);
                let bv = _mm256_loadu_ps(bias.as_ptr().add(cg));
                for j in 0..4 {
                    let mut v = _mm256_add_ps(_mm256_max_ps(t[2 * j], t[2 * j + 1]), bv);
                    if relu {
                        v = _mm256_max_ps(v, zero);
                    }
                    // lanes 4..8 of a PAIRED block are the next row pair's
                    let (qy, qx) = if PAIRED {
                        (y / 2 + j / 2, x / 2 + j % 2)
                    } else {
                        (y / 2, x / 2 + j)
                    };
                    _mm256_storeu_ps(out.add(g.at(b, qy, qx) + cg), v);
                }
            }
        }
    }

    /// Example `b` in [`block16`]s: every row pair, the last block of a row overlapping the
    /// one before where 16 does not divide the width (an even start, so whole pooling
    /// windows). `K` > 0: the kernel is K x K, known at compile time.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    #[inline]
    unsafe fn rows16<const K: usize>(
        s: Source,
        g: Geometry,
        bias: &[f32],
        relu: bool,
        b: usize,
        out: *mut f32,
    ) {
        let (oh, ow) = g.out;
        // SAFETY: see `block16`; the blocks' columns and rows lie in the output
        unsafe {
            for y in (0..oh).step_by(2) {
                for x in (0..ow - 15).step_by(16) {
                    block16::<K>(s, g, bias, relu, b, y, x, out);
                }
                if !ow.is_multiple_of(16) {
                    block16::<K>(s, g, bias, relu, b, y, ow - 16, out);
                }
            }
        }
    }

    /// [`block`] 16 columns wide, on AVX-512's 16-lane vectors: conv rows `y, y + 1` x columns
    /// `x..x + 16`, pooled to (y / 2, x / 2..x / 2 + 8). Half the multiply-add instructions of
    /// two 8-wide blocks, and a cheaper way to channels-last: each channel's vector is pooled
    /// over column pairs in place (both lanes of a pair get the maximum), two channels' vectors
    /// are merged lane by lane so that 64-bit element i holds both channels at pooled column
    /// i, and a 4 x 8 transpose of those 64-bit pairs (4 unpacks, 4 two-source permutes)
    /// leaves two pooled columns' 8 channels in each vector.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block16<const K: usize>(
        s: Source,
        g: Geometry,
        bias: &[f32],
        relu: bool,
        b: usize,
        y: usize,
        x: usize,
        out: *mut f32,
    ) {
        use std::arch::x86_64::*;
        // SAFETY: reads stay in example b's padded map (columns x + dx + 15 <= w - 1, since
        // w = ow + kw - 1 and x + 16 <= ow; rows y + 1 + dy <= h - 1); writes go to example
        // b's stored positions
        unsafe {
            let (kh, kw) = if K > 0 { (K, K) } else { g.kernel };
            let src = s.data.as_ptr().add(b * g.h * g.w);
            let zero = _mm512_setzero_ps();
            // 64-bit elements of the two sources interleaved by 128-bit lane: (a.l0, c.l0,
            // a.l1, c.l1) and (a.l2, c.l2, a.l3, c.l3)
            let lo = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
            let hi = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
            for cg in (0..g.cout).step_by(8) {
                let mut acc0 = [zero; 8];
                let mut acc1 = [zero; 8];
                for dy in 0..kh {
                    for dx in 0..kw {
                        let at = src.add((y + dy) * g.w + x + dx);
                        let (in0, in1) = (_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(g.w)));
                        let w = s.weights.as_ptr().add((dy * kw + dx) * g.cout + cg);
                        for co in 0..8 {
                            let wv = _mm512_set1_ps(*w.add(co));
                            acc0[co] = _mm512_fmadd_ps(in0, wv, acc0[co]);
                            acc1[co] = _mm512_fmadd_ps(in1, wv, acc1[co]);
                        }
                    }
                }
                // pool the row pair, then the column pairs (lanes 2i and 2i + 1 both hold
                // pooled column i); channels 2k, 2k + 1 merged: element i = column i's pair
                let mut p = [zero; 8];
                for co in 0..8 {
                    let m = _mm512_max_ps(acc0[co], acc1[co]);
                    p[co] = _mm512_max_ps(m, _mm512_permute_ps::<0xB1>(m));
                }
                let q: [__m512d; 4] = std::array::from_fn(|k| {
                    _mm512_castps_pd(_mm512_mask_blend_ps(0xAAAA, p[2 * k], p[2 * k + 1]))
                });
                // lane L of a: channels 0-3 of column 2L; b: of column 2L + 1; c, d: 4-7
                let a = _mm512_unpacklo_pd(q[0], q[1]);
                let bb = _mm512_unpackhi_pd(q[0], q[1]);
                let c = _mm512_unpacklo_pd(q[2], q[3]);
                let d = _mm512_unpackhi_pd(q[2], q[3]);
                // columns (0, 2), (1, 3), (4, 6), (5, 7): 8 channels in each half
                let cols = [
                    (_mm512_permutex2var_pd(a, lo, c), 0),
                    (_mm512_permutex2var_pd(bb, lo, d), 1),
                    (_mm512_permutex2var_pd(a, hi, c), 4),
                    (_mm512_permutex2var_pd(bb, hi, d), 5),
                ];
                let bv = _mm512_castps256_ps512(_mm256_loadu_ps(bias.as_ptr().add(cg)));
                let bv = _mm512_shuffle_f32x4::<0x44>(bv, bv);
                for (v, j) in cols {
                    let mut v = _mm512_add_ps(_mm512_castpd_ps(v), bv);
                    if relu {
                        v = _mm512_max_ps(v, zero);
                    }
                    let (qy, qx) = (y / 2, x / 2 + j);
                    _mm256_storeu_ps(out.add(g.at(b, qy, qx) + cg), _mm512_castps512_ps256(v));
                    let up = _mm512_castpd_ps(_mm512_castpd256_pd512(_mm512_extractf64x4_pd::<1>(
                        _mm512_castps_pd(v),
                    )));
                    _mm256_storeu_ps(
                        out.add(g.at(b, qy, qx + 2) + cg),
                        _mm512_castps512_ps256(up),
                    );
                }
            }
        }
    }

    /// The 8 x 8 transpose of rows `r` (lane i of result j = lane j of row i).
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    #[inline]
    unsafe fn transpose8(r: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
        use std::arch::x86_64::*;
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }

    /// The register-tile loops, compiled for one set of CPU features.
    macro_rules! kernels {
        ($name:ident, $features:literal, $tile:ident) => {
            mod $name {
                use super::super::{Ahead, GROUP, Geometry, Source};
                use std::arch::x86_64::*;

                /// Stored positions `first..first + m`, output channels `cos`, of the whole
                /// output `out`.
                #[target_feature(enable = $features)]
                #[allow(clippy::too_many_arguments)]
                pub(super) unsafe fn tiles<const V: usize, const P: usize, const W: usize>(
                    srcs: &[Source],
                    g: Geometry,
                    bias: &[f32],
                    relu: bool,
                    first: usize,
                    m: usize,
                    cos: std::ops::Range<usize>,
                    out: *mut f32,
                    ahead: Ahead,
                ) {
                    // SAFETY: see `conv`: pointers stay inside the checked slices
                    unsafe {
                        debug_assert_eq!(W, g.window());
                        let per = P / W; // stored positions per tile
                        // stored positions beyond the end repeat the last window, land here
                        let mut spare = vec![0f32; g.cout];
                        let mut walk = super::Walk::new(g, first);
                        let spare = spare.as_mut_ptr();
                        let mut next = |i: usize, pix: &mut [usize; P], dst: &mut [*mut f32; P]| {
                            walk.fill::<P, W>(m - i, out, spare, pix, dst)
                        };
                        let ncos = cos.len();
                        let blocks = cos.step_by(8 * V);
                        if W == 1 && g.out == (1, 1) {
                            // an fc layer (or a head): one position per example, every tile
                            // meets every block of weights, read from memory once for all
                            // tiles; the positions past the last whole tile in tiles of at
                            // most 6, of exactly those positions, since a tile's spare
                            // positions cost multiply-adds like the others (measured: an fc
                            // layer on 2 rows in 12-position tiles ran compute-bound at 6x its
                            // work, instead of at the speed of reading its weights; on 13 rows
                            // it did 24 rows' work)
                            let whole = m / P * P;
                            let mut tiles = Vec::with_capacity(m / P);
                            for i in (0..whole).step_by(P) {
                                let mut pix = [0usize; P];
                                let mut dst = [std::ptr::null_mut(); P];
                                next(i, &mut pix, &mut dst);
                                tiles.push((pix, dst));
                            }
                            let mut rest = ([0usize; P], [std::ptr::null_mut(); P]);
                            if whole < m {
                                next(whole, &mut rest.0, &mut rest.1);
                            }
                            let nb = blocks.clone().count();
                            for (j, co) in blocks.enumerate() {
                                for (pix, dst) in &tiles {
                                    $tile::<V, P, 1>(srcs, g, pix, co, bias, relu, dst);
                                }
                                for at in (0..m - whole).step_by(6) {
                                    let (pix, dst) = (&rest.0[at..], &rest.1[at..]);
                                    macro_rules! part {
                                        ($n:literal) => {
                                            $tile::<V, $n, 1>(
                                                srcs,
                                                g,
                                                &std::array::from_fn(|k| pix[k]),
                                                co,
                                                bias,
                                                relu,
                                                &std::array::from_fn(|k| dst[k]),
                                            )
                                        };
                                    }
                                    match (m - whole - at).min(6) {
                                        1 => part!(1),
                                        2 => part!(2),
                                        3 => part!(3),
                                        4 => part!(4),
                                        5 => part!(5),
                                        _ => part!(6),
                                    }
                                }
                                ahead.share(j, nb).fetch();
                            }
                            return;
                        }
                        // large weights: tiles in groups, each block of weights read once
                        // per group from memory and again from cache for the group's other
                        // tiles, whose inputs stay in cache meanwhile — a conv whose weights
                        // exceed what L2 holds beside its inputs in groups of `GROUP` (fc
                        // layers and heads, in one group, above)
                        let group = if super::super::grouped(srcs, g, ncos) {
                            GROUP
                        } else {
                            1
                        };
                        if group > 1 {
                            let mut tiles = Vec::with_capacity(group);
                            let mut i = 0;
                            while i < m {
                                tiles.clear();
                                while tiles.len() < group && i < m {
                                    let mut pix = [0usize; P];
                                    let mut dst = [std::ptr::null_mut(); P];
                                    next(i, &mut pix, &mut dst);
                                    tiles.push((pix, dst));
                                    i += per;
                                }
                                for co in blocks.clone() {
                                    for (pix, dst) in &tiles {
                                        $tile::<V, P, W>(srcs, g, pix, co, bias, relu, dst);
                                    }
                                }
                            }
                        } else {
                            // a tile's inputs stay in L1 while it meets every block (the
                            // weights of a conv are small); its positions are worked out as
                            // it comes (no list of them kept: thin layers spend a tenth of
                            // their time outside the multiply-adds)
                            // (the prefetches spread over the tiles: a few lines each, so
                            // that they never queue up behind each other)
                            let nb = blocks.clone().count();
                            let k = m.div_ceil(per) * nb;
                            let mut pix = [0usize; P];
                            let mut dst = [std::ptr::null_mut(); P];
                            let mut i = 0;
                            while i < m {
                                next(i, &mut pix, &mut dst);
                                for (j, co) in blocks.clone().enumerate() {
                                    $tile::<V, P, W>(srcs, g, &pix, co, bias, relu, &dst);
                                    ahead.share(i / per * nb + j, k).fetch();
                                }
                                i += per;
                            }
                        }
                    }
                }

                /// Output channels `co..co + 8V` of the `P` positions at input pixels `pix`,
                /// the maximum of each `W` consecutive ones stored at `dst`.
                #[target_feature(enable = $features)]
                #[inline]
                #[allow(dead_code)]
                unsafe fn tile<const V: usize, const P: usize, const W: usize>(
                    srcs: &[Source],
                    g: Geometry,
                    pix: &[usize; P],
                    co: usize,
                    bias: &[f32],
                    relu: bool,
                    dst: &[*mut f32; P],
                ) {
                    // SAFETY: see `conv`: pointers stay inside the checked slices
                    unsafe {
                        let (kh, kw) = g.kernel;
                        let mut acc = [[_mm256_setzero_ps(); V]; P];
                        let ahead = super::super::fc_ahead(g);
                        for s in srcs {
                            let run = kw * s.c; // one kernel row of one position: contiguous
                            // the weights' rows for channels co..co + 8V: in blocks, or not
                            let (w0, stride) = match s.blocks {
                                Some((width, b)) if width == 8 * V => {
                                    (b.as_ptr().add(co * kh * run), 8 * V)
                                }
                                _ => (s.weights.as_ptr().add(co), g.cout),
                            };
                            let mut at = [std::ptr::null::<f32>(); P];
                            for j in 0..P {
                                at[j] = s.data.as_ptr().add(pix[j] * s.c);
                            }
                            for dy in 0..kh {
                                let wrow = w0.add(dy * run * stride);
                                if dy > 0 {
                                    for a in at.iter_mut() {
                                        *a = a.add(g.w * s.c);
                                    }
                                }
                                for t in 0..run {
                                    let wt = wrow.add(t * stride);
                                    // (a row's first and last values: its lines, the rows
                                    // being contiguous and at most 2 lines long; past the end
                                    // of the weights a prefetch is a harmless hint)
                                    if ahead > 0 {
                                        let row = wt.cast::<i8>().wrapping_add(ahead);
                                        _mm_prefetch::<_MM_HINT_T1>(row);
                                        if V > 1 {
                                            _mm_prefetch::<_MM_HINT_T1>(
                                                row.wrapping_add(32 * V - 4),
                                            );
                                        }
                                    }
                                    let mut wv = [_mm256_setzero_ps(); V];
                                    for v in 0..V {
                                        wv[v] = _mm256_loadu_ps(wt.add(8 * v));
                                    }
                                    for j in 0..P {
                                        let a = _mm256_broadcast_ss(&*at[j].add(t));
                                        for v in 0..V {
                                            acc[j][v] = _mm256_fmadd_ps(a, wv[v], acc[j][v]);
                                        }
                                    }
                                }
                            }
                        }
                        let zero = _mm256_setzero_ps();
                        for v in 0..V {
                            let bv = _mm256_loadu_ps(bias.as_ptr().add(co + 8 * v));
                            for k in 0..P / W {
                                // the bias is common to the window: max first, then add (`W`
                                // is a constant so that `acc` stays in registers)
                                let mut x = acc[k * W][v];
                                for t in 1..W {
                                    x = _mm256_max_ps(x, acc[k * W + t][v]);
                                }
                                x = _mm256_add_ps(x, bv);
                                if relu {
                                    x = _mm256_max_ps(x, zero);
                                }
                                _mm256_storeu_ps(dst[k].add(co + 8 * v), x);
                            }
                        }
                    }
                }

                /// A conv's 16 output channels `co..co + 16` (V = 2 blocks of 8) in one 16-lane
                /// vector per position, each input value broadcast to the row of 16 weights
                /// by the multiply-add itself (an embedded 32-bit broadcast: full rate here,
                /// `examples/broadcast_cost.rs`), where the paired tile needs two blocks, a
                /// broadcast per two multiply-adds and a reduction of its lane pairs per
                /// position. Measured interleaved in one process (`ab_lanes
                /// specs/fashion-retrieval.toml 2 0 128 200 l16`, the stage 1 whose middle conv
                /// has 16 filters; with / without, of the monolithic time): 16 positions a tile
                /// 0.0779 / 0.0794, 0.0760 / 0.0768, 0.0764 / 0.0765, 0.0784 / 0.0791 (12 and 24,
                /// tried with a switch since removed: 0.0766 / 0.0786; 0.0795 / 0.0804, 0.0753 /
                /// 0.0767). The AlexNet-like stage 1,
                /// whose first conv has 16 filters over 3 channels (8-lane tiles before, its
                /// runs of 3 x 3 values being odd): 0.0704 / 0.0717 (`... 2 0 32 20 l16`).
                #[target_feature(enable = $features)]
                #[inline]
                #[allow(dead_code)]
                unsafe fn lanes16<const V: usize, const P: usize, const W: usize>(
                    srcs: &[Source],
                    g: Geometry,
                    pix: &[usize; P],
                    co: usize,
                    bias: &[f32],
                    relu: bool,
                    dst: &[*mut f32; P],
                ) {
                    // SAFETY: see `conv`: pointers stay inside the checked slices
                    unsafe {
                        let (kh, kw) = g.kernel;
                        let mut acc = [_mm512_setzero_ps(); P];
                        for s in srcs {
                            let run = kw * s.c;
                            let w0 = s.weights.as_ptr().add(co);
                            let stride = g.cout;
                            let mut at = [std::ptr::null::<f32>(); P];
                            for j in 0..P {
                                at[j] = s.data.as_ptr().add(pix[j] * s.c);
                            }
                            for dy in 0..kh {
                                let wrow = w0.add(dy * run * stride);
                                if dy > 0 {
                                    for a in at.iter_mut() {
                                        *a = a.add(g.w * s.c);
                                    }
                                }
                                for t in 0..run {
                                    let wv = _mm512_loadu_ps(wrow.add(t * stride));
                                    for j in 0..P {
                                        let a = _mm512_set1_ps(*at[j].add(t));
                                        acc[j] = _mm512_fmadd_ps(a, wv, acc[j]);
                                    }
                                }
                            }
                        }
                        let bv = _mm512_loadu_ps(bias.as_ptr().add(co));
                        for k in 0..P / W {
                            let mut x = acc[k * W];
                            for t in 1..W {
                                x = _mm512_max_ps(x, acc[k * W + t]);
                            }
                            x = _mm512_add_ps(x, bv);
                            if relu {
                                x = _mm512_max_ps(x, _mm512_setzero_ps());
                            }
                            _mm512_storeu_ps(dst[k].add(co), x);
                        }
                    }
                }

                /// [`tile`] with 16-lane arithmetic: each 512-bit accumulator holds the 8
                /// channels' sums over the even and over the odd input values of each run
                /// (alternate lanes), so that one 64-bit broadcast carries two input values to
                /// 16 weights ([`super::super::paired`]): half the multiply-add instructions
                /// and broadcasts of the 8-lane tile, for any `cout` a multiple of 8 (a 16-lane
                /// tile over 16 output channels would leave a 24-channel layer on 8 lanes and
                /// a 16-channel one with a broadcast per multiply-add). The lane pairs are
                /// summed once at the end. Needs every source's [`Source::pairs`].
                #[target_feature(enable = $features)]
                #[inline]
                #[allow(dead_code)]
                unsafe fn paired<const V: usize, const P: usize, const W: usize>(
                    srcs: &[Source],
                    g: Geometry,
                    pix: &[usize; P],
                    co: usize,
                    bias: &[f32],
                    relu: bool,
                    dst: &[*mut f32; P],
                ) {
                    // SAFETY: see `conv`: pointers stay inside the checked slices
                    unsafe {
                        let (kh, kw) = g.kernel;
                        let mut acc = [[_mm512_setzero_ps(); V]; P];
                        let ahead = super::super::fc_ahead(g);
                        for s in srcs {
                            let pairs = kw * s.c / 2; // pairs in one kernel row's run
                            // values per pair of weight rows, and channel co's first: in
                            // blocks, or not
                            let w = s.pairs.unwrap_unchecked().as_ptr();
                            let (w0, stride) = match s.pair_width {
                                Some(width) => {
                                    debug_assert_eq!(width, 8 * V, "see `fc_pair_width`");
                                    (w.add(co * kh * kw * s.c), 16 * V)
                                }
                                None => (w.add(2 * co), 2 * g.cout),
                            };
                            let mut at = [std::ptr::null::<f32>(); P];
                            for j in 0..P {
                                at[j] = s.data.as_ptr().add(pix[j] * s.c);
                            }
                            for dy in 0..kh {
                                let wrow = w0.add(dy * pairs * stride);
                                if dy > 0 {
                                    for a in at.iter_mut() {
                                        *a = a.add(g.w * s.c);
                                    }
                                }
                                for q in 0..pairs {
                                    let wq = wrow.add(q * stride);
                                    if ahead > 0 {
                                        // (V lines per pair of rows; past the end of the
                                        // weights a prefetch is a harmless hint)
                                        for v in 0..V {
                                            _mm_prefetch::<_MM_HINT_T1>(
                                                wq.cast::<i8>().wrapping_add(ahead + 64 * v),
                                            );
                                        }
                                    }
                                    let mut wv = [_mm512_setzero_ps(); V];
                                    for v in 0..V {
                                        wv[v] = _mm512_loadu_ps(wq.add(16 * v));
                                    }
                                    for j in 0..P {
                                        let two = at[j].add(2 * q).cast::<f64>().read_unaligned();
                                        let a = _mm512_castpd_ps(_mm512_set1_pd(two));
                                        for v in 0..V {
                                            acc[j][v] = _mm512_fmadd_ps(a, wv[v], acc[j][v]);
                                        }
                                    }
                                }
                            }
                        }
                        let zero = _mm256_setzero_ps();
                        // each lane pair's two sums added (into both lanes), then the 8
                        // channels' totals gathered into the low half; two-block tiles (V =
                        // 2) sum both blocks' lane pairs at once, by two two-source permutes
                        // and an add
                        let evens = _mm512_setr_epi32(
                            0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30,
                        );
                        // (only there: with three blocks, the second index vector made the
                        // compiler spill accumulators in two-source tiles)
                        if V == 2 {
                            let odds = _mm512_setr_epi32(
                                1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
                            );
                            let bv = _mm512_loadu_ps(bias.as_ptr().add(co));
                            for k in 0..P / W {
                                let mut x = _mm512_setzero_ps();
                                for t in 0..W {
                                    let (a, b) = (acc[k * W + t][0], acc[k * W + t][V - 1]);
                                    let sum = _mm512_add_ps(
                                        _mm512_permutex2var_ps(a, evens, b),
                                        _mm512_permutex2var_ps(a, odds, b),
                                    );
                                    x = if t == 0 { sum } else { _mm512_max_ps(x, sum) };
                                }
                                x = _mm512_add_ps(x, bv);
                                if relu {
                                    x = _mm512_max_ps(x, _mm512_setzero_ps());
                                }
                                _mm512_storeu_ps(dst[k].add(co), x);
                            }
                            return;
                        }
                        for j in 0..P {
                            for v in 0..V {
                                let a = acc[j][v];
                                let t = _mm512_add_ps(a, _mm512_permute_ps::<0b10_11_00_01>(a));
                                acc[j][v] = _mm512_permutexvar_ps(evens, t);
                            }
                        }
                        for v in 0..V {
                            let bv = _mm256_loadu_ps(bias.as_ptr().add(co + 8 * v));
                            for k in 0..P / W {
                                let mut x = _mm512_castps512_ps256(acc[k * W][v]);
                                for t in 1..W {
                                    x = _mm256_max_ps(x, _mm512_castps512_ps256(acc[k * W + t][v]));
                                }
                                x = _mm256_add_ps(x, bv);
                                if relu {
                                    x = _mm256_max_ps(x, zero);
                                }
                                _mm256_storeu_ps(dst[k].add(co + 8 * v), x);
                            }
                        }
                    }
                }
            }
        };
    }
    kernels!(avx2, "avx2,fma", tile);
    kernels!(avx512, "avx2,fma,avx512f,avx512vl", tile);
    kernels!(zmm, "avx2,fma,avx512f,avx512vl", paired);
    kernels!(lanes, "avx2,fma,avx512f,avx512vl", lanes16);
}
