//! Whole cascade runs at a forced p, each run in its own `workers::awake` scope (one call per
//! batch, the other worker woken each time) against runs inside one outer scope (a stream of
//! batches, workers kept awake), interleaved in one process: `awake_ab SPEC P ROUNDS` prints
//! each network's median time / the monolithic network's in the same round, both ways, and
//! its stage 2's. Each measured run follows an unmeasured one of the same network, as in
//! `onionnet bench`; `ROTATE=1` rotates the networks' order from round to round as it does.
//! `awake_ab SPEC P ROUNDS chunks` compares instead, each call in its own scope, the thin
//! leading layers run chunk by chunk wherever they fit (before the twelfth round) against
//! the default rule (where their maps spill L2, or on fewer than 8 examples per thread); the
//! monolithic network's median time is printed beside, since it runs under the rule too;
//! `prefetch`, without (the default) and with the next fc layer's weights prefetched;
//! `fcahead`, fc layers that stream their weights without and with (the default) their own
//! prefetches 16 KB ahead; `shared`, layers split into fixed tasks against shared out as the
//! threads come for them (the default); `linger`, the workers going idle as soon as a call
//! returns against polling for work for 1 ms after it (the default).
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
    let (p, rounds): (f64, usize) = (a[1].parse()?, a[2].parse()?);
    let device = burn::tensor::Device::default();
    let models: Vec<FastModel> = random_models(&spec, &device, 1)
        .iter()
        .map(FastModel::from_model)
        .collect();
    let [c, h, w] = spec.input.dims();
    let batch = 128;
    let x = models[0].input(&Tensor::<4>::random(
        [batch, c, h, w],
        Distribution::Normal(0.0, 1.0),
        &device,
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let once = |m: &FastModel, rng: &mut rand::rngs::StdRng| {
        let out = run_pooled(m, x.clone(), batch, |s, scores| {
            let rows = scores.len() / m.stage(s).classes;
            let mut keep = vec![false; rows];
            for i in sample(rng, rows, (p * rows as f64).round() as usize) {
                keep[i] = true;
            }
            keep
        });
        (
            out.timing.total().as_secs_f64(),
            out.timing.stage.get(1).map_or(0.0, |d| d.as_secs_f64()),
        )
    };
    let rotate = std::env::var("ROTATE").is_ok();
    // what the two modes (0, 1) differ in, and their names
    let choice = a.get(3).map_or("scope", String::as_str);
    let names = match choice {
        "scope" => ["own scope", "outer scope"],
        "chunks" => ["chunked", "rule"],
        "prefetch" => ["no prefetch", "prefetch"],
        "fcahead" => ["no fc ahead", "fc ahead"],
        "shared" => ["fixed tasks", "shared"],
        "linger" => ["no linger", "linger"],
        other => anyhow::bail!(
            "unknown comparison {other:?}: scope, chunks, prefetch, fcahead, shared or linger"
        ),
    };
    // ratio[mode][network]
    let mut ratio = vec![vec![Vec::new(); 3]; 2];
    let mut s2 = ratio.clone();
    for r in 0..rounds {
        for mode in [r % 2, 1 - r % 2] {
            let mut t = [(0.0, 0.0); 3];
            for k in 0..3 {
                let i = if rotate { (k + r) % 3 } else { k };
                let m = &models[i];
                onionnet::infer::chunk_below(
                    Some(usize::MAX).filter(|_| choice == "chunks" && mode == 0),
                );
                onionnet::infer::set_prefetch(choice == "prefetch" && mode == 1);
                onionnet::infer::set_shared(!(choice == "shared" && mode == 0));
                onionnet::workers::set_linger(std::time::Duration::from_micros(
                    if choice == "linger" && mode == 0 {
                        0
                    } else {
                        1000
                    },
                ));
                onionnet::infer::set_fc_ahead(if choice == "fcahead" && mode == 0 {
                    0
                } else {
                    16 << 10
                });
                t[i] = if !(choice == "scope" && mode == 1) {
                    once(m, &mut rng);
                    once(m, &mut rng)
                } else {
                    onionnet::workers::awake(|| {
                        once(m, &mut rng);
                        once(m, &mut rng)
                    })
                };
            }
            ratio[mode][0].push(t[0].0 * 1e6);
            for i in 1..3 {
                ratio[mode][i].push(t[i].0 / t[0].0);
                s2[mode][i].push(t[i].1 / t[0].0);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (mode, name) in names.iter().enumerate() {
        let [mono, ns, onion] = [0, 1, 2].map(|i| median(&mut ratio[mode][i]));
        let [ns2, onion2] = [1, 2].map(|i| median(&mut s2[mode][i]));
        println!(
            "{name:>12}: monolithic {mono:.0} us, non-sharing {ns:.4} (stage 2 {ns2:.4}), onion {onion:.4} (stage 2 {onion2:.4})"
        );
    }
    Ok(())
}
