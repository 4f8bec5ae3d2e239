//! What the channel concatenation costs next to the conv that reads it (2ch-deep onion
//! stage 2, layer conv2, 64 rows): `cargo run --release --example cat_cost`.

use burn::nn::conv::Conv2dConfig;
use burn::tensor::{Distribution, Tensor};
use std::time::Instant;

fn med(f: &dyn Fn()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[4]
}

fn main() {
    onionnet::alloc::keep_freed_memory();
    let d = burn::tensor::Device::default();
    let a = Tensor::<4>::random([64, 24, 21, 21], Distribution::Normal(0.0, 1.0), &d);
    let b = Tensor::<4>::random([64, 72, 21, 21], Distribution::Normal(0.0, 1.0), &d);
    let conv = Conv2dConfig::new([96, 72], [3, 3]).init(&d);
    let conv_a = Conv2dConfig::new([24, 72], [3, 3]).init(&d);
    let conv_b = Conv2dConfig::new([72, 72], [3, 3])
        .with_bias(false)
        .init(&d);
    let cat = med(&|| {
        let _ = Tensor::cat(vec![a.clone(), b.clone()], 1).into_data();
    });
    let x = Tensor::cat(vec![a.clone(), b.clone()], 1);
    let conv_t = med(&|| {
        let _ = conv.forward(x.clone()).into_data();
    });
    let both = med(&|| {
        let _ = conv
            .forward(Tensor::cat(vec![a.clone(), b.clone()], 1))
            .into_data();
    });
    let sum = med(&|| {
        let _ = (conv_a.forward(a.clone()) + conv_b.forward(b.clone())).into_data();
    });
    let full = Conv2dConfig::new([96, 96], [3, 3]).init(&d);
    let mono = med(&|| {
        let _ = full.forward(x.clone()).into_data();
    });
    println!(
        "cat {cat:.2} ms, conv {conv_t:.2} ms, cat+conv {both:.2} ms, sum of per-input convs {sum:.2} ms, monolithic 96->96 conv {mono:.2} ms"
    );
    println!(
        "per MAC vs monolithic: onion conv {:.2}x",
        (conv_t / 72.0) / (mono / 96.0)
    );
    // per-MAC time of a 96-input 3x3 conv against its number of output channels
    for cout in [16, 24, 32, 48, 64, 72, 80, 96, 128] {
        let c = Conv2dConfig::new([96, cout], [3, 3]).init(&d);
        let t = med(&|| {
            let _ = c.forward(x.clone()).into_data();
        });
        println!(
            "  c_out {cout:>3}: {:.3} ms per output channel",
            t / cout as f64
        );
    }
}
