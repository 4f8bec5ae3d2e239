//! Weights to and from safetensors (`onionnet export` / `import`): the round trip gives the
//! same scores and keeps the thresholds; edited weights drop them; files of another
//! description, with a missing, extra, misshapen or non-finite tensor, or not safetensors at
//! all, are clear errors; shipped models resolve by name from a fresh cache.

use burn::tensor::{Device, Tensor, TensorData};
use onionnet::checkpoint::Checkpoint;
use onionnet::error::CheckpointError;
use onionnet::export::{export, import, tensors};
use onionnet::onion::NetworkKind;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

mod common;
use common::{assert_clean_error, onionnet, stderr, tmp};

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fashion")
}

fn device() -> Device {
    Device::default()
}

/// A file's tensors as f32 (name, shape, values) and its metadata.
type Named = Vec<(String, Vec<usize>, Vec<f32>)>;

fn read_file(p: &Path) -> (Named, HashMap<String, String>) {
    let bytes = std::fs::read(p).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut named: Named = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            assert_eq!(v.dtype(), Dtype::F32, "{n}");
            let vals = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (n, v.shape().to_vec(), vals)
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    (named, header.metadata().clone().unwrap_or_default())
}

/// Writes tensors (as `dtype`: F32 or F16) and metadata to `p`, as a tool other than onionnet would.
fn write_file(p: &Path, named: &Named, meta: Option<HashMap<String, String>>, dtype: Dtype) {
    let bytes: Vec<Vec<u8>> = named
        .iter()
        .map(|(_, _, v)| match dtype {
            Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::F16 => v
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
            _ => unreachable!(),
        })
        .collect();
    let views: Vec<(String, TensorView)> = named
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(p, safetensors::serialize(views, meta).unwrap()).unwrap();
}

/// Every stage's scores of `dir`'s network on 64 test images.
fn scores(dir: &Path) -> Vec<Vec<f32>> {
    let model = Checkpoint::new(dir).load_model(&device()).unwrap();
    let data = onionnet::data::fashion::load_split(&onionnet::data::fashion::subset_dir(), "t10k")
        .unwrap();
    let x = Tensor::<4>::from_data(
        TensorData::new(data.images[..64 * 784].to_vec(), [64, 1, 28, 28]),
        &device(),
    );
    model.scores_all(&x)
}

#[test]
fn the_round_trip_keeps_weights_scores_and_thresholds() {
    let d = tmp("export-round-trip");
    let file = d.join("fashion.safetensors");
    let s = export(&Checkpoint::new(&shipped_dir()), &file, &device()).unwrap();
    assert_eq!(
        (s.kind, s.thresholds, s.preprocess),
        (NetworkKind::Onion, true, true)
    );

    // the documented names: one per branch and layer, weight and bias each
    let (named, meta) = read_file(&file);
    let names: Vec<&str> = named.iter().map(|t| t.0.as_str()).collect();
    for stage in ["stage1", "stage2"] {
        for layer in ["conv1", "conv2", "fc1", "head"] {
            for p in ["weight", "bias"] {
                let n = format!("{stage}.{layer}.{p}");
                assert!(names.contains(&n.as_str()), "{n} in {names:?}");
            }
        }
    }
    assert_eq!(names.len(), 16);
    let shape = |n: &str| named.iter().find(|t| t.0 == n).unwrap().1.clone();
    // stage 2 reads stage 1's 8 maps and its own 24 after conv1
    assert_eq!(shape("stage2.conv2.weight"), [48, 32, 3, 3]);
    assert_eq!(shape("stage1.fc1.weight"), [32, 16, 7, 7]);
    assert_eq!(meta["kind"], "onion");
    // what export writes is what the model holds
    let model = Checkpoint::new(&shipped_dir())
        .load_model(&device())
        .unwrap();
    assert_eq!(tensors(&model), named);

    let out = d.join("imported");
    let s = import(&file, None, None, &Checkpoint::new(&out), &device()).unwrap();
    assert!(s.thresholds && s.preprocess);
    assert_eq!(scores(&out), scores(&shipped_dir()));
    let spec = Checkpoint::new(&out).load_spec().unwrap();
    let (a, b) = (
        Checkpoint::new(&out).load_thresholds(&spec).unwrap(),
        Checkpoint::new(&shipped_dir())
            .load_thresholds(&spec)
            .unwrap(),
    );
    assert_eq!(
        serde_json::to_string(&a.calibrations).unwrap(),
        serde_json::to_string(&b.calibrations).unwrap()
    );
    assert_eq!(
        Checkpoint::new(&out).load_preprocess().unwrap(),
        Checkpoint::new(&shipped_dir()).load_preprocess().unwrap()
    );

    // a second import into the same, now full, directory is refused
    let e = import(&file, None, None, &Checkpoint::new(&out), &device()).unwrap_err();
    let why = std::error::Error::source(&e).map(|s| s.to_string());
    assert!(
        why.as_deref().is_some_and(|w| w.contains("not empty")),
        "{e}: {why:?}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn edited_or_foreign_weights_import_without_thresholds() {
    let d = tmp("export-edited");
    let file = d.join("f.safetensors");
    export(&Checkpoint::new(&shipped_dir()), &file, &device()).unwrap();
    let (mut named, meta) = read_file(&file);

    // one weight changed after export (fine-tuned elsewhere): the thresholds no longer apply
    named[0].2[0] += 0.5;
    let edited = d.join("edited.safetensors");
    write_file(&edited, &named, Some(meta.clone()), Dtype::F32);
    let s = import(
        &edited,
        None,
        None,
        &Checkpoint::new(&d.join("a")),
        &device(),
    )
    .unwrap();
    assert!(!s.thresholds && s.preprocess);
    assert!(!d.join("a/thresholds.json").exists());

    // written by another tool in half precision, without metadata: the description and kind
    // come from the caller; the scores stay close to the f32 network's
    named[0].2[0] -= 0.5;
    let plain = d.join("plain.safetensors");
    write_file(&plain, &named, None, Dtype::F16);
    let e = import(
        &plain,
        None,
        None,
        &Checkpoint::new(&d.join("b")),
        &device(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("--spec"), "{e}");
    let spec = onionnet::shipped::spec("fashion-retrieval");
    let s = import(
        &plain,
        Some(&spec),
        None,
        &Checkpoint::new(&d.join("b")),
        &device(),
    )
    .unwrap();
    assert!(!s.thresholds && !s.preprocess);
    let (x, y) = (scores(&d.join("b")), scores(&shipped_dir()));
    let worst = x
        .iter()
        .flatten()
        .zip(y.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst > 0.0 && worst < 0.02,
        "f16 weights change scores by {worst}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// `import`'s error for `named` (no metadata) as the onion of the retrieval description.
fn import_error(d: &Path, name: &str, named: &Named) -> String {
    let p = d.join(format!("{name}.safetensors"));
    write_file(&p, named, None, Dtype::F32);
    let spec = onionnet::shipped::spec("fashion-retrieval");
    let e = import(
        &p,
        Some(&spec),
        None,
        &Checkpoint::new(&d.join(name)),
        &device(),
    )
    .unwrap_err();
    assert!(matches!(e, CheckpointError::Mismatch { .. }), "{e}");
    assert!(!d.join(name).exists(), "nothing written on error");
    e.to_string()
}

#[test]
fn files_that_do_not_fit_the_description_are_refused() {
    let d = tmp("export-bad");
    let file = d.join("f.safetensors");
    export(&Checkpoint::new(&shipped_dir()), &file, &device()).unwrap();
    let (named, _) = read_file(&file);

    let mut missing = named.clone();
    missing.retain(|t| t.0 != "stage2.fc1.bias");
    let e = import_error(&d, "missing", &missing);
    assert!(e.contains("no tensor \"stage2.fc1.bias\""), "{e}");

    let mut extra = named.clone();
    extra.push(("stage3.conv1.weight".into(), vec![2], vec![0.0, 1.0]));
    let e = import_error(&d, "extra", &extra);
    assert!(e.contains("stage3.conv1.weight"), "{e}");

    let mut shape = named.clone();
    let t = shape
        .iter_mut()
        .find(|t| t.0 == "stage1.conv1.weight")
        .unwrap();
    t.1 = vec![8, 1, 9];
    let e = import_error(&d, "shape", &shape);
    assert!(e.contains("[8, 1, 9]") && e.contains("[8, 1, 3, 3]"), "{e}");

    let mut nan = named.clone();
    nan[3].2[1] = f32::NAN;
    let e = import_error(&d, "nan", &nan);
    assert!(e.contains("not finite") && e.contains(&nan[3].0), "{e}");

    // the weights of one description offered as another's
    let spec = onionnet::shipped::spec("2ch-deep");
    let e = import(
        &file,
        Some(&spec),
        None,
        &Checkpoint::new(&d.join("x")),
        &device(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("fashion-retrieval") && e.contains("2ch-deep"),
        "{e}"
    );
    let e = import(
        &file,
        None,
        Some(NetworkKind::Monolithic),
        &Checkpoint::new(&d.join("x")),
        &device(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("onion") && e.contains("monolithic"), "{e}");

    // not safetensors: a truncated file and a text file
    let bytes = std::fs::read(&file).unwrap();
    for (name, b) in [("cut", &bytes[..bytes.len() / 2]), ("text", &b"hello"[..])] {
        let p = d.join(name);
        std::fs::write(&p, b).unwrap();
        let e = import(&p, None, None, &Checkpoint::new(&d.join("y")), &device()).unwrap_err();
        assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(p.to_str().unwrap()), "{e}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn shipped_models_resolve_by_name_through_the_cli() {
    let d = tmp("export-cli");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_onionnet"))
            .args(args)
            .env("ONIONNET_CACHE", d.join("cache"))
            .output()
            .unwrap()
    };
    let o = run(&["models"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("fashion"));

    let file = d.join("f.safetensors");
    let o = run(&["export", "fashion", "--out", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("16 tensors"), "{}", stderr(&o));
    // unpacked into the cache, byte for byte the committed files
    let cached = std::fs::read_dir(d.join("cache/models"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for f in ["net0.bpk", "thresholds.json", "README.md"] {
        assert_eq!(
            std::fs::read(cached.join(f)).unwrap(),
            std::fs::read(shipped_dir().join(f)).unwrap(),
            "{f}"
        );
    }
    let out = d.join("imported");
    let o = run(&[
        "import",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("with its preprocessing and thresholds"));

    // a detector's description: refused by name, not with burn's missing tensors
    let det = d.join("det");
    std::fs::create_dir_all(&det).unwrap();
    std::fs::write(
        det.join("spec.toml"),
        onionnet::shipped::spec("detection").to_toml(),
    )
    .unwrap();
    std::fs::write(det.join("train.json"), "{}").unwrap();
    let o = onionnet(&[
        "export",
        det.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["a detector", "spec.toml"]);

    let o = onionnet(&["export", "no-such-model", "--out", file.to_str().unwrap()]);
    assert_clean_error(&o, &["no-such-model", "shipped model (fashion"]);
    let _ = std::fs::remove_dir_all(&d);
}
