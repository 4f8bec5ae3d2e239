//! Your own images in, answers out: `fit` on an image folder (PNGs written from the committed
//! Fashion-MNIST subset, with class-named folders), then `retrieve` with the trained onion on
//! new files — and the bad inputs of both.

use std::path::Path;

mod common;
use common::{assert_clean_error, onionnet, stderr, tmp};

/// `per_class` images of each class of the subset's `split` as PNGs under `dir/<class name>/`.
fn write_folder(dir: &Path, split: &str, per_class: usize) {
    let data =
        onionnet::data::fashion::load_split(&onionnet::data::fashion::subset_dir(), split).unwrap();
    let names = onionnet::data::fashion::CLASS_NAMES;
    let mut count = [0usize; 10];
    for (i, &l) in data.labels.iter().enumerate() {
        if count[l] == per_class {
            continue;
        }
        let px: Vec<u8> = data.images[i * 784..(i + 1) * 784]
            .iter()
            .map(|&v| (v * 255.0).round() as u8)
            .collect();
        // (folder names without '/': "T-shirt/top" becomes "T-shirt-top")
        let class = dir.join(names[l].replace('/', "-"));
        std::fs::create_dir_all(&class).unwrap();
        image::GrayImage::from_raw(28, 28, px)
            .unwrap()
            .save(class.join(format!("{i:05}.png")))
            .unwrap();
        count[l] += 1;
    }
}

// One function of >100 lines on purpose: the steps run in order on one trained run,
// and a test per step would train again (minutes).
#[test]
fn fit_on_an_image_folder_then_retrieve_new_files() {
    let d = tmp("own-fit");
    let data = d.join("clothes");
    write_folder(&data.join("train"), "train", 40);
    write_folder(&data.join("test"), "t10k", 8);
    // a corrupt image among the training files: skipped with a warning naming it
    std::fs::write(data.join("train/Bag/broken.png"), b"\x89PNG not really").unwrap();
    let out = d.join("run");
    let fit = |out: &Path| {
        onionnet(&[
            "fit",
            "fashion-retrieval",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--epochs",
            "3",
            "--calib-size",
            "80",
            "--json",
        ])
    };
    let o = fit(&out);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("broken.png") && e.contains("1 skipped"), "{e}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "monolithic + 2 cascades x 2 TPRs");
    // (400 training images, 3 epochs: far better than chance, 0.1)
    let mono = rows[0]["metric"].as_f64().unwrap();
    assert!(mono > 0.3, "monolithic mAP {mono}");
    // the model directory is self-contained: preprocessing and class names beside it
    let pre: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("onion/preprocess.json")).unwrap()).unwrap();
    assert_eq!(pre["input"], serde_json::json!([1, 28, 28]));
    // (class names from the folders, sorted)
    let classes: Vec<&str> = pre["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(classes.len(), 10);
    assert!(
        classes.windows(2).all(|w| w[0] < w[1]) && classes.contains(&"Trouser"),
        "{classes:?}"
    );

    // retrieve trousers among new files (the test folder, as a user's pile of images), one
    // of them unreadable
    let pile = d.join("pile");
    std::fs::create_dir_all(&pile).unwrap();
    let mut n = 0;
    for class in std::fs::read_dir(data.join("test")).unwrap().flatten() {
        for f in std::fs::read_dir(class.path()).unwrap().flatten() {
            let name = format!(
                "{}-{}",
                class.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            );
            std::fs::copy(f.path(), pile.join(name)).unwrap();
            n += 1;
        }
    }
    std::fs::write(pile.join("zz-corrupt.jpg"), b"\xff\xd8\xff not a jpeg").unwrap();
    let o = onionnet(&[
        "retrieve",
        "--model",
        out.to_str().unwrap(),
        "--query",
        "trouser",
        "--query",
        "Bag",
        "--json",
        pile.to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(e.contains(&format!("{n} images read, 1 skipped")), "{e}");
    assert!(e.contains("zz-corrupt.jpg"), "{e}");
    assert!(e.contains("rejected at stage 1"), "{e}");
    let hits: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!hits.is_empty(), "nothing retrieved: {e}");
    let mut right = 0;
    for h in &hits {
        let q = h["query"].as_str().unwrap();
        assert!(q == "Trouser" || q == "Bag", "{h}");
        assert!((0.0..=1.0).contains(&h["score"].as_f64().unwrap()));
        assert!(
            h["stages"] == 2,
            "retrieved images went through both stages: {h}"
        );
        let file = h["path"].as_str().unwrap();
        right += Path::new(file)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(q) as usize;
    }
    // most retrieved images are of the query's class (the file names say which)
    assert!(
        2 * right > hits.len(),
        "{right} of {} hits right",
        hits.len()
    );

    // bad inputs: an unknown class, a folder that is not a model, a model without its
    // preprocessing, and data with another number of classes than the description
    let o = onionnet(&[
        "retrieve",
        "--model",
        out.to_str().unwrap(),
        "--query",
        "Hat",
        pile.to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["--query Hat", "Trouser"]);
    let o = onionnet(&[
        "retrieve",
        "--model",
        d.to_str().unwrap(),
        "--query",
        "Bag",
        pile.to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["not a model directory"]);
    std::fs::remove_file(out.join("onion/preprocess.json")).unwrap();
    let o = onionnet(&[
        "retrieve",
        "--model",
        out.to_str().unwrap(),
        "--query",
        "Bag",
        pile.to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["preprocess.json", "onionnet fit"]);
    std::fs::remove_dir_all(data.join("train/Bag")).unwrap();
    std::fs::remove_dir_all(data.join("test/Bag")).unwrap();
    let o = fit(&d.join("other"));
    assert_clean_error(&o, &["classes = 10", "9 classes"]);
    let _ = std::fs::remove_dir_all(&d);
}
