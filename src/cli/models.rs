//! `onionnet models`: the trained models shipped with onionnet, by name.

use crate::models::SHIPPED;

pub fn run() -> anyhow::Result<()> {
    println!("{:<10} {:>8}  about", "name", "size");
    for m in SHIPPED {
        let bytes: usize = m.files.iter().map(|f| f.1.len()).sum();
        println!("{:<10} {:>5.1} MB  {}", m.name, bytes as f64 / 1e6, m.about);
    }
    println!(
        "\nUse one with `--model NAME` (e.g. `onionnet retrieve --model fashion --query Trouser DIR`); each has a model card: models/NAME/README.md, or {}",
        crate::models::cache_dir().join("models").display()
    );
    Ok(())
}
