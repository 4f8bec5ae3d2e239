//! One stage of one network in a loop, for a profiler: `stage_loop SPEC NETWORK STAGE ROWS
//! ITERS` (NETWORK 0 monolithic, 1 non-sharing, 2 onion; the onion's later stages read the
//! earlier ones' maps of the same rows).
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
    let x = fast.input(&Tensor::<4>::random(
        [rows, c, h, w],
        Distribution::Normal(0.0, 1.0),
        &device,
    ));
    let mut prev = Vec::new();
    for s in 0..stage {
        prev.push(fast.stage_scores(s, &x, &prev).0);
    }
    let t = std::time::Instant::now();
    onionnet::workers::awake(|| {
        for _ in 0..iters {
            drop(fast.stage_scores(stage, &x, &prev));
        }
    });
    println!(
        "{:.2} us per call",
        t.elapsed().as_secs_f64() * 1e6 / iters as f64
    );
    Ok(())
}
