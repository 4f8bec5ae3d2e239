//! burn's wgpu backend computes what the CPU backend computes: every stage's scores of the
//! three networks on every layer kind within 1e-3, the gradients of one training step
//! likewise, and a small train + calibrate + eval run through the command line.
//!
//! These tests need a build with `--features wgpu` (else they are listed as ignored, with
//! that reason) and a GPU adapter (else each says why it skipped and passes; set
//! `ONIONNET_REQUIRE_GPU=1` to make a missing adapter a failure, as `scripts/gpu-check.sh`
//! does).
#![cfg_attr(not(feature = "wgpu"), allow(dead_code, unused_imports))]

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Distribution, Gradients, Tensor};
use onionnet::bench::random_models;
use onionnet::model::Model;
use onionnet::onion::{Net, NetworkKind, archs};
use onionnet::spec::Spec;
use std::path::Path;
use std::sync::OnceLock;

mod common;

/// The GPU, brought up once per test process; `None` (with the reason on stderr) without one.
fn gpu() -> Option<Device> {
    static GPU: OnceLock<Option<Device>> = OnceLock::new();
    GPU.get_or_init(|| {
        #[cfg(feature = "wgpu")]
        match onionnet::device::DeviceKind::Wgpu.init() {
            Ok(d) => return Some(d),
            Err(e) if std::env::var_os("ONIONNET_REQUIRE_GPU").is_some() => panic!("{e}"),
            Err(e) => eprintln!("skipped: {e}"),
        }
        None
    })
    .clone()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = a.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(d <= tol * scale, "{what}: differ by {d} (scale {scale})");
}

/// (paths relative to the repository root, where the tests run: `scripts/gpu-check.sh` runs
/// this test binary on another machine, from its copy of the repository)
fn spec(name: &str) -> Spec {
    Spec::from_file(Path::new(&format!("specs/{name}.toml"))).unwrap()
}

/// The command-line binary: `ONIONNET_BIN` where the script says where it is.
fn bin() -> std::path::PathBuf {
    std::env::var_os("ONIONNET_BIN").map_or_else(
        || env!("CARGO_BIN_EXE_onionnet").into(),
        std::path::PathBuf::from,
    )
}

fn on(model: &Model, device: &Device) -> Model {
    Model {
        nets: model
            .nets
            .iter()
            .map(|n| Net {
                arch: n.arch.clone(),
                module: n.module.clone().to_device(device),
            })
            .collect(),
        ..model.clone()
    }
}

#[test]
#[cfg_attr(
    not(feature = "wgpu"),
    ignore = "needs `--features wgpu` and a GPU adapter"
)]
fn forward_on_the_gpu_matches_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = Device::flex();
    // conv (strided, padded), fc, relu, maxpool (ceil too), batch norm, dropout (inference),
    // stages ending early, a stage without channels in a layer, residuals (identity and
    // projection) and global average pooling
    let specs = [
        spec("fashion-retrieval"),
        spec("resnet-fashion"),
        spec("2ch-deep"),
        spec("alexnet-64"),
        spec("detection"),
        common::three_stage(true),
        common::three_stage(false),
    ];
    for spec in &specs {
        let [c, h, w] = spec.input.dims();
        let x = Tensor::<4>::random([6, c, h, w], Distribution::Normal(0.0, 1.0), &cpu);
        for model in random_models(spec, &cpu, 3) {
            let want = model.scores_all(&x);
            let got = on(&model, &gpu).scores_all(&x.clone().to_device(&gpu));
            for (s, (a, b)) in want.iter().zip(&got).enumerate() {
                let what = format!("{} {} stage {}", spec.name, model.kind, s + 1);
                assert_close(a, b, 1e-3, &what);
            }
        }
    }
}

/// Every parameter's gradient, in visiting order.
struct Collect<'a> {
    grads: &'a Gradients,
    out: Vec<(String, Vec<f32>)>,
    path: Vec<String>,
}

impl ModuleVisitor for Collect<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            let v = g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            self.out.push((self.path.join("."), v));
        }
    }
}

/// The gradients of a fixed random linear function of every stage's logits.
fn gradients(net: &Net, x: &Tensor<4>, seed: u64) -> Vec<(String, Vec<f32>)> {
    let device = x.device();
    let mut prev = Vec::new();
    let mut loss: Option<Tensor<1>> = None;
    for s in 0..net.arch.branches.len() {
        let (maps, logits) = net.module.forward_branch(&net.arch, s, x, &prev);
        prev.push(maps);
        let cpu = Device::flex();
        cpu.seed(seed + s as u64);
        let w = Tensor::<2>::random(logits.dims(), Distribution::Normal(0.0, 1.0), &cpu)
            .to_device(&device);
        let term = (logits * w).sum();
        loss = Some(match loss {
            None => term,
            Some(l) => l + term,
        });
    }
    let grads = loss.unwrap().backward();
    let mut c = Collect {
        grads: &grads,
        out: Vec::new(),
        path: Vec::new(),
    };
    net.module.visit(&mut c);
    c.out
}

#[test]
#[cfg_attr(
    not(feature = "wgpu"),
    ignore = "needs `--features wgpu` and a GPU adapter"
)]
fn one_training_step_has_the_same_gradients_on_the_gpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = Device::flex().autodiff();
    let gpu = gpu.autodiff();
    // the three-stage fixtures without dropout (its random masks differ between devices)
    let specs = [true, false].map(|strided| {
        let text = common::three_stage_toml(strided)
            .replace("[[layer]]\ntype = \"dropout\"\nprob = 0.3\n", "");
        assert!(!text.contains("dropout"));
        Spec::from_toml(&text, Path::new("gradients.toml")).unwrap()
    });
    let x = Tensor::<4>::random([8, 2, 12, 12], Distribution::Normal(0.0, 1.0), &cpu);
    for (spec, kind) in specs.iter().flat_map(|s| NetworkKind::ALL.map(|k| (s, k))) {
        for arch in archs(spec, kind) {
            cpu.seed(11);
            let net = Net::new(arch, &cpu);
            let moved = Net {
                arch: net.arch.clone(),
                module: net.module.clone().fork(&gpu),
            };
            let want = gradients(&net, &x, 5);
            let got = gradients(&moved, &x.clone().to_device(&gpu), 5);
            assert!(!want.is_empty(), "{kind}: no gradients");
            assert_eq!(want.len(), got.len(), "{kind}: parameters with a gradient");
            for ((name, a), (_, b)) in want.iter().zip(&got) {
                assert_close(a, b, 1e-3, &format!("{kind} gradient of {name}"));
            }
        }
    }
}

#[test]
#[cfg_attr(
    not(feature = "wgpu"),
    ignore = "needs `--features wgpu` and a GPU adapter"
)]
fn train_calibrate_and_evaluate_on_the_gpu() {
    let bin = bin();
    let out = std::env::temp_dir().join(format!("onionnet-gpu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = |device: &str| {
        std::process::Command::new(&bin)
            .args(["--device", device, "fit", "fashion-retrieval", "--data"])
            .arg(onionnet::data::fashion::subset_dir())
            .args([
                "--train-limit",
                "1500",
                "--calib-size",
                "300",
                "--test-limit",
                "500",
            ])
            .args(["--epochs", "2", "--engine", "burn", "--json", "--out"])
            .arg(&out)
            .output()
            .unwrap()
    };
    if gpu().is_none() {
        // without an adapter the command is a clear error, not a panic
        let o = run("wgpu");
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert!(e.contains("no usable GPU adapter"), "{e}");
        return;
    }
    let o = run("wgpu");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{e}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "monolithic + 2 cascades x 2 TPRs");
    for r in rows {
        // (1,200 training images, 2 epochs: far better than chance, 0.1)
        let m = r["metric"].as_f64().unwrap();
        assert!(m > 0.3, "{}: mAP {m}", r["network"]);
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
#[cfg_attr(feature = "wgpu", ignore = "the build has the wgpu feature")]
fn without_the_feature_asking_for_the_gpu_says_how_to_build_it() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_onionnet"))
        .args(["--device", "wgpu", "cost", "fashion-retrieval"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("--features wgpu"), "{e}");
}
