//! Keeping the thread pool's workers awake through a cascade run. A layer's parallel loop
//! hands half its work to the other worker; where that worker has gone to sleep (rayon puts
//! idle workers to sleep after a few µs of finding no work), waking it costs more than a thin
//! layer's half (measured before this: the second thread started its first chunk of the
//! retrieval stage 1 8–21 µs late, of 150). OpenMP runtimes keep their threads spinning for a
//! while for the same reason. Here, while [`awake`] runs its closure, every other worker runs
//! a job that polls the pool for work (`rayon::yield_now`) and spins in between; and after it
//! returns, every worker keeps polling for a millisecond (`LINGER`), so that the next
//! call finds them awake (figures in `docs/PERFORMANCE.md`).
//!
//! [`share`] deals a parallel loop's work out to the workers as they come for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    if nested || threads < 2 {
        return rayon::scope(|_| f());
    }
    let done = AtomicBool::new(false);
    let done = &done;
    let r = rayon::scope(|s| {
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
    });
    linger(threads);
    r
}

/// How long the workers keep polling for work after [`awake`] returns.
const LINGER: Duration = Duration::from_millis(1);

/// When the last [`awake`] returned (ns since [`epoch`]).
static LAST_END: AtomicU64 = AtomicU64::new(0);

/// Whether the workers linger now (one set of lingering jobs at a time).
static LINGERING: AtomicBool = AtomicBool::new(false);

fn epoch() -> Instant {
    static E: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// Keeps every worker polling the pool for work (and running what it finds) until no
/// [`awake`] has returned for [`LINGER`]: a caller that runs cascades one after another
/// (a stream of batches, a benchmark) finds them awake at the next one's first layer instead
/// of asleep, as OpenMP runtimes keep theirs spinning for a while after a parallel region.
fn linger(threads: usize) {
    LAST_END.store(now_ns(), Ordering::Release);
    if LINGERING.swap(true, Ordering::AcqRel) {
        return;
    }
    let left = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(threads));
    for _ in 0..threads {
        let left = left.clone();
        rayon::spawn(move || {
            loop {
                if rayon::yield_now() == Some(rayon::Yield::Executed) {
                    continue;
                }
                if now_ns().saturating_sub(LAST_END.load(Ordering::Acquire))
                    > LINGER.as_nanos() as u64
                {
                    break;
                }
                std::hint::spin_loop();
            }
            if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                LINGERING.store(false, Ordering::Release);
            }
        });
    }
}

/// Runs `f` on disjoint ranges that together cover `0..n`, on every worker of the pool at
/// once. Each worker owns an equal share of `0..n` and takes pieces from its front (a quarter
/// of what is left, at least `grain`), then, its share done, takes halves of what is left from
/// the back of the share with the most left. Against a fixed split into tasks: the workers
/// finish within a `grain`'s time of each other whatever their speeds (a fixed split leaves
/// the faster one waiting for the other's last task at the end of every layer), and a worker
/// keeps the front of its share from one layer to the next (the maps it wrote stay in its
/// cache) unless it is slower.
pub fn share(n: usize, grain: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    use rayon::prelude::*;
    let grain = grain.max(1);
    let workers = rayon::current_num_threads().min(n.div_ceil(grain));
    if workers <= 1 {
        if n > 0 {
            f(0..n);
        }
        return;
    }
    assert!(n < 1 << 32, "share: {n} items");
    // (each share's range in its own cache lines: the owner and a thief update it)
    #[repr(align(128))]
    struct Share(AtomicU64);
    let pack = |lo: usize, hi: usize| ((hi as u64) << 32) | lo as u64;
    let shares: Vec<Share> = (0..workers)
        .map(|i| Share(AtomicU64::new(pack(i * n / workers, (i + 1) * n / workers))))
        .collect();
    let left = |s: &Share| {
        let v = s.0.load(Ordering::Relaxed);
        ((v >> 32) as usize).saturating_sub(v as u32 as usize)
    };
    // takes a piece of share `s`: from its front (a quarter of what is left) or back (half)
    let take = |s: &Share, front: bool| -> Option<std::ops::Range<usize>> {
        let mut v = s.0.load(Ordering::Relaxed);
        loop {
            let (lo, hi) = (v as u32 as usize, (v >> 32) as usize);
            if lo >= hi {
                return None;
            }
            let k = ((hi - lo) / if front { 4 } else { 2 }).clamp(grain.min(hi - lo), hi - lo);
            let (new, piece) = if front {
                (pack(lo + k, hi), lo..lo + k)
            } else {
                (pack(lo, hi - k), hi - k..hi)
            };
            match s
                .0
                .compare_exchange_weak(v, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(piece),
                Err(now) => v = now,
            }
        }
    };
    (0..workers).into_par_iter().for_each(|i| {
        while let Some(r) = take(&shares[i], true) {
            f(r);
        }
        while let Some(j) = (0..workers)
            .filter(|&j| left(&shares[j]) > 0)
            .max_by_key(|&j| left(&shares[j]))
        {
            if let Some(r) = take(&shares[j], false) {
                f(r);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn awake_runs_parallel_work_and_returns() {
        let sum: u64 = awake(|| (0..100_000u64).into_par_iter().map(|x| x * 2).sum());
        assert_eq!(sum, 100_000 * 99_999);
        // a closure with a long serial part first: the spinners give up and nothing hangs
        let v = awake(|| {
            let serial = (0..20_000_000u64).fold(0u64, |a, x| a.wrapping_add(x ^ (a >> 3)));
            std::hint::black_box(serial);
            (0..1000u64).into_par_iter().sum::<u64>()
        });
        assert_eq!(v, 499_500);
    }

    #[test]
    fn shared_ranges_cover_every_item_once() {
        use std::sync::atomic::AtomicUsize;
        for (n, grain) in [
            (0, 1),
            (1, 1),
            (7, 3),
            (100, 1),
            (1000, 7),
            (523, 5),
            (5, 100),
        ] {
            let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            share(n, grain, |r| {
                assert!(!r.is_empty() && r.end <= n, "range {r:?} of {n}");
                for i in r {
                    seen[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(
                seen.iter().all(|s| s.load(Ordering::Relaxed) == 1),
                "n {n}, grain {grain}"
            );
        }
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
