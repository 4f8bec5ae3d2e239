//! One-channel layers (a grey image in) with a fused 2 x 2 pooling, on AVX-512VL: 3 x 3
//! kernels vectorised over output channels, others over output columns.

use crate::infer::direct::{Doubled, Geometry, Kernels, Source};

/// Example `b` of a [`crate::infer::direct::single_channel`] layer: on the channel-vectorised tiles
/// where `d` holds the doubled weights, else on the column-vectorised blocks.
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
#[allow(clippy::too_many_arguments)]
pub(in crate::infer::direct) unsafe fn one_channel_example(
    s: Source,
    g: Geometry,
    bias: &[f32],
    relu: bool,
    b: usize,
    out: *mut f32,
    k: Kernels,
    d: &Option<Doubled>,
) {
    // SAFETY: the caller's (a one-channel layer, AVX-512VL)
    unsafe {
        match d {
            Some(d) => channels_example::<3>(s, g, d, relu, b, out),
            None => single_channel_example(s, g, bias, relu, b, out, k.sixteen),
        }
    }
}

/// Example `b` of a [`crate::infer::direct::single_channel`] layer with a `K` x `K` kernel, vectorised
/// over output channels: each 512-bit vector holds 8 output channels for two adjacent
/// output columns (lanes 2i, 2i + 1: channel i at columns x, x + 1), so that one input
/// load — the two input values under a tap, broadcast as a 64-bit pair — meets a vector
/// of weights (each channel's twice, [`Doubled`]) in one multiply-add, and a column pair
/// is a pooling pair. Against the column-vectorised blocks (`block16`): no transpose to
/// channels-last (two permutes per two pooled positions, which come out contiguous), no
/// columns computed twice (blocks of 4 columns: 28 = 7 x 4, where 16-column blocks
/// compute 32), and inputs loaded once per tile for every kernel row and filter group.
/// Tiles of 4 conv rows x 4 columns for 8 channels ([`reuse_tile`]), 2 rows
/// x 4 columns for 16–32.
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn channels_example<const K: usize>(
    s: Source,
    g: Geometry,
    d: &Doubled,
    relu: bool,
    b: usize,
    out: *mut f32,
) {
    let groups = g.cout / 8;
    let mut g0 = 0;
    // SAFETY: see `channels_tile`; the tiles' rows and columns lie in the output
    unsafe {
        while g0 < groups {
            let n = (groups - g0).min(4);
            match n {
                1 if g.out.0 >= 4 => sweep::<K, 4, 1, true>(s, g, d, relu, b, out, g0),
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
    d: &Doubled,
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
/// of the register rate.
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn reuse_tile<const K: usize, const ROWS: usize>(
    s: Source,
    g: Geometry,
    d: &Doubled,
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
    d: &Doubled,
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

/// Example `b` of a [`crate::infer::direct::single_channel`] layer, vectorised over 8 output columns
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
