//! Where the onion's stage 1 loses time in a cascade: stage 1 on a whole batch timed hot
//! (right after itself), right after the onion's stage 2 on ROWS rows (as in a cascade run,
//! the next batch's stage 1 follows it) and right after the monolithic network (whose maps
//! fill the cores' L2), interleaved: `s1_after SPEC BATCH ROWS ROUNDS`.
use burn::tensor::{Distribution, Tensor};
use onionnet::bench::random_models;
use onionnet::cascade::Engine;
use onionnet::infer::FastModel;
use onionnet::spec::Spec;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    onionnet::alloc::keep_freed_memory();
    let a: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(a.len() == 4, "usage: s1_after SPEC BATCH ROWS ROUNDS");
    let spec = Spec::from_file(std::path::Path::new(&a[0]))?;
    let (batch, rows, rounds): (usize, usize, usize) =
        (a[1].parse()?, a[2].parse()?, a[3].parse()?);
    anyhow::ensure!(
        0 < rows && rows <= batch && rounds > 0,
        "ROWS {rows} must lie in 1..=BATCH ({batch}), ROUNDS {rounds} at least 1"
    );
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
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1e6
    };
    // [hot, after stage 2, after the monolithic network, the monolithic network]
    let mut t = vec![Vec::new(); 4];
    onionnet::workers::awake(|| {
        for _ in 0..rounds {
            t[3].push(time(&mut || drop(mono.stage_scores(0, &x, &[]))));
            t[2].push(time(&mut || drop(onion.stage_scores(0, &x, &[]))));
            t[0].push(time(&mut || drop(onion.stage_scores(0, &x, &[]))));
            drop(onion.stage_scores(1, &xs, &prev));
            t[1].push(time(&mut || drop(onion.stage_scores(0, &x, &[]))));
        }
    });
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let m = med(&mut t[3]);
    for (i, name) in ["hot", "after stage 2", "after monolithic"]
        .iter()
        .enumerate()
    {
        let s = med(&mut t[i]);
        println!(
            "stage 1 on {batch} rows {name:>16}: {s:8.1} us ({:.4} of monolithic {m:.1} us)",
            s / m
        );
    }
    Ok(())
}
