//! Bad input, by kind: impossible sizes, descriptions that do not fit the data, files of a
//! model directory that do not belong together, diverged training and vague errors. Each
//! kind has the example that was reported and at least one more of the same kind; every
//! one must be a clear error (exit 1, no panic) naming the file or option and the value.

use std::path::{Path, PathBuf};

mod common;
use common::{assert_clean_error, onionnet, stderr, tmp};

fn spec_text() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/fashion-retrieval.toml"),
    )
    .unwrap()
}

fn subset() -> String {
    onionnet::data::fashion::subset_dir().display().to_string()
}

/// The retrieval description with `from` replaced by `to`, written to `dir/name`.
fn variant(dir: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    let text = spec_text();
    assert!(text.contains(from), "{from}");
    let p = dir.join(name);
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One epoch of the shipped retrieval description's monolithic network into `out`, on a
/// small slice of the committed subset, with `extra` options.
fn train_monolithic(out: &Path, extra: &[&str]) -> std::process::Output {
    let sub = subset();
    let mut a = vec![
        "train",
        "fashion-retrieval",
        "--network",
        "monolithic",
        "--out",
        s(out),
        "--data",
        &sub,
        "--epochs",
        "1",
    ];
    a.extend_from_slice(&SMALL);
    a.extend_from_slice(extra);
    onionnet(&a)
}

/// A small slice of the committed subset.
const SMALL: [&str; 6] = [
    "--train-limit",
    "600",
    "--calib-size",
    "200",
    "--test-limit",
    "200",
];

#[test]
fn sizes_that_overflow_or_cannot_fit_are_refused_naming_the_layer() {
    let d = tmp("bad-sizes");
    // the reported examples: padding near usize::MAX, 10^9 filters, a 10^9 x 10^9 input
    let p = variant(
        &d,
        "pad.toml",
        "padding = 1",
        "padding = 9223372036854775807",
    );
    assert_clean_error(
        &onionnet(&["cost", s(&p)]),
        &["pad.toml", "layer[0].padding", "9223372036854775807"],
    );
    let p = variant(&d, "filters.toml", "filters = 32", "filters = 1000000000");
    for cmd in ["cost", "bench"] {
        assert_clean_error(
            &onionnet(&[cmd, s(&p)]),
            &["filters.toml", "layer[0].filters", "1000000000"],
        );
    }
    let p = variant(
        &d,
        "input.toml",
        "height = 28, width = 28",
        "height = 1000000000, width = 1000000000",
    );
    assert_clean_error(
        &onionnet(&["cost", s(&p)]),
        &["input.toml", "input.height", "1000000000"],
    );
    // more of the kind: widths each within limits whose product is not
    let p = variant(
        &d,
        "wide.toml",
        "height = 28, width = 28",
        "height = 16000, width = 16000",
    );
    assert_clean_error(&onionnet(&["cost", s(&p)]), &["wide.toml", "layer[", "GiB"]);
    // a kernel far beyond any map, and a padding past the kernel
    let p = variant(
        &d,
        "kernel.toml",
        "kernel = 3",
        "kernel = 4611686018427387904",
    );
    assert_clean_error(
        &onionnet(&["cost", s(&p)]),
        &["kernel.toml", "layer[0].kernel", "at most"],
    );
    let p = variant(&d, "pad3.toml", "padding = 1", "padding = 3");
    assert_clean_error(
        &onionnet(&["cost", s(&p)]),
        &["pad3.toml", "layer[0].padding", "less than the kernel"],
    );
    // valid, but too large for this machine's memory at this batch: refused before allocating
    let p = variant(
        &d,
        "big.toml",
        "filters = 32\nkernel = 3\npadding = 1\nsplit = [8, 24]",
        "filters = 65536\nkernel = 3\npadding = 1\nsplit = [0.25, 0.75]",
    );
    assert_clean_error(
        &onionnet(&[
            "train",
            s(&p),
            "--network",
            "monolithic",
            "--out",
            s(&d.join("big")),
            "--data",
            &subset(),
            "--batch-size",
            "100000",
        ]),
        &["--batch-size", "GiB"],
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn descriptions_that_do_not_fit_the_data_are_refused() {
    let d = tmp("bad-fit");
    for (name, classes) in [
        ("five.toml", "classes = 5"),
        ("twelve.toml", "classes = 12"),
    ] {
        let p = variant(&d, name, "classes = 10", classes);
        let out = d.join(name);
        let mut args = vec![
            "train",
            s(&p),
            "--network",
            "monolithic",
            "--out",
            s(&out),
            "--data",
        ];
        let sub = subset();
        args.push(&sub);
        args.extend_from_slice(&SMALL);
        assert_clean_error(&onionnet(&args), &[name, "classes"]);
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn settings_that_cannot_train_are_refused_and_divergence_saves_nothing() {
    let d = tmp("bad-train");
    let out = d.join("m");
    let train = |extra: &[&str]| train_monolithic(&out, extra);
    for (opt, value) in [
        ("--momentum", "NaN"),
        ("--momentum", "1.5"),
        ("--weight-decay", "-1"),
        ("--batch-size", "0"),
        ("--lr", "inf"),
        ("--lr", "0"),
    ] {
        let arg = format!("{opt}={value}");
        assert_clean_error(&train(&[&arg]), &[&format!("{opt} {value}")]);
        assert!(
            !out.join("net0.bpk").exists(),
            "{opt} {value}: nothing saved"
        );
    }
    // the reported example: a learning rate that diverges
    let o = train(&["--lr", "1e30"]);
    assert_clean_error(&o, &["diverged", "--lr 1e30", "epoch 1"]);
    assert!(
        !out.join("net0.bpk").exists(),
        "nothing of a diverged epoch"
    );
    let log = std::fs::read_to_string(out.join("train.json")).unwrap_or_default();
    assert!(!log.contains("null"), "no non-finite value written: {log}");
    let _ = std::fs::remove_dir_all(&d);
}

/// One small demo, then its model directory's files damaged or mixed, one kind at a time.
#[test]
fn files_of_a_model_directory_are_checked_against_each_other() {
    let d = tmp("bad-files");
    let out = d.join("run");
    let sub = subset();
    let mut args = vec!["demo", "--epochs", "1", "--out", s(&out), "--data", &sub];
    args.extend_from_slice(&SMALL);
    let o = onionnet(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let onion = out.join("onion");
    let mono = out.join("monolithic");
    let eval = |dirs: &[&Path], extra: &[&str]| {
        let mut a = vec!["eval"];
        a.extend(dirs.iter().map(|p| s(p)));
        a.extend_from_slice(&["--data", &sub]);
        a.extend_from_slice(&SMALL);
        a.extend_from_slice(extra);
        onionnet(&a)
    };
    assert!(eval(&[&mono, &onion], &[]).status.success());
    // --top-k beyond the classes
    assert_clean_error(
        &eval(&[&onion], &["--top-k", "100"]),
        &["--top-k 100", "1..=10"],
    );

    let th = onion.join("thresholds.json");
    let good = std::fs::read_to_string(&th).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    // fewer thresholds than stage 1 has s-classes
    v["calibrations"][0]["thresholds"][0]
        .as_array_mut()
        .unwrap()
        .pop();
    std::fs::write(&th, v.to_string()).unwrap();
    assert_clean_error(
        &eval(&[&onion], &[]),
        &[
            "thresholds.json",
            "thresholds[0] has 3 values",
            "4 s-classes",
        ],
    );
    // a target TPR of 7.5, thresholds of 1e30
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["calibrations"][0]["target_tpr"] = 7.5.into();
    std::fs::write(&th, v.to_string()).unwrap();
    assert_clean_error(
        &eval(&[&onion], &[]),
        &["thresholds.json", "target_tpr = 7.5"],
    );
    // thresholds of another network (the non-sharing cascade's, same counts)
    std::fs::copy(out.join("non-sharing/thresholds.json"), &th).unwrap();
    assert_clean_error(
        &eval(&[&onion], &[]),
        &["thresholds.json", "calibrated on another network"],
    );
    std::fs::write(&th, &good).unwrap();
    assert!(eval(&[&onion], &[]).status.success());
    // retrieve reads the same checks
    let pre = onion.join("preprocess.json");
    let text = std::fs::read_to_string(&pre).unwrap();
    std::fs::write(&pre, text.replace("28", "32")).unwrap();
    let o = onionnet(&["retrieve", "--model", s(&onion), "--query", "0", &sub]);
    assert_clean_error(&o, &["preprocess.json", "input"]);
    std::fs::write(&pre, text).unwrap();
    // a path to search that does not exist: named, not "0 retrieved"
    let o = onionnet(&[
        "retrieve",
        "--model",
        s(&onion),
        "--query",
        "Bag",
        s(&d.join("absent")),
    ]);
    assert_clean_error(&o, &["absent", "no such file or folder"]);
    // a stream of batches whose total size overflows: still the same table
    assert!(
        eval(&[&onion], &["--pool", "18446744073709551615"])
            .status
            .success()
    );

    // a monolithic network of another description next to this onion
    let other = variant(
        &d,
        "other.toml",
        "filters = 32\nkernel = 3\npadding = 1\nsplit = [8, 24]",
        "filters = 16\nkernel = 3\npadding = 1\nsplit = [4, 12]",
    );
    let m2 = d.join("m2");
    let mut tr = vec![
        "train",
        s(&other),
        "--network",
        "monolithic",
        "--out",
        s(&m2),
        "--epochs",
        "1",
        "--data",
        &sub,
    ];
    tr.extend_from_slice(&SMALL);
    assert!(onionnet(&tr).status.success());
    assert_clean_error(
        &eval(&[&m2, &onion], &[]),
        &["different monolithic networks", "cannot be compared"],
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn vague_errors_now_name_the_option_or_file() {
    let d = tmp("bad-vague");
    let sub = subset();
    let eval = |extra: &[&str]| {
        let mut a = vec!["eval", "nowhere"];
        a.extend_from_slice(extra);
        onionnet(&a)
    };
    // held-out sizes
    assert_clean_error(
        &eval(&[
            "--data",
            &sub,
            "--train-limit",
            "200",
            "--calib-size",
            "10000",
        ]),
        &["--calib-size 10000", "200 training images"],
    );
    assert_clean_error(
        &eval(&["--data", &sub, "--train-limit", "1"]),
        &["--train-limit 1", "at least 2"],
    );
    assert_clean_error(
        &eval(&["--data", &sub, "--test-limit", "0"]),
        &["--test-limit 0", "no test image"],
    );
    // --data at a regular file, or nowhere
    let file = d.join("file.txt");
    std::fs::write(&file, "x").unwrap();
    assert_clean_error(
        &eval(&["--data", s(&file)]),
        &["--data", "file.txt", "is a file"],
    );
    assert_clean_error(
        &eval(&["--data", s(&d.join("absent"))]),
        &["--data", "absent", "no such folder"],
    );
    // non-UTF-8 bytes in a description: the position
    let p = d.join("latin1.toml");
    let mut bytes = b"name = \"x\"\n# caf".to_vec();
    bytes.push(0xe9);
    std::fs::write(&p, bytes).unwrap();
    assert_clean_error(
        &onionnet(&["cost", s(&p)]),
        &["latin1.toml", "0xe9", "line 2, column 6"],
    );
    // a description that never ends
    if Path::new("/dev/zero").exists() {
        assert_clean_error(
            &onionnet(&["cost", "/dev/zero"]),
            &["/dev/zero", "longer than"],
        );
    }
    // resuming with other settings: which settings, by option name
    let out = d.join("m");
    let train = |lr: &str, resume: bool| {
        let resume: &[&str] = if resume { &["--resume"] } else { &[] };
        train_monolithic(&out, &[&["--lr", lr], resume].concat())
    };
    assert!(train("0.05", false).status.success());
    let o = train("0.01", true);
    assert_clean_error(&o, &["--lr 0.05 (this run: 0.01)"]);
    assert!(!stderr(&o).contains("TrainConfig"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}

/// Run only as the child process of [`a_panic_is_reported_as_a_bug_with_its_own_exit_code`].
#[test]
#[ignore = "a child process of a_panic_is_reported_as_a_bug_with_its_own_exit_code"]
fn panicking_child() {
    onionnet::cli::report_panics();
    // (from a worker thread, as a panic inside the engine's pool would be)
    std::thread::spawn(|| panic!("a deliberate panic"))
        .join()
        .ok();
    unreachable!("the hook exits the process");
}

#[test]
fn a_panic_is_reported_as_a_bug_with_its_own_exit_code() {
    let o = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["panicking_child", "--exact", "--ignored", "--nocapture"])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(onionnet::cli::BUG_EXIT), "{e}");
    assert!(e.contains("onionnet hit a bug (a deliberate panic"), "{e}");
    assert!(e.contains("Please report it"), "{e}");
    assert!(!e.contains("stack backtrace"), "{e}");
}
