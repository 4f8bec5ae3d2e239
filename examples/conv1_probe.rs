//! TEMP probe: times layer ops of one stage via stage_profile, median over iters.
use burn::tensor::{Distribution, Tensor};
use onionnet::bench::random_models;
use onionnet::cascade::Engine;
use onionnet::infer::FastModel;
use onionnet::spec::Spec;

fn main() -> anyhow::Result<()> {
    onionnet::alloc::keep_freed_memory();
    let a: Vec<String> = std::env::args().skip(1).collect();
    let spec = Spec::from_file(std::path::Path::new(&a[0]))?;
    let (net, stage, rows, iters): (usize, usize, usize, usize) =
        (a[1].parse()?, a[2].parse()?, a[3].parse()?, a[4].parse()?);
    let device = burn::tensor::Device::default();
    let models = random_models(&spec, &device, 1);
    let fast = FastModel::from_model(&models[net]);
    let [c, h, w] = spec.input.dims();
    let x = fast.input(&Tensor::<4>::random([rows, c, h, w], Distribution::Normal(0.0, 1.0), &device));
    let mut prev = Vec::new();
    for s in 0..stage {
        prev.push(fast.stage_scores(s, &x, &prev).0);
    }
    let mut all: Vec<Vec<Vec<f64>>> = vec![Vec::new(), Vec::new()];
    onionnet::workers::awake(|| {
        for i in 0..iters {
            onionnet::infer::force_column_blocks(i % 2 == 1);
            let (_, t) = fast.stage_profile(stage, &x, &prev);
            all[i % 2].push(t.iter().map(|d| d.map_or(0.0, |d| d.as_secs_f64() * 1e6)).collect());
        }
    });
    for (name, all) in ["channels", "columns"].iter().zip(&all) {
        let n = all[0].len();
        for l in 0..n {
            let mut v: Vec<f64> = all.iter().map(|r| r[l]).collect();
            v.sort_by(f64::total_cmp);
            if v[v.len() / 2] > 0.0 {
                println!("{name} op {l}: {:.1} us", v[v.len() / 2]);
            }
        }
    }
    Ok(())
}
