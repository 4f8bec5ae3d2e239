//! Fashion-MNIST (Zalando, MIT licence): 28x28 grey images of 10 clothing classes. The full
//! set comes from Debian's `dataset-fashion-mnist` (or `--data DIR`); a small real subset is
//! committed under `data/fashion-mnist-subset/` so tests and the quick demo need no package.

use super::{Dataset, idx};
use crate::error::DataError;
use std::path::{Path, PathBuf};

pub const CLASS_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Where Debian's package puts the full set.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The committed subset, in a checkout of the repository (relative to the current directory).
pub fn subset_dir() -> PathBuf {
    PathBuf::from("data/fashion-mnist-subset")
}

/// Loads one split ("train" or "t10k") from `dir`, which holds the four IDX files.
pub fn load_split(dir: &Path, split: &str) -> Result<Dataset, DataError> {
    let find = |stem: &str| -> Result<PathBuf, DataError> {
        for name in [
            format!("{split}-{stem}-ubyte.gz"),
            format!("{split}-{stem}-ubyte"),
        ] {
            let p = dir.join(name);
            if p.exists() {
                return Ok(p);
            }
        }
        Err(DataError::Io {
            path: dir.join(format!("{split}-{stem}-ubyte.gz")),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file (also tried without .gz)",
            ),
        })
    };
    let (ipath, lpath) = (find("images-idx3")?, find("labels-idx1")?);
    let images = idx::read(&ipath)?;
    let labels = idx::read(&lpath)?;
    if images.dims.len() != 3 || images.dims[1] != 28 || images.dims[2] != 28 {
        return Err(DataError::Format {
            path: ipath,
            reason: format!(
                "expected N x 28 x 28 images, found dimensions {:?}",
                images.dims
            ),
        });
    }
    if labels.dims.len() != 1 || labels.dims[0] != images.dims[0] {
        return Err(DataError::Mismatch {
            what: format!("{} and {}", ipath.display(), lpath.display()),
            reason: format!("{:?} images but {:?} labels", images.dims[0], labels.dims),
        });
    }
    if let Some(bad) = labels.data.iter().find(|&&l| l >= 10) {
        return Err(DataError::Format {
            path: lpath,
            reason: format!("label {bad} is not a Fashion-MNIST class (0..10)"),
        });
    }
    Ok(Dataset {
        images: images.data.iter().map(|&b| b as f32 / 255.0).collect(),
        labels: labels.data.iter().map(|&l| l as usize).collect(),
        shape: [1, 28, 28],
        classes: 10,
        files: None,
    })
}

/// The data directory to use: `--data DIR` if given, else the Debian package if installed,
/// else the committed subset (running from a checkout); neither is an error that says how to
/// get the data.
pub fn default_dir(explicit: Option<&Path>) -> Result<PathBuf, DataError> {
    if let Some(d) = explicit {
        if !d.is_dir() {
            return Err(DataError::Mismatch {
                what: format!("--data {}", d.display()),
                reason: if d.exists() {
                    "is a file: give the folder that holds the IDX files or the images".into()
                } else {
                    "no such folder".into()
                },
            });
        }
        return Ok(d.to_path_buf());
    }
    let deb = Path::new(DEBIAN_DIR);
    if deb.join("train-images-idx3-ubyte.gz").exists() {
        Ok(deb.to_path_buf())
    } else if subset_dir().exists() {
        Ok(subset_dir())
    } else {
        Err(DataError::Mismatch {
            what: "Fashion-MNIST".into(),
            reason: format!(
                "not found: pass --data DIR (a folder with the four IDX files), install Debian's \
                 dataset-fashion-mnist (into {DEBIAN_DIR}), or run from a checkout of the \
                 repository (its {} subset)",
                subset_dir().display()
            ),
        })
    }
}
