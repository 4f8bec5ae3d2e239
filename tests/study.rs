//! `onionnet study`: the shipped study file builds the paper's variants, bad study files are
//! refused naming the field, and a small study runs end to end on real images — with the
//! stage-wise variant's stage 1 equal to the non-sharing cascade's stage 1 (trained alone on
//! its own loss, then frozen).

use onionnet::apps::RunOptions;
use onionnet::apps::retrieval::Splits;
use onionnet::bench::BenchConfig;
use onionnet::calibrate::targets;
use onionnet::checkpoint::Checkpoint;
use onionnet::data::fashion::subset_dir;
use onionnet::infer::EngineKind;
use onionnet::spec::LayerKind;
use onionnet::study::{Settings, Study, run};
use onionnet::train::TrainConfig;
use std::path::Path;

mod common;

fn shipped() -> Study {
    Study::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/study/fashion.toml"))
        .unwrap()
}

#[test]
fn the_shipped_study_builds_the_papers_variants() {
    let study = shipped();
    let v = |name: &str| {
        &study
            .variants
            .iter()
            .find(|(v, _)| v.name == name)
            .unwrap_or_else(|| panic!("variant {name}"))
            .1
    };
    let split = |spec: &onionnet::spec::Spec, layer: &str| {
        spec.layers
            .iter()
            .find(|l| l.name == layer)
            .unwrap()
            .split
            .clone()
    };
    // width grades: stage 1's share of every layer
    assert_eq!(split(v("1/8"), "conv1"), vec![4, 28]);
    assert_eq!(split(v("1/2"), "fc1"), vec![64, 64]);
    // stage 1 ends after conv2 (with its ReLU and pooling): fc1 belongs to stage 2
    let short = v("1/4 ends after conv2");
    assert_eq!(short.stages[0].depth, 6);
    assert_eq!(split(short, "fc1"), vec![0, 128]);
    assert_eq!(split(short, "conv2"), vec![16, 48]);
    // stage 2 starts deeper: conv1 wholly stage 1's
    assert_eq!(split(v("1/4 starts deeper"), "conv1"), vec![32, 0]);
    // an extra pooling before fc1: 7x7 maps become 3x3
    let pooled = v("1/4 extra pool");
    assert_eq!(pooled.layers.len(), study.base.layers.len() + 1);
    let at = pooled.layers.iter().position(|l| l.name == "fc1").unwrap();
    assert!(matches!(
        pooled.layers[at - 1].kind,
        LayerKind::Maxpool { .. }
    ));
    assert_eq!(pooled.spatial_sizes()[at], (3, 3));
    assert_eq!(v("3 stages").num_stages(), 3);
    assert_eq!(
        study
            .variants
            .iter()
            .filter(|(v, _)| v.training == onionnet::study::Training::Stagewise)
            .count(),
        1
    );
}

#[test]
fn bad_study_files_are_refused_naming_the_field() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/study/bad.toml");
    let cases: [(&str, &[&str]); 6] = [
        (
            "[[variant]]\nname = \"a\"\nends_after = \"conv9\"\n",
            &["variant[0].ends_after", "\"conv9\"", "conv1, conv2, fc1"],
        ),
        (
            "[[variant]]\nname = \"a\"\ngrade = 1.5\n",
            &["variant[0].grade", "1.5", "(0, 1)"],
        ),
        (
            "[[variant]]\nname = \"a b\"\ngrade = 0.5\n[[variant]]\nname = \"a-b\"\ngrade = 0.25\n",
            &["variant[1].name", "\"a-b\"", "name of its own"],
        ),
        (
            "[[variant]]\nname = \"a\"\nspec = \"../fashion-3stage.toml\"\ngrade = 0.5\n",
            &["variant[0].spec", "cannot also change"],
        ),
        (
            "[[variant]]\nname = \"a\"\nends_after = \"fc1\"\n",
            &["variant[0].ends_after", "the last weighted layer"],
        ),
        ("", &["variant", "at least one [[variant]]"]),
    ];
    for (variants, needles) in cases {
        let text = format!("spec = \"../fashion-retrieval.toml\"\n{variants}");
        let e = Study::from_toml(&text, &path).unwrap_err().to_string();
        assert!(e.contains("bad.toml"), "names the file: {e}");
        for n in needles {
            assert!(e.contains(n), "{e:?} should mention {n:?}");
        }
    }
}

#[test]
fn a_small_study_runs_end_to_end() {
    let device = burn::tensor::Device::default();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/study/small.toml");
    let text = "spec = \"../fashion-retrieval.toml\"\n\
        [[variant]]\nname = \"half\"\ngrade = 0.5\n\
        [[variant]]\nname = \"stage-wise\"\ngrade = 0.25\ntraining = \"stagewise\"\n";
    let study = Study::from_toml(text, &path).unwrap();
    let splits = Splits::load(&subset_dir(), Some(1500), Some(300), Some(400), 7).unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        quiet: true,
        ..TrainConfig::default()
    };
    let out = common::tmp("study");
    let tprs = [0.9, 0.99];
    let report = run(
        &study,
        &splits,
        &Settings {
            cfg: &cfg,
            targets: &targets(&tprs, None),
            out: &out,
            run: RunOptions {
                batch: 128,
                pool: 1,
                engine: EngineKind::Own,
                audit: None,
            },
            bench: Some(BenchConfig {
                reps: 1,
                warmup: 0,
                ps: vec![0.5],
                quiet: true,
                ..BenchConfig::default()
            }),
            device: &device,
        },
        |_| {},
    )
    .unwrap();
    let rows = &report.rows;
    // monolithic, non-sharing at each target, each variant at each target
    assert_eq!(rows.len(), 1 + tprs.len() + 2 * tprs.len());
    let of = |variant: &str, network: &str| -> Vec<&onionnet::report::Row> {
        rows.iter()
            .filter(|r| r.variant.as_deref() == Some(variant) && r.network == network)
            .collect()
    };
    let ns = of("baseline", "non-sharing");
    let stagewise = of("stage-wise", "onion");
    for (variant, network, n) in [
        ("baseline", "monolithic", 1),
        ("baseline", "non-sharing", 2),
        ("half", "onion", 2),
        ("stage-wise", "onion", 2),
    ] {
        assert_eq!(of(variant, network).len(), n, "{variant} {network}");
    }
    for r in rows.iter().filter(|r| r.network == "onion") {
        let (cascade, full, s1) = (
            r.metric.unwrap(),
            r.full_metric.unwrap(),
            r.stage1_metric.unwrap(),
        );
        // better than chance (0.1) on 10 classes after one epoch; stage 1 alone ranks groups
        assert!(cascade > 0.3 && full > 0.3 && s1 > 0.1, "{r:?}");
        assert!(r.speedup_theory.unwrap() > 1.0, "{r:?}");
    }
    // the stage-wise onion's stage 1 was trained alone, then frozen: it is the non-sharing
    // cascade's stage 1 (same widths, seed and batches), so it ranks and passes alike
    for (a, b) in ns.iter().zip(&stagewise) {
        assert_eq!(a.stage1_metric, b.stage1_metric, "stage 1 alone");
        assert_eq!(a.pass_pct, b.pass_pct, "% passing");
        assert_eq!(a.target_tpr, b.target_tpr);
    }
    // its phase 2 left stage 1 as phase 1 made it, and changed stage 2
    let load = |dir: &str| Checkpoint::new(&out.join(dir)).load_model(&device).unwrap();
    let (phase1, phase2) = (load("stage-wise/onion/stage1"), load("stage-wise/onion"));
    let x = splits.test.batch(&[0, 1, 2, 3, 4], &device);
    let logits = |m: &onionnet::model::Model| m.nets[0].module.forward_all(&m.nets[0].arch, &x);
    let (a, b) = (logits(&phase1), logits(&phase2));
    let diff = |i: usize| {
        (a[i].clone() - b[i].clone())
            .abs()
            .max()
            .into_scalar::<f32>()
    };
    assert_eq!(diff(0), 0.0, "stage 1 frozen");
    assert!(diff(1) > 1e-3, "stage 2 trained");
    // one curve per variant and the baseline's non-sharing cascade
    assert_eq!(report.curves.len(), 3);
    assert!(report.curves.iter().all(|c| c.points.len() == 1));
    let _ = std::fs::remove_dir_all(&out);
}
