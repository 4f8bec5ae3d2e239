//! The direct kernels on x86-64: the dispatcher from a layer's shape and the CPU's features to
//! a register-tile family, and the walk of stored positions the tiles share. The kernels take
//! their geometry, pointers and ranges as plain arguments (hence clippy's
//! `too_many_arguments` allowed on them): they are called per task or per tile on the hot path.

use super::{Geometry, Source};
use tiles::{avx2, avx512, lanes, zmm};

mod one_channel;
mod tiles;

pub(super) use one_channel::one_channel_example;

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
    #[inline]
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
                            pix[k * W + dy * side + dx] = self.origin + (dy * g.w + dx) * g.stride;
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
        if wide && k.pairs && g.cout == 16 && cos.len() == 16 && g.out != (1, 1) {
            return if pooled {
                lanes::tiles::<2, 16, 4>(srcs, g, bias, relu, first, m, c, out)
            } else {
                lanes::tiles::<2, 16, 1>(srcs, g, bias, relu, first, m, c, out)
            };
        }
        match (wide, super::vectors(nv, wide, pooled), pooled) {
            (true, 3, false) if pairs => {
                zmm::tiles::<3, 6, 1>(srcs, g, bias, relu, first, m, c, out)
            }
            (true, 3, true) if pairs => {
                zmm::tiles::<3, 8, 4>(srcs, g, bias, relu, first, m, c, out)
            }
            (true, 2, false) if pairs => {
                zmm::tiles::<2, 12, 1>(srcs, g, bias, relu, first, m, c, out)
            }
            (true, 2, true) if pairs => {
                zmm::tiles::<2, 12, 4>(srcs, g, bias, relu, first, m, c, out)
            }
            (true, _, false) if pairs => {
                zmm::tiles::<1, 12, 1>(srcs, g, bias, relu, first, m, c, out)
            }
            (true, _, true) if pairs => {
                zmm::tiles::<1, 12, 4>(srcs, g, bias, relu, first, m, c, out)
            }
            (true, 3, false) => avx512::tiles::<3, 6, 1>(srcs, g, bias, relu, first, m, c, out),
            (true, 3, true) => avx512::tiles::<3, 8, 4>(srcs, g, bias, relu, first, m, c, out),
            (true, 2, false) => avx512::tiles::<2, 12, 1>(srcs, g, bias, relu, first, m, c, out),
            (true, 2, true) => avx512::tiles::<2, 12, 4>(srcs, g, bias, relu, first, m, c, out),
            (true, _, false) => avx512::tiles::<1, 12, 1>(srcs, g, bias, relu, first, m, c, out),
            (true, _, true) => avx512::tiles::<1, 12, 4>(srcs, g, bias, relu, first, m, c, out),
            (false, 3, _) => avx2::tiles::<3, 3, 1>(srcs, g, bias, relu, first, m, c, out),
            (false, 2, false) => avx2::tiles::<2, 6, 1>(srcs, g, bias, relu, first, m, c, out),
            (false, 2, true) => avx2::tiles::<2, 4, 4>(srcs, g, bias, relu, first, m, c, out),
            (false, _, false) => avx2::tiles::<1, 12, 1>(srcs, g, bias, relu, first, m, c, out),
            (false, _, true) => avx2::tiles::<1, 12, 4>(srcs, g, bias, relu, first, m, c, out),
        }
    }
}
