use super::act::*;
use super::gemm::*;
use super::pack::*;
use super::plan::*;
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
        span: 1,
        wide: None,
    }
}

/// The direct kernel (16-lane tiles, 8-lane ones with either register file) and im2col +
/// GEMM agree: thin and wide layers, stride, padding, two sources, a position count that
/// no register tile divides, fused 2 x 2 max pooling on odd maps (floor and ceil: windows
/// cut by the edge).
#[test]
#[cfg_attr(
    not(host_avx2),
    ignore = "this CPU has no AVX2/FMA: the direct kernels do not run here"
)]
fn direct_avx2_matches_gemm() {
    assert!(
        direct::available(),
        "the build saw AVX2/FMA: so must the test"
    );
    direct_matches_gemm(&[2]);
}

/// [`direct_avx2_matches_gemm`] on the AVX-512VL kernels: the 16-lane tiles and the 8-lane
/// tiles with 32 registers.
#[test]
#[cfg_attr(
    not(host_avx512),
    ignore = "this CPU has no AVX-512VL: its kernels do not run here"
)]
fn direct_avx512_matches_gemm() {
    assert!(direct::wide(), "the build saw AVX-512VL: so must the test");
    direct_matches_gemm(&[0, 1]);
}

/// The cases of [`direct_avx2_matches_gemm`] on the kernels `narrows` (0: the 16-lane tiles,
/// 1: the 8-lane tiles with 32 registers, 2: AVX2's).
// Over 100 lines: most of it is the table of cases, each a shape the kernels treat apart.
fn direct_matches_gemm(narrows: &[usize]) {
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
        let kernels = [false, true]
            .into_iter()
            .flat_map(|blocked| narrows.iter().map(move |&narrow| (narrow, blocked)));
        for (narrow, blocked) in kernels {
            direct::UNPAIRED_HERE.set(narrow >= 1);
            direct::NARROW.set(narrow == 2);
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
                let a = conv.forward_via(srcs, true, pool, border);
                let b = conv.forward_via(srcs, false, None, 0);
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
    let batch = |seed: f32, e: usize| -> Vec<f32> { (0..n * e).map(|v| seed + v as f32).collect() };
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
                let (maps0, logits0) = net.forward_branch_with(b, &input, &prev, Some(false), None);
                let (maps, logits) = net.forward_branch_with(b, &input, &prev, Some(true), None);
                // (no Debug dump of the maps: thousands of values)
                assert!(
                    maps == maps0,
                    "{name} branch {b}, {n} examples: maps differ"
                );
                assert!(logits == logits0, "{name} branch {b}, {n} examples: logits");
                prev.push(maps0);
            }
        }
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
        let narrow = head.forward_via(&srcs, false, None, 0);
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

/// A hidden conv with outputs not a multiple of 8 runs widened and keeps its own channels:
/// the same maps as im2col + GEMM, with pooling and a stored border, and a zero border.
#[test]
#[cfg_attr(
    not(host_avx2),
    ignore = "this CPU has no AVX2/FMA: the direct kernels do not run here"
)]
fn narrow_hidden_conv_runs_widened() {
    let mut rng = StdRng::seed_from_u64(9);
    for (widths, cout) in [(vec![1], 4), (vec![1], 28), (vec![8, 4], 12), (vec![3], 7)] {
        let conv = layer(&mut rng, &widths, cout, 3, 1, 1).with_narrow_outputs();
        assert!(conv.wide.is_some(), "{widths:?} -> {cout}: runs widened");
        let xs: Vec<Act> = widths
            .iter()
            .map(|&c| Act::new(5, 9, 9, c, random(&mut rng, 5 * 81 * c)))
            .collect();
        let srcs: Vec<&Act> = xs.iter().collect();
        for (pool, border) in [(None, 0), (Some((2, false)), 1), (None, 1)] {
            let a = conv.forward(&srcs, pool, border);
            let b = conv.forward_via(&srcs, false, None, 0);
            let b = pool.map_or(b.clone(), |(side, ceil)| maxpool(&b, side, side, ceil));
            assert_eq!(
                (a.n, a.h, a.w, a.c, a.border),
                (b.n, b.h, b.w, cout, border)
            );
            let plain = a.unbordered();
            for (x, y) in plain.values().iter().zip(b.values()) {
                assert!((x - y).abs() <= 1e-4, "{widths:?} -> {cout}: {x} vs {y}");
            }
            let sum = |v: &[f32]| v.iter().map(|x| x.abs() as f64).sum::<f64>();
            assert_eq!(sum(a.values()), sum(plain.values()), "border values");
        }
    }
}

/// A batch norm folded into the conv before it gives the conv's maps times the scale plus the
/// shift, per channel, on every kernel path (direct, GEMM, widened narrow outputs), with and
/// without the ReLU after.
#[test]
fn folded_batch_norm_is_the_affine_after_the_conv() {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    let device = burn::tensor::Device::default();
    device.seed(4);
    let mut rng = StdRng::seed_from_u64(4);
    for (cin, cout) in [(3, 16), (5, 12), (1, 4)] {
        let conv = Conv2dConfig::new([cin, cout], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
        let scale: Vec<f32> = (0..cout).map(|_| rng.random_range(0.2f32..3.0)).collect();
        let shift: Vec<f32> = (0..cout).map(|_| rng.random_range(-2.0f32..2.0)).collect();
        let x = Act::new(3, 7, 7, cin, random(&mut rng, 3 * 49 * cin));
        let plain = pack(&conv, &[cin], 1, 1, false).forward_via(&[&x], false, None, 0);
        for relu in [false, true] {
            let affine = (scale.clone(), shift.clone());
            let folded =
                pack_folded(&conv, &[cin], 1, 1, relu, Some(&affine)).with_narrow_outputs();
            for direct in [false, true] {
                let y = if direct {
                    folded.forward(&[&x], None, 0)
                } else {
                    folded.forward_via(&[&x], false, None, 0)
                };
                for (px, (a, b)) in y
                    .values()
                    .chunks_exact(cout)
                    .zip(plain.values().chunks_exact(cout))
                    .enumerate()
                {
                    for c in 0..cout {
                        let want = b[c] * scale[c] + shift[c];
                        let want = if relu { want.max(0.0) } else { want };
                        assert!(
                            (a[c] - want).abs() <= 1e-4,
                            "{cin} -> {cout}, relu {relu}, direct {direct}, position {px} channel {c}: {} vs {want}",
                            a[c]
                        );
                    }
                }
            }
        }
    }
}
