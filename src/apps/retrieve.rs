//! On-the-fly retrieval over image files — the paper's retrieval as a user meets it ("a user
//! wanting to copy the images of cats from a camera"): a trained cascade scans files and
//! folders and returns the images of the query classes. Each query gates stage 1 on its own
//! group's score; several queries share stage 1 and run the later stages once on the union
//! of their survivors. A reader thread decodes the next batches while the cascade runs, so
//! memory stays bounded whatever the number of files: at most [`AHEAD`] decoded batches wait,
//! and only the best `top` hits of each query are kept.

use crate::apps::retrieval::query_gate;
use crate::audit::Audit;
use crate::calibrate::Calibration;
use crate::cascade::Gate;
use crate::checkpoint::Preprocess;
use crate::data::folder::{decode, is_image};
use crate::infer::{EngineKind, prepare, run_stream_on};
use crate::model::Model;
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

/// Decoded batches the reader thread may have ready ahead of the cascade.
pub const AHEAD: usize = 2;

/// A retrieved image: the query's class, its final score (the softmax probability of that
/// class) and the number of stages it went through.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub path: PathBuf,
    pub query: usize,
    pub score: f32,
    pub stages: usize,
}

/// What a scan did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Images decoded and run through the cascade.
    pub read: usize,
    /// Image files that could not be decoded, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Per query: images rejected by an early stage.
    pub rejected: Vec<usize>,
    /// Per query: images retrieved (before keeping the best `top`).
    pub retrieved: Vec<usize>,
    pub seconds: f64,
    /// Per query: the best hits, best first.
    pub hits: Vec<Vec<Hit>>,
    /// Per query, with [`ScanOptions::audit`]: what auditing its rejected images saw.
    pub audit: Vec<Audit>,
    /// Time spent on the audit (not in `seconds`).
    pub audit_seconds: f64,
}

/// A trained network at an operating point, with what turns a file into its input.
#[derive(Clone, Copy)]
pub struct Operating<'a> {
    pub model: &'a Model,
    pub preprocess: &'a Preprocess,
    /// The thresholds of the early stages (`None` for the monolithic network).
    pub calibration: Option<&'a Calibration>,
}

/// How a scan runs.
#[derive(Debug, Clone, Copy)]
pub struct ScanOptions {
    /// Images per batch.
    pub batch: usize,
    /// Hits kept per query.
    pub top: usize,
    pub engine: EngineKind,
    /// Send this seeded fraction of each query's rejected images through the remaining
    /// stages anyway and estimate the live TPR ([`crate::audit`]); the audit's time is kept
    /// out of [`Summary::seconds`].
    pub audit: Option<f64>,
}

/// Every image file under `roots` (files, and folders walked recursively in name order, each
/// once however many links lead to it), found as the walk goes: nothing is listed ahead.
pub fn image_files(roots: Vec<PathBuf>) -> impl Iterator<Item = PathBuf> {
    let mut stack: Vec<PathBuf> = roots.into_iter().rev().collect();
    // (a folder reached again through a link is walked once: no loop, no duplicates)
    let mut seen = std::collections::HashSet::new();
    std::iter::from_fn(move || {
        while let Some(p) = stack.pop() {
            if p.is_dir() {
                if !seen.insert(std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone())) {
                    continue;
                }
                let mut entries: Vec<PathBuf> = std::fs::read_dir(&p)
                    .map(|rd| rd.flatten().map(|e| e.path()).collect())
                    .unwrap_or_default();
                entries.sort();
                stack.extend(entries.into_iter().rev());
            } else if is_image(&p) {
                return Some(p);
            }
        }
        None
    })
}

/// Runs a network at its operating point over the images under `roots`, retrieving those of
/// the fine classes `queries`; `progress` hears after each batch how many images were read.
pub fn scan(
    op: Operating,
    queries: &[usize],
    roots: Vec<PathBuf>,
    opts: ScanOptions,
    device: &Device,
    mut progress: impl FnMut(usize),
) -> Summary {
    let t0 = Instant::now();
    let (model, pre) = (op.model, op.preprocess);
    let stages = model.num_stages();
    // each query's s-class and threshold at every early stage (its query gate's one pair)
    let gates: Vec<Vec<(usize, f32)>> = queries
        .iter()
        .map(|&q| {
            let own = query_gate(model, op.calibration, q).per_stage;
            own.into_iter().map(|pairs| pairs[0]).collect()
        })
        .collect();
    // the union: a row goes on where any query's group passes
    let gate = Gate {
        per_stage: (0..stages - 1)
            .map(|s| {
                let mut u: Vec<(usize, f32)> = gates.iter().map(|g| g[s]).collect();
                u.sort_by_key(|p| p.0);
                u.dedup_by_key(|p| p.0);
                u
            })
            .collect(),
    };
    let fast = prepare(opts.engine, &[model]).pop().flatten();
    let batches = reader(roots, pre.clone(), opts.batch.max(1));
    let mut sum = Summary {
        rejected: vec![0; queries.len()],
        retrieved: vec![0; queries.len()],
        hits: vec![Vec::new(); queries.len()],
        audit: vec![Audit::default(); queries.len()],
        ..Summary::default()
    };
    let mut batch_index = 0u64;
    let mut audit_seconds = 0.0;
    let [c, h, w] = pre.input;
    let classes: Vec<usize> = (0..stages).map(|s| model.stage(s).classes).collect();
    for (paths, px, skipped) in batches {
        sum.skipped.extend(skipped);
        let n = paths.len();
        if n == 0 {
            continue;
        }
        let x = Tensor::<4>::from_data(TensorData::new(px, [n, c, h, w]), device);
        let out = run_stream_on(model, fast.as_ref(), &x, n, &gate);
        let last = stages - 1;
        let top_class = |row: &[f32]| (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b]));
        let mut rejected: Vec<Vec<usize>> = vec![Vec::new(); queries.len()];
        for (qi, &q) in queries.iter().enumerate() {
            for (i, path) in paths.iter().enumerate() {
                let own = (0..last).all(|s| {
                    let (g, t) = gates[qi][s];
                    out.scores[s][i * classes[s] + g] >= t
                });
                if !own {
                    sum.rejected[qi] += 1;
                    rejected[qi].push(i);
                    continue;
                }
                let row = &out.scores[last][i * classes[last]..(i + 1) * classes[last]];
                if top_class(row) == Some(q) {
                    sum.audit[qi].confirmed += 1;
                    sum.retrieved[qi] += 1;
                    sum.hits[qi].push(Hit {
                        path: path.clone(),
                        query: q,
                        score: row[q],
                        stages: out.reached[i] + 1,
                    });
                }
            }
            keep_best(&mut sum.hits[qi], opts.top, false);
        }
        if let Some(f) = opts.audit {
            let t = Instant::now();
            audit_batch(
                model,
                fast.as_ref(),
                &x,
                queries,
                &rejected,
                f,
                batch_index,
                &mut sum.audit,
            );
            audit_seconds += t.elapsed().as_secs_f64();
        }
        batch_index += 1;
        sum.read += n;
        progress(sum.read);
    }
    for hits in &mut sum.hits {
        keep_best(hits, opts.top, true);
    }
    sum.seconds = t0.elapsed().as_secs_f64() - audit_seconds;
    sum.audit_seconds = audit_seconds;
    sum
}

/// The audit of one batch: for each query, a seeded fraction of the rows it rejected
/// (`rejected[q]`) through every stage; those whose last stage's top class is the query are
/// positives the early stages missed.
#[allow(clippy::too_many_arguments)]
fn audit_batch(
    model: &Model,
    fast: Option<&crate::infer::FastModel>,
    x: &Tensor<4>,
    queries: &[usize],
    rejected: &[Vec<usize>],
    fraction: f64,
    batch_index: u64,
    audit: &mut [Audit],
) {
    let picked: Vec<Vec<usize>> = rejected
        .iter()
        .enumerate()
        .map(|(qi, r)| crate::audit::pick(r, fraction, batch_index * 1000 + qi as u64))
        .collect();
    let mut rows: Vec<usize> = picked.iter().flatten().copied().collect();
    rows.sort_unstable();
    rows.dedup();
    let last = model.num_stages() - 1;
    let k = model.stage(last).classes;
    let tops: Vec<usize> = if rows.is_empty() {
        Vec::new()
    } else {
        let sub = crate::cascade::gather_rows(x.clone(), &mut [], &rows);
        let out = run_stream_on(model, fast, &sub, rows.len(), &Gate::open(&model.spec));
        out.scores[last]
            .chunks_exact(k)
            .map(|row| {
                (0..k)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .unwrap_or(0)
            })
            .collect()
    };
    for (qi, &q) in queries.iter().enumerate() {
        let a = &mut audit[qi];
        a.rejected += rejected[qi].len();
        a.audited += picked[qi].len();
        a.found += picked[qi]
            .iter()
            .filter(|r| tops[rows.binary_search(r).expect("picked rows are audited")] == q)
            .count();
    }
}

/// Keeps the `top` best hits (best first once `now`, else once twice that many gathered).
fn keep_best(hits: &mut Vec<Hit>, top: usize, now: bool) {
    if now || hits.len() > 2 * top.max(1) {
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.path.cmp(&b.path)));
        hits.truncate(top);
    }
}

/// A decoded batch: its files, their pixels (standardised, `[n, c, h, w]`), and the files of
/// that stretch that could not be decoded.
type Batch = (Vec<PathBuf>, Vec<f32>, Vec<(PathBuf, String)>);

/// Batches of the images under `roots`, decoded on a thread of their own (on every core of
/// the pool) at most [`AHEAD`] batches ahead of the reader of the channel.
fn reader(roots: Vec<PathBuf>, pre: Preprocess, batch: usize) -> impl Iterator<Item = Batch> {
    let (tx, rx) = sync_channel::<Batch>(AHEAD);
    std::thread::spawn(move || {
        let mut files = image_files(roots);
        loop {
            let chunk: Vec<PathBuf> = files.by_ref().take(batch).collect();
            if chunk.is_empty() {
                break;
            }
            let decoded: Vec<_> = chunk.par_iter().map(|p| decode(p, pre.input)).collect();
            let (mut paths, mut px, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
            for (p, d) in chunk.into_iter().zip(decoded) {
                match d {
                    Ok(v) => {
                        px.extend(v.into_iter().map(|x| (x - pre.mean) / pre.std));
                        paths.push(p);
                    }
                    Err(e) => skipped.push((p, e.to_string())),
                }
            }
            if tx.send((paths, px, skipped)).is_err() {
                break;
            }
        }
    });
    rx.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_found_recursively_in_name_order() {
        let d = std::env::temp_dir().join(format!("onionnet-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("b/c")).unwrap();
        for f in ["a.png", "b/z.JPG", "b/c/y.jpeg", "b/notes.txt", "x.gif"] {
            std::fs::write(d.join(f), b"").unwrap();
        }
        let found: Vec<PathBuf> = image_files(vec![d.clone(), d.join("a.png")]).collect();
        let want: Vec<PathBuf> = ["a.png", "b/c/y.jpeg", "b/z.JPG", "a.png"]
            .iter()
            .map(|f| d.join(f))
            .collect();
        assert_eq!(found, want);
        // a link back up the tree: each folder walked once, no loop
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("..", d.join("b/c/up")).unwrap();
            let found: Vec<PathBuf> = image_files(vec![d.clone()]).collect();
            assert_eq!(found.len(), 3, "{found:?}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn best_hits_kept_in_order() {
        let hit = |s: f32| Hit {
            path: PathBuf::from(format!("{s}")),
            query: 0,
            score: s,
            stages: 2,
        };
        let mut hits: Vec<Hit> = [0.1, 0.9, 0.5, 0.7, 0.3].iter().map(|&s| hit(s)).collect();
        keep_best(&mut hits, 3, false);
        assert_eq!(hits.len(), 5, "kept until more than twice the top");
        keep_best(&mut hits, 2, false);
        assert_eq!(
            hits,
            vec![hit(0.9), hit(0.7)],
            "cut to the top past twice it"
        );
        hits.push(hit(0.8));
        keep_best(&mut hits, 2, true);
        assert_eq!(hits, vec![hit(0.9), hit(0.8)]);
    }
}
