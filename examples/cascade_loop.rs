//! One network's whole cascade at a forced pass fraction in a loop, for a profiler:
//! `cascade_loop SPEC NETWORK P ITERS` (NETWORK 0 monolithic, 1 non-sharing, 2 onion; batch
//! 128, survivors at random positions, one `workers::awake` scope as a stream of batches);
//! prints the medians of each phase. `MONO=1`: each cascade after two monolithic runs and an
//! unmeasured run of its own (as `onionnet bench` interleaves the networks; `MONO=cold`: right
//! after the monolithic runs), its phases then also as fractions of the
//! monolithic time.
use burn::tensor::{Distribution, Tensor};
use onionnet::bench::random_models;
use onionnet::cascade::{Engine, run_pooled};
use onionnet::infer::FastModel;
use onionnet::spec::Spec;
use rand::SeedableRng;
use rand::seq::index::sample;

fn main() -> anyhow::Result<()> {
    onionnet::alloc::keep_freed_memory();
    let a: Vec<String> = std::env::args().skip(1).collect();
    let spec = Spec::from_file(std::path::Path::new(&a[0]))?;
    let (net, p, iters): (usize, f64, usize) = (a[1].parse()?, a[2].parse()?, a[3].parse()?);
    let device = burn::tensor::Device::default();
    let models = random_models(&spec, &device, 1);
    let model = FastModel::from_model(&models[net]);
    let mono = FastModel::from_model(&models[0]);
    let interleave = std::env::var("MONO").is_ok();
    let warm: usize = std::env::var("WARM").map_or(Ok(1), |w| w.parse())?;
    let [c, h, w] = spec.input.dims();
    let batch = 128;
    let x = model.input(&Tensor::<4>::random(
        [batch, c, h, w],
        Distribution::Normal(0.0, 1.0),
        &device,
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    // phase times (µs): stages..., threshold, compaction, gather, scatter, total, monolithic
    let mut phases: Vec<Vec<f64>> = Vec::new();
    onionnet::workers::awake(|| {
        for _ in 0..iters {
            let mut m = 0.0;
            if interleave {
                for _ in 0..2 {
                    let out = run_pooled(&mono, x.clone(), batch, |_, _| Vec::new());
                    m = out.timing.total().as_secs_f64() * 1e6;
                }
            }
            let mut once = || {
                run_pooled(&model, x.clone(), batch, |s, scores| {
                    let rows = scores.len() / model.stage(s).classes;
                    let mut keep = vec![false; rows];
                    for i in sample(&mut rng, rows, (p * rows as f64).round() as usize) {
                        keep[i] = true;
                    }
                    keep
                })
            };
            if interleave && std::env::var("MONO").as_deref() != Ok("cold") {
                for _ in 0..warm {
                    once();
                }
            }
            let out = once();
            let t = &out.timing;
            let mut v: Vec<f64> = t.stage.iter().map(|d| d.as_secs_f64() * 1e6).collect();
            for d in [t.threshold, t.compaction, t.gather, t.scatter, t.total()] {
                v.push(d.as_secs_f64() * 1e6);
            }
            v.push(m);
            phases.push(v);
        }
    });
    let stages = phases[0].len() - 6;
    let mut names: Vec<String> = (1..=stages).map(|s| format!("stage {s}")).collect();
    names.extend(
        [
            "threshold",
            "compaction",
            "gather",
            "scatter",
            "total",
            "monolithic",
        ]
        .map(String::from),
    );
    for (k, name) in names.iter().enumerate() {
        let med = median((0..iters).map(|i| phases[i][k]).collect());
        if interleave {
            // each phase against the monolithic run just before it
            let frac = median(
                (0..iters)
                    .map(|i| phases[i][k] / phases[i][stages + 5])
                    .collect(),
            );
            println!("{name:>12} {med:9.1} us  {frac:.4}");
        } else if name != "monolithic" {
            println!("{name:>12} {med:9.1} us");
        }
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
