//! The command line on real inputs and on bad ones: every bad input is a clear error (file,
//! field, value) and a non-zero exit, never a panic.

use std::path::Path;
use std::process::Command;

mod common;
use common::{assert_clean_error, onionnet, stderr, tmp};

fn spec() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("specs/fashion-retrieval.toml")
        .display()
        .to_string()
}

fn subset() -> String {
    onionnet::data::fashion::subset_dir().display().to_string()
}

#[test]
fn cost_prints_json_rows() {
    let o = onionnet(&["cost", &spec(), "--json", "--p", "0.25"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let onion = rows.iter().find(|r| r["network"] == "onion").unwrap();
    // 307456 + 0.25 * 3181184 over 4241152 (see `onionnet cost`)
    let want = (307456.0 + 0.25 * 3181184.0) / 4241152.0;
    assert!((onion["theory_ratio"].as_f64().unwrap() - want).abs() < 1e-9);
}

/// `--p` takes a comma-separated list as well as repeated flags (the same rows either way),
/// and a bad value in the list is refused by name.
#[test]
fn p_lists_and_repeats_agree() {
    let rows = |args: &[&str]| {
        let o = onionnet(&[&["cost", &spec(), "--json"][..], args].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["rows"].clone()
    };
    let listed = rows(&["--p", "0.1,0.5"]);
    assert_eq!(listed.as_array().unwrap().len(), 6);
    assert_eq!(listed, rows(&["--p", "0.1", "--p", "0.5"]));
    // (a command-line error: clap's exit code 2)
    let o = onionnet(&["cost", &spec(), "--p", "0.1,1.5"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("'1.5'") && e.contains("--p") && !e.contains("panicked"),
        "{e}"
    );
}

/// An output directory that cannot be made is refused by name before the benchmark runs
/// (not after minutes of measuring); a missing description names its file once.
#[test]
fn bench_output_directory_and_missing_spec_are_named() {
    let d = tmp("cli-bench-out");
    let file = d.join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = file.join("sub");
    // (a default-sized run would take minutes: the error comes first)
    let o = onionnet(&["bench", &spec(), "--out", out.to_str().unwrap()]);
    assert_clean_error(&o, &["output directory", out.to_str().unwrap()]);
    let missing = d.join("missing.toml");
    let o = onionnet(&["bench", missing.to_str().unwrap()]);
    assert_clean_error(
        &o,
        &["missing.toml", "not the name of a shipped description"],
    );
    assert_eq!(
        stderr(&o).matches("no such file").count(),
        1,
        "{}",
        stderr(&o)
    );
}

/// The shipped descriptions are in the binary: a name works from any directory, and so does a
/// path to a description of one's own; the data the experiments need is a clear error there.
#[test]
fn shipped_descriptions_work_from_another_directory() {
    let d = tmp("cli-elsewhere");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_onionnet"))
            .args(args)
            .current_dir(&d)
            .output()
            .expect("runs")
    };
    let o = run(&["cost", "2ch-deep", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!json["rows"].as_array().unwrap().is_empty());
    std::fs::copy(spec(), d.join("mine.toml")).unwrap();
    assert!(run(&["cost", "mine.toml"]).status.success());
    // (where Debian's full set is installed, the demo would find it there and train)
    if !Path::new(onionnet::data::fashion::DEBIAN_DIR).exists() {
        let o = run(&["demo", "--epochs", "1"]);
        assert_clean_error(&o, &["Fashion-MNIST", "--data", "dataset-fashion-mnist"]);
    }
}

/// Output read by a program that stops early (`onionnet cost ... | head -1`): the command ends
/// on the closed pipe without a panic message.
#[cfg(unix)]
#[test]
fn closed_pipe_ends_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_onionnet"))
        .args(["cost", &spec()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    // read nothing: the pipe closes before the table is written
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    child.wait().unwrap();
    assert!(
        !err.contains("panicked"),
        "no panic on a closed pipe: {err}"
    );
}

/// `bench --json`: the row format, the time breakdown and the per-layer profile
/// (whose layers.csv is written beside bench.csv and bench.png).
#[test]
fn bench_prints_json_rows_and_layers() {
    let d = tmp("cli-bench");
    let out = d.display().to_string();
    let args = ["--json", "--batch", "8", "--reps", "1", "--warmup", "0"];
    let o = onionnet(&[&["bench", &spec(), "--p", "0.5", "--out", &out][..], &args].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        for key in [
            "network",
            "p",
            "ms_per_example",
            "theory_ratio",
            "measured_ratio",
            "measured_lo",
            "measured_hi",
        ] {
            assert!(!r[key].is_null(), "{key} in {r}");
        }
        assert_eq!(r["p"].as_f64(), Some(0.5));
        // one repetition: the interval of the median is that run alone
        assert_eq!(r["measured_lo"], r["measured_ratio"]);
        assert_eq!(r["measured_hi"], r["measured_ratio"]);
    }
    // each network's worst p and its verdict on the target
    assert_eq!(v["target_tolerance"].as_f64(), Some(0.1));
    for k in ["monolithic", "non-sharing", "onion"] {
        let t = &v["target"][k];
        assert_eq!(t["worst"]["p"].as_f64(), Some(0.5), "{t}");
        let (lo, d, hi) = (
            &t["worst"]["lo"],
            &t["worst"]["deviation"],
            &t["worst"]["hi"],
        );
        assert!(
            lo.as_f64() <= d.as_f64() && d.as_f64() <= hi.as_f64(),
            "{t}"
        );
        assert!(t["verdict"].as_str().is_some(), "{t}");
    }
    // every stage of the three networks: conv1, conv2, fc1, head (the ReLUs and poolings
    // fused into the convs); stage 2 on round(0.5 x 8) rows
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4 * 5, "{layers:?}");
    assert!(
        layers
            .iter()
            .all(|l| l["rows"] == if l["stage"] == 1 { 8 } else { 4 })
    );
    for f in ["bench.csv", "bench.png", "layers.csv"] {
        assert!(d.join(f).is_file(), "{f}");
    }
    let bench_csv = std::fs::read_to_string(d.join("bench.csv")).unwrap();
    assert!(
        bench_csv
            .lines()
            .next()
            .unwrap()
            .ends_with(",measured_lo,measured_hi")
    );
    let csv = std::fs::read_to_string(d.join("layers.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 20);
    assert!(csv.starts_with("network,") && csv.lines().next().unwrap().ends_with(",gflops"));
    // the vector units' peak: measured wherever the own kernels' instruction sets are
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        let f = v["fma_peak_gflops"].as_f64().expect("fma_peak_gflops");
        assert!(f.is_finite() && f > 1.0, "{f}");
    }
}

#[test]
fn malformed_descriptions_name_file_field_and_value() {
    let d = tmp("cli-spec");
    let text = std::fs::read_to_string(spec()).unwrap();
    let bad = d.join("bad.toml");
    std::fs::write(&bad, text.replace("split = [16, 48]", "split = [16, 40]")).unwrap();
    let o = onionnet(&["cost", bad.to_str().unwrap()]);
    assert_clean_error(
        &o,
        &["bad.toml", "layer[3].split", "[16, 40]", "adds up to 56"],
    );
    std::fs::write(&bad, "this is = not toml [").unwrap();
    assert_clean_error(
        &onionnet(&["cost", bad.to_str().unwrap()]),
        &["bad.toml", "malformed TOML"],
    );
    assert_clean_error(
        &onionnet(&["cost", d.join("missing.toml").to_str().unwrap()]),
        &["missing.toml"],
    );
}

#[test]
fn tpr_outside_the_unit_interval_is_refused() {
    let o = onionnet(&["calibrate", "somewhere", "--tpr", "1.5"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("1.5") && stderr(&o).contains("(0, 1]"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn missing_or_corrupt_data_is_a_clear_error() {
    let d = tmp("cli-data");
    assert_clean_error(
        &onionnet(&["eval", "x", "--data", d.to_str().unwrap()]),
        &["train-images-idx3-ubyte.gz"],
    );
    std::fs::write(d.join("train-images-idx3-ubyte.gz"), b"not gzip").unwrap();
    std::fs::write(d.join("train-labels-idx1-ubyte.gz"), b"not gzip").unwrap();
    assert_clean_error(
        &onionnet(&["eval", "x", "--data", d.to_str().unwrap()]),
        &["train-images-idx3-ubyte.gz", "gzip"],
    );
}

/// The demo on a small slice (one epoch), its JSON, then the separate steps on its output,
/// then damaged checkpoints.
#[test]
fn demo_json_then_eval_and_damaged_checkpoints() {
    let d = tmp("cli-demo");
    let out = d.join("run");
    let common = [
        "--data",
        &subset(),
        "--train-limit",
        "1500",
        "--calib-size",
        "500",
        "--test-limit",
        "300",
    ];
    let mut args = vec![
        "demo",
        "--epochs",
        "1",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(&common);
    let o = onionnet(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "monolithic + 2 TPRs x 2 cascades");
    let keys = [
        "network",
        "metric_name",
        "metric",
        "target_tpr",
        "reached_tpr",
        "pass_pct",
        "ms_per_1000",
        "speedup_measured",
        "speedup_theory",
    ];
    for r in rows {
        for k in keys {
            assert!(r.get(k).is_some(), "row {r} lacks {k}");
        }
    }
    assert_eq!(rows[0]["network"], "monolithic");
    assert!(rows[0]["target_tpr"].is_null() && rows[0]["pass_pct"].is_null());
    // each cascade's reached TPR comes with its exact 95% interval, which contains it
    assert!(rows[0].get("reached_tpr_interval").is_none());
    for r in &rows[1..] {
        let t = r["reached_tpr"].as_f64().unwrap();
        let i = r["reached_tpr_interval"].as_array().expect("an interval");
        let (lo, hi) = (i[0].as_f64().unwrap(), i[1].as_f64().unwrap());
        assert!(lo <= t && t <= hi && lo < hi, "{r}");
    }
    assert!(
        rows.iter()
            .any(|r| r["network"] == "onion" && r["target_tpr"] == 0.99)
    );

    // the separate steps on the demo's networks
    let onion = out.join("onion");
    let mut cal = vec!["calibrate", onion.to_str().unwrap(), "--tpr", "0.9"];
    cal.extend_from_slice(&common);
    assert!(onionnet(&cal).status.success());
    let mono = out.join("monolithic");
    let mut ev = vec![
        "eval",
        mono.to_str().unwrap(),
        onion.to_str().unwrap(),
        "--json",
    ];
    ev.extend_from_slice(&common);
    let o = onionnet(&ev);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rows"][1]["target_tpr"], 0.9);
    // a stream of no batches is refused, naming the option and its value
    let mut ev0 = vec!["eval", onion.to_str().unwrap(), "--pool", "0"];
    ev0.extend_from_slice(&common);
    assert_clean_error(&onionnet(&ev0), &["--pool 0"]);

    // a truncated weight file is reported as corrupt, naming it
    let w = onion.join("net0.bpk");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 3]).unwrap();
    let mut ev = vec!["eval", onion.to_str().unwrap()];
    ev.extend_from_slice(&common);
    assert_clean_error(&onionnet(&ev), &["net0.bpk"]);
    // weights of another network under this description: a mismatch, naming the file
    std::fs::copy(out.join("monolithic/net0.bpk"), &w).unwrap();
    assert_clean_error(&onionnet(&ev), &["net0.bpk", "does not match"]);
    // training into an existing checkpoint without --resume is refused
    let spec = spec();
    let mut tr = vec![
        "train",
        spec.as_str(),
        "--network",
        "monolithic",
        "--out",
        mono.to_str().unwrap(),
    ];
    tr.extend_from_slice(&common);
    assert_clean_error(&onionnet(&tr), &["--resume"]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn wrong_image_size_is_refused() {
    let d = tmp("cli-size");
    let bad = d.join("big.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(spec())
            .unwrap()
            .replace("height = 28, width = 28", "height = 32, width = 32"),
    )
    .unwrap();
    let out = d.join("m");
    let o = onionnet(&[
        "train",
        bad.to_str().unwrap(),
        "--network",
        "monolithic",
        "--out",
        out.to_str().unwrap(),
        "--data",
        &subset(),
        "--train-limit",
        "300",
        "--calib-size",
        "100",
        "--test-limit",
        "10",
    ]);
    assert_clean_error(&o, &["big.toml", "input", "[1, 28, 28]", "[1, 32, 32]"]);
}

#[test]
fn calibrating_on_images_of_another_size_is_refused() {
    // a checkpoint of 32x32 inputs, calibrated on 28x28 Fashion-MNIST images
    let d = tmp("cli-calsize");
    let spec32 = std::fs::read_to_string(spec())
        .unwrap()
        .replace("height = 28, width = 28", "height = 32, width = 32")
        .replace(
            "label_map = \"kmeans\"",
            "label_map = [0, 1, 0, 0, 0, 2, 0, 2, 3, 2]",
        );
    let parsed = onionnet::spec::Spec::from_toml(&spec32, Path::new("s32.toml")).unwrap();
    let device = burn::tensor::Device::default();
    let ck = onionnet::checkpoint::Checkpoint::new(&d.join("o"));
    ck.save_spec(&parsed).unwrap();
    let arch = onionnet::onion::Arch::onion(&parsed);
    ck.save_module(0, &onionnet::onion::OnionModule::new(&arch, &device))
        .unwrap();
    let state = onionnet::checkpoint::TrainState {
        kind: onionnet::onion::NetworkKind::Onion,
        epochs_done: vec![1],
        epochs: 1,
        seed: 0,
        config: None,
        train_examples: 0,
        log: vec![vec![]],
        weights: Vec::new(),
    };
    ck.save_state(&state).unwrap();
    let o = onionnet(&[
        "calibrate",
        d.join("o").to_str().unwrap(),
        "--data",
        &subset(),
        "--train-limit",
        "300",
        "--calib-size",
        "100",
        "--test-limit",
        "10",
    ]);
    assert_clean_error(&o, &["[1, 28, 28]", "[1, 32, 32]"]);
}

/// Time budgets choose operating points: on `demo` (repeatable, beside the target TPRs, each
/// row naming its budget; a budget nothing fits is a warning) and on `calibrate` (the cost
/// model's `--budget`, or `--budget-ms` from stage times measured here; not both).
#[test]
fn budgets_choose_operating_points() {
    let d = tmp("cli-budget");
    let out = d.join("run");
    let o = onionnet(&[
        "demo",
        "--epochs",
        "1",
        "--json",
        "--out",
        out.to_str().unwrap(),
        "--data",
        &subset(),
        "--train-limit",
        "1500",
        "--calib-size",
        "500",
        "--test-limit",
        "300",
        "--tpr",
        "0.95",
        "--budget",
        "0.6",
        "--budget",
        "0.0001",
        "--budget-ms",
        "1000000",
    ]);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("warning: onion: --budget 0.0001: no target TPR fits"),
        "{e}"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    // monolithic + 2 cascades x (one target TPR + two budgets that fit)
    assert_eq!(rows.len(), 7, "{rows:?}");
    for kind in ["non-sharing", "onion"] {
        let of = |b: &str| {
            rows.iter()
                .find(|r| r["network"] == kind && r["budget"] == b)
                .unwrap_or_else(|| panic!("{kind} has no {b} row: {rows:?}"))
        };
        // the cost model's budget: no higher a target than the unbounded one, which takes the
        // highest target the held-out positives reach (every positive)
        let tight = of("0.6x")["target_tpr"].as_f64().unwrap();
        let loose = of("1000000ms")["target_tpr"].as_f64().unwrap();
        assert!(tight <= loose && loose == 1.0, "{kind}: {tight} {loose}");
    }
    // calibrate: --budget-ms from measured stage times, written as the only operating point
    let onion = out.join("onion");
    let cal = |extra: &[&str]| {
        let mut a = vec!["calibrate", onion.to_str().unwrap(), "--data"];
        let s = subset();
        a.push(&s);
        a.extend_from_slice(&["--train-limit", "1500", "--calib-size", "500"]);
        a.extend_from_slice(extra);
        onionnet(&a)
    };
    let o = cal(&["--budget-ms", "1000000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out_line = String::from_utf8_lossy(&o.stdout);
    assert!(out_line.contains("stage times measured here"), "{out_line}");
    let t: serde_json::Value =
        serde_json::from_slice(&std::fs::read(onion.join("thresholds.json")).unwrap()).unwrap();
    let cals = t["calibrations"].as_array().unwrap();
    assert_eq!(cals.len(), 1);
    assert_eq!(cals[0]["budget"], "1000000ms");
    let o = cal(&["--budget-ms", "0.000001"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--budget-ms 0.000001: no target TPR fits"),
        "{}",
        stderr(&o)
    );
    let o = cal(&["--budget", "0.5", "--budget-ms", "3"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}
