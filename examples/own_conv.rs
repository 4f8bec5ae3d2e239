//! Feasibility: one 3x3 conv (96 -> C_out over 21x21 maps, batch 128) as NHWC im2col + one
//! gemm call, against burn-flex's conv2d on the same data.
use burn::nn::conv::Conv2dConfig;
use burn::tensor::{Distribution, Tensor};
use std::time::Instant;
fn main() {
    onionnet::alloc::keep_freed_memory();
    let device = burn::tensor::Device::default();
    let (n, c, h, w, k) = (128usize, 96usize, 21usize, 21usize, 3usize);
    for co in [24usize, 72, 96] {
        let conv = Conv2dConfig::new([c, co], [k, k]).init(&device);
        let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let _ = conv.forward(x.clone()).into_data();
        let t = Instant::now();
        for _ in 0..5 {
            let _ = conv.forward(x.clone()).into_data();
        }
        let burn_ms = t.elapsed().as_secs_f64() * 1e3 / 5.0;
        // own: NHWC input, im2col [n*oh*ow, k*k*c], weights [k*k*c, co]
        let xs: Vec<f32> = x
            .clone()
            .permute([0, 2, 3, 1])
            .into_data()
            .try_to_vec()
            .unwrap();
        let wt: Vec<f32> = vec![0.01; k * k * c * co];
        let (oh, ow) = (h - k + 1, w - k + 1);
        let rows = n * oh * ow;
        let kk = k * k * c;
        let mut col = vec![0f32; rows * kk];
        let mut out = vec![0f32; rows * co];
        let run = |col: &mut Vec<f32>, out: &mut Vec<f32>| {
            for b in 0..n {
                for y in 0..oh {
                    for xx in 0..ow {
                        let r = (b * oh + y) * ow + xx;
                        for dy in 0..k {
                            for dx in 0..k {
                                let src = ((b * h + y + dy) * w + xx + dx) * c;
                                let dst = r * kk + (dy * k + dx) * c;
                                col[dst..dst + c].copy_from_slice(&xs[src..src + c]);
                            }
                        }
                    }
                }
            }
            unsafe {
                gemm::gemm(
                    rows,
                    co,
                    kk,
                    out.as_mut_ptr(),
                    1,
                    co as isize,
                    false,
                    col.as_ptr(),
                    1,
                    kk as isize,
                    wt.as_ptr(),
                    1,
                    co as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(0),
                );
            }
        };
        run(&mut col, &mut out);
        let t = Instant::now();
        for _ in 0..5 {
            run(&mut col, &mut out);
        }
        let own_ms = t.elapsed().as_secs_f64() * 1e3 / 5.0;
        let t = Instant::now();
        for _ in 0..5 {
            unsafe {
                gemm::gemm(
                    rows,
                    co,
                    kk,
                    out.as_mut_ptr(),
                    1,
                    co as isize,
                    false,
                    col.as_ptr(),
                    1,
                    kk as isize,
                    wt.as_ptr(),
                    1,
                    co as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(0),
                );
            }
        }
        let gemm_ms = t.elapsed().as_secs_f64() * 1e3 / 5.0;
        let gflop = 2.0 * (rows * kk * co) as f64 / 1e9;
        println!(
            "c_out {co}: burn {burn_ms:.1} ms ({:.0} GFLOP/s), own im2col+gemm {own_ms:.1} ms ({:.0}), gemm alone {gemm_ms:.1} ms ({:.0})",
            gflop / burn_ms * 1e3,
            gflop / own_ms * 1e3,
            gflop / gemm_ms * 1e3
        );
    }
}
