//! The register-tile families of the direct convolution, one instantiation per set of CPU
//! features: AVX2's 8-lane tiles (16 registers), the same with AVX-512VL's 32 registers, the
//! 16-lane tiles over paired weights, and the 16-lane tiles over 16 output channels.

/// The register-tile loops, compiled for one set of CPU features.
macro_rules! kernels {
    ($name:ident, $features:literal, $tile:ident) => {
        pub(super) mod $name {
            use crate::infer::direct::{GROUP, Geometry, Source};
            use std::arch::x86_64::*;

            /// Stored positions `first..first + m`, output channels `cos`, of the whole
            /// output `out`.
            /// One loop nest of ~120 lines on purpose: the tile's accumulators must stay in
            /// registers across the taps, sources and the fused pooling.
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            pub(crate) unsafe fn tiles<const V: usize, const P: usize, const W: usize>(
                srcs: &[Source],
                g: Geometry,
                bias: &[f32],
                relu: bool,
                first: usize,
                m: usize,
                cos: std::ops::Range<usize>,
                out: *mut f32,
            ) {
                // SAFETY: see `conv`: pointers stay inside the checked slices
                unsafe {
                    debug_assert_eq!(W, g.window());
                    let per = P / W; // stored positions per tile
                    // stored positions beyond the end repeat the last window, land here
                    let mut spare = vec![0f32; g.cout];
                    let mut walk = crate::infer::direct::x86::Walk::new(g, first);
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
                        for co in blocks {
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
                        }
                        return;
                    }
                    // large weights: tiles in groups, each block of weights read once
                    // per group from memory and again from cache for the group's other
                    // tiles, whose inputs stay in cache meanwhile — a conv whose weights
                    // exceed what L2 holds beside its inputs in groups of `GROUP` (fc
                    // layers and heads, in one group, above)
                    let group = if crate::infer::direct::grouped(srcs, g, ncos) {
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
                        let mut pix = [0usize; P];
                        let mut dst = [std::ptr::null_mut(); P];
                        let mut i = 0;
                        while i < m {
                            next(i, &mut pix, &mut dst);
                            for co in blocks.clone() {
                                $tile::<V, P, W>(srcs, g, &pix, co, bias, relu, &dst);
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
                    let ahead = crate::infer::direct::fc_ahead(g);
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
                                        _mm_prefetch::<_MM_HINT_T1>(row.wrapping_add(32 * V - 4));
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
            /// by the multiply-add itself (an embedded 32-bit broadcast: full rate), where the
            /// paired tile needs two blocks, a broadcast per two multiply-adds and a reduction
            /// of its lane pairs per position; it measured 1–2% faster on the stages whose
            /// convs have 16 filters (the retrieval and AlexNet-like stage 1).
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
            /// 16 weights ([`crate::infer::direct::paired`]): half the multiply-add instructions
            /// and broadcasts of the 8-lane tile, for any `cout` a multiple of 8 (a 16-lane
            /// tile over 16 output channels would leave a 24-channel layer on 8 lanes and
            /// a 16-channel one with a broadcast per multiply-add). The lane pairs are
            /// summed once at the end. Needs every source's [`Source::pairs`].
            /// One loop nest of ~120 lines, as `tiles` and for the same reason.
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
                    let ahead = crate::infer::direct::fc_ahead(g);
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
