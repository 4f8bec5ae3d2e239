//! Where a small stage 2 loses time: the onion's stage 2 on ROWS rows timed hot (right after
//! itself), right after its stage 1 on a whole batch (as in a cascade run), and right after
//! a sweep over EVICT_MB of memory, interleaved: `s2_after SPEC BATCH ROWS ROUNDS EVICT_MB`.
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
    let (batch, rows, rounds, mb): (usize, usize, usize, usize) =
        (a[1].parse()?, a[2].parse()?, a[3].parse()?, a[4].parse()?);
    let device = burn::tensor::Device::default();
    let models = random_models(&spec, &device, 1);
    let onion = FastModel::from_model(&models[2]);
    let mono = FastModel::from_model(&models[0]);
    let [c, h, w] = spec.input.dims();
    let x = onion.input(&Tensor::<4>::random(
        [batch, c, h, w],
        Distribution::Normal(0.0, 1.0),
        &device,
    ));
    let xs = x.slice(0..rows);
    let prev = vec![onion.stage_scores(0, &xs, &[]).0];
    let mut junk = vec![1.0f32; mb << 18];
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1e6
    };
    let mut t = vec![Vec::new(); 4];
    onionnet::workers::awake(|| {
        for r in 0..rounds {
            t[3].push(time(&mut || drop(mono.stage_scores(0, &x, &[]))));
            drop(onion.stage_scores(1, &xs, &prev));
            t[0].push(time(&mut || drop(onion.stage_scores(1, &xs, &prev))));
            drop(onion.stage_scores(0, &x, &[]));
            t[1].push(time(&mut || drop(onion.stage_scores(1, &xs, &prev))));
            for v in junk.iter_mut() {
                *v += r as f32;
            }
            t[2].push(time(&mut || drop(onion.stage_scores(1, &xs, &prev))));
        }
    });
    std::hint::black_box(&junk);
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let m = med(&mut t[3]);
    for (i, name) in ["hot", "after stage 1", "after sweep"].iter().enumerate() {
        let s = med(&mut t[i]);
        println!(
            "stage 2 on {rows} rows {name:>14}: {s:8.1} us ({:.4} of monolithic {m:.1} us on {batch})",
            s / m
        );
    }
    Ok(())
}
