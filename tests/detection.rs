//! Detection: RoI pooling against a direct crop-and-pool, scene composition (boxes contain the
//! pasted objects and nothing else changed), bad detection descriptions, and a tiny
//! end-to-end run of `onionnet detect` (training, calibration, mAP rows, the picture).

use burn::tensor::{Tensor, TensorData};
use onionnet::apps::detection::roi_pool::{bin, cells, roi_pool, roi_pool_direct};
use onionnet::data::image::GreyImage;
use onionnet::data::scenes::{BoxF, SceneConfig, compose};
use rand::{Rng, SeedableRng};
use std::path::Path;

mod common;
use common::{onionnet, tmp};

/// The definition, written out: crop the covered cells of the box, split them into the grid
/// as adaptive pooling does, take each bin's maximum.
fn crop_and_pool(
    maps: &[f32],
    (c, h, w): (usize, usize, usize),
    img: usize,
    b: &BoxF,
    stride: usize,
    g: usize,
) -> Vec<f32> {
    let (y0, y1) = cells(b[1], b[3], stride, h);
    let (x0, x1) = cells(b[0], b[2], stride, w);
    let mut out = vec![0f32; c * g * g];
    for ch in 0..c {
        for i in 0..g {
            for j in 0..g {
                let ((ya, yb), (xa, xb)) = (bin(y0, y1, i, g), bin(x0, x1, j, g));
                let mut m = f32::NEG_INFINITY;
                for y in ya..yb {
                    for x in xa..xb {
                        m = m.max(maps[((img * c + ch) * h + y) * w + x]);
                    }
                }
                out[(ch * g + i) * g + j] = m;
            }
        }
    }
    out
}

#[test]
fn roi_pooling_matches_crop_and_pool() {
    let device = burn::tensor::Device::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let (n, c, h, w, stride, g) = (2, 5, 12, 10, 4, 3);
    let maps: Vec<f32> = (0..n * c * h * w)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    // (about 100 per image: the host version pools blocks of 64 RoIs on separate threads)
    let mut rois: Vec<(usize, BoxF)> = (0..200)
        .map(|_| {
            let (x0, y0) = (
                rng.random_range(0.0..38.0f32),
                rng.random_range(0.0..46.0f32),
            );
            let (bw, bh) = (
                rng.random_range(1.0..40.0f32),
                rng.random_range(1.0..48.0f32),
            );
            (rng.random_range(0..n), [x0, y0, x0 + bw, y0 + bh])
        })
        .collect();
    // edge cases: the whole map, a box past the border, a sliver inside one cell
    rois.extend([
        (0, [0.0, 0.0, 40.0, 48.0]),
        (1, [30.0, 40.0, 60.0, 70.0]),
        (1, [5.0, 5.0, 5.5, 6.0]),
    ]);
    let want: Vec<f32> = rois
        .iter()
        .flat_map(|(i, b)| crop_and_pool(&maps, (c, h, w), *i, b, stride, g))
        .collect();

    let t = Tensor::<4>::from_data(TensorData::new(maps.clone(), [n, c, h, w]), &device);
    let got = roi_pool(t, &rois, stride, (g, g));
    assert_eq!(got.dims(), [rois.len(), c, g, g]);
    assert_eq!(
        got.into_data().try_to_vec::<f32>().unwrap(),
        want,
        "tensor RoI pooling"
    );

    // the host version takes one image's maps channels-last
    for img in 0..n {
        let hwc: Vec<f32> = (0..h * w * c)
            .map(|k| maps[((img * c + k % c) * h + k / c / w) * w + (k / c) % w])
            .collect();
        let boxes: Vec<BoxF> = rois.iter().filter(|r| r.0 == img).map(|r| r.1).collect();
        let want_img: Vec<f32> = boxes
            .iter()
            .flat_map(|b| crop_and_pool(&maps, (c, h, w), img, b, stride, g))
            .collect();
        assert_eq!(
            roi_pool_direct(&hwc, (c, h, w), &boxes, stride, (g, g)),
            want_img,
            "host RoI pooling, image {img}"
        );
    }
}

#[test]
fn roi_pooling_passes_gradients_to_the_maximal_cells() {
    let device = burn::tensor::Device::default().autodiff();
    // 1 channel, 4x4 cells of 1 px: the max of the 2x2 top-left bin is at (1, 1)
    let v: Vec<f32> = (0..16)
        .map(|k| if k == 5 { 9.0 } else { k as f32 * 0.1 })
        .collect();
    let t = Tensor::<4>::from_data(TensorData::new(v, [1, 1, 4, 4]), &device).require_grad();
    let out = roi_pool(t.clone(), &[(0, [0.0, 0.0, 2.0, 2.0])], 1, (1, 1));
    let grads = out.sum().backward();
    let g = t
        .grad(&grads)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let want: Vec<f32> = (0..16).map(|k| if k == 5 { 1.0 } else { 0.0 }).collect();
    assert_eq!(g, want);
}

#[test]
fn boxes_contain_the_pasted_objects_and_nothing_else_changed() {
    // a flat grey "photograph": whatever the crop, brightness change or flip, the background
    // is one value, so every changed pixel is an object's
    let flat = GreyImage {
        width: 300,
        height: 260,
        px: vec![0.5; 300 * 260],
    };
    let items = onionnet::data::fashion::load_split(&onionnet::data::fashion::subset_dir(), "t10k")
        .unwrap();
    let cfg = SceneConfig::default();
    let scenes = compose(std::slice::from_ref(&flat), &items, 30, &cfg, 9);
    let again = compose(std::slice::from_ref(&flat), &items, 30, &cfg, 9);
    let mut objects = 0;
    for (s, t) in scenes.iter().zip(&again) {
        assert_eq!(s.px, t.px, "seeded: the same scenes");
        assert!(!s.objects.is_empty());
        assert!(s.objects.len() <= cfg.per_scene.1);
        let bg = s.px[0..s.width]
            .iter()
            .chain(&s.px[s.px.len() - s.width..])
            .copied()
            .fold(f32::NAN, |a, v| if a.is_nan() { v } else { a });
        let inside = |x: usize, y: usize, b: &BoxF| {
            (x as f32) >= b[0] && (x as f32) < b[2] && (y as f32) >= b[1] && (y as f32) < b[3]
        };
        let mut changed_in = vec![0usize; s.objects.len()];
        for y in 0..s.height {
            for x in 0..s.width {
                let v = s.px[y * s.width + x];
                let owners: Vec<usize> = (0..s.objects.len())
                    .filter(|&k| inside(x, y, &s.objects[k].bbox))
                    .collect();
                if (v - bg).abs() > 1e-6 {
                    assert!(
                        !owners.is_empty(),
                        "pixel ({x}, {y}) changed outside every box"
                    );
                    for k in owners {
                        changed_in[k] += 1;
                    }
                }
            }
        }
        for (k, o) in s.objects.iter().enumerate() {
            let b = o.bbox;
            let (bw, bh) = (b[2] - b[0], b[3] - b[1]);
            assert!(o.class < 10);
            assert!(
                bw.max(bh) >= 8.0 && bw.max(bh) <= cfg.item_px.1 as f32,
                "{b:?}"
            );
            // a real item covers a good part of its own box
            assert!(
                changed_in[k] as f32 >= 0.2 * bw * bh,
                "object {k} {b:?}: {} changed pixels",
                changed_in[k]
            );
            for j in 0..k {
                assert!(
                    onionnet::data::scenes::iou(&b, &s.objects[j].bbox) <= cfg.max_overlap + 1e-6
                );
            }
        }
        objects += s.objects.len();
    }
    assert!(objects >= 60, "{objects} objects in 30 scenes");
}

#[test]
fn a_single_paste_gives_a_tight_box() {
    let items = onionnet::data::fashion::load_split(&onionnet::data::fashion::subset_dir(), "t10k")
        .unwrap();
    for k in 0..20 {
        let mut s = onionnet::data::scenes::Scene {
            width: 100,
            height: 90,
            px: vec![0.3; 9000],
            objects: Vec::new(),
        };
        let item = &items.images[k * 784..(k + 1) * 784];
        let side = 20 + 3 * k;
        let b = onionnet::data::scenes::paste(&mut s, item, 7, 5, side).unwrap();
        let changed = |x: usize, y: usize| (s.px[y * 100 + x] - 0.3).abs() > 1e-6;
        let (x0, y0, x1, y1) = (
            b[0] as usize,
            b[1] as usize,
            b[2] as usize - 1,
            b[3] as usize - 1,
        );
        assert!(x0 >= 7 && y0 >= 5 && x1 < 7 + side && y1 < 5 + side);
        // every side of the box touches a changed pixel
        assert!((y0..=y1).any(|y| changed(x0, y)) && (y0..=y1).any(|y| changed(x1, y)));
        assert!((x0..=x1).any(|x| changed(x, y0)) && (x0..=x1).any(|x| changed(x, y1)));
    }
}

fn spec_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/detection.toml"))
        .unwrap()
}

#[test]
fn bad_detection_descriptions_are_clear_errors() {
    let d = tmp("detect-bad");
    let bad = d.join("bad.toml");
    let cases: [(String, &[&str]); 3] = [
        (
            spec_text().replace("channels = 64, height = 6", "channels = 32, height = 6"),
            &["bad.toml", "input.channels", "32", "64 channels"],
        ),
        (
            spec_text().replace(
                "name = \"conv1\"\ntype = \"conv\"\nfilters = 16\nkernel = 3\npadding = 1",
                "name = \"conv1\"\ntype = \"conv\"\nfilters = 16\nkernel = 3",
            ),
            &["bad.toml", "detector.backbone[0]", "192x192 -> 190x190"],
        ),
        (
            spec_text()[..spec_text().find("\n[detector]").unwrap()].to_string(),
            &["bad.toml", "no [detector] table"],
        ),
    ];
    for (text, needles) in cases {
        assert_ne!(text, spec_text(), "the case must change the description");
        std::fs::write(&bad, text).unwrap();
        let o = onionnet(&[
            "detect",
            "--spec",
            bad.to_str().unwrap(),
            "--out",
            d.join("o").to_str().unwrap(),
            "--train-scenes",
            "2",
        ]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert!(!e.contains("panicked"), "{e}");
        for n in needles {
            assert!(e.contains(n), "stderr should mention {n:?}: {e}");
        }
    }
}

// One function of >100 lines on purpose: the steps run in order on one trained run,
// and a test per step would train again (minutes).
#[test]
fn detect_end_to_end_tiny() {
    let d = tmp("detect-e2e");
    let out = d.join("run");
    let png = d.join("scene.png");
    let subset = onionnet::data::fashion::subset_dir();
    // the same scenes and settings for both runs
    let base = [
        "detect",
        "--data",
        subset.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--train-scenes",
        "24",
        "--valid-scenes",
        "8",
        "--test-scenes",
        "3",
        "--epochs",
        "3",
        "--tpr",
        "0.9",
        "--tpr",
        "1",
    ];
    let o = onionnet(
        &[
            &base[..],
            &[
                "--show",
                png.to_str().unwrap(),
                "--show-scene",
                "2",
                "--json",
            ],
        ]
        .concat(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "monolithic + 2 cascades x 2 TPRs");
    for r in rows {
        assert_eq!(r["task"], "detection");
        assert_eq!(r["metric_name"], "mAP");
        let m = r["metric"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&m));
        assert!(r["head_ms_per_image"].as_f64().unwrap() > 0.0);
        assert!(
            r["pipeline_ms_per_image"].as_f64().unwrap()
                >= r["head_ms_per_image"].as_f64().unwrap()
        );
        if r["network"] != "monolithic" {
            let reached = r["reached_tpr"].as_f64().unwrap();
            let pass = r["pass_pct"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&pass));
            // at target TPR 1 the threshold is the lowest held-out object score
            if r["target_tpr"].as_f64() == Some(1.0) {
                assert!(reached > 0.5, "{r}");
            }
        }
    }
    // every detector learned: its training loss fell over the 3 epochs
    for kind in ["monolithic", "non-sharing", "onion"] {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(kind).join("train.json")).unwrap())
                .unwrap();
        let log = state["log"][0].as_array().unwrap();
        assert_eq!(log.len(), 3);
        let loss = |e: usize| {
            log[e]["stages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s[0].as_f64().unwrap())
                .sum::<f64>()
        };
        assert!(
            loss(2) < loss(0),
            "{kind}: training loss {} -> {}",
            loss(0),
            loss(2)
        );
    }
    let png_bytes = std::fs::read(&png).unwrap();
    assert_eq!(&png_bytes[1..4], b"PNG");
    // a second run reuses the trained detectors (same description, settings, scenes); on
    // burn's modules instead of the own GEMM path it finds the same detections
    let again = onionnet(&[&base[..], &["--engine", "burn", "--json"]].concat());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{err}");
    assert!(!err.contains("epoch 1/3"), "retrained instead of reusing");
    let v2: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    for (a, b) in rows.iter().zip(v2["rows"].as_array().unwrap()) {
        assert_eq!(a["network"], b["network"]);
        for f in ["metric", "pass_pct"] {
            let (x, y) = (a[f].as_f64().unwrap_or(0.0), b[f].as_f64().unwrap_or(0.0));
            assert!(
                (x - y).abs() <= 1e-3 * x.abs().max(1.0),
                "{f}: own {x} vs burn {y}"
            );
        }
    }
    // the head over groups of 2 scenes (the 3 test scenes: a group of 2, then 1) finds the
    // same detections and passes the same proposals as scene by scene
    let pooled = onionnet(&[&base[..], &["--pool", "2", "--json"]].concat());
    let err = String::from_utf8_lossy(&pooled.stderr);
    assert!(pooled.status.success(), "{err}");
    let v3: serde_json::Value = serde_json::from_slice(&pooled.stdout).unwrap();
    assert_eq!(v3["rows"].as_array().unwrap().len(), rows.len());
    for (a, b) in rows.iter().zip(v3["rows"].as_array().unwrap()) {
        assert_eq!(a["network"], b["network"]);
        for f in ["metric", "pass_pct", "reached_tpr"] {
            assert_eq!(a[f], b[f], "{f} scene by scene vs pooled over 2 scenes");
        }
    }
    let zero = onionnet(&[&base[..], &["--pool", "0"]].concat());
    let err = String::from_utf8_lossy(&zero.stderr);
    assert_eq!(zero.status.code(), Some(1), "{err}");
    assert!(err.contains("--pool 0"), "{err}");
    // other settings into the same directory: refused as `train` refuses, not retrained over
    // the trained detectors
    let mut other = base.to_vec();
    let at = other.iter().position(|a| *a == "--epochs").unwrap();
    other[at + 1] = "4";
    let o = onionnet(&other);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("train.json") && err.contains("choose another output directory"),
        "{err}"
    );
    assert!(!err.contains("epoch 1/4"), "retrained: {err}");
    detect_on_own_images(&d, &out);
    let _ = std::fs::remove_dir_all(&d);
}

/// `detect --model` with the detectors trained above, on a photograph crop of the scene size
/// and on the same crop at twice the size (nearest-neighbour): the same detections, boxes
/// twice as large in the larger image's pixels; what is not a detector is refused.
fn detect_on_own_images(d: &std::path::Path, out: &std::path::Path) {
    let photo = image::open(
        onionnet::data::patches::data_dir()
            .unwrap()
            .join("photos/camera.png"),
    )
    .unwrap()
    .to_luma8();
    let crop = image::imageops::crop_imm(&photo, 100, 60, 192, 192).to_image();
    let (small, big) = (d.join("small.png"), d.join("big.png"));
    crop.save(&small).unwrap();
    image::imageops::resize(&crop, 384, 384, image::imageops::FilterType::Nearest)
        .save(&big)
        .unwrap();
    let run = |img: &std::path::Path, extra: &[&str]| {
        let o = onionnet(
            &[
                &[
                    "detect",
                    "--model",
                    out.to_str().unwrap(),
                    img.to_str().unwrap(),
                    "--min-score",
                    "0.05",
                    "--json",
                ][..],
                extra,
            ]
            .concat(),
        );
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        let v: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (v, err)
    };
    let pic = d.join("own.png");
    let (a, err) = run(&small, &["--show", pic.to_str().unwrap()]);
    assert!(err.contains("% of proposals passed stage 1"), "{err}");
    assert_eq!(&std::fs::read(&pic).unwrap()[1..4], b"PNG");
    let (b, _) = run(&big, &[]);
    assert!(!a.is_empty(), "some proposal scores at least 0.05");
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x["class"], &x["score"]), (&y["class"], &y["score"]));
        for k in 0..4 {
            let (p, q) = (x["box"][k].as_f64().unwrap(), y["box"][k].as_f64().unwrap());
            assert!((2.0 * p - q).abs() <= 1.0, "box {k}: {p} at 1x, {q} at 2x");
        }
    }
    // not a detector; no image
    let o = onionnet(&["detect", "--model", "fashion", small.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("not a detector"), "{err}");
    let o = onionnet(&["detect", "--model", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("name the images"), "{err}");
}
