//! Batched cascade inference. A batch runs through stage 1 whole; rows whose scores pass no
//! threshold of interest are rejected and cost nothing more. The survivors are made contiguous
//! with the fewest moves ([`crate::compaction`]); the same rows are gathered from the input and,
//! for the onion, from the earlier branches' maps the next stage reads; the next stage runs on
//! that block only and its scores are scattered back to the original positions. The
//! non-sharing cascade uses the same runner but its stages recompute from the input.
//!
//! Over a stream of batches ([`run_pooled`]) the survivors wait instead: a later stage runs once
//! half a batch of rows (from several input batches) is waiting, or at the stream's end. A
//! stage 2 that would otherwise run on 6 rows of 128 streams its late layers' weights for a
//! handful of positions (measured: the 2ch-deep onion's stage 2 on 6 rows took 18% more per
//! row than on a full batch, its fc layer 5x more); pooled, it runs at full-batch speed.

use crate::compaction::{Compaction, compact};
use crate::onion::{Maps, NetworkKind};
use crate::spec::{Loss, Spec, Stage};
use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};
use std::ops::Range;
use std::time::{Duration, Instant};

/// Drops the maps after each layer that no later branch reads (neither the next weighted
/// layer nor a head at that depth), so they are neither kept nor gathered.
pub fn prune_maps<T>(spec: &Spec, own: &mut [Option<T>]) {
    let layers = &spec.layers;
    for (l, m) in own.iter_mut().enumerate() {
        let read_by_layer = l + 1 < layers.len() && layers[l + 1].kind.is_weighted();
        let read_by_head = spec.stages.iter().any(|s| s.depth == l + 1);
        // (a residual's projection reads the source maps of the branches before its own)
        let read_by_add = layers
            .iter()
            .any(|x| x.kind.projection().is_some_and(|(from, _)| from == l));
        if !(read_by_layer || read_by_head || read_by_add) {
            *m = None;
        }
    }
}

/// What the cascade runner needs from an inference engine (burn's modules, [`crate::model::Model`], or the
/// project's own inference path, [`crate::infer::FastModel`]): run a stage on a block of rows and
/// gather rows of its input and of the maps later stages read.
pub trait Engine: Sync {
    type Input: Send;
    /// One branch's maps after each layer.
    type Maps;
    fn kind(&self) -> NetworkKind;
    fn num_stages(&self) -> usize;
    fn stage(&self, s: usize) -> &Stage;
    /// Stage `s` on `input` reading `prev`: its maps and its scores `[rows, classes_s]`.
    fn stage_scores(
        &self,
        s: usize,
        input: &Self::Input,
        prev: &[Self::Maps],
    ) -> (Self::Maps, Vec<f32>);
    /// Keeps only the maps later stages read.
    fn prune(&self, own: &mut Self::Maps);
    /// The survivors of `plan` made contiguous, in `plan.window_sources()` order, in `x` and
    /// in every map in `prev`.
    fn gather(&self, x: Self::Input, prev: &mut [Self::Maps], plan: &Compaction) -> Self::Input;
    fn rows(&self, x: &Self::Input) -> usize;
    /// Rows `range` of `x`.
    fn slice(&self, x: &Self::Input, range: Range<usize>) -> Self::Input;
    /// The survivors of `plan` among the rows of a block (`x` and the earlier stages' maps
    /// `prev`, pruned alike), in `plan.window_sources()` order, appended to `into`, a block
    /// waiting for the same stage: each survivor copied once (gathered, then stacked with
    /// the waiting rows, it would be copied twice).
    fn gather_onto(
        &self,
        into: Block<Self>,
        x: &Self::Input,
        prev: &[Self::Maps],
        plan: &Compaction,
    ) -> Block<Self>;
}

/// Rows waiting for a stage: their input and the earlier stages' maps (the onion's).
pub type Block<E> = (<E as Engine>::Input, Vec<<E as Engine>::Maps>);

/// The earlier stages' maps of several blocks, stacked per stage and layer with `cat` (every
/// block has maps at the same places: pruned alike).
pub fn stack_maps<T>(
    blocks: Vec<Vec<Vec<Option<T>>>>,
    cat: impl Fn(Vec<T>) -> T,
) -> Vec<Vec<Option<T>>> {
    let mut blocks = blocks.into_iter();
    let Some(mut out) = blocks.next() else {
        return Vec::new();
    };
    let mut parts: Vec<Vec<Vec<T>>> = out
        .iter_mut()
        .map(|stage| {
            stage
                .iter_mut()
                .map(|m| m.take().into_iter().collect())
                .collect()
        })
        .collect();
    for block in blocks {
        for (st, stage) in block.into_iter().enumerate() {
            for (l, m) in stage.into_iter().enumerate() {
                parts[st][l].extend(m);
            }
        }
    }
    for (stage, ps) in out.iter_mut().zip(parts) {
        for (m, p) in stage.iter_mut().zip(ps) {
            if !p.is_empty() {
                *m = Some(cat(p));
            }
        }
    }
    out
}

/// Per-s-class scores from a head's logits: softmax probabilities (cross-entropy) or `[-f, f]`
/// (hinge), row-major `[n, classes]`.
pub fn stage_scores(loss: Loss, logits: Tensor<2>) -> Vec<f32> {
    match loss {
        Loss::CrossEntropy => softmax(logits, 1)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 scores"),
        Loss::Hinge => logits
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 scores")
            .into_iter()
            .flat_map(|f| [-f, f])
            .collect(),
    }
}

/// Which rows pass each early stage: a row passes stage s if any of its scores for the
/// s-classes of interest reaches that class's threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// `per_stage[s]`: `(s-class, threshold)` pairs of interest for early stage s.
    pub per_stage: Vec<Vec<(usize, f32)>>,
}

impl Gate {
    /// Every row passes every stage (all thresholds at −∞).
    pub fn open(spec: &Spec) -> Gate {
        Gate::uniform(spec, f32::NEG_INFINITY)
    }

    /// No row passes stage 1 (all thresholds at +∞).
    pub fn closed(spec: &Spec) -> Gate {
        Gate::uniform(spec, f32::INFINITY)
    }

    fn uniform(spec: &Spec, t: f32) -> Gate {
        Gate {
            per_stage: spec.stages[..spec.num_stages() - 1]
                .iter()
                .map(|st| (0..st.classes).map(|c| (c, t)).collect())
                .collect(),
        }
    }

    /// Which rows of a block pass stage `s` of `model`, from their scores (`decide` of
    /// [`run_with`]).
    fn decide<E: Engine>(&self, model: &E) -> impl FnMut(usize, &[f32]) -> Vec<bool> + Send {
        let classes: Vec<usize> = (0..model.num_stages())
            .map(|s| model.stage(s).classes)
            .collect();
        move |s, scores| {
            (0..scores.len() / classes[s])
                .map(|i| self.passes(s, scores, classes[s], i))
                .collect()
        }
    }

    /// Whether `row` passes early stage `s`; a stage the gate says nothing of passes every
    /// row (a gate without thresholds runs every stage on every row).
    pub fn passes(&self, s: usize, scores: &[f32], classes: usize, row: usize) -> bool {
        self.per_stage
            .get(s)
            .is_none_or(|pairs| pairs.iter().any(|&(c, t)| scores[row * classes + c] >= t))
    }
}

/// Where the time of one cascade run went.
#[derive(Debug, Clone, Default)]
pub struct Timing {
    /// Forward time of each stage (including moving its scores to the host).
    pub stage: Vec<Duration>,
    /// Deciding who passes (thresholds, or the forced masks of the benchmark).
    pub threshold: Duration,
    /// Planning the fewest-moves compaction.
    pub compaction: Duration,
    /// Gathering the survivors' input rows and the earlier stages' maps into one block.
    pub gather: Duration,
    /// Scattering each stage's scores back to the batch's original positions.
    pub scatter: Duration,
}

impl Timing {
    /// Everything but the stages' forward passes.
    pub fn overhead(&self) -> Duration {
        self.threshold + self.compaction + self.gather + self.scatter
    }

    pub fn total(&self) -> Duration {
        self.stage.iter().sum::<Duration>() + self.overhead()
    }

    /// Each duration divided by `n` (a share of `n` batches' or scenes' time).
    pub fn per(&self, n: u32) -> Timing {
        Timing {
            stage: self.stage.iter().map(|d| *d / n).collect(),
            threshold: self.threshold / n,
            compaction: self.compaction / n,
            gather: self.gather / n,
            scatter: self.scatter / n,
        }
    }

    pub fn add(&mut self, other: &Timing) {
        if self.stage.len() < other.stage.len() {
            self.stage.resize(other.stage.len(), Duration::ZERO);
        }
        for (a, b) in self.stage.iter_mut().zip(&other.stage) {
            *a += *b;
        }
        self.threshold += other.threshold;
        self.compaction += other.compaction;
        self.gather += other.gather;
        self.scatter += other.scatter;
    }
}

/// What a cascade run gives back, in the batch's original row order.
#[derive(Debug, Clone)]
pub struct CascadeOutput {
    /// `scores[s]`: `[n, classes_s]`, NaN for rows that did not reach stage s.
    pub scores: Vec<Vec<f32>>,
    /// The last stage (0-based) each row reached.
    pub reached: Vec<usize>,
    pub timing: Timing,
}

/// Gathers rows `src` (in that order) of the input and of every kept map: the compacted block.
pub fn gather_rows(x: Tensor<4>, prev: &mut [Maps], src: &[usize]) -> Tensor<4> {
    let idx = Tensor::<1, Int>::from_data(
        TensorData::new(
            src.iter().map(|&i| i as i64).collect::<Vec<_>>(),
            [src.len()],
        ),
        &x.device(),
    );
    for maps in prev.iter_mut() {
        for m in maps.iter_mut() {
            *m = m.take().map(|t| t.select(0, idx.clone()));
        }
    }
    x.select(0, idx)
}

/// Runs `model` as a cascade over one batch, rows passing by `gate`'s thresholds.
pub fn run<E: Engine>(model: &E, input: E::Input, gate: &Gate) -> CascadeOutput {
    let n = model.rows(&input);
    run_stream(model, input, n.max(1), gate)
}

/// Runs `model` as a cascade over a stream of batches of `batch` rows of `input`, rows
/// passing by `gate`'s thresholds and survivors pooled across batches ([`run_pooled`]).
pub fn run_stream<E: Engine>(
    model: &E,
    input: E::Input,
    batch: usize,
    gate: &Gate,
) -> CascadeOutput {
    run_pooled(model, input, batch, gate.decide(model))
}

/// Runs `model` as a cascade over one batch; `decide(s, scores)` says which rows of the
/// current block (scores row-major `[rows, classes_s]`) go on to stage s + 1.
pub fn run_with<E: Engine>(
    model: &E,
    input: E::Input,
    decide: impl FnMut(usize, &[f32]) -> Vec<bool> + Send,
) -> CascadeOutput {
    let n = model.rows(&input);
    run_pooled(model, input, n.max(1), decide)
}

/// Runs `model` as a cascade over a stream: stage 1 on consecutive batches of `batch` rows of
/// `input`; the survivors of each stage wait and the next stage runs once at least half a
/// batch of them are waiting (or at the end): enough rows for the kernels to run at full-batch
/// speed, and a block that large (p ≥ 0.5) runs at once instead of being copied again. Scores
/// and timings as [`run_with`] over all of `input`; with `batch` ≥ the rows of `input` it is
/// [`run_with`].
pub fn run_pooled<E: Engine>(
    model: &E,
    input: E::Input,
    batch: usize,
    decide: impl FnMut(usize, &[f32]) -> Vec<bool> + Send,
) -> CascadeOutput {
    // on a pool thread: the engine's parallel loops (layers, gathers) then start where they
    // are called instead of waking a worker each while the caller waits; and the other
    // workers kept awake meanwhile (see `workers`)
    crate::workers::awake(|| run_pooled_here(model, input, batch, decide))
}

/// Runs `model` as a cascade over a stream made of `batches` (each as it is, no copy), rows
/// passing by `gate`'s thresholds and survivors pooled across them as in [`run_pooled`], a
/// later stage running once half the largest batch's rows wait: for inputs that come in
/// pieces (a detector's proposals, scene by scene), which [`run_stream`] would need stacked
/// into one input first. Rows are numbered across the batches in order.
pub fn run_batches<E: Engine>(model: &E, batches: Vec<E::Input>, gate: &Gate) -> CascadeOutput
where
    E::Input: Send,
{
    run_batches_with(model, batches, gate.decide(model))
}

/// [`run_batches`] with `decide` as in [`run_with`].
pub fn run_batches_with<E: Engine>(
    model: &E,
    batches: Vec<E::Input>,
    decide: impl FnMut(usize, &[f32]) -> Vec<bool> + Send,
) -> CascadeOutput
where
    E::Input: Send,
{
    let batches: Vec<E::Input> = batches.into_iter().filter(|x| model.rows(x) > 0).collect();
    let n = batches.iter().map(|x| model.rows(x)).sum();
    let batch = batches.iter().map(|x| model.rows(x)).max().unwrap_or(1);
    let mut it = batches.into_iter();
    crate::workers::awake(|| run_source(model, n, batch, |_| it.next().expect("a batch"), decide))
}

fn run_pooled_here<E: Engine>(
    model: &E,
    input: E::Input,
    batch: usize,
    decide: impl FnMut(usize, &[f32]) -> Vec<bool>,
) -> CascadeOutput {
    assert!(batch > 0, "a batch has rows");
    let n = model.rows(&input);
    // one batch: the input is stage 1's block as it is (no copy)
    let (mut whole, stream) = if batch >= n {
        (Some(input), None)
    } else {
        (None, Some(input))
    };
    let next = |start: usize| match whole.take() {
        Some(x) => x,
        None => model.slice(
            stream.as_ref().expect("a stream"),
            start..(start + batch).min(n),
        ),
    };
    run_source(model, n, batch, next, decide)
}

/// The stream of `n` rows whose batches `next(first row)` gives, in order (each with rows):
/// stage 1 on each batch, later stages once half of `batch` rows wait (or at the end).
fn run_source<E: Engine>(
    model: &E,
    n: usize,
    batch: usize,
    mut next: impl FnMut(usize) -> E::Input,
    mut decide: impl FnMut(usize, &[f32]) -> Vec<bool>,
) -> CascadeOutput {
    let stages = model.num_stages();
    let classes: Vec<usize> = (0..stages).map(|s| model.stage(s).classes).collect();
    let mut out = CascadeOutput {
        scores: classes.iter().map(|&c| vec![f32::NAN; n * c]).collect(),
        reached: vec![0; n],
        timing: Timing {
            stage: vec![Duration::ZERO; stages],
            ..Timing::default()
        },
    };
    // waiting[s]: the rows that passed stage s - 1 (from one batch or several), with their
    // original rows
    let mut waiting: Vec<Option<(Block<E>, Vec<usize>)>> = (0..stages).map(|_| None).collect();
    let mut start = 0;
    while start < n || waiting.iter().any(Option::is_some) {
        if start < n {
            let x = next(start);
            let end = start + model.rows(&x);
            assert!(start < end && end <= n, "batches of rows, n in all");
            let block = ((x, Vec::new()), (start..end).collect());
            advance(model, 0, block, &mut decide, &mut waiting, &mut out);
            start = end;
        }
        for s in 1..stages {
            let ready = waiting[s].as_ref().map_or(0, |(_, r)| r.len());
            if ready > 0 && (2 * ready >= batch || start >= n) {
                let block = waiting[s].take().expect("rows waiting");
                advance(model, s, block, &mut decide, &mut waiting, &mut out);
            }
        }
    }
    out
}

/// Stage `s` on a block whose rows are `rows` of the stream: scores scattered, survivors
/// compacted, gathered and left waiting for stage s + 1.
fn advance<E: Engine>(
    model: &E,
    s: usize,
    ((x, mut prev), rows): (Block<E>, Vec<usize>),
    decide: &mut impl FnMut(usize, &[f32]) -> Vec<bool>,
    waiting: &mut [Option<(Block<E>, Vec<usize>)>],
    out: &mut CascadeOutput,
) {
    let t = Instant::now();
    let (mut own, scores) = model.stage_scores(s, &x, &prev);
    out.timing.stage[s] += t.elapsed();

    let t = Instant::now();
    let c = model.stage(s).classes;
    for (i, &r) in rows.iter().enumerate() {
        out.scores[s][r * c..(r + 1) * c].copy_from_slice(&scores[i * c..(i + 1) * c]);
        out.reached[r] = s;
    }
    out.timing.scatter += t.elapsed();
    if s + 1 == model.num_stages() {
        return;
    }
    let t = Instant::now();
    let keep = decide(s, &scores);
    out.timing.threshold += t.elapsed();
    let t = Instant::now();
    let plan = compact(&keep);
    out.timing.compaction += t.elapsed();
    if plan.len == 0 {
        return;
    }
    let t = Instant::now();
    if model.kind() == NetworkKind::Onion {
        model.prune(&mut own);
        prev.push(own);
    }
    let survivors = |rows: &[usize]| plan.window_sources().iter().map(|&i| rows[i]).collect();
    waiting[s + 1] = Some(match waiting[s + 1].take() {
        // rows from an earlier batch wait: this batch's survivors copied straight after them
        Some((block, mut wait)) => {
            let block = model.gather_onto(block, &x, &prev, &plan);
            wait.extend::<Vec<usize>>(survivors(&rows));
            (block, wait)
        }
        // else compacted where they are, with the fewest moves
        None if plan.len < rows.len() => {
            let x = model.gather(x, &mut prev, &plan);
            ((x, prev), survivors(&rows))
        }
        None => ((x, prev), rows),
    });
    out.timing.gather += t.elapsed();
}
