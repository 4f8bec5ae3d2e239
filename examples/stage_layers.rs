//! One stage against the monolithic network in one process, warm (each stage run five times
//! after one monolithic run): `stage_layers SPEC NETWORK STAGE ROWS ROUNDS` prints the
//! medians of the monolithic time, the stage run as cascades run it (chunked where it pays)
//! and layer by layer, and each op's time in the layer-by-layer run, each also as a fraction
//! of the monolithic time (the cost model's unit).
use burn::tensor::{Distribution, Tensor};
use onionnet::bench::random_models;
use onionnet::cascade::Engine;
use onionnet::infer::FastModel;
use onionnet::spec::Spec;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    onionnet::alloc::keep_freed_memory();
    let a: Vec<String> = std::env::args().skip(1).collect();
    let spec = Spec::from_file(std::path::Path::new(&a[0]))?;
    let (net, stage, rows, iters): (usize, usize, usize, usize) =
        (a[1].parse()?, a[2].parse()?, a[3].parse()?, a[4].parse()?);
    let device = burn::tensor::Device::default();
    let models = random_models(&spec, &device, 1);
    let fast = FastModel::from_model(&models[net]);
    let mono = FastModel::from_model(&models[0]);
    let [c, h, w] = spec.input.dims();
    let x = fast.input(&Tensor::<4>::random(
        [rows, c, h, w],
        Distribution::Normal(0.0, 1.0),
        &device,
    ));
    let mut prev = Vec::new();
    for s in 0..stage {
        prev.push(fast.stage_scores(s, &x, &prev).0);
    }
    let (mut m, mut ch, mut lb, mut ops) = (vec![], vec![], vec![], vec![]);
    onionnet::workers::awake(|| {
        for _ in 0..iters {
            let t = Instant::now();
            drop(mono.stage_scores(0, &x, &[]));
            m.push(t.elapsed().as_secs_f64() * 1e6);
            for _ in 0..5 {
                let t = Instant::now();
                drop(fast.stage_scores(stage, &x, &prev));
                ch.push(t.elapsed().as_secs_f64() * 1e6);
            }
            for _ in 0..5 {
                let t = Instant::now();
                let (_, times) = fast.stage_profile(stage, &x, &prev);
                lb.push(t.elapsed().as_secs_f64() * 1e6);
                ops.push(
                    times
                        .iter()
                        .map(|d| d.map_or(0.0, |d| d.as_secs_f64() * 1e6))
                        .collect::<Vec<_>>(),
                );
            }
        }
    });
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m, c, l) = (med(&mut m), med(&mut ch), med(&mut lb));
    println!(
        "mono {m:.1} us; stage chunked {c:.1} ({:.4}), layer by layer {l:.1} ({:.4})",
        c / m,
        l / m
    );
    for i in 0..ops[0].len() {
        let mut v: Vec<f64> = ops.iter().map(|r| r[i]).collect();
        let x = med(&mut v);
        if x > 0.0 {
            println!("  op {i}: {x:.1} us ({:.4})", x / m);
        }
    }
    Ok(())
}
