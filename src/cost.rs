//! The analytic cost model: multiply-adds per example. A conv layer costs
//! H_out · W_out · k_h · k_w · c_in · c_out (FC: the kernel covers the input map, output 1x1);
//! pooling, ReLU, batch-norm and dropout are counted as free. With p the fraction of examples
//! passing each early stage (of those that reached it):
//! T_mono = cost(N); T_onion(p) = Σ_s p^(s−1) cost(B_s | B_1..B_{s−1});
//! T_nonsharing(p) = Σ_s p^(s−1) cost(N_s).

use crate::onion::{Arch, NetworkKind, archs};
use crate::spec::{LayerKind, Spec};
use serde::Serialize;

/// Multiply-adds of one weighted layer (or head) of one branch.
#[derive(Debug, Clone, Serialize)]
pub struct LayerCost {
    pub layer: String,
    pub branch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub macs: u64,
}

/// Per-layer costs of every branch of `arch`, heads included (named "head").
pub fn layer_costs(arch: &Arch) -> Vec<LayerCost> {
    let mut out = Vec::new();
    for (b, br) in arch.branches.iter().enumerate() {
        for (l, layer) in arch.layers.iter().enumerate().take(br.depth) {
            let c = br.channels[l];
            if let (true, Some((from, _))) = (c > 0, layer.kind.projection()) {
                let (ho, wo) = arch.sizes[l + 1];
                let cin = arch.in_channels(b, from + 1);
                out.push(LayerCost {
                    layer: layer.name.clone(),
                    branch: b,
                    in_channels: cin,
                    out_channels: c,
                    macs: (ho * wo * cin * c) as u64,
                });
            }
            if c == 0 || !layer.kind.is_weighted() {
                continue;
            }
            let (hi, wi) = arch.sizes[l];
            let (ho, wo) = arch.sizes[l + 1];
            let (kh, kw) = match layer.kind {
                LayerKind::Conv { kernel, .. } => (kernel, kernel),
                _ => (hi, wi),
            };
            let cin = arch.in_channels(b, l);
            out.push(LayerCost {
                layer: layer.name.clone(),
                branch: b,
                in_channels: cin,
                out_channels: c,
                macs: (ho * wo * kh * kw * cin * c) as u64,
            });
        }
        let (h, w) = arch.sizes[br.depth];
        let cin = arch.head_in_channels(b);
        out.push(LayerCost {
            layer: "head".into(),
            branch: b,
            in_channels: cin,
            out_channels: br.outputs,
            macs: (h * w * cin * br.outputs) as u64,
        });
    }
    out
}

/// Cost of each stage of a network kind: stage s of the onion is branch s given the earlier
/// branches' maps; stage s of the non-sharing cascade is network N_s; the monolithic network
/// has one stage.
pub fn stage_costs(spec: &Spec, kind: NetworkKind) -> Vec<u64> {
    let archs = archs(spec, kind);
    match kind {
        NetworkKind::Onion => {
            let costs = layer_costs(&archs[0]);
            (0..archs[0].branches.len())
                .map(|b| costs.iter().filter(|c| c.branch == b).map(|c| c.macs).sum())
                .collect()
        }
        _ => archs
            .iter()
            .map(|a| layer_costs(a).iter().map(|c| c.macs).sum())
            .collect(),
    }
}

/// Expected cost per example when a fraction `pass[s]` of the examples reaching early stage s
/// passes it.
pub fn expected_cost(stage_costs: &[f64], pass: &[f64]) -> f64 {
    let mut reach = 1.0;
    let mut total = 0.0;
    for (s, &c) in stage_costs.iter().enumerate() {
        total += reach * c;
        reach *= pass.get(s).copied().unwrap_or(1.0);
    }
    total
}

/// The cost model's speed-up of a network kind over the monolithic network when a fraction
/// `pass[s]` of the examples reaching early stage s passes it (the tables' "theory" column).
pub fn speedup(spec: &Spec, kind: NetworkKind, pass: &[f64]) -> f64 {
    1.0 / expected_cost(&relative_costs(spec, kind), pass)
}

/// Each stage's multiply-adds as a fraction of the monolithic network's.
pub fn relative_costs(spec: &Spec, kind: NetworkKind) -> Vec<f64> {
    let mono = stage_costs(spec, NetworkKind::Monolithic)[0] as f64;
    stage_costs(spec, kind)
        .iter()
        .map(|&c| c as f64 / mono)
        .collect()
}

/// T(p) of a kind with the same pass fraction at every early stage (multiply-adds).
pub fn time_at(spec: &Spec, kind: NetworkKind, p: f64) -> f64 {
    let costs: Vec<f64> = stage_costs(spec, kind).iter().map(|&c| c as f64).collect();
    expected_cost(&costs, &vec![p; costs.len()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn hand_computed_costs() {
        let spec = Spec::from_toml(
            r#"
classes = 2
input = { channels = 1, height = 6, width = 6 }
[[layer]]
type = "conv"
filters = 4
kernel = 3
split = [1, 3]
[[layer]]
type = "fc"
units = 8
split = [2, 6]
[[stage]]
[[stage]]
"#,
            Path::new("c.toml"),
        )
        .unwrap();
        // conv: 4x4 out, 3x3 kernel, 1 input channel; fc: kernel 4x4 over conv's maps
        // monolithic: conv 16*9*1*4 = 576, fc 16*4*8 = 512, head 8*2 = 16
        assert_eq!(
            stage_costs(&spec, NetworkKind::Monolithic),
            vec![576 + 512 + 16]
        );
        // onion B1: conv 16*9*1 = 144, fc 16*1*2 = 32, head 2*2 = 4
        // onion B2: conv 16*9*3 = 432, fc reads 1+3 channels: 16*4*6 = 384, head reads 2+6: 16
        assert_eq!(stage_costs(&spec, NetworkKind::Onion), vec![180, 832]);
        // non-sharing: N1 = B1 alone; N2 = N
        assert_eq!(stage_costs(&spec, NetworkKind::NonSharing), vec![180, 1104]);
        assert_eq!(time_at(&spec, NetworkKind::Onion, 0.5), 180.0 + 416.0);
        // the onion has fewer weights than N: at p = 1 it is still cheaper than N + N1
        assert!(
            time_at(&spec, NetworkKind::Onion, 1.0) < time_at(&spec, NetworkKind::NonSharing, 1.0)
        );
    }
}
