//! Forward time per example of each network's stages against the batch size (what compaction
//! hands the next stage): `cargo run --release --example batch_sizes -- SPEC`.

use burn::tensor::{Distribution, Tensor};
use onionnet::bench::random_models;
use onionnet::spec::Spec;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    onionnet::alloc::keep_freed_memory();
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "specs/fashion-retrieval.toml".into());
    let spec = Spec::from_file(std::path::Path::new(&path))?;
    let device = burn::tensor::Device::default();
    let models = random_models(&spec, &device, 1);
    let [c, h, w] = spec.input.dims();
    println!(
        "{:>6} {:>14} {:>14} {:>14} {:>14}",
        "batch", "mono us/ex", "onion s1 us/ex", "N1 us/ex", "onion s2 us/ex"
    );
    for b in [8, 16, 32, 48, 64, 72, 80, 96, 112, 128, 192, 256] {
        let x = Tensor::<4>::random([b, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let time = |f: &dyn Fn()| {
            f();
            let mut v: Vec<f64> = (0..5)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .collect();
            v.sort_by(f64::total_cmp);
            v[2] * 1e6 / b as f64
        };
        let mono = time(&|| {
            models[0].run_stage(0, &x, &[]).1.into_data();
        });
        let onion = &models[2];
        let s1 = time(&|| {
            onion.run_stage(0, &x, &[]).1.into_data();
        });
        let ns1 = time(&|| {
            models[1].run_stage(0, &x, &[]).1.into_data();
        });
        let (maps, _) = onion.run_stage(0, &x, &[]);
        let prev = vec![maps];
        let s2 = time(&|| {
            onion.run_stage(1, &x, &prev).1.into_data();
        });
        println!("{b:>6} {mono:>14.1} {s1:>14.1} {ns1:>14.1} {s2:>14.1}");
    }
    Ok(())
}
