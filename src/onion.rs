//! Branches and their wiring. One generic module, [`OnionModule`], holds S branches over the
//! description's layer list; layer l of branch s reads the channel-concatenation of layer
//! l-1's maps of branches 1..s (one-way), and branch s's head O_s reads the last maps of the
//! branches that end where it ends. The three networks are all this module with a different
//! [`Arch`]:
//! - **onion**: S branches with the description's per-stage split;
//! - **monolithic**: one branch whose widths are the monolithic widths;
//! - **non-sharing cascade**: S one-branch networks, network s having at each layer the
//!   channels that stages 1..s have there in the onion (network 1 = B_1 alone with O_1; network
//!   S = the monolithic network when the split adds up).

use crate::spec::{InputShape, Layer, LayerKind, Spec};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Initializer, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Which of the three networks built from one description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkKind {
    Monolithic,
    NonSharing,
    Onion,
}

impl NetworkKind {
    pub const ALL: [NetworkKind; 3] = [
        NetworkKind::Monolithic,
        NetworkKind::NonSharing,
        NetworkKind::Onion,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            NetworkKind::Monolithic => "monolithic",
            NetworkKind::NonSharing => "non-sharing",
            NetworkKind::Onion => "onion",
        }
    }

    /// The kind [`NetworkKind::name`] names.
    pub fn parse(name: &str) -> Option<NetworkKind> {
        NetworkKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for NetworkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One branch's shape: channels after each layer (0 = no map there) and its head.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchArch {
    /// `channels[l]`: channels of this branch's map after layer l (0-based); 0 past its depth.
    pub channels: Vec<usize>,
    /// Number of layers it runs (its head reads the maps after layer `depth - 1`).
    pub depth: usize,
    /// Outputs of its head O_s.
    pub outputs: usize,
}

/// The wiring of one [`OnionModule`]: the shared layer list and the branches over it.
#[derive(Debug, Clone, PartialEq)]
pub struct Arch {
    pub input: InputShape,
    pub layers: Vec<Layer>,
    pub branches: Vec<BranchArch>,
    /// `(height, width)` after each layer; index 0 is the input.
    pub sizes: Vec<(usize, usize)>,
}

impl Arch {
    fn from_widths(spec: &Spec, widths: Vec<(Vec<usize>, usize, usize)>) -> Arch {
        let branches = widths
            .into_iter()
            .map(|(w, depth, outputs)| {
                let mut channels = Vec::with_capacity(spec.layers.len());
                let mut carry = 0;
                for (l, layer) in spec.layers.iter().enumerate() {
                    if l >= depth {
                        carry = 0;
                    } else if layer.kind.is_weighted() {
                        carry = w[l];
                    }
                    channels.push(carry);
                }
                BranchArch {
                    channels,
                    depth,
                    outputs,
                }
            })
            .collect();
        Arch {
            input: spec.input,
            layers: spec.layers.clone(),
            branches,
            sizes: spec.spatial_sizes(),
        }
    }

    /// The onion: branch s takes the description's split for stage s.
    pub fn onion(spec: &Spec) -> Arch {
        let widths = spec
            .stages
            .iter()
            .enumerate()
            .map(|(s, st)| {
                let w = spec
                    .layers
                    .iter()
                    .map(|l| l.split.get(s).copied().unwrap_or(0))
                    .collect();
                (w, st.depth, st.outputs())
            })
            .collect();
        Arch::from_widths(spec, widths)
    }

    /// The monolithic baseline N: one branch, full widths, the last stage's head.
    pub fn monolithic(spec: &Spec) -> Arch {
        let w = spec.layers.iter().map(|l| l.width).collect();
        let last = spec.stages.last().expect("validated spec has stages");
        Arch::from_widths(spec, vec![(w, last.depth, last.outputs())])
    }

    /// Stage s (0-based) of the non-sharing cascade: a plain network with, at each layer, the
    /// channels stages 1..=s have there in the onion, and stage s's head.
    pub fn nonsharing_stage(spec: &Spec, s: usize) -> Arch {
        let onion = Arch::onion(spec);
        let st = &spec.stages[s];
        let w = (0..spec.layers.len())
            .map(|l| onion.branches[..=s].iter().map(|b| b.channels[l]).sum())
            .collect();
        Arch::from_widths(spec, vec![(w, st.depth, st.outputs())])
    }

    /// The branches whose maps after layer `l` a weighted layer `l + 1` of branch `b` reads.
    pub fn sources(&self, b: usize, l: usize) -> impl Iterator<Item = usize> + '_ {
        (0..=b).filter(move |&t| self.branches[t].channels[l] > 0)
    }

    /// Input channels of weighted layer `l` of branch `b`.
    pub fn in_channels(&self, b: usize, l: usize) -> usize {
        if l == 0 {
            self.input.channels
        } else {
            self.sources(b, l - 1)
                .map(|t| self.branches[t].channels[l - 1])
                .sum()
        }
    }

    /// Input channels of branch `b`'s head.
    pub fn head_in_channels(&self, b: usize) -> usize {
        let l = self.branches[b].depth - 1;
        self.sources(b, l)
            .map(|t| self.branches[t].channels[l])
            .sum()
    }
}

/// He initialisation (gain √2, fan-in) for the hidden layers, which all feed a ReLU: burn's
/// default (PyTorch's, gain 1/√3) shrinks the signal about 2.4x per layer, and a deep network
/// such as 2ch-deep (8 layers) then starts with vanishing outputs and its hinge loss never
/// leaves 1.
pub(crate) fn he() -> Initializer {
    Initializer::KaimingUniform {
        gain: std::f64::consts::SQRT_2,
        fan_out_only: false,
    }
}

/// One branch B_s: its own layers (only those it has channels in) and its head O_s.
#[derive(Module, Debug)]
pub struct BranchModule {
    convs: Vec<Option<Conv2d>>,
    norms: Vec<Option<BatchNorm>>,
    drops: Vec<Option<Dropout>>,
    head: Conv2d,
}

/// S branches; see the module docs for the wiring.
#[derive(Module, Debug)]
pub struct OnionModule {
    branches: Vec<BranchModule>,
}

/// The maps of one branch after each layer (`None` where it has none), rows aligned with the
/// batch they were computed on.
pub type Maps = Vec<Option<Tensor<4>>>;

impl OnionModule {
    /// The module with its first `k` branches frozen: their parameters take no gradient, so
    /// training leaves them as they are (stage-wise training).
    pub fn freeze(mut self, k: usize) -> OnionModule {
        for b in self.branches.iter_mut().take(k) {
            *b = b.clone().no_grad();
        }
        self
    }

    /// Builds the module for `arch` with fresh weights.
    pub fn new(arch: &Arch, device: &Device) -> OnionModule {
        let branches = arch
            .branches
            .iter()
            .enumerate()
            .map(|(b, br)| {
                let mut convs = Vec::new();
                let mut norms = Vec::new();
                let mut drops = Vec::new();
                for (l, layer) in arch.layers.iter().enumerate().take(br.depth) {
                    let c = br.channels[l];
                    let (h, w) = arch.sizes[l];
                    convs.push(match &layer.kind {
                        LayerKind::Conv {
                            kernel,
                            stride,
                            padding,
                        } if c > 0 => Some(
                            Conv2dConfig::new([arch.in_channels(b, l), c], [*kernel, *kernel])
                                .with_stride([*stride, *stride])
                                .with_padding(PaddingConfig2d::Explicit(
                                    *padding, *padding, *padding, *padding,
                                ))
                                .with_initializer(he())
                                .init(device),
                        ),
                        LayerKind::Fc if c > 0 => Some(
                            Conv2dConfig::new([arch.in_channels(b, l), c], [h, w])
                                .with_initializer(he())
                                .init(device),
                        ),
                        // a residual's projection: 1x1 from the source's maps (the conv slot
                        // of its layer)
                        LayerKind::Add {
                            from,
                            projection: true,
                            stride,
                        } if c > 0 => Some(
                            Conv2dConfig::new([arch.in_channels(b, from + 1), c], [1, 1])
                                .with_stride([*stride, *stride])
                                .with_initializer(he())
                                .init(device),
                        ),
                        _ => None,
                    });
                    norms.push(match layer.kind {
                        LayerKind::Batchnorm if c > 0 => Some(BatchNormConfig::new(c).init(device)),
                        _ => None,
                    });
                    drops.push(match layer.kind {
                        LayerKind::Dropout { prob } if c > 0 => {
                            Some(DropoutConfig::new(prob).init())
                        }
                        _ => None,
                    });
                }
                let (h, w) = arch.sizes[br.depth];
                let head =
                    Conv2dConfig::new([arch.head_in_channels(b), br.outputs], [h, w]).init(device);
                BranchModule {
                    convs,
                    norms,
                    drops,
                    head,
                }
            })
            .collect();
        OnionModule { branches }
    }

    /// Runs branch `b` on `input`, reading the maps `prev[t]` of branches `t < b` (computed on
    /// the same rows). Returns its own maps (for later branches) and its head's logits.
    ///
    /// # Shapes
    /// - `input`: `[batch, C, H, W]`; `prev[t][l]`: `[batch, c_l^t, h_l, w_l]`
    /// - logits: `[batch, outputs_b]`
    pub fn forward_branch(
        &self,
        arch: &Arch,
        b: usize,
        input: &Tensor<4>,
        prev: &[Maps],
    ) -> (Maps, Tensor<2>) {
        let br = &arch.branches[b];
        let m = &self.branches[b];
        // the maps layer l of branch b reads: earlier branches' and its own, concatenated
        let gather = |own: &Maps, l: usize| read_sources(arch, b, l, own, prev);
        let mut own: Maps = Vec::with_capacity(br.depth);
        for (l, layer) in arch.layers.iter().enumerate().take(br.depth) {
            let out = match &layer.kind {
                LayerKind::Conv { .. } | LayerKind::Fc => m.convs[l].as_ref().map(|conv| {
                    let x = if l == 0 {
                        Some(input.clone())
                    } else {
                        gather(&own, l - 1)
                    };
                    conv.forward(x.expect("wiring: a weighted layer always has an input"))
                }),
                LayerKind::Relu => own[l - 1].clone().map(relu),
                LayerKind::Maxpool {
                    kernel,
                    stride,
                    ceil,
                } => own[l - 1].clone().map(|x| {
                    max_pool2d(
                        x,
                        MaxPoolOptions::new([*kernel, *kernel])
                            .with_stride([*stride, *stride])
                            .with_ceil_mode(*ceil),
                    )
                }),
                LayerKind::Batchnorm => own[l - 1]
                    .clone()
                    .map(|x| m.norms[l].as_ref().unwrap().forward(x)),
                LayerKind::Dropout { .. } => own[l - 1]
                    .clone()
                    .map(|x| m.drops[l].as_ref().unwrap().forward(x)),
                LayerKind::Add { from, .. } => own[l - 1].clone().map(|x| {
                    let z = match m.convs[l].as_ref() {
                        Some(proj) => gather(&own, *from).map(|z| proj.forward(z)),
                        None => own[*from].clone(),
                    };
                    x + z.expect("validated: an identity residual's branch has maps at its source")
                }),
                LayerKind::Avgpool => own[l - 1].clone().map(|x| x.mean_dim(3).mean_dim(2)),
            };
            own.push(out);
        }
        let x = gather(&own, br.depth - 1).expect("validated: the head has maps to read");
        let logits = m.head.forward(x);
        let [n, o, _, _] = logits.dims();
        (own, logits.reshape([n, o]))
    }

    /// Branch `b`'s conv/fc at layer `l` (`None` where it has none): for the own inference path.
    pub(crate) fn conv(&self, b: usize, l: usize) -> Option<&Conv2d> {
        self.branches[b].convs.get(l)?.as_ref()
    }

    /// Branch `b`'s batch norm at layer `l`.
    pub(crate) fn norm(&self, b: usize, l: usize) -> Option<&BatchNorm> {
        self.branches[b].norms.get(l)?.as_ref()
    }

    /// Branch `b`'s head O_b.
    pub(crate) fn head(&self, b: usize) -> &Conv2d {
        &self.branches[b].head
    }

    /// Every branch on the whole batch (training, and the "all thresholds at −∞" reference).
    pub fn forward_all(&self, arch: &Arch, input: &Tensor<4>) -> Vec<Tensor<2>> {
        let mut maps: Vec<Maps> = Vec::with_capacity(arch.branches.len());
        let mut logits = Vec::with_capacity(arch.branches.len());
        for b in 0..arch.branches.len() {
            let (own, out) = self.forward_branch(arch, b, input, &maps);
            maps.push(own);
            logits.push(out);
        }
        logits
    }

    /// The last hidden maps of the last branch, flattened: `[batch, features]` (the
    /// activations the retrieval application clusters classes by).
    pub fn features(&self, arch: &Arch, input: &Tensor<4>) -> Tensor<2> {
        let b = arch.branches.len() - 1;
        let mut maps: Vec<Maps> = Vec::new();
        for t in 0..b {
            maps.push(self.forward_branch(arch, t, input, &maps).0);
        }
        let (own, _) = self.forward_branch(arch, b, input, &maps);
        let x = read_sources(arch, b, arch.branches[b].depth - 1, &own, &maps)
            .expect("validated: the head has maps to read");
        let [n, c, h, w] = x.dims();
        x.reshape([n, c * h * w])
    }
}

/// What layer `l + 1` (or the head, at a branch's last layer) of branch `b` reads: the maps
/// after layer `l` of branches 1..=b that have some there, concatenated along channels —
/// `own` for branch `b`, `prev[t]` for the earlier ones.
fn read_sources(arch: &Arch, b: usize, l: usize, own: &Maps, prev: &[Maps]) -> Option<Tensor<4>> {
    let parts: Vec<Tensor<4>> = arch
        .sources(b, l)
        .map(|t| {
            if t == b {
                own[l].clone()
            } else {
                prev[t][l].clone()
            }
        })
        .map(|x| x.expect("wiring: a source branch has maps at this layer"))
        .collect();
    match parts.len() {
        0 => None,
        1 => parts.into_iter().next(),
        _ => Some(Tensor::cat(parts, 1)),
    }
}

/// A network ready to run: its wiring and its weights. The non-sharing cascade is a list of
/// these (one per stage); the monolithic network and the onion are one each.
#[derive(Debug, Clone)]
pub struct Net {
    pub arch: Arch,
    pub module: OnionModule,
}

impl Net {
    pub fn new(arch: Arch, device: &Device) -> Net {
        let module = OnionModule::new(&arch, device);
        Net { arch, module }
    }
}

/// The archs a network kind is made of, in stage order.
pub fn archs(spec: &Spec, kind: NetworkKind) -> Vec<Arch> {
    match kind {
        NetworkKind::Monolithic => vec![Arch::monolithic(spec)],
        NetworkKind::Onion => vec![Arch::onion(spec)],
        NetworkKind::NonSharing => (0..spec.num_stages())
            .map(|s| Arch::nonsharing_stage(spec, s))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Two residual blocks (an identity and a projection) with batch norm, global average
    /// pooling; `split1` / `split2` the splits of the 8- and 16-filter convs.
    fn residual_spec(split1: &str, split2: &str) -> Spec {
        let text = format!(
            r#"
classes = 4
input = {{ channels = 2, height = 8, width = 8 }}
[[layer]]
type = "conv"
name = "c1"
filters = 8
kernel = 3
padding = 1
split = {split1}
[[layer]]
type = "relu"
name = "r1"
[[layer]]
type = "conv"
filters = 8
kernel = 3
padding = 1
split = {split1}
[[layer]]
type = "batchnorm"
[[layer]]
type = "add"
from = "r1"
[[layer]]
type = "relu"
name = "r2"
[[layer]]
type = "conv"
filters = 16
kernel = 3
padding = 1
stride = 2
split = {split2}
[[layer]]
type = "add"
from = "r2"
[[layer]]
type = "avgpool"
[[stage]]
classes = 2
label_map = [0, 0, 1, 1]
[[stage]]
"#
        );
        Spec::from_toml(&text, std::path::Path::new("residual.toml")).unwrap()
    }

    fn max_diff(a: &Tensor<2>, b: &Tensor<2>) -> f32 {
        (a.clone() - b.clone()).abs().max().into_scalar::<f32>()
    }

    #[test]
    fn residual_onion_with_every_channel_in_stage_1_is_the_monolithic_network() {
        let device = Device::default();
        device.seed(3);
        let spec = residual_spec("[8, 0]", "[16, 0]");
        let onion_arch = Arch::onion(&spec);
        let onion = OnionModule::new(&onion_arch, &device);
        // the monolithic network with stage 1's weights and stage 2's head
        let [b1, b2] = [&onion.branches[0], &onion.branches[1]];
        let mono = OnionModule {
            branches: vec![BranchModule {
                convs: b1.convs.clone(),
                norms: b1.norms.clone(),
                drops: b1.drops.clone(),
                head: b2.head.clone(),
            }],
        };
        let x = Tensor::<4>::random([5, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let o = onion.forward_all(&onion_arch, &x);
        let m = mono.forward_all(&Arch::monolithic(&spec), &x);
        assert!(max_diff(&o[1], &m[0]) <= 1e-5, "{}", max_diff(&o[1], &m[0]));
    }

    #[test]
    fn stage_1_of_a_residual_onion_ignores_stage_2() {
        let device = Device::default();
        let spec = residual_spec("[2, 6]", "[4, 12]");
        let arch = Arch::onion(&spec);
        device.seed(1);
        let a = OnionModule::new(&arch, &device);
        device.seed(2);
        let other = OnionModule::new(&arch, &device);
        // stage 2's weights replaced
        let b = OnionModule {
            branches: vec![a.branches[0].clone(), other.branches[1].clone()],
        };
        let x = Tensor::<4>::random([5, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let (ya, yb) = (a.forward_all(&arch, &x), b.forward_all(&arch, &x));
        assert_eq!(max_diff(&ya[0], &yb[0]), 0.0, "stage 1 unchanged");
        assert!(max_diff(&ya[1], &yb[1]) > 1e-3, "stage 2 changed");
    }
}
