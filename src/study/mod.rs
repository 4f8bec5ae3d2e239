//! The paper's analysis (its Section 5) as one job: a family of [`Variant`]s of one
//! description, listed in a study file beside it, each trained, calibrated and evaluated on
//! the same retrieval data against the base description's monolithic network and non-sharing
//! cascade; per variant the precision of stage 1 alone, of the cascade at each target TPR and
//! with every example passing ('full'), the % passing and the measured and theoretical
//! speed-ups; and the variants' time-cost curves on the synthetic benchmark.
//!
//! ```toml
//! spec = "../fashion-retrieval.toml"   # relative to the study file, or a shipped name
//!
//! [[variant]]
//! name = "1/8"
//! grade = 0.125
//! ```

pub mod variant;

pub use variant::{Training, Variant};

use crate::apps::RunOptions;
use crate::apps::retrieval::{
    Outcome, Splits, evaluate, groups_from, kmeans_groups, needs_groups, resolve_groups,
};
use crate::bench::{BenchConfig, BenchRow, run_bench};
use crate::calibrate::{Calibration, Target};
use crate::cost::{expected_cost, stage_costs};
use crate::error::SpecError;
use crate::model::Model;
use crate::onion::NetworkKind;
use crate::pipeline::Experiment;
use crate::report::Row;
use crate::spec::Spec;
use crate::train::TrainConfig;
use burn::tensor::Device;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStudy {
    spec: PathBuf,
    #[serde(rename = "variant", default)]
    variants: Vec<Variant>,
}

/// A validated study file: the base description and each variant's description.
#[derive(Debug, Clone)]
pub struct Study {
    pub path: PathBuf,
    pub base: Spec,
    pub variants: Vec<(Variant, Spec)>,
}

impl Study {
    /// Reads a study file and builds every variant's description (errors name the study
    /// file, the variant and the field).
    pub fn from_file(path: &Path) -> Result<Study, SpecError> {
        Study::from_toml(&crate::spec::read_text(path)?, path)
    }

    /// Parses a study; `path` places the files it names and is used in error messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Study, SpecError> {
        let raw: RawStudy = crate::spec::parse_toml(text, path)?;
        let beside = path.parent().unwrap_or(Path::new(".")).join(&raw.spec);
        let base = crate::shipped::load_spec(if beside.exists() { &beside } else { &raw.spec })?;
        if raw.variants.is_empty() {
            return Err(SpecError::invalid(
                path,
                "variant",
                "[]",
                "a study needs at least one [[variant]]",
            ));
        }
        let mut variants: Vec<(Variant, Spec)> = Vec::new();
        for (i, v) in raw.variants.into_iter().enumerate() {
            let at = format!("variant[{i}]");
            let slug = v.slug();
            if slug.is_empty() || variants.iter().any(|(o, _)| o.slug() == slug) {
                return Err(SpecError::invalid(
                    path,
                    format!("{at}.name"),
                    format!("{:?}", v.name),
                    "each variant needs a name of its own (letters or digits; it names a directory)",
                ));
            }
            let spec = v.apply(&base, path, &at)?;
            if spec.input != base.input || spec.classes != base.classes {
                return Err(SpecError::invalid(
                    path,
                    format!("{at}.spec"),
                    spec.source.display(),
                    format!(
                        "its input and classes must be the base description's ({:?}, {} classes)",
                        base.input.dims(),
                        base.classes
                    ),
                ));
            }
            if v.training == Training::Stagewise && spec.num_stages() < 2 {
                return Err(SpecError::invalid(
                    path,
                    format!("{at}.training"),
                    "\"stagewise\"",
                    "stage-wise training needs two stages or more",
                ));
            }
            variants.push((v, spec));
        }
        Ok(Study {
            path: path.to_path_buf(),
            base,
            variants,
        })
    }
}

/// How a study runs.
pub struct Settings<'a> {
    pub cfg: &'a TrainConfig,
    pub targets: &'a [Target],
    /// The base networks go to `out/monolithic` and `out/non-sharing`, each variant's onion
    /// to `out/<variant>/onion` (an existing one with the same settings is reused).
    pub out: &'a Path,
    pub run: RunOptions,
    /// The synthetic benchmark of each variant (`None`: no time-cost curves).
    pub bench: Option<BenchConfig>,
    pub device: &'a Device,
}

/// A step of [`run`], reported as it starts.
pub enum Step<'a> {
    Train(&'a str),
    Calibrate,
    Evaluate,
    Bench(&'a str),
}

/// One time-cost curve of the synthetic benchmark: a variant's network, its points in p
/// order (times relative to the variant's own monolithic network).
pub struct Curve {
    pub variant: String,
    pub network: NetworkKind,
    pub points: Vec<BenchRow>,
}

/// What a study found: the table's rows, and the time-cost curves.
pub struct Report {
    pub rows: Vec<Row>,
    pub curves: Vec<Curve>,
}

/// The name of the base description's rows.
pub const BASELINE: &str = "baseline";

/// Runs the study on the retrieval splits: trains, calibrates, evaluates (one query per class,
/// every network timed in the same pass) and benchmarks.
pub fn run(
    study: &Study,
    splits: &Splits,
    set: &Settings<'_>,
    mut step: impl FnMut(Step<'_>),
) -> anyhow::Result<Report> {
    let (cfg, device) = (set.cfg, set.device);
    let base_exp = Experiment {
        train: &splits.train,
        held_out: &splits.calib,
        cfg,
        out: set.out,
        device,
    };
    step(Step::Train("baseline: monolithic"));
    let mono = base_exp.monolithic(&study.base)?;
    // (k-means groups by their number: variants with as many groups share them)
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut resolve = |spec: &Spec| -> Spec {
        if !needs_groups(spec) {
            return spec.clone();
        }
        let k = kmeans_groups(spec);
        let g = groups
            .entry(k)
            .or_insert_with(|| groups_from(&mono, spec, &splits.train, cfg.seed, device));
        resolve_groups(spec, g)
    };
    step(Step::Train("baseline: non-sharing cascade"));
    let base = resolve(&study.base);
    let ns = base_exp.non_sharing(&mono, &base)?;
    let dirs: Vec<PathBuf> = study
        .variants
        .iter()
        .map(|(v, _)| set.out.join(v.slug()))
        .collect();
    let variant_exp = |i: usize| Experiment {
        out: &dirs[i],
        ..base_exp
    };
    let mut onions = Vec::with_capacity(study.variants.len());
    for (i, (v, spec)) in study.variants.iter().enumerate() {
        step(Step::Train(&v.name));
        let spec = resolve(spec);
        onions.push(match v.training {
            Training::Joint => variant_exp(i).onion(&spec)?,
            Training::Stagewise => variant_exp(i).onion_stagewise(&spec)?,
        });
    }
    step(Step::Calibrate);
    let some = |cals: Vec<Calibration>| cals.into_iter().map(Some).collect::<Vec<_>>();
    let mut models: Vec<(&Model, Vec<Option<Calibration>>)> = vec![
        (&mono, vec![None]),
        (&ns, some(base_exp.calibrate_cascade(&ns, set.targets)?)),
    ];
    for (i, m) in onions.iter().enumerate() {
        let mut cals = some(variant_exp(i).calibrate_cascade(m, set.targets)?);
        cals.push(None); // 'full': every example passes
        models.push((m, cals));
    }
    step(Step::Evaluate);
    let outcomes = evaluate(&models, &splits.test, 1, set.run, device, false)?;
    let rows = table_rows(study, &models, &outcomes);
    let mut curves = Vec::new();
    if let Some(bc) = &set.bench {
        step(Step::Bench(BASELINE));
        let of = |rows: &[BenchRow], kind: NetworkKind| -> Vec<BenchRow> {
            rows.iter()
                .filter(|r| r.network == kind.name())
                .cloned()
                .collect()
        };
        let b = run_bench(&study.base, bc, device);
        curves.push(Curve {
            variant: BASELINE.into(),
            network: NetworkKind::NonSharing,
            points: of(&b, NetworkKind::NonSharing),
        });
        for (v, spec) in &study.variants {
            step(Step::Bench(&v.name));
            curves.push(Curve {
                variant: v.name.clone(),
                network: NetworkKind::Onion,
                points: of(&run_bench(spec, bc, device), NetworkKind::Onion),
            });
        }
    }
    Ok(Report { rows, curves })
}

/// The study's rows, from the outcomes of `models` in order (each model's operating points in
/// order; a variant's last one is 'full'). Speed-ups are against the base description's
/// monolithic network: measured in the same pass, and from the cost model at the measured pass
/// fractions.
fn table_rows(
    study: &Study,
    models: &[(&Model, Vec<Option<Calibration>>)],
    outcomes: &[Outcome],
) -> Vec<Row> {
    let mono_cost = stage_costs(&study.base, NetworkKind::Monolithic)[0] as f64;
    let mono_ms = outcomes[0].ms_per_1000;
    let row = |variant: &str, spec: &Spec, o: &Outcome| -> Row {
        let mut r = crate::apps::retrieval::rows(spec, std::slice::from_ref(o)).remove(0);
        let costs: Vec<f64> = stage_costs(spec, o.kind)
            .iter()
            .map(|&c| c as f64)
            .collect();
        r.variant = Some(variant.into());
        r.speedup_measured = Some(mono_ms / o.ms_per_1000);
        r.speedup_theory = Some(mono_cost / expected_cost(&costs, &o.pass));
        r
    };
    let mut rows = Vec::new();
    let mut at = 0;
    for (i, (model, cals)) in models.iter().enumerate() {
        let these = &outcomes[at..at + cals.len()];
        at += cals.len();
        if i < 2 {
            rows.extend(these.iter().map(|o| row(BASELINE, &model.spec, o)));
            continue;
        }
        let (v, _) = &study.variants[i - 2];
        let (full, calibrated) = these.split_last().expect("'full' is last");
        for o in calibrated {
            let mut r = row(&v.name, &model.spec, o);
            r.full_metric = Some(full.map);
            rows.push(r);
        }
    }
    rows
}
