//! A picture to try `onionnet detect --model detector` on: Fashion-MNIST test items (the
//! committed subset) pasted onto a photograph, as the detector's training scenes are, but at
//! twice their size on a larger canvas — the kind of image a user would bring.
//!
//! ```sh
//! cargo run --release --example compose_scene -- scene.png
//! onionnet detect --model detector scene.png --show found.png
//! ```

use onionnet::data::fashion::{CLASS_NAMES, load_split, subset_dir};
use onionnet::data::image::GreyImage;
use onionnet::data::patches::data_dir;
use onionnet::data::scenes::{Scene, paste};

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "scene.png".into());
    let photo = GreyImage::load(&data_dir()?.join("photos/coffee.png"))?;
    let side = 384;
    let mut scene = Scene {
        width: side,
        height: side,
        px: (0..side * side)
            .map(|i| photo.at(40 + i % side, 10 + i / side))
            .collect(),
        objects: Vec::new(),
    };
    let items = load_split(&subset_dir(), "t10k")?;
    // (test image, x, y, side in pixels): a trouser, a T-shirt, a sneaker and a dress
    for (i, x, y, s) in [
        (2, 20, 30, 140),
        (35, 200, 20, 120),
        (9, 40, 220, 110),
        (13, 220, 200, 150),
    ] {
        let item = &items.images[i * 784..(i + 1) * 784];
        let b = paste(&mut scene, item, x, y, s).expect("inside the picture");
        println!("{} at {:?}", CLASS_NAMES[items.labels[i]], b);
    }
    let px: Vec<u8> = scene.px.iter().map(|v| (v * 255.0).round() as u8).collect();
    image::GrayImage::from_raw(side as u32, side as u32, px)
        .expect("size")
        .save(&out)?;
    println!("wrote {out}");
    Ok(())
}
