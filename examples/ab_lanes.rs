//! Two kernel choices interleaved call by call in one process (this machine's speed drifts
//! too much between runs to compare two): `ab_lanes SPEC NETWORK STAGE ROWS ROUNDS [columns]`
//! times the monolithic network and the stage on ROWS rows under both, and prints each one's
//! median and the stage / monolithic ratio. The choice: the direct kernels' 8-lane tiles
//! against the 16-lane (AVX-512) ones; with `columns`, the one-channel kernel's
//! column-vectorised blocks against its channel-vectorised tiles; with `chunks`, every stage
//! layer by layer against chunked where it pays; with `l16`, convs of 16 output channels on
//! tiles with their lanes over the channels (the first line) against the paired tiles.
use burn::tensor::{Distribution, Tensor};
use onionnet::bench::random_models;
use onionnet::cascade::Engine;
use onionnet::infer::{FastModel, force_8_lanes, force_column_blocks, force_layer_by_layer};
use onionnet::spec::Spec;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    onionnet::alloc::keep_freed_memory();
    let a: Vec<String> = std::env::args().skip(1).collect();
    let spec = Spec::from_file(std::path::Path::new(&a[0]))?;
    let (net, stage, rows, rounds): (usize, usize, usize, usize) =
        (a[1].parse()?, a[2].parse()?, a[3].parse()?, a[4].parse()?);
    let mode = a.get(5).map(String::as_str).unwrap_or("lanes");
    let force = |on: bool| match mode {
        "columns" => force_column_blocks(on),
        "chunks" => force_layer_by_layer(on),
        "l16" => onionnet::infer::set_lanes16(on),
        "reuse" => onionnet::infer::set_reuse(on),
        "shared" => onionnet::infer::set_shared(on),
        _ => force_8_lanes(on),
    };
    let device = burn::tensor::Device::default();
    let models = random_models(&spec, &device, 1);
    let [c, h, w] = spec.input.dims();
    let x = Tensor::<4>::random([rows, c, h, w], Distribution::Normal(0.0, 1.0), &device);
    // per variant: the packed networks, the input, the earlier stages' maps
    let variants: Vec<_> = [true, false]
        .into_iter()
        .map(|eight| {
            force(eight);
            let fast = FastModel::from_model(&models[net]);
            let mono = FastModel::from_model(&models[0]);
            let x = fast.input(&x);
            let mut prev = Vec::new();
            for s in 0..stage {
                prev.push(fast.stage_scores(s, &x, &prev).0);
            }
            (eight, fast, mono, x, prev)
        })
        .collect();
    let time = |f: &dyn Fn()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1e6
    };
    let inner = 10;
    let mut t = vec![(Vec::new(), Vec::new()); variants.len()];
    onionnet::workers::awake(|| {
        for r in 0..rounds {
            // (the order alternates: the first of a round measured faster, both variants)
            let mut both: Vec<_> = variants.iter().zip(t.iter_mut()).collect();
            if r % 2 == 1 {
                both.reverse();
            }
            for ((eight, fast, mono, x, prev), (m, s)) in both {
                force(*eight);
                m.push(time(&|| drop(mono.stage_scores(0, x, &[]))));
                for _ in 0..inner {
                    s.push(time(&|| drop(fast.stage_scores(stage, x, prev))));
                }
            }
        }
    });
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for ((eight, ..), (m, s)) in variants.iter().zip(t.iter_mut()) {
        let (m, s) = (med(m), med(s));
        let name = match (mode, eight) {
            ("columns", true) => "columns ",
            ("columns", false) => "channels",
            ("chunks", true) => "layers  ",
            ("chunks", false) => "chunked ",
            ("l16", true) => "lanes16 ",
            ("l16", false) => "paired  ",
            ("reuse", true) => "reuse   ",
            ("reuse", false) => "per tap ",
            ("shared", true) => "shared  ",
            ("shared", false) => "tasks   ",
            (_, true) => " 8 lanes",
            (_, false) => "16 lanes",
        };
        println!(
            "{name}: monolithic {m:9.1} us, stage {s:9.1} us, stage / monolithic {:.4}",
            s / m
        );
    }
    Ok(())
}
