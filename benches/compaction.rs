//! Compaction + gather + scatter against the stage-2 forward they feed, at p = 0.5 on the
//! retrieval onion (batch 256), on burn's modules and on the own inference path (the default
//! engine, where stage 2 is several times faster, so the same copies weigh more):
//! `cargo bench --bench compaction`. The overhead must stay a small fraction (≤ 2%) of stage
//! 2's time.

use burn::tensor::{Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use onionnet::bench::random_models;
use onionnet::cascade::{Engine, gather_rows, stage_scores};
use onionnet::compaction::compact;
use onionnet::infer::FastModel;
use onionnet::spec::Spec;
use rand::SeedableRng;
use rand::seq::index::sample;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

fn overhead_vs_stage2(c: &mut Criterion) {
    onionnet::alloc::keep_freed_memory();
    let spec = Spec::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/fashion-retrieval.toml"),
    )
    .unwrap();
    let device = burn::tensor::Device::default();
    let onion = random_models(&spec, &device, 1).remove(2);
    let n = 256;
    let x = Tensor::<4>::random([n, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
    let (mut own, _) = onion.run_stage(0, &x, &[]);
    onion.prune(&mut own);
    let mut keep = vec![false; n];
    for i in sample(&mut rand::rngs::StdRng::seed_from_u64(5), n, n / 2) {
        keep[i] = true;
    }
    let src = compact(&keep).window_sources();
    let mut prev = vec![own.clone()];
    let block = gather_rows(x.clone(), &mut prev, &src);
    let scores = stage_scores(spec.stages[1].loss, onion.run_stage(1, &block, &prev).1);

    let mut g = c.benchmark_group("p=0.5, batch 256, retrieval onion");
    g.bench_function("compaction + gather + scatter", |b| {
        b.iter(|| {
            let plan = compact(black_box(&keep));
            let src = plan.window_sources();
            let mut prev = vec![own.clone()];
            let block = gather_rows(x.clone(), &mut prev, &src);
            let mut out = vec![f32::NAN; n * 10];
            for (i, &r) in src.iter().enumerate() {
                out[r * 10..(r + 1) * 10].copy_from_slice(&scores[i * 10..(i + 1) * 10]);
            }
            black_box((block, prev, out))
        })
    });
    g.bench_function("stage 2 forward on the block", |b| {
        b.iter(|| {
            black_box(stage_scores(
                spec.stages[1].loss,
                onion.run_stage(1, &block, &prev).1,
            ))
        })
    });
    g.finish();

    // the same on the own path: NHWC maps (the input stored within the first conv's padding,
    // as the runner gets it), survivors moved in place
    let fast = FastModel::from_model(&onion);
    let xa = fast.input(&x);
    let (mut own, _) = fast.stage_scores(0, &xa, &[]);
    fast.prune(&mut own);
    let mut prev = vec![own.clone()];
    let block = fast.gather(xa.clone(), &mut prev, &compact(&keep));
    let (_, scores) = fast.stage_scores(1, &block, &prev);
    let mut g = c.benchmark_group("p=0.5, batch 256, retrieval onion, own path");
    // the runner does this work on a pool worker, inside its run, with the other workers kept
    // awake (`workers::awake`; the gather shares its copies among them): timed there, each
    // iteration's copy of the maps (moved into the gather) made outside the timing, and the
    // hand-over to the pool (a thread woken, tens of µs here) outside it too
    g.bench_function("compaction + gather + scatter", |b| {
        b.iter_custom(|iters| {
            onionnet::workers::awake(|| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (mut prev, xa) = (vec![own.clone()], xa.clone());
                    let t = Instant::now();
                    let plan = compact(black_box(&keep));
                    let src = plan.window_sources();
                    let block = fast.gather(xa, &mut prev, &plan);
                    let mut out = vec![f32::NAN; n * 10];
                    for (i, &r) in src.iter().enumerate() {
                        out[r * 10..(r + 1) * 10].copy_from_slice(&scores[i * 10..(i + 1) * 10]);
                    }
                    black_box((&block, &prev, &out));
                    total += t.elapsed();
                }
                total
            })
        })
    });
    g.bench_function("stage 2 forward on the block", |b| {
        b.iter_custom(|iters| {
            onionnet::workers::awake(|| {
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(fast.stage_scores(1, &block, &prev));
                }
                t.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, overhead_vs_stage2);
criterion_main!(benches);
