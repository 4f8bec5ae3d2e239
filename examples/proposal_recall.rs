use onionnet::apps::detection::proposals::*;
use onionnet::data::patches::{TRAIN_PHOTOS, data_dir, load_photos};
use onionnet::data::scenes::*;
fn main() {
    let photos = load_photos(&data_dir().join("photos"), &TRAIN_PHOTOS).unwrap();
    let items = onionnet::data::fashion::load_split(&onionnet::data::fashion::subset_dir(), "train").unwrap();
    let scenes = compose(&photos, &items, 300, &SceneConfig::default(), 1);
    let objs: Vec<_> = scenes.iter().flat_map(|s| s.objects.iter()).collect();
    println!("objects {} per scene {:.2}", objs.len(), objs.len() as f64 / 300.0);
    for (sides, asp, steps, min) in [
        (vec![18, 30, 48, 76], 2.7, 3, 11),
        (vec![18, 30, 48, 76], 2.7, 3, 12),
        (vec![20, 32, 52, 84], 2.7, 3, 11),
    ] {
        let cfg = WindowConfig { sides, max_aspect: asp, steps_per_side: steps, min_step: min };
        let p = sliding_windows(192, 192, &cfg);
        let r5 = recall(&p, objs.iter().copied(), 0.5);
        let r7 = recall(&p, objs.iter().copied(), 0.7);
        println!("{:?} n={} recall@0.5 {:.3} @0.7 {:.3}", cfg, p.len(), r5, r7);
    }
    let s = &scenes[0];
    let mut img = image::GrayImage::new(192, 192);
    for (i, v) in s.px.iter().enumerate() { img.put_pixel((i % 192) as u32, (i / 192) as u32, image::Luma([(v * 255.0) as u8])); }
    img.save("/tmp/scene0.png").unwrap();
    println!("{:?}", s.objects);
}
