//! The onion's gather of few survivors (input and stage-1 maps copied out) timed on its own,
//! as the runner runs it (on a pool worker, the other workers awake): `gather_few SPEC BATCH
//! ITERS` prints the median µs at p = 0.05, 0.1, 0.2 (`ONIONNET_PARALLEL_COPIES=0`: one thread).
use burn::tensor::{Distribution, Tensor};
use onionnet::bench::random_models;
use onionnet::cascade::Engine;
use onionnet::compaction::compact;
use onionnet::infer::FastModel;
use onionnet::spec::Spec;
use rand::SeedableRng;
use rand::seq::index::sample;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    onionnet::alloc::keep_freed_memory();
    let a: Vec<String> = std::env::args().skip(1).collect();
    let spec = Spec::from_file(std::path::Path::new(&a[0]))?;
    let (n, iters): (usize, usize) = (a[1].parse()?, a[2].parse()?);
    let device = burn::tensor::Device::default();
    let onion = FastModel::from_model(&random_models(&spec, &device, 1).remove(2));
    let [c, h, w] = spec.input.dims();
    let x = onion.input(&Tensor::<4>::random(
        [n, c, h, w],
        Distribution::Normal(0.0, 1.0),
        &device,
    ));
    let (mut own, _) = onion.stage_scores(0, &x, &[]);
    onion.prune(&mut own);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for p in [0.05, 0.1, 0.2] {
        let mut keep = vec![false; n];
        for i in sample(&mut rng, n, (p * n as f64).round() as usize) {
            keep[i] = true;
        }
        let plan = compact(&keep);
        let mut t: Vec<f64> = onionnet::workers::awake(|| {
            (0..iters)
                .map(|_| {
                    let (mut prev, xa) = (vec![own.clone()], x.clone());
                    let t = Instant::now();
                    let block = onion.gather(xa, &mut prev, &plan);
                    let e = t.elapsed().as_secs_f64() * 1e6;
                    drop((block, prev));
                    e
                })
                .collect()
        });
        t.sort_by(f64::total_cmp);
        println!(
            "p = {p}: {} rows, gather {:.1} µs (median of {iters})",
            plan.len,
            t[iters / 2]
        );
    }
    Ok(())
}
