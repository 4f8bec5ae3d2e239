//! On-the-fly image retrieval (the paper's third application) on Fashion-MNIST.
//!
//! Stage 1 predicts class *groups* — k-means on the class-averaged last hidden activations of
//! a trained monolithic network — and stage 2 the fine class. A query for class c keeps an
//! image at stage 1 only if its score for c's group passes that group's threshold (the other
//! groups are ignored: "any group" would let everything through). An image is retrieved when
//! c is in the top-k of the final softmax. AP per query ranks the whole test set: retrieved
//! images by p(c), then those that reached the last stage without c in their top-k, then the
//! rejected ones (by their stage-1 score); the metric is the mean AP over the 10 classes.

use crate::audit::Audit;
use crate::calibrate::{Calibration, calibrate_model};
use crate::cascade::Gate;
use crate::checkpoint::Checkpoint;
use crate::checkpoint::Preprocess;
use crate::cost::speedup;
use crate::data::folder::{self, ImageFolder};
use crate::data::{Dataset, fashion, stream};
use crate::error::CascadeError;
use crate::infer::{prepare, run_stream_on};
use crate::model::Model;
use crate::onion::NetworkKind;
use crate::report::Row;
use crate::spec::{LabelMap, Spec};
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;

/// Train / calibration / test splits, standardised with the training statistics.
pub struct Splits {
    pub train: Dataset,
    pub calib: Dataset,
    pub test: Dataset,
    /// The training split's mean and standard deviation, applied to every split.
    pub stats: (f32, f32),
    /// The name of each fine class.
    pub class_names: Vec<String>,
}

impl Splits {
    /// Loads Fashion-MNIST from `dir` (at most `train_limit` training images), holding out
    /// `calib` of them (seeded) for validation and calibration, and keeping at most
    /// `test_limit` test images.
    pub fn load(
        dir: &Path,
        train_limit: Option<usize>,
        calib: Option<usize>,
        test_limit: Option<usize>,
        seed: u64,
    ) -> anyhow::Result<Splits> {
        let full = fashion::load_split(dir, "train")?;
        let test = fashion::load_split(dir, "t10k")?;
        let names = fashion::CLASS_NAMES.iter().map(|n| n.to_string()).collect();
        Splits::from_sets(dir, full, test, names, train_limit, calib, test_limit, seed)
    }

    /// Loads an image folder ([`crate::data::folder`]) as the description's input `shape`: its
    /// `test/` subtree is the test split, or, without one, a sixth of its images (seeded);
    /// the rest as in [`Splits::load`]. Also returns the files that could not be decoded.
    pub fn from_folder(
        dir: &Path,
        shape: [usize; 3],
        train_limit: Option<usize>,
        calib: Option<usize>,
        test_limit: Option<usize>,
        seed: u64,
    ) -> anyhow::Result<(Splits, Vec<(std::path::PathBuf, String)>)> {
        let folder = ImageFolder::scan(dir)?;
        let classes = folder.classes.len();
        // the training images stay in their files (a check pass finds the unreadable ones and
        // sums the pixels for the statistics); the test images are decoded into memory, as the
        // evaluation runs every query over all of them
        let pb = crate::train::bar(folder.train.len() as u64, "checking images".into(), false);
        let (files, labels, mut skipped) =
            stream::check(&folder.train, shape, |n| pb.inc(n as u64));
        pb.finish_and_clear();
        let all = Dataset {
            images: Vec::new(),
            labels,
            shape,
            classes,
            files: Some(files),
        };
        let (full, test) = match &folder.test {
            Some(files) => {
                let (test, more) = folder::load(files, shape, classes);
                skipped.extend(more);
                (all, test)
            }
            None => {
                let n = all.len();
                anyhow::ensure!(
                    n >= 3,
                    "{}: {n} readable images: too few to split into training, held-out and test images",
                    dir.display()
                );
                let (full, test) = all.split((n / 6).max(1), seed ^ 0x7e57)?;
                (full, test.in_memory())
            }
        };
        let splits = Splits::from_sets(
            dir,
            full,
            test,
            folder.classes,
            train_limit,
            calib,
            test_limit,
            seed,
        )?;
        Ok((splits, skipped))
    }

    /// The splits of `full` (training images) and `test` from `dir`, after the limits; each
    /// impossible count is an error naming its option.
    #[allow(clippy::too_many_arguments)]
    fn from_sets(
        dir: &Path,
        mut full: Dataset,
        mut test: Dataset,
        class_names: Vec<String>,
        train_limit: Option<usize>,
        calib: Option<usize>,
        test_limit: Option<usize>,
        seed: u64,
    ) -> anyhow::Result<Splits> {
        if let Some(n) = train_limit {
            full = full.take(n);
        }
        if let Some(n) = test_limit {
            test = test.take(n);
        }
        let n = full.len();
        anyhow::ensure!(
            n >= 2,
            "{}: {n} training image(s){}: at least 2 are needed (some are held out)",
            dir.display(),
            train_limit.map_or(String::new(), |l| format!(" with --train-limit {l}"))
        );
        anyhow::ensure!(
            !test.is_empty(),
            "{}: no test image{}",
            dir.display(),
            test_limit.map_or(String::new(), |l| format!(" with --test-limit {l}"))
        );
        let held_out = calib.unwrap_or((n / 6).clamp(1, 5000));
        anyhow::ensure!(
            (1..n).contains(&held_out),
            "--calib-size {held_out}: cannot hold out {held_out} of the {n} training images of {} (1 to {})",
            dir.display(),
            n - 1
        );
        let (mut train, mut calib) = full.split(held_out, seed)?;
        let stats = train.stats();
        train.normalise(stats);
        calib.normalise(stats);
        test.normalise(stats);
        Ok(Splits {
            train,
            calib,
            test,
            stats,
            class_names,
        })
    }

    /// What turns an image file into the networks' input, stored with a model.
    pub fn preprocess(&self) -> Preprocess {
        Preprocess {
            input: self.train.shape,
            mean: self.stats.0,
            std: self.stats.1,
            classes: self.class_names.clone(),
        }
    }
}

/// Mean last-hidden activation of each fine class under a (monolithic) model.
pub fn class_means(model: &Model, data: &Dataset, device: &Device) -> Vec<Vec<f32>> {
    let net = &model.nets[0];
    let mut sums: Vec<Vec<f64>> = Vec::new();
    let mut counts = vec![0usize; data.classes];
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(256) {
        let f = net.module.features(&net.arch, &data.batch(chunk, device));
        let [n, d] = f.dims();
        let v = f.into_data().try_to_vec::<f32>().expect("f32 features");
        if sums.is_empty() {
            sums = vec![vec![0.0; d]; data.classes];
        }
        for i in 0..n {
            let c = data.labels[chunk[i]];
            counts[c] += 1;
            for (s, x) in sums[c].iter_mut().zip(&v[i * d..(i + 1) * d]) {
                *s += *x as f64;
            }
        }
    }
    sums.into_iter()
        .zip(counts)
        .map(|(s, n)| {
            s.into_iter()
                .map(|x| (x / n.max(1) as f64) as f32)
                .collect()
        })
        .collect()
}

fn dist2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum()
}

/// k-means (k-means++ seeding, Lloyd iterations, best of `restarts`) of `points` into `k`
/// non-empty groups; returns each point's group, groups numbered by first appearance.
pub fn kmeans(points: &[Vec<f32>], k: usize, seed: u64, restarts: usize) -> Vec<usize> {
    let n = points.len();
    assert!(k >= 1 && k <= n, "k-means needs 1 <= k <= points");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut best: Option<(f64, Vec<usize>)> = None;
    for _ in 0..restarts.max(1) {
        let mut centres: Vec<Vec<f32>> = vec![points[rng.random_range(0..n)].clone()];
        while centres.len() < k {
            let d: Vec<f64> = points
                .iter()
                .map(|p| centres.iter().map(|c| dist2(p, c)).fold(f64::MAX, f64::min))
                .collect();
            let total: f64 = d.iter().sum();
            let mut pick = rng.random::<f64>() * total;
            let mut idx = n - 1;
            for (i, di) in d.iter().enumerate() {
                if pick < *di {
                    idx = i;
                    break;
                }
                pick -= di;
            }
            centres.push(points[idx].clone());
        }
        let mut assign = vec![0usize; n];
        for _ in 0..100 {
            let new: Vec<usize> = points
                .iter()
                .map(|p| {
                    (0..k)
                        .min_by(|&a, &b| dist2(p, &centres[a]).total_cmp(&dist2(p, &centres[b])))
                        .unwrap()
                })
                .collect();
            // an empty group takes the point farthest from its centre
            let mut new = new;
            for g in 0..k {
                if !new.contains(&g) {
                    let far = (0..n)
                        .max_by(|&a, &b| {
                            dist2(&points[a], &centres[new[a]])
                                .total_cmp(&dist2(&points[b], &centres[new[b]]))
                        })
                        .unwrap();
                    new[far] = g;
                }
            }
            let changed = new != assign;
            assign = new;
            for (g, c) in centres.iter_mut().enumerate() {
                let members: Vec<&Vec<f32>> = points
                    .iter()
                    .zip(&assign)
                    .filter(|(_, a)| **a == g)
                    .map(|(p, _)| p)
                    .collect();
                if !members.is_empty() {
                    for (j, v) in c.iter_mut().enumerate() {
                        *v = members.iter().map(|m| m[j]).sum::<f32>() / members.len() as f32;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let inertia: f64 = points
            .iter()
            .zip(&assign)
            .map(|(p, &a)| dist2(p, &centres[a]))
            .sum();
        if best.as_ref().is_none_or(|(b, _)| inertia < *b) {
            best = Some((inertia, assign));
        }
    }
    // renumber groups by first appearance so the result does not depend on centre order
    let assign = best.unwrap().1;
    let mut order: Vec<usize> = Vec::new();
    for &a in &assign {
        if !order.contains(&a) {
            order.push(a);
        }
    }
    assign
        .iter()
        .map(|a| order.iter().position(|o| o == a).unwrap())
        .collect()
}

/// The description with every `label_map = "kmeans"` stage given `groups`.
pub fn resolve_groups(spec: &Spec, groups: &[usize]) -> Spec {
    let mut out = spec.clone();
    for st in &mut out.stages {
        if st.label_map == LabelMap::KMeans {
            st.label_map = LabelMap::Explicit(groups.to_vec());
        }
    }
    out
}

/// Whether the description still needs k-means groups.
pub fn needs_groups(spec: &Spec) -> bool {
    spec.stages.iter().any(|s| s.label_map == LabelMap::KMeans)
}

/// The number of groups k-means makes: the first `label_map = "kmeans"` stage's classes.
pub fn kmeans_groups(spec: &Spec) -> usize {
    spec.stages
        .iter()
        .find(|s| s.label_map == LabelMap::KMeans)
        .map_or(2, |s| s.classes)
}

/// Computes the groups from a trained monolithic network (k = the k-means stage's classes).
pub fn groups_from(
    mono: &Model,
    spec: &Spec,
    train: &Dataset,
    seed: u64,
    device: &Device,
) -> Vec<usize> {
    kmeans(
        &class_means(mono, train, device),
        kmeans_groups(spec),
        seed,
        20,
    )
}

/// Average precision of a ranking (`relevant[i]` for the i-th ranked item).
pub fn average_precision(relevant: &[bool]) -> f64 {
    let total = relevant.iter().filter(|&&r| r).count();
    if total == 0 {
        return 0.0;
    }
    let mut hits = 0;
    let mut sum = 0.0;
    for (i, &r) in relevant.iter().enumerate() {
        if r {
            hits += 1;
            sum += hits as f64 / (i + 1) as f64;
        }
    }
    sum / total as f64
}

/// Calibrates a saved model and writes its `thresholds.json`.
pub fn calibrate_dir(
    dir: &Path,
    calib: &Dataset,
    targets: &[crate::calibrate::Target],
    device: &Device,
) -> anyhow::Result<Vec<Calibration>> {
    let ck = Checkpoint::new(dir);
    let model = ck.load_model(device)?;
    if model.kind == NetworkKind::Monolithic {
        anyhow::bail!(
            "{}: a monolithic network has no early stage to calibrate",
            dir.display()
        );
    }
    let cals = calibrate_model(&model, calib, targets, device)?;
    ck.save_thresholds(&cals)?;
    Ok(cals)
}

/// One network's retrieval result at one operating point.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub kind: NetworkKind,
    pub target_tpr: Option<f64>,
    /// The time budget that chose the target, if one did.
    pub budget: Option<String>,
    pub map: f64,
    /// mAP of stage 1 alone: every example ranked by its stage-1 score of the query's s-class
    /// (cascades only).
    pub stage1_map: Option<f64>,
    pub ap: Vec<f64>,
    /// Mean over queries of the fraction passing each early stage (of those reaching it).
    pub pass: Vec<f64>,
    /// Stage 1's TPR over the test images: the fraction passing stage 1 for a query of their
    /// own class (its group's s-class).
    pub reached_tpr: Option<f64>,
    /// What that rests on: (positives passing stage 1, positives), each image counted once.
    pub reached: Option<(usize, usize)>,
    pub ms_per_1000: f64,
    /// What auditing the rejected inputs saw (with `RunOptions::audit`).
    pub audit: Option<Audit>,
}

/// The gate of a query for fine class `c`: each early stage passes a row on the score of `c`'s
/// s-class at the calibrated threshold (every row passes where `cal` is `None`).
pub fn query_gate(model: &Model, cal: Option<&Calibration>, c: usize) -> Gate {
    Gate {
        per_stage: match cal {
            None => Vec::new(),
            Some(cal) => (0..model.num_stages() - 1)
                .map(|s| {
                    let g = model.stage(s).s_class(c);
                    vec![(g, cal.thresholds[s][g])]
                })
                .collect(),
        },
    }
}

/// A query's ranking of the rows: those retrieved (the query's class in the top k) by the
/// final score `last`, then those that reached the last stage but were not retrieved, by
/// `last`, then those an early stage rejected, by their stage-1 score `first`.
fn ranking(
    reached: &[usize],
    first: &[f32],
    last: &[f32],
    in_topk: &[bool],
    stages: usize,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..reached.len()).collect();
    let tier = |r: usize| {
        if reached[r] + 1 < stages {
            2
        } else if in_topk[r] {
            0
        } else {
            1
        }
    };
    let key = |r: usize| if tier(r) == 2 { first[r] } else { last[r] };
    order.sort_by(|&a, &b| tier(a).cmp(&tier(b)).then(key(b).total_cmp(&key(a))));
    order
}

/// Refuses networks of different monolithic networks: speed-ups and the cost model compare
/// networks of one monolithic network, the same layers and widths (the split may differ).
/// (`onionnet study` compares its variants with the base's monolithic network on purpose.)
pub fn same_monolithic(models: &[&Model]) -> Result<(), CascadeError> {
    let plain = |m: &Model| -> Vec<(crate::spec::LayerKind, usize)> {
        m.spec
            .layers
            .iter()
            .map(|l| (l.kind.clone(), l.width))
            .collect()
    };
    if let Some(first) = models.first()
        && let Some(other) = models.iter().find(|m| plain(m) != plain(first))
    {
        return Err(CascadeError::Mismatch(format!(
            "{} and {} describe different monolithic networks (layers or widths differ): their times and speed-ups cannot be compared",
            first.spec.source.display(),
            other.spec.source.display()
        )));
    }
    Ok(())
}

/// The test split against the networks and the run's settings.
fn check(
    models: &[(&Model, Vec<Option<Calibration>>)],
    test: &Dataset,
    run: super::RunOptions,
) -> Result<(), CascadeError> {
    if test.is_empty() {
        return Err(CascadeError::Empty("test split".into()));
    }
    for (m, _) in models {
        let want = m.spec.input.dims();
        if test.shape != want {
            return Err(CascadeError::Shape {
                got: test.shape,
                want,
            });
        }
        if m.spec.classes != test.classes {
            return Err(CascadeError::Mismatch(format!(
                "{} has classes = {}, the test split {} classes",
                m.spec.source.display(),
                m.spec.classes,
                test.classes
            )));
        }
    }
    let (batch, pool) = (run.batch, run.pool);
    if batch == 0 || pool == 0 {
        return Err(CascadeError::Empty(format!(
            "batches of {batch} images pooled over {pool} batches (both must be at least 1)"
        )));
    }
    Ok(())
}

/// Evaluates networks (each with its calibrations; `None` = the monolithic network) on the
/// test split, one query per class, measuring time interleaved across networks. The test
/// images run in batches of `batch`; with `pool` > 1 as streams of `pool` batches whose
/// survivors wait for each other before the next stage ([`run_stream_on`]: same scores,
/// stage 2 on fuller blocks).
pub fn evaluate(
    models: &[(&Model, Vec<Option<Calibration>>)],
    test: &Dataset,
    top_k: usize,
    run: super::RunOptions,
    device: &Device,
    quiet: bool,
) -> Result<Vec<Outcome>, CascadeError> {
    let super::RunOptions {
        batch,
        pool,
        engine,
        audit,
    } = run;
    check(models, test, run)?;
    if top_k == 0 || top_k > test.classes {
        return Err(CascadeError::Mismatch(format!(
            "--top-k {top_k}: must be in 1..={} (the classes of the task)",
            test.classes
        )));
    }
    let fast = prepare(engine, &models.iter().map(|(m, _)| *m).collect::<Vec<_>>());
    let n = test.len();
    // (each stream one tensor: the runner cuts it into batches)
    let batches = test.batches(batch.saturating_mul(pool), device);
    let classes = test.classes;
    let points: usize = models.iter().map(|(_, c)| c.len()).sum();
    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((classes * points) as u64)
    };
    pb.set_style(
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {elapsed} {msg}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_prefix("evaluating queries");
    let mut acc: Vec<Vec<Acc>> = models
        .iter()
        .map(|(m, cals)| cals.iter().map(|_| Acc::new(m.num_stages())).collect())
        .collect();
    for c in 0..classes {
        for (mi, (model, cals)) in models.iter().enumerate() {
            for (ci, cal) in cals.iter().enumerate() {
                let gate = query_gate(model, cal.as_ref(), c);
                let t0 = Instant::now();
                let (reached, in_topk, order, first) =
                    run_query(model, fast[mi].as_ref(), &batches, batch, &gate, c, top_k);
                let ms_per_1000 = t0.elapsed().as_secs_f64() * 1000.0 / n as f64 * 1000.0;
                acc[mi][ci].add(model, test, c, (&reached, &order, &first), ms_per_1000);
                if let Some(f) = audit.filter(|_| cal.is_some()) {
                    let seed = (c * 1000 + mi * 10 + ci) as u64;
                    let a = audit_query(
                        model,
                        fast[mi].as_ref(),
                        test,
                        (&reached, &in_topk),
                        (c, top_k),
                        (f, seed),
                        batch,
                        device,
                    );
                    acc[mi][ci].audit.get_or_insert_with(Audit::default).add(&a);
                }
                pb.inc(1);
            }
        }
    }
    pb.finish_and_clear();
    let mut out = Vec::new();
    for (mi, (model, cals)) in models.iter().enumerate() {
        for (ci, cal) in cals.iter().enumerate() {
            let a = &acc[mi][ci];
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let reached = a.reached();
            out.push(Outcome {
                kind: model.kind,
                target_tpr: cal.as_ref().map(|c| c.target_tpr),
                budget: cal.as_ref().and_then(|c| c.budget.clone()),
                map: mean(&a.ap),
                stage1_map: (!a.ap1.is_empty()).then(|| mean(&a.ap1)),
                ap: a.ap.clone(),
                pass: a.pass.iter().map(|p| mean(p)).collect(),
                reached_tpr: reached.map(|(k, n)| k as f64 / n.max(1) as f64),
                reached,
                ms_per_1000: mean(&a.ms),
                audit: a.audit,
            });
        }
    }
    Ok(out)
}

/// One query (class `c`) over the test batches: the last stage each example reached, whether
/// the last stage retrieved it, the examples ranked for that query (see [`ranking`]), and
/// each example's stage-1 score of the query's s-class.
fn run_query(
    model: &Model,
    fast: Option<&crate::infer::FastModel>,
    batches: &[(Vec<usize>, burn::tensor::Tensor<4>)],
    batch: usize,
    gate: &Gate,
    c: usize,
    top_k: usize,
) -> (Vec<usize>, Vec<bool>, Vec<usize>, Vec<f32>) {
    let n = batches.iter().map(|(rows, _)| rows.len()).sum();
    let stages = model.num_stages();
    let (k0, kl) = (model.stage(0).classes, model.stage(stages - 1).classes);
    let g = model.stage(0).s_class(c);
    let mut reached = vec![0usize; n];
    let mut first: Vec<f32> = vec![0.0; n];
    let mut last: Vec<f32> = vec![f32::NAN; n];
    let mut in_topk = vec![false; n];
    for (rows, x) in batches {
        let out = run_stream_on(model, fast, x, batch, gate);
        for (i, &r) in rows.iter().enumerate() {
            reached[r] = out.reached[i];
            first[r] = out.scores[0][i * k0 + g];
            if out.reached[i] + 1 == stages {
                let row = &out.scores[stages - 1][i * kl..(i + 1) * kl];
                last[r] = row[c];
                in_topk[r] = row.iter().filter(|&&v| v > row[c]).count() < top_k;
            }
        }
    }
    let order = ranking(&reached, &first, &last, &in_topk, stages);
    (reached, in_topk, order, first)
}

/// The audit of one query: the survivors the last stage confirms (query class `c` in its
/// top `k`), and a seeded fraction of the rejected rows sent through every stage anyway
/// (timed apart).
#[allow(clippy::too_many_arguments)]
fn audit_query(
    model: &Model,
    fast: Option<&crate::infer::FastModel>,
    test: &Dataset,
    (reached, in_topk): (&[usize], &[bool]),
    (c, top_k): (usize, usize),
    (fraction, seed): (f64, u64),
    batch: usize,
    device: &Device,
) -> Audit {
    let last = model.num_stages() - 1;
    let rejected: Vec<usize> = (0..reached.len()).filter(|&r| reached[r] < last).collect();
    let confirmed = (0..reached.len())
        .filter(|&r| reached[r] == last && in_topk[r])
        .count();
    let rows = crate::audit::pick(&rejected, fraction, seed);
    let t0 = Instant::now();
    let mut found = 0;
    if !rows.is_empty() {
        let out = run_stream_on(
            model,
            fast,
            &test.batch(&rows, device),
            batch,
            &Gate::open(&model.spec),
        );
        let kl = model.stage(last).classes;
        found = out.scores[last]
            .chunks_exact(kl)
            .filter(|row| row.iter().filter(|&&v| v > row[c]).count() < top_k)
            .count();
    }
    Audit {
        confirmed,
        rejected: rejected.len(),
        audited: rows.len(),
        found,
        seconds: t0.elapsed().as_secs_f64(),
    }
}

/// Per-query figures of one network at one operating point, averaged over the queries at the
/// end: AP, the fraction passing each early stage, ms per 1,000 examples; and per stage-1
/// group (queries of one group share their positives and gate), its positives passing.
struct Acc {
    ap: Vec<f64>,
    /// Stage 1 alone's AP (cascades only).
    ap1: Vec<f64>,
    pass: Vec<Vec<f64>>,
    groups: std::collections::BTreeMap<usize, (usize, usize)>,
    ms: Vec<f64>,
    audit: Option<Audit>,
}

impl Acc {
    fn new(stages: usize) -> Self {
        Self {
            ap: Vec::new(),
            ap1: Vec::new(),
            pass: vec![Vec::new(); stages.saturating_sub(1)],
            groups: std::collections::BTreeMap::new(),
            ms: Vec::new(),
            audit: None,
        }
    }

    fn add(
        &mut self,
        model: &Model,
        test: &Dataset,
        c: usize,
        (reached, order, first): (&[usize], &[usize], &[f32]),
        ms: f64,
    ) {
        let stages = model.num_stages();
        let relevant =
            |order: &[usize]| -> Vec<bool> { order.iter().map(|&r| test.labels[r] == c).collect() };
        self.ap.push(average_precision(&relevant(order)));
        if stages > 1 {
            let mut by_first: Vec<usize> = (0..first.len()).collect();
            by_first.sort_by(|&a, &b| first[b].total_cmp(&first[a]));
            self.ap1.push(average_precision(&relevant(&by_first)));
        }
        for (s, pass) in self.pass.iter_mut().enumerate() {
            let reach = reached.iter().filter(|&&r| r >= s).count().max(1);
            pass.push(reached.iter().filter(|&&r| r > s).count() as f64 / reach as f64);
        }
        if stages > 1 {
            let g = model.stage(0).s_class(c);
            let pos: Vec<usize> = (0..reached.len())
                .filter(|&r| model.stage(0).s_class(test.labels[r]) == g)
                .collect();
            let passed = pos.iter().filter(|&&r| reached[r] >= 1).count();
            self.groups.entry(g).or_insert((passed, pos.len()));
        }
        self.ms.push(ms);
    }

    /// Positives passing stage 1 and positives, over the groups queried (`None` without an
    /// early stage).
    fn reached(&self) -> Option<(usize, usize)> {
        (!self.groups.is_empty()).then(|| {
            self.groups
                .values()
                .fold((0, 0), |(k, n), &(a, b)| (k + a, n + b))
        })
    }
}

/// Table rows: speed-ups against the monolithic network (measured and from the cost model at
/// the measured pass fractions).
pub fn rows(spec: &Spec, outcomes: &[Outcome]) -> Vec<Row> {
    let mono = outcomes.iter().find(|o| o.kind == NetworkKind::Monolithic);
    outcomes
        .iter()
        .map(|o| {
            let theory = speedup(spec, o.kind, &o.pass);
            Row {
                network: o.kind.name().into(),
                metric_name: "mAP".into(),
                metric: Some(o.map),
                stage1_metric: o.stage1_map,
                target_tpr: o.target_tpr,
                budget: o.budget.clone(),
                reached_tpr: o.reached_tpr,
                reached_tpr_interval: o
                    .reached
                    .and_then(|(k, n)| crate::calibrate::interval95(k, n)),
                pass_pct: o.pass.first().map(|p| 100.0 * p),
                pass_pct_stages: (o.pass.len() > 1)
                    .then(|| o.pass.iter().map(|p| 100.0 * p).collect()),
                ms_per_1000: Some(o.ms_per_1000),
                speedup_measured: mono.map(|m| m.ms_per_1000 / o.ms_per_1000),
                speedup_theory: Some(theory),
                task: "retrieval".into(),
                setting: None,
                ..Row::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_precision_by_hand() {
        // relevant at ranks 1, 3: (1/1 + 2/3) / 2
        assert!(
            (average_precision(&[true, false, true, false]) - (1.0 + 2.0 / 3.0) / 2.0).abs()
                < 1e-12
        );
        assert_eq!(average_precision(&[false, false]), 0.0);
        assert_eq!(average_precision(&[true, true]), 1.0);
    }

    #[test]
    fn kmeans_finds_obvious_groups() {
        let pts: Vec<Vec<f32>> = [
            [0.0, 0.0],
            [0.1, 0.0],
            [10.0, 10.0],
            [10.0, 10.2],
            [0.0, 0.2],
            [-9.0, 5.0],
        ]
        .iter()
        .map(|p| p.to_vec())
        .collect();
        let g = kmeans(&pts, 3, 7, 10);
        assert_eq!(g, vec![0, 0, 1, 1, 0, 2]);
    }
}
