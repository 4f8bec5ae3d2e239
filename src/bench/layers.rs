//! Where the time goes per layer. The cost model prices every multiply-add alike and the other
//! ops (ReLU, pooling, normalisation) at nothing; a stage whose layers run at the monolithic
//! network's average time per multiply-add meets it. Here every stage of the three networks
//! runs layer by layer on the rows it gets in a cascade at pass fraction p, each op timed,
//! each stage right after another stage or network (its caches hold that one's data: a stage
//! 2 finds its maps and weights colder here than right after its stage 1 in a cascade):
//! each layer's measured share of the monolithic time beside its share in the model, and
//! their ratio, the layer's cost per multiply-add against the monolithic average. A thin
//! layer (one input channel, a quarter of the channels) shows here what makes its stage
//! exceed the model.

use super::{BenchConfig, median, progress, random_models};
use crate::cascade::Engine;
use crate::cost::{layer_costs, stage_costs};
use crate::infer::{Act, ActMaps, FastModel};
use crate::onion::{NetworkKind, archs};
use crate::spec::Spec;
use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;

/// One op of one stage of one network.
#[derive(Debug, Clone, Serialize)]
pub struct LayerRow {
    pub network: String,
    /// 1-based, as in the tables.
    pub stage: usize,
    /// The description's layer name, or "head".
    pub layer: String,
    /// Rows the stage runs on: the batch at stage 1, round(p^(s-1) x batch) after (at least
    /// one: at p = 0 a later stage is profiled on one row, where a cascade would not run it).
    pub rows: usize,
    /// Multiply-adds per example (0: an op the model counts as free).
    pub macs: u64,
    /// Median over repetitions, for all `rows`.
    pub ms: f64,
    /// `ms` / the monolithic network's time on the batch (the sum of its ops' medians).
    pub measured_share: f64,
    /// The model's share: macs x rows / (the monolithic network's macs x batch).
    pub theory_share: f64,
}

impl LayerRow {
    /// Cost per multiply-add against the monolithic network's average (1: as the model
    /// assumes); `None` for ops the model counts as free.
    pub fn per_mac(&self) -> Option<f64> {
        (self.theory_share > 0.0).then(|| self.measured_share / self.theory_share)
    }

    /// Achieved GFLOP/s (two per multiply-add); `None` for ops the model counts as free.
    pub fn gflops(&self) -> Option<f64> {
        (self.macs > 0 && self.ms > 0.0)
            .then(|| 2.0 * (self.macs * self.rows as u64) as f64 / (self.ms / 1000.0) / 1e9)
    }
}

/// The per-layer profile of the three networks of `spec` (random weights, own engine) at pass
/// fraction `p`: `cfg.warmup` unmeasured then `cfg.reps` measured repetitions, the networks
/// interleaved within each.
pub fn layer_profile(spec: &Spec, cfg: &BenchConfig, p: f64, device: &Device) -> Vec<LayerRow> {
    let models: Vec<FastModel> = random_models(spec, device, cfg.seed)
        .iter()
        .map(FastModel::from_model)
        .collect();
    let [c, h, w] = spec.input.dims();
    let x = Tensor::<4>::random([cfg.batch, c, h, w], Distribution::Normal(0.0, 1.0), device);
    // each stage's input and the earlier stages' maps on the same rows (made once, untimed)
    let mut cases: Vec<(usize, usize, Act, Vec<ActMaps>)> = Vec::new();
    for (mi, m) in models.iter().enumerate() {
        for s in 0..m.num_stages() {
            let rows = ((p.powi(s as i32) * cfg.batch as f64).round() as usize).max(1);
            let input = m.input(&x.clone().slice(0..rows));
            let prev: Vec<ActMaps> = if m.kind == NetworkKind::Onion {
                let mut prev = Vec::new();
                for t in 0..s {
                    prev.push(m.stage_scores(t, &input, &prev).0);
                }
                prev
            } else {
                Vec::new()
            };
            cases.push((mi, s, input, prev));
        }
    }
    let pb = progress(
        cfg,
        (cfg.warmup + cfg.reps) * cases.len(),
        format!("layers {}", spec.name),
    );
    // times[case][op] over repetitions
    let mut times: Vec<Vec<Vec<f64>>> = vec![Vec::new(); cases.len()];
    for rep in 0..cfg.warmup + cfg.reps {
        for (i, (mi, s, input, prev)) in cases.iter().enumerate() {
            let (_, t) = crate::workers::awake(|| models[*mi].stage_profile(*s, input, prev));
            if rep >= cfg.warmup {
                times[i].resize(t.len(), Vec::new());
                for (acc, d) in times[i].iter_mut().zip(&t) {
                    // (ops without work of their own are never timed: left empty)
                    acc.extend(d.map(|d| d.as_secs_f64() * 1e3));
                }
            }
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    let medians: Vec<Vec<Option<f64>>> = times
        .into_iter()
        .map(|ops| {
            ops.into_iter()
                .map(|v| (!v.is_empty()).then(|| median(v)))
                .collect()
        })
        .collect();
    // the monolithic network is case 0: one stage
    debug_assert_eq!(cases[0].0, 0);
    let mono_ms: f64 = medians[0].iter().flatten().sum();
    let mono_macs = stage_costs(spec, NetworkKind::Monolithic)[0] as f64 * cfg.batch as f64;
    let mut out = Vec::new();
    for ((mi, s, input, _), ops) in cases.iter().zip(&medians) {
        let kind = models[*mi].kind;
        let (net, branch) = match kind {
            NetworkKind::NonSharing => (*s, 0),
            _ => (0, *s),
        };
        let costs = layer_costs(&archs(spec, kind)[net]);
        for (l, ms) in ops.iter().enumerate() {
            let Some(ms) = *ms else { continue };
            let layer = spec.layers.get(l).map_or("head", |x| x.name.as_str());
            let macs = costs
                .iter()
                .find(|c| c.branch == branch && c.layer == layer)
                .map_or(0, |c| c.macs);
            out.push(LayerRow {
                network: kind.name().into(),
                stage: s + 1,
                layer: layer.into(),
                rows: input.n,
                macs,
                ms,
                measured_share: ms / mono_ms,
                theory_share: macs as f64 * input.n as f64 / mono_macs,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every weighted layer and head of every stage is there, with the model's multiply-adds;
    /// the monolithic shares sum to 1 and its theory shares too.
    #[test]
    fn profile_covers_every_layer_with_its_cost() {
        let spec = crate::shipped::spec("fashion-retrieval");
        let cfg = BenchConfig {
            batch: 8,
            warmup: 0,
            reps: 1,
            quiet: true,
            ..BenchConfig::default()
        };
        let rows = layer_profile(&spec, &cfg, 0.5, &Device::default());
        let mono: Vec<&LayerRow> = rows.iter().filter(|r| r.network == "monolithic").collect();
        let sum: f64 = mono.iter().map(|r| r.measured_share).sum();
        assert!((sum - 1.0).abs() < 1e-9, "{sum}");
        let theory: f64 = mono.iter().map(|r| r.theory_share).sum();
        assert!((theory - 1.0).abs() < 1e-9, "{theory}");
        for kind in NetworkKind::ALL {
            let costs = stage_costs(&spec, kind);
            for (s, cost) in costs.iter().enumerate() {
                let here: Vec<&LayerRow> = rows
                    .iter()
                    .filter(|r| r.network == kind.name() && r.stage == s + 1)
                    .collect();
                assert_eq!(
                    here.iter().map(|r| r.macs).sum::<u64>(),
                    *cost,
                    "{kind} {s}"
                );
                // conv1, conv2, fc1 and the head, each with its multiply-adds
                let weighted: Vec<&str> = here
                    .iter()
                    .filter(|r| r.macs > 0)
                    .map(|r| r.layer.as_str())
                    .collect();
                assert_eq!(weighted, ["conv1", "conv2", "fc1", "head"], "{kind} {s}");
                let rows_here = if s == 0 { 8 } else { 4 };
                assert!(here.iter().all(|r| r.rows == rows_here), "{kind} {s}: rows");
            }
        }
    }

    #[test]
    fn layer_gflops_count_two_flops_per_multiply_add() {
        let row = |macs, ms| LayerRow {
            network: "onion".into(),
            stage: 1,
            layer: "conv1".into(),
            rows: 10,
            macs,
            ms,
            measured_share: 0.1,
            theory_share: 0.05,
        };
        // 10 rows x 1000 multiply-adds in 1 ms: 2e4 FLOP in 1e-3 s
        assert!((row(1000, 1.0).gflops().unwrap() - 0.02).abs() < 1e-12);
        assert_eq!(row(0, 1.0).gflops(), None);
        assert_eq!(row(1000, 1.0).per_mac(), Some(2.0));
    }
}
