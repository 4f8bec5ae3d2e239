//! Compaction + gather + scatter against the stage-2 forward they feed, at p = 0.5 on the
//! retrieval onion (batch 256): `cargo bench --bench compaction`. The overhead must stay a
//! small fraction (≤ 2%) of stage 2's time.

use burn::tensor::{Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use onionnet::bench::random_models;
use onionnet::cascade::{gather_rows, stage_scores};
use onionnet::compaction::compact;
use onionnet::spec::Spec;
use rand::SeedableRng;
use rand::seq::index::sample;
use std::hint::black_box;
use std::path::Path;

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
}

criterion_group!(benches, overhead_vs_stage2);
criterion_main!(benches);
