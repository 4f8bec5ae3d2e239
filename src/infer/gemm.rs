//! The portable path: im2col + GEMM for layers with large weights (the `gemm` crate burn-flex
//! itself uses), and the max pooling the direct kernels do not fuse.

use super::act::Act;
use super::pack::{PackedConv, stack};
use crate::spec::{LayerKind, out_size};
use rayon::prelude::*;
use std::borrow::Cow;
use std::cell::RefCell;

thread_local! {
    /// The im2col buffer, reused across layers and calls.
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out[m, n] (+)= lhs[m, k] · rhs[k, n]`, all row-major and contiguous; `k` is given, `m` and
/// `n` follow from the lengths. `threads`: let gemm split a large product over the rayon pool.
pub(super) fn gemm_rows(
    out: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    k: usize,
    accumulate: bool,
    threads: bool,
) {
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
    /// The layer on im2col + GEMM (an fc layer: GEMMs on the maps in place).
    pub(super) fn gemm_conv(&self, srcs: &[&Act]) -> Act {
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
            // (a layer packed for the direct kernel has no stacked matrix: the tests run the
            // GEMM path on it as the reference)
            let all = if self.all.is_empty() {
                Cow::Owned(stack(&self.parts, kh * kw, cout))
            } else {
                Cow::Borrowed(&self.all)
            };
            assert_eq!(all.len(), kk * cout, "the stacked weights cover the kernel");
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
                        gemm_rows(out_tile, &col[..m * kk], &all, kk, false, false);
                    });
                    // bias and ReLU while the tile is still in cache
                    self.finish(out_tile);
                });
        }
        Act::new(x0.n, oh, ow, cout, out)
    }
}

/// Floats of one tile's im2col (256 KiB: within a core's L2 cache).
pub(super) const TILE_FLOATS: usize = 64 * 1024;

/// Rows `first..` of the im2col matrix, as many as `col` holds: `col[(b, oy, ox), (dy, dx,
/// ci)]` = the input at `(oy * s + dy - p, ox * s + dx - p, ci)`, zero outside; `ci` runs over
/// the channels of every source in order (the concatenation happens here).
pub(super) fn im2col(
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

pub(super) fn maxpool(x: &Act, kernel: usize, stride: usize, ceil: bool) -> Act {
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
