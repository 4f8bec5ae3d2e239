//! Own-path forward time per example of each network's stages against the rows a stage gets
//! (what compaction hands it), relative to the monolithic network on a full batch:
//! `cargo run --release --example own_rows -- SPEC [ROWS...]`. Where per-row costs exceed the
//! cost model at few rows, this shows at which stage and row count.

use burn::tensor::{Distribution, Tensor};
use onionnet::bench::random_models;
use onionnet::cascade::Engine;
use onionnet::infer::FastModel;
use onionnet::spec::Spec;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    onionnet::alloc::keep_freed_memory();
    // (as a cascade run: the other workers kept awake)
    onionnet::workers::awake(run)
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "specs/fashion-retrieval.toml".into());
    let rows: Vec<usize> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    let rows = if rows.is_empty() {
        vec![4, 6, 8, 13, 26, 64, 128]
    } else {
        rows
    };
    let spec = Spec::from_file(std::path::Path::new(&path))?;
    let device = burn::tensor::Device::default();
    let models = random_models(&spec, &device, 1);
    let fast: Vec<FastModel> = models.iter().map(FastModel::from_model).collect();
    let [c, h, w] = spec.input.dims();
    let reps = 41;
    let time = |f: &dyn Fn(), n: usize| {
        f();
        f();
        let mut v: Vec<f64> = (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v[reps / 2] * 1e6 / n as f64
    };
    let full = 128;
    let x = fast[0].input(&Tensor::<4>::random(
        [full, c, h, w],
        Distribution::Normal(0.0, 1.0),
        &device,
    ));
    let mono = time(&|| drop(fast[0].stage_scores(0, &x, &[])), full);
    println!("monolithic {mono:.2} us/example at {full} rows");
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>10}",
        "rows", "N1", "onion s1", "N2", "onion s2"
    );
    for n in rows {
        let x = fast[0].input(&Tensor::<4>::random(
            [n, c, h, w],
            Distribution::Normal(0.0, 1.0),
            &device,
        ));
        let n1 = time(&|| drop(fast[1].stage_scores(0, &x, &[])), n);
        let s1 = time(&|| drop(fast[2].stage_scores(0, &x, &[])), n);
        let n2 = time(&|| drop(fast[1].stage_scores(1, &x, &[])), n);
        let (maps, _) = fast[2].stage_scores(0, &x, &[]);
        let prev = vec![maps];
        let s2 = time(&|| drop(fast[2].stage_scores(1, &x, &prev)), n);
        println!(
            "{n:>6} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            n1 / mono,
            s1 / mono,
            n2 / mono,
            s2 / mono
        );
    }
    Ok(())
}
