//! The own inference path (`src/infer/`) computes what burn computes: every stage's scores of
//! the three networks agree within 1e-4, on the shipped descriptions with random weights and
//! on a trained three-stage network with batch norm (non-trivial running statistics), dropout,
//! fc over a map, a stage ending mid-network and a stage with no channels in a layer — through
//! the cascade runner, at every row (thresholds at −∞) and with survivors compacted.

use burn::tensor::{Distribution, Tensor, TensorData};
use onionnet::bench::random_models;
use onionnet::cascade::{CascadeOutput, Engine, Gate, run, run_batches_with, run_pooled, run_with};
use onionnet::checkpoint::Checkpoint;
use onionnet::data::Dataset;
use onionnet::infer::{Act, FastModel};
use onionnet::model::Model;
use onionnet::onion::NetworkKind;
use onionnet::spec::Spec;
use onionnet::train::{TrainConfig, TrainJob, train};
use rand::{Rng, SeedableRng};
use std::path::Path;

mod common;

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_nan() && y.is_nan() {
                0.0
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0, f32::max)
}

fn check(model: &Model, x: &Tensor<4>, what: &str) {
    let fast = FastModel::from_model(model);
    let open = Gate::open(&model.spec);
    let assert_same = |a: &CascadeOutput, b: &CascadeOutput, how: &str| {
        assert_eq!(
            a.reached, b.reached,
            "{what} {} ({how}): rows reaching each stage",
            model.kind
        );
        for s in 0..a.scores.len() {
            let d = max_diff(&a.scores[s], &b.scores[s]);
            assert!(
                d <= 1e-4,
                "{what} {} ({how}): stage {} scores differ by {d}",
                model.kind,
                s + 1
            );
        }
    };
    assert_same(
        &run(model, x.clone(), &open),
        &run(&fast, Act::from_tensor(x), &open),
        "every row",
    );
    // two rows in three survive each early stage: compaction and gathers of NHWC maps
    let stages = model.num_stages();
    let classes: Vec<usize> = (0..stages).map(|s| model.stage(s).classes).collect();
    let keep = |s: usize, scores: &[f32]| {
        (0..scores.len() / classes[s])
            .map(|i| i % 3 != 1)
            .collect::<Vec<bool>>()
    };
    assert_same(
        &run_with(model, x.clone(), keep),
        &run_with(&fast, fast.input(x), keep),
        "compacted",
    );
    pooled_matches_per_batch(model, x.clone(), what);
    pooled_matches_per_batch(&fast, Act::from_tensor(x), what);
}

/// A stream in batches of 3 with survivors pooled across batches (about one row in three
/// survives each early stage, so later stages wait for rows of several batches and their
/// blocks are stacked) scores every row as the whole input run at once does.
fn pooled_matches_per_batch<E: Engine>(model: &E, x: E::Input, what: &str)
where
    E::Input: Clone + Send,
{
    let classes: Vec<usize> = (0..model.num_stages())
        .map(|s| model.stage(s).classes)
        .collect();
    // a row's fate depends on its own first score only (coarsely, so that rounding
    // differences between batch compositions cannot flip it), not on its block
    let keep = |s: usize, scores: &[f32]| {
        scores
            .chunks_exact(classes[s])
            .map(|row| ((row[0] * 100.0).floor() as i64).rem_euclid(3) == 1)
            .collect::<Vec<bool>>()
    };
    let whole = run_with(model, x.clone(), keep);
    // the same stream from separate pieces of 3, 0 and 2 rows and the rest (a detector's
    // scenes), no stacking
    let n = model.rows(&x);
    let pieces = [0..3, 3..3, 3..5, 5..n]
        .into_iter()
        .map(|r| model.slice(&x, r))
        .collect();
    let streams = [
        ("pooled stream", run_pooled(model, x, 3, keep)),
        ("stream of pieces", run_batches_with(model, pieces, keep)),
    ];
    for (how, pooled) in streams {
        assert_eq!(
            whole.reached,
            pooled.reached,
            "{what} {}: {how}",
            model.kind()
        );
        for s in 0..whole.scores.len() {
            let d = max_diff(&whole.scores[s], &pooled.scores[s]);
            assert!(
                d <= 1e-5,
                "{what} {}: {how}, stage {} differs by {d}",
                model.kind(),
                s + 1
            );
        }
    }
}

#[test]
fn own_path_matches_burn_on_the_shipped_descriptions() {
    let device = burn::tensor::Device::default();
    for name in [
        "fashion-retrieval",
        "fashion-3stage",
        "2ch-deep",
        "alexnet-64",
        "detection",
        "resnet-fashion",
    ] {
        let spec = Spec::from_file(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("specs/{name}.toml")),
        )
        .unwrap();
        let [c, h, w] = spec.input.dims();
        let x = Tensor::<4>::random([7, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        for model in random_models(&spec, &device, 5) {
            check(&model, &x, name);
        }
    }
}

#[test]
fn own_path_matches_burn_on_a_trained_three_stage_network() {
    let device = burn::tensor::Device::default();
    let spec = common::three_stage(true);
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let n = 96;
    let data = Dataset {
        images: (0..n * 2 * 144)
            .map(|_| rng.random_range(-1.0f32..3.0))
            .collect(),
        labels: (0..n).map(|i| i % 6).collect(),
        shape: [2, 12, 12],
        classes: 6,
        files: None,
    };
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 16,
        quiet: true,
        ..TrainConfig::default()
    };
    let tmp = std::env::temp_dir().join(format!("onionnet-infer-{}", std::process::id()));
    let x = Tensor::<4>::from_data(
        TensorData::new(data.images[..10 * 288].to_vec(), [10, 2, 12, 12]),
        &device,
    );
    for kind in NetworkKind::ALL {
        let model = train(TrainJob {
            spec: &spec,
            kind,
            train_set: &data,
            valid_set: &data,
            cfg: &cfg,
            ckpt: &Checkpoint::new(&tmp.join(kind.name())),
            resume: false,
            pretrained: Vec::new(),
            device: &device,
        })
        .unwrap();
        check(&model, &x, "three-stage (trained)");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A random description as TOML: 1 or 2 input channels of 5..14 pixels a side, one to three
/// conv blocks (each maybe followed by ReLU, batch norm, dropout, a residual adding the maps
/// before the block, and a max pooling), an fc
/// layer, two or three stages with explicit label maps, the later ones maybe ending early.
/// Some draws are invalid (kernels larger than the map, pooling that does not fit, splits
/// that leave stage 1 without channels).
fn description() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let block = (
        1usize..6,
        1usize..5,
        1usize..3,
        0usize..3,
        0u8..32,
        1usize..4,
    );
    (
        1usize..3,
        5usize..15,
        proptest::collection::vec(block, 1..4),
        2usize..9,
        2usize..4,
        proptest::collection::vec(0usize..3, 6),
        any::<bool>(),
    )
        .prop_map(|(channels, side, blocks, units, stages, map, early)| {
            let mut t = format!(
                "classes = 6\ninput = {{ channels = {channels}, height = {side}, width = {side} }}\n"
            );
            let split = |w: usize, first: usize| -> String {
                let mut v = vec![first.min(w)];
                let rest = w - v[0];
                for s in 1..stages {
                    v.push(if s + 1 == stages { rest - rest / 2 * (stages - 2) } else { rest / 2 });
                }
                format!("{v:?}")
            };
            // (the last layer so far, by name: a block with a residual adds the maps before it)
            let mut last: Option<String> = None;
            for (i, &(filters, kernel, stride, padding, extras, first)) in blocks.iter().enumerate() {
                let filters = filters * 2;
                let before = last.clone();
                t += &format!(
                    "[[layer]]\nname = \"conv{i}\"\ntype = \"conv\"\nfilters = {filters}\nkernel = {kernel}\nstride = {stride}\npadding = {}\nsplit = {}\n",
                    padding.min(kernel - 1),
                    split(filters, first)
                );
                last = Some(format!("conv{i}"));
                for (bit, kind, extra) in [
                    (1, "batchnorm", ""),
                    (2, "relu", ""),
                    (4, "dropout", "prob = 0.25\n"),
                    (16, "add", ""),
                    (8, "maxpool", "kernel = 2\n"),
                ] {
                    if extras & bit == 0 {
                        continue;
                    }
                    let extra = match (kind, &before) {
                        ("add", None) => continue,
                        ("add", Some(from)) => format!("from = \"{from}\"\n"),
                        _ => extra.to_string(),
                    };
                    t += &format!("[[layer]]\nname = \"{kind}{i}\"\ntype = \"{kind}\"\n{extra}");
                    last = Some(format!("{kind}{i}"));
                }
            }
            t += &format!("[[layer]]\nname = \"fc\"\ntype = \"fc\"\nunits = {units}\nsplit = {}\n", split(units, 1));
            for s in 0..stages {
                t += "[[stage]]\n";
                if s + 1 < stages {
                    let m: Vec<usize> = (0..6).map(|c| map[c] % 2 + usize::from(c < 2)).collect();
                    let classes = m.iter().max().unwrap() + 1;
                    t += &format!("classes = {classes}\nlabel_map = {m:?}\n");
                    if early && s == 0 {
                        t += "ends_at = \"fc\"\n";
                    }
                }
            }
            t
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 96, ..Default::default() })]
    /// Any description that validates builds the three networks, trains one step each on
    /// random data (no panic, a loadable checkpoint) and runs on both engines with the same
    /// scores; any that does not is refused with a message naming a field.
    #[test]
    fn any_valid_description_trains_and_runs_alike(text in description(), seed in 0u64..1000) {
        let path = Path::new("random.toml");
        let spec = match Spec::from_toml(&text, path) {
            Err(e) => {
                let msg = e.to_string();
                proptest::prop_assert!(
                    msg.starts_with("random.toml: ") && msg.contains(" = "),
                    "an error names the file and a field: {msg}\n{text}"
                );
                return Ok(());
            }
            Ok(spec) => spec,
        };
        let device = burn::tensor::Device::default();
        let [c, h, w] = spec.input.dims();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = 12;
        let data = Dataset {
            images: (0..n * c * h * w).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
            labels: (0..n).map(|i| i % 6).collect(),
            shape: [c, h, w],
            classes: 6,
            files: None,
        };
        let cfg = TrainConfig { epochs: 1, batch_size: n, quiet: true, seed, ..TrainConfig::default() };
        let tmp = common::tmp(&format!("prop-{seed}"));
        let x = Tensor::<4>::from_data(TensorData::new(data.images[..8 * c * h * w].to_vec(), [8, c, h, w]), &device);
        for kind in NetworkKind::ALL {
            let ckpt = Checkpoint::new(&tmp.join(kind.name()));
            let model = train(TrainJob {
                spec: &spec,
                kind,
                train_set: &data,
                valid_set: &data,
                cfg: &cfg,
                ckpt: &ckpt,
                resume: false,
                pretrained: Vec::new(),
                device: &device,
            });
            let model = match model {
                Ok(m) => m,
                // a random network may diverge in one step: refused, never saved
                Err(e @ onionnet::error::TrainError::Diverged { .. }) => {
                    proptest::prop_assert!(!tmp.join(kind.name()).join("net0.bpk").exists(), "{e}");
                    continue;
                }
                Err(e) => return Err(proptest::test_runner::TestCaseError::fail(format!("{e}\n{text}"))),
            };
            ckpt.load_model(&device).expect("the checkpoint loads");
            check(&model, &x, &format!("random description\n{text}\n"));
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
