//! A variant of a two-stage description, as the paper's Section 5 defines them: its **width
//! grade** (the share of every weighted layer's filters that stage 1 gets), its **depth**
//! (stage 1 ending early, or starting deeper — the lower layers shared whole, the Faster
//! R-CNN-like cascade), an extra max-pooling before a layer, and how it trains (jointly, or
//! stage-wise). A variant may instead name another description file (e.g. three stages).
//!
//! A variant is applied to the base description's validated form and the result is validated
//! again, so a variant that makes no valid onion is refused with the description's own error.

use crate::error::SpecError;
use crate::spec::{Layer, LayerKind, Spec};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// How a variant's onion trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Training {
    /// One weighted loss over all stages (the method).
    #[default]
    Joint,
    /// Stage 1 alone first, then stage 1 frozen and the later stages trained on their losses
    /// (what the paper found worse).
    Stagewise,
}

/// One `[[variant]]` of a study file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Shown in the table's `variant` column (also names its directory under `--out`).
    pub name: String,
    /// Stage 1's share of every weighted layer's filters, in (0, 1); the rest go to stage 2.
    pub grade: Option<f64>,
    /// Stage 1 ends after this weighted layer (and the ReLU / pooling that follow it); the
    /// later weighted layers belong wholly to stage 2.
    pub ends_after: Option<String>,
    /// Every weighted layer up to and including this one belongs wholly to stage 1, which
    /// stage 2 then reads: stage 2 "starts deeper".
    pub shared_until: Option<String>,
    /// A 2x2 max-pooling (stride 2) inserted right before this layer, in every network.
    pub maxpool_before: Option<String>,
    /// Another description file instead of the base one (relative to the study file); the
    /// width and depth fields cannot be combined with it.
    pub spec: Option<PathBuf>,
    #[serde(default)]
    pub training: Training,
}

impl Variant {
    /// The directory name of the variant's networks under the study's output.
    pub fn slug(&self) -> String {
        let mut s = String::new();
        for c in self.name.chars() {
            if c.is_ascii_alphanumeric() {
                s.push(c.to_ascii_lowercase());
            } else if !s.ends_with('-') {
                s.push('-');
            }
        }
        s.trim_matches('-').to_string()
    }

    /// The variant's description: `base` changed as the variant says (or the file it names,
    /// read relative to `study`), validated again. Errors name the study file and the field.
    pub fn apply(&self, base: &Spec, study: &Path, at: &str) -> Result<Spec, SpecError> {
        let err = |field: &str, value: &dyn std::fmt::Display, reason: &str| {
            SpecError::invalid(study, format!("{at}.{field}"), value, reason)
        };
        let reshapes = self.grade.is_some()
            || self.ends_after.is_some()
            || self.shared_until.is_some()
            || self.maxpool_before.is_some();
        if let Some(file) = &self.spec {
            if reshapes {
                return Err(err(
                    "spec",
                    &file.display(),
                    "a variant that names its own description cannot also change its width or depth",
                ));
            }
            let path = study.parent().unwrap_or(Path::new(".")).join(file);
            return crate::shipped::load_spec(&path);
        }
        let mut spec = base.clone();
        if reshapes && spec.num_stages() != 2 {
            return Err(err(
                "name",
                &self.name,
                &format!(
                    "width and depth variants change a two-stage description; {} has {} stages",
                    base.source.display(),
                    base.num_stages()
                ),
            ));
        }
        let weighted = |field: &str, name: &str| -> Result<usize, SpecError> {
            // (looked up before any layer is inserted: the base's indices)
            spec_index(base, name)
                .filter(|&i| base.layers[i].kind.is_weighted())
                .ok_or_else(|| {
                    err(
                        field,
                        &format!("{name:?}"),
                        &format!(
                            "not the name of a conv or fc layer of {} ({})",
                            base.source.display(),
                            weighted_names(base)
                        ),
                    )
                })
        };
        if let Some(g) = self.grade {
            if !(g.is_finite() && g > 0.0 && g < 1.0) {
                return Err(err("grade", &g, "must be a fraction in (0, 1)"));
            }
            for l in spec.layers.iter_mut().filter(|l| l.kind.is_weighted()) {
                let first = ((g * l.width as f64).round() as usize).clamp(1, l.width - 1);
                l.split = vec![first, l.width - first];
            }
        }
        if let Some(name) = &self.shared_until {
            let last = weighted("shared_until", name)?;
            for l in spec.layers[..=last]
                .iter_mut()
                .filter(|l| l.kind.is_weighted())
            {
                l.split = vec![l.width, 0];
            }
        }
        if let Some(name) = &self.ends_after {
            let li = weighted("ends_after", name)?;
            let Some(next) =
                (li + 1..spec.layers.len()).find(|&i| spec.layers[i].kind.is_weighted())
            else {
                return Err(err(
                    "ends_after",
                    &format!("{name:?}"),
                    "the last weighted layer: stage 1 would be the whole network",
                ));
            };
            spec.stages[0].depth = next;
            for l in spec.layers[next..]
                .iter_mut()
                .filter(|l| l.kind.is_weighted())
            {
                l.split = vec![0, l.width];
            }
        }
        if let Some(name) = &self.maxpool_before {
            let li = spec_index(&spec, name).ok_or_else(|| {
                err(
                    "maxpool_before",
                    &format!("{name:?}"),
                    &format!("no layer of that name in {}", base.source.display()),
                )
            })?;
            spec.layers.insert(
                li,
                Layer {
                    name: format!("pool_before_{name}"),
                    kind: LayerKind::Maxpool {
                        kernel: 2,
                        stride: 2,
                        ceil: false,
                    },
                    width: 0,
                    split: Vec::new(),
                },
            );
            // (a stage ending right before the layer keeps the pooling, so that the next
            // stage still reads it at a weighted layer)
            for st in &mut spec.stages {
                if st.depth >= li {
                    st.depth += 1;
                }
            }
        }
        spec.name = format!("{} ({})", base.name, self.name);
        Spec::from_toml(&spec.to_toml(), study).map_err(|e| match e {
            SpecError::Invalid {
                field,
                value,
                reason,
                ..
            } => err(
                "name",
                &self.name,
                &format!("makes an invalid description: {field} = {value}: {reason}"),
            ),
            e => e,
        })
    }
}

fn spec_index(spec: &Spec, name: &str) -> Option<usize> {
    spec.layers.iter().position(|l| l.name == name)
}

fn weighted_names(spec: &Spec) -> String {
    spec.layers
        .iter()
        .filter(|l| l.kind.is_weighted())
        .map(|l| l.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
