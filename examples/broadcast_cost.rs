//! What an input broadcast costs a direct kernel's multiply-add, on one thread:
//! `broadcast_cost [MILLIONS]` times 12 independent 16-lane multiply-add chains on registers
//! only, then the same with the input a 64-bit pair broadcast from memory (as the 16-lane
//! tiles load theirs) for every multiply-add, every second and every fourth (a broadcast
//! meeting 1, 2 or 4 weight vectors), a 32-bit broadcast for every multiply-add (embedded in
//! it, as a tile with its lanes over 16 output channels would read its inputs), and the
//! 8-lane pair: registers only, and each input a
//! 32-bit value broadcast from memory (as the 8-lane tiles, or a multiply-add with an
//! embedded broadcast). Prints multiply-adds per second and the broadcast runs' fraction.
#[cfg(target_arch = "x86_64")]
mod run {
    use std::arch::x86_64::*;

    const CHAINS: usize = 12;

    /// `n` rounds of one multiply-add on each chain, the input from registers or (with
    /// `loads`) broadcast from a 640-byte buffer; 16 lanes or 8.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    pub unsafe fn chains<const PER: usize, const SINGLE: bool>(
        n: usize,
        loads: bool,
        wide: bool,
    ) -> f32 {
        let src = [1e-3f32; 160];
        let p = std::hint::black_box(src.as_ptr());
        // SAFETY: reads stay in `src` (offsets below 63 * 2 + 1 + 2 * CHAINS + 1 <= 160)
        unsafe {
            if wide {
                // (opaque values: constants would let the compiler fold the register-only loop)
                let w: [__m512; PER] =
                    std::array::from_fn(|j| _mm512_set1_ps(std::hint::black_box(1e-6 * j as f32)));
                let x = _mm512_set1_ps(std::hint::black_box(1.0));
                let mut a = [_mm512_setzero_ps(); CHAINS];
                for i in 0..n {
                    // (odd pairs: consecutive rounds share no broadcast the compiler could
                    // reuse)
                    let q = p.add((i & 63) * 2 + 1);
                    for (k, a) in a.chunks_exact_mut(PER).enumerate() {
                        let v = if loads && SINGLE {
                            // (a 32-bit broadcast, which a multiply-add embeds)
                            _mm512_set1_ps(*q.add(2 * k))
                        } else if loads {
                            _mm512_castpd_ps(_mm512_set1_pd(
                                q.add(2 * k).cast::<f64>().read_unaligned(),
                            ))
                        } else {
                            x
                        };
                        for (a, w) in a.iter_mut().zip(&w) {
                            *a = _mm512_fmadd_ps(v, *w, *a);
                        }
                    }
                }
                a.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
            } else {
                let w = _mm256_set1_ps(std::hint::black_box(1e-6));
                let x = _mm256_set1_ps(std::hint::black_box(1.0));
                let mut a = [_mm256_setzero_ps(); CHAINS];
                for i in 0..n {
                    let q = p.add((i & 63) * 2 + 1);
                    for (k, a) in a.iter_mut().enumerate() {
                        let v = if loads {
                            _mm256_set1_ps(*q.add(2 * k))
                        } else {
                            x
                        };
                        *a = _mm256_fmadd_ps(v, w, *a);
                    }
                }
                let mut lanes = [0.0f32; 8];
                a.iter()
                    .map(|&v| {
                        _mm256_storeu_ps(lanes.as_mut_ptr(), v);
                        lanes.iter().sum::<f32>()
                    })
                    .sum()
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    #[cfg(target_arch = "x86_64")]
    {
        anyhow::ensure!(
            std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl"),
            "needs AVX-512VL"
        );
        let millions: usize = match std::env::args().nth(1) {
            Some(a) => a
                .parse()
                .map_err(|_| anyhow::anyhow!("MILLIONS {a:?}: a whole number expected"))?,
            None => 50,
        };
        let n = millions * 1_000_000;
        let rate = |f: &dyn Fn() -> f32| {
            let t = std::time::Instant::now();
            std::hint::black_box(f());
            (n * 12) as f64 / t.elapsed().as_secs_f64() / 1e9
        };
        // SAFETY (every call): AVX-512VL checked above
        let regs = rate(&|| unsafe { run::chains::<1, false>(n, false, true) });
        println!("16 lanes: registers only {regs:.2} G multiply-adds/s");
        for (per, r) in [
            (
                1,
                rate(&|| unsafe { run::chains::<1, false>(n, true, true) }),
            ),
            (
                2,
                rate(&|| unsafe { run::chains::<2, false>(n, true, true) }),
            ),
            (
                4,
                rate(&|| unsafe { run::chains::<4, false>(n, true, true) }),
            ),
        ] {
            println!(
                "16 lanes, a broadcast per {per} multiply-adds: {r:.2} ({:.0}%)",
                100.0 * r / regs
            );
        }
        let r = rate(&|| unsafe { run::chains::<1, true>(n, true, true) });
        println!(
            "16 lanes, a 32-bit broadcast per multiply-add: {r:.2} ({:.0}%)",
            100.0 * r / regs
        );
        let regs = rate(&|| unsafe { run::chains::<1, false>(n, false, false) });
        let r = rate(&|| unsafe { run::chains::<1, false>(n, true, false) });
        println!(
            " 8 lanes: registers only {regs:.2}, a broadcast per multiply-add {r:.2} ({:.0}%)",
            100.0 * r / regs
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    anyhow::bail!("x86-64 only");
    #[cfg(target_arch = "x86_64")]
    Ok(())
}
