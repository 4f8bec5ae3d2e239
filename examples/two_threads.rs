//! How well a stage uses the second thread: `two_threads SPEC NETWORK STAGE ROWS ROUNDS` runs
//! the stage (on ROWS random rows, the earlier stages' maps made first) on a pool of one
//! thread and a pool of two, interleaved round by round in one process, and prints the
//! medians of the whole stage and of each op (layer by layer, `stage_profile`), each as the
//! two-thread time over half the one-thread time (1: the second thread halves the time).
use burn::tensor::{Distribution, Tensor};
use onionnet::bench::random_models;
use onionnet::cascade::Engine;
use onionnet::infer::FastModel;
use onionnet::spec::Spec;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    onionnet::alloc::keep_freed_memory();
    let a: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        a.len() == 5,
        "usage: two_threads SPEC NETWORK STAGE ROWS ROUNDS"
    );
    let spec = Spec::from_file(std::path::Path::new(&a[0]))?;
    let (net, stage, rows, rounds): (usize, usize, usize, usize) =
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
    let pools = [1, 2].map(|n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("a thread pool")
    });
    // [pool]: the stage's times; each op's times per run
    let mut whole = [Vec::new(), Vec::new()];
    let mut ops: [Vec<Vec<f64>>; 2] = [Vec::new(), Vec::new()];
    for r in 0..rounds {
        for k in [r % 2, 1 - r % 2] {
            pools[k].install(|| {
                onionnet::workers::awake(|| {
                    drop(fast.stage_scores(stage, &x, &prev));
                    for _ in 0..5 {
                        let t = Instant::now();
                        drop(fast.stage_scores(stage, &x, &prev));
                        whole[k].push(t.elapsed().as_secs_f64() * 1e6);
                    }
                    for _ in 0..5 {
                        let (_, times) = fast.stage_profile(stage, &x, &prev);
                        ops[k].push(
                            times
                                .iter()
                                .map(|d| d.map_or(0.0, |d| d.as_secs_f64() * 1e6))
                                .collect(),
                        );
                    }
                })
            });
        }
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [one, two] = whole.map(med);
    println!(
        "stage: 1 thread {one:.1} us, 2 threads {two:.1} us, 2 threads / half of 1: {:.3}",
        two / (one / 2.0)
    );
    for i in 0..ops[0][0].len() {
        let [one, two] = [0, 1].map(|k| med(ops[k].iter().map(|r| r[i]).collect()));
        if one > 0.0 {
            println!(
                "  op {i}: 1 thread {one:.1} us, 2 threads {two:.1} us, 2 threads / half of 1: {:.3}",
                two / (one / 2.0)
            );
        }
    }
    Ok(())
}
