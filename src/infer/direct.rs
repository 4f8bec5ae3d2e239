//! Direct convolution on channels-last maps, without an im2col copy: for thin layers (a stage
//! 1 keeps a quarter of the channels) the im2col copy of a GEMM convolution weighs as much as
//! the multiply-adds it feeds, since each copied value meets only `cout` filters. Here a
//! register tile of `P` output positions x `V` vectors of 8 output channels reads the input
//! where it lies — for one kernel row, `kw * c` contiguous values per position — and the
//! weights packed `[(dy * kw + dx) * c + ci][cout]`, the same layout as the GEMM path. Sources
//! of an onion layer are summed inside the tile, so nothing is concatenated. x86-64 with
//! AVX2 and FMA only (checked at run time); elsewhere the GEMM path runs.

/// One input source of a layer: an unpadded NHWC map and its weights.
#[derive(Clone, Copy)]
pub(super) struct Source<'a> {
    pub data: &'a [f32],
    /// Channels.
    pub c: usize,
    /// Weights `[(dy * kw + dx) * c + ci][cout]`.
    pub weights: &'a [f32],
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

/// `out[(b, oy, ox)][co]` = bias + the sum over sources of the convolution, ReLU'd when asked.
/// Needs [`available`] and `cout % 8 == 0`; the caller pads the sources beforehand.
pub(super) fn conv(srcs: &[Source], g: Geometry, bias: &[f32], relu: bool, out: &mut [f32]) {
    use rayon::prelude::*;
    assert!(available() && g.cout % 8 == 0 && out.len() == g.n * g.out.0 * g.out.1 * g.cout);
    for s in srcs {
        assert_eq!(s.data.len(), g.n * g.h * g.w * s.c, "source size");
        assert_eq!(
            s.weights.len(),
            g.kernel.0 * g.kernel.1 * s.c * g.cout,
            "weight size"
        );
    }
    assert_eq!(bias.len(), g.cout);
    // tasks of about 4M multiply-adds (thin layers: many positions, so the scheduling cost
    // stays small), yet a few per thread on small batches (a stage 2 after compaction)
    let positions = out.len() / g.cout;
    let macs = g.kernel.0 * g.kernel.1 * srcs.iter().map(|s| s.c).sum::<usize>() * g.cout;
    let chunk = ((4 << 20) / macs)
        .clamp(48, 1024)
        .min(positions.div_ceil(4 * rayon::current_num_threads()))
        .next_multiple_of(12);
    out.par_chunks_mut(chunk * g.cout)
        .enumerate()
        .for_each(|(t, part)| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2/FMA checked above; sizes checked above, every read stays inside its
            // source because each output position's window lies inside the unpadded map
            unsafe {
                x86::chunk(srcs, g, bias, relu, t * chunk, part)
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (t, part);
        });
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Geometry, Source};

    /// Whether the CPU has AVX-512VL: 32 vector registers instead of 16, so larger register
    /// tiles (the same 8-wide arithmetic).
    fn wide() -> bool {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl")
    }

    /// Output positions `first..` (as many as `out` holds).
    pub(super) unsafe fn chunk(
        srcs: &[Source],
        g: Geometry,
        bias: &[f32],
        relu: bool,
        first: usize,
        out: &mut [f32],
    ) {
        let nv = g.cout / 8;
        // P x V accumulators + V weight vectors + 1 broadcast within the vector registers
        unsafe {
            if wide() {
                use avx512::tiles;
                if nv % 3 == 0 {
                    tiles::<3, 6>(srcs, g, bias, relu, first, out)
                } else if nv % 2 == 0 {
                    tiles::<2, 12>(srcs, g, bias, relu, first, out)
                } else {
                    tiles::<1, 12>(srcs, g, bias, relu, first, out)
                }
            } else {
                use avx2::tiles;
                if nv % 3 == 0 {
                    tiles::<3, 3>(srcs, g, bias, relu, first, out)
                } else if nv % 2 == 0 {
                    tiles::<2, 6>(srcs, g, bias, relu, first, out)
                } else {
                    tiles::<1, 12>(srcs, g, bias, relu, first, out)
                }
            }
        }
    }

    /// The register-tile loops, compiled for one set of CPU features.
    macro_rules! kernels {
        ($name:ident, $features:literal) => {
            mod $name {
                use super::super::{Geometry, Source};
                use std::arch::x86_64::*;

                #[target_feature(enable = $features)]
                pub(super) unsafe fn tiles<const V: usize, const P: usize>(
                    srcs: &[Source],
                    g: Geometry,
                    bias: &[f32],
                    relu: bool,
                    first: usize,
                    out: &mut [f32],
                ) {
                    // SAFETY: see `conv`: pointers stay inside the checked slices
                    unsafe {
                        let (oh, ow) = g.out;
                        let m = out.len() / g.cout;
                        // positions beyond the end repeat the last one and land here
                        let mut spare = vec![0f32; g.cout];
                        // the position of `first`, then stepped (no division per position)
                        let (mut b, mut oy, mut ox) =
                            (first / (oh * ow), (first / ow) % oh, first % ow);
                        let mut i = 0;
                        while i < m {
                            let mut pix = [0usize; P];
                            let mut dst = [spare.as_mut_ptr(); P];
                            for j in 0..P {
                                pix[j] = (b * g.h + oy * g.stride) * g.w + ox * g.stride;
                                if i + j < m {
                                    dst[j] = out.as_mut_ptr().add((i + j) * g.cout);
                                    ox += 1;
                                    if ox == ow {
                                        ox = 0;
                                        oy += 1;
                                        if oy == oh {
                                            oy = 0;
                                            b += 1;
                                        }
                                    }
                                } else {
                                    pix[j] = pix[j - 1];
                                }
                            }
                            let mut co = 0;
                            while co < g.cout {
                                tile::<V, P>(srcs, g, &pix, co, bias, relu, &dst);
                                co += 8 * V;
                            }
                            i += P;
                        }
                    }
                }

                /// Output channels `co..co + 8V` of the `P` positions starting at input pixels `pix`.
                #[target_feature(enable = $features)]
                #[inline]
                unsafe fn tile<const V: usize, const P: usize>(
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
                        for s in srcs {
                            let run = kw * s.c; // one kernel row of one position: contiguous
                            for dy in 0..kh {
                                let wrow = s.weights.as_ptr().add(dy * run * g.cout + co);
                                let mut at = [std::ptr::null::<f32>(); P];
                                for j in 0..P {
                                    at[j] = s.data.as_ptr().add((pix[j] + dy * g.w) * s.c);
                                }
                                for t in 0..run {
                                    let wt = wrow.add(t * g.cout);
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
                            for j in 0..P {
                                let mut x = _mm256_add_ps(acc[j][v], bv);
                                if relu {
                                    x = _mm256_max_ps(x, zero);
                                }
                                _mm256_storeu_ps(dst[j].add(co + 8 * v), x);
                            }
                        }
                    }
                }
            }
        };
    }
    kernels!(avx2, "avx2,fma");
    kernels!(avx512, "avx2,fma,avx512f,avx512vl");
}
