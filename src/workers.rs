//! Keeping the thread pool's workers awake through a cascade run. A layer's parallel loop
//! hands half its work to the other worker; where that worker has gone to sleep (rayon puts
//! idle workers to sleep after a few µs of finding no work), waking it costs more than a thin
//! layer's half (measured before this: the second thread started its first chunk of the
//! retrieval stage 1 8–21 µs late, of 150). OpenMP runtimes keep their threads spinning for a
//! while for the same reason. Here, while [`awake`] runs its closure, every other worker runs
//! a job that polls the pool for work (`rayon::yield_now`) and spins in between.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A spinning worker gives up after this long without work: a bound on the time it can hold
/// up anything else (a job of the caller's that it stole earlier and must return to).
const PATIENCE: Duration = Duration::from_millis(2);

/// Runs `f` on a pool worker (as `rayon::scope` does), with the pool's other workers kept
/// awake and stealing until it returns. Called from inside the pool (a caller's own parallel
/// loop), it just runs `f` there: a worker in the middle of a job must not be made to spin.
pub fn awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let nested = rayon::current_thread_index().is_some();
    let threads = rayon::current_num_threads();
    if nested || threads < 2 || !enabled() {
        return rayon::scope(|_| f());
    }
    let done = AtomicBool::new(false);
    let done = &done;
    rayon::scope(|s| {
        let home = rayon::current_thread_index();
        for _ in 1..threads {
            s.spawn(move |_| {
                // (the calling worker may pick one of these up itself: it returns at once)
                if rayon::current_thread_index() == home {
                    return;
                }
                let mut last = Instant::now();
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() == Some(rayon::Yield::Executed) {
                        last = Instant::now();
                    } else if last.elapsed() > PATIENCE {
                        return;
                    } else {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        let r = f();
        done.store(true, Ordering::Release);
        r
    })
}

/// `ONIONNET_SPIN=0` turns the spinning off, for A/B benchmarks.
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("ONIONNET_SPIN").as_deref() != Ok("0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn awake_runs_parallel_work_and_returns() {
        let sum: u64 = awake(|| (0..100_000u64).into_par_iter().map(|x| x * 2).sum());
        assert_eq!(sum, 100_000 * 99_999);
        // a closure with long serial gaps: the spinners give up and nothing hangs
        let v = awake(|| {
            std::thread::sleep(PATIENCE * 3);
            (0..1000u64).into_par_iter().sum::<u64>()
        });
        assert_eq!(v, 499_500);
    }

    #[test]
    fn nested_calls_inside_the_pool_do_not_spin() {
        // called from inside a parallel loop (an application's own), and within itself
        let v: Vec<usize> = (0..16)
            .into_par_iter()
            .map(|i| awake(|| awake(|| (0..i).into_par_iter().sum::<usize>())))
            .collect();
        let expected: Vec<usize> = (0..16usize).map(|i| i * i.saturating_sub(1) / 2).collect();
        assert_eq!(v, expected);
    }
}
