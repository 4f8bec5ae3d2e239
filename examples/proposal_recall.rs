use onionnet::apps::detection::Scenes;
use onionnet::apps::detection::detector::*;
use onionnet::checkpoint::Checkpoint;
use onionnet::data::scenes::SceneConfig;
use onionnet::onion::NetworkKind;
use onionnet::spec::Spec;
use onionnet::train::TrainConfig;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let lr: f64 = args[1].parse().unwrap();
    let epochs: usize = args[2].parse().unwrap();
    let spec = Spec::from_file(std::path::Path::new(&args[3])).unwrap();
    let device = burn::tensor::Device::default();
    let data = Scenes::build(std::path::Path::new("/usr/share/datasets/fashion-mnist"), [400, 60, 10], &SceneConfig::default(), 42).unwrap();
    let cfg = DetectTrainConfig { base: TrainConfig { epochs, batch_size: 4, lr, seed: 42, quiet: true, ..TrainConfig::default() }, rois_per_scene: 64, fg_fraction: 0.25 };
    let dir = format!("/tmp/tune-{lr}-{epochs}-{}", args[4]);
    let _ = std::fs::remove_dir_all(&dir);
    train(&spec, NetworkKind::Monolithic, &data.train, &data.valid, &data.proposals, &cfg, &Checkpoint::new(std::path::Path::new(&dir)), &device).unwrap();
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(format!("{dir}/train.json")).unwrap()).unwrap();
    for e in s["log"][0].as_array().unwrap() { println!("lr {lr} {} epoch {} {:?}", args[4], e["epoch"], e["stages"]); }
}
