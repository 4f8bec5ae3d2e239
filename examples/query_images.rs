//! Using a trained cascade from the library: load the shipped retrieval onion (or a model
//! directory of yours), ask it for one class among image files or the committed test images,
//! and print what each stage did.
//!
//! ```sh
//! cargo run --release --example query_images                       # fashion, Trouser, test split
//! cargo run --release --example query_images -- fashion Bag a.png b.jpg
//! cargo run --release --example query_images -- runs/pets/onion cat photos/*.jpg
//! ```

use burn::tensor::Device;
use onionnet::data::fashion::{load_split, subset_dir};
use onionnet::trained::Trained;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "fashion".into());
    let class = args.next().unwrap_or_else(|| "Trouser".into());
    let files: Vec<String> = args.collect();

    let device = Device::default();
    let trained = Trained::load(&model, &device)?;
    let c = trained.class(&class)?;
    let (x, names): (_, Vec<String>) = if files.is_empty() {
        // the committed test split (28x28 grey in [0, 1]); fits the shipped model only
        let test = load_split(&subset_dir(), "t10k")?;
        let names = (0..test.len()).map(|i| format!("test image {i}")).collect();
        (trained.input_pixels(test.images)?, names)
    } else {
        (trained.input_files(&files)?, files)
    };
    let answers = trained.query(c, &x);
    let tpr = trained.calibration.as_ref().map(|k| k.target_tpr);
    println!(
        "query: {class} (target TPR {tpr:?}), {} images",
        answers.len()
    );
    for (name, a) in names
        .iter()
        .zip(&answers)
        .filter(|(_, a)| a.retrieved)
        .take(20)
    {
        println!("  {name}: score {:.3}", a.score.unwrap_or(f32::NAN));
    }
    let rejected = answers.iter().filter(|a| a.stages == 1).count();
    let retrieved = answers.iter().filter(|a| a.retrieved).count();
    println!(
        "{rejected} of {} rejected by stage 1, {retrieved} retrieved (first 20 above)",
        answers.len()
    );
    Ok(())
}
