//! Activation maps on the own path: channels-last buffers with the zero border their next
//! conv pads with, and the in-place compaction and stacking of survivors between stages.

use super::direct;
use crate::compaction::Compaction;
use burn::tensor::Tensor;
use rayon::prelude::*;
use std::borrow::Cow;

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
    pub(super) buf: Vec<f32>,
    pub(super) first: usize,
    pub(super) border: usize,
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
    pub(super) fn with_border(
        n: usize,
        h: usize,
        w: usize,
        c: usize,
        border: usize,
        data: Vec<f32>,
    ) -> Act {
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
    pub(super) fn bordered(&self, b: usize) -> Cow<'_, Act> {
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
    pub(super) fn unbordered(&self) -> Cow<'_, Act> {
        self.bordered(0)
    }

    /// [`Self::unbordered`], moved rather than copied where it has no border.
    pub(super) fn into_unbordered(self) -> Act {
        if self.border == 0 {
            self
        } else {
            self.unbordered().into_owned()
        }
    }

    /// `self += z` (a residual), then max(0, ·) where `relu`: `self` without a border, `z` of
    /// the same shape with any border (read in place, not copied).
    pub(super) fn add_residual(&mut self, z: &Act, relu: bool) {
        debug_assert_eq!(
            (self.border, self.n, self.h, self.w, self.c),
            (0, z.n, z.h, z.w, z.c)
        );
        let (row, zb, c) = (self.w * self.c, z.border, self.c);
        let zw = (self.w + 2 * zb) * c;
        let h = self.h;
        let ex = h * row;
        self.values_mut()
            .par_chunks_mut(ex)
            .zip(z.values().par_chunks(z.example_len()))
            .for_each(|(y, z)| {
                for r in 0..h {
                    let from = (r + zb) * zw + zb * c;
                    let (a, b) = (&mut y[r * row..(r + 1) * row], &z[from..from + row]);
                    for (a, b) in a.iter_mut().zip(b) {
                        *a = if relu { (*a + b).max(0.0) } else { *a + b };
                    }
                }
            });
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
    #[inline]
    pub fn values(&self) -> &[f32] {
        let e = self.example_len();
        &self.buf[self.first * e..(self.first + self.n) * e]
    }

    #[inline]
    pub(super) fn values_mut(&mut self) -> &mut [f32] {
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
    /// rows waits, so the rows then gather without another copy (growing by doubling copies
    /// the waiting rows once more on average).
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
    #[inline]
    /// The first `c` channels of every position (border included).
    pub(super) fn narrowed(self, c: usize) -> Act {
        if c == self.c {
            return self;
        }
        let buf = self
            .buf
            .par_chunks_exact(self.c)
            .flat_map_iter(|p| p[..c].iter().copied())
            .collect();
        Act { c, buf, ..self }
    }

    pub(super) fn example_len(&self) -> usize {
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
    /// where a quarter of the rows or fewer survive, into a buffer of the map's own); their
    /// cost against the stage they feed: `cargo bench --bench compaction`.
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
/// is not worth handing to the other thread: below that, one thread copied as fast).
///
/// # Safety
/// Every row lies in a live allocation, no two copies write one row, and no copy reads a row
/// another writes.
pub(super) unsafe fn copy_rows(copies: &[(direct::Out, direct::Out, usize)]) {
    let bytes: usize = copies.iter().map(|c| c.2 * 4).sum();
    // SAFETY: the caller's
    let copy = |&(from, to, len): &(direct::Out, direct::Out, usize)| unsafe {
        std::ptr::copy_nonoverlapping(from.get(), to.get(), len)
    };
    if bytes < 128 << 10 {
        copies.iter().for_each(copy);
    } else {
        copies.par_iter().with_min_len(4).for_each(copy);
    }
}

/// A buffer of `len` values left uninitialised, for a kernel that writes all of them: a
/// zeroed map costs a pass over memory as large as the kernel's own output (measured: a tenth
/// of a thin stage 1's time, whose layers have a quarter of the channels but a sixteenth of
/// the multiply-adds).
pub(super) fn uninit(len: usize) -> Vec<std::mem::MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: MaybeUninit needs no initialisation
    unsafe { v.set_len(len) };
    v
}

/// The buffer of [`uninit`] once every value has been written.
///
/// # Safety
/// Every value of `v` must be initialised.
pub(super) unsafe fn assume_init(v: Vec<std::mem::MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same allocation, layout and length; MaybeUninit<f32> has f32's layout, and the
    // caller guarantees the values are initialised
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast(), v.len(), v.capacity()) }
}
