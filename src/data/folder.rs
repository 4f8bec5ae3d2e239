//! Image folders, the torchvision `ImageFolder` convention: `DIR/<class>/*.png|jpg|jpeg`, class
//! names from the folder names, sorted; optionally split into `DIR/train/<class>/...` and
//! `DIR/test/<class>/...` (or `val/`). Images of any size and colour are converted to the
//! description's input: grey (luma) or RGB, resized to its height x width by bilinear
//! interpolation (the aspect ratio is not kept), values in [0, 1]. A file that cannot be
//! decoded is skipped with a warning that names it, never a crash and never a wrong label.

use super::Dataset;
use crate::error::DataError;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// The file extensions read (any case).
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// An image file and its class.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    pub path: PathBuf,
    pub label: usize,
}

/// The files of an image folder, by class.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    /// Class names, sorted; a file's label is its class's index here.
    pub classes: Vec<String>,
    pub train: Vec<Labelled>,
    /// The `test/` (or `val/`) subtree's files, where there is one.
    pub test: Option<Vec<Labelled>>,
}

/// Whether `path` has one of the [`EXTENSIONS`].
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

impl ImageFolder {
    /// Whether `dir` looks like an image folder (sub-folders, no IDX files) rather than a
    /// folder of Fashion-MNIST's IDX files.
    pub fn looks_like(dir: &Path) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        let mut dirs = false;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains("-ubyte") {
                return false;
            }
            dirs |= e.path().is_dir();
        }
        dirs
    }

    /// Scans `dir`: `train/` and `test/` (or `val/`) subtrees where `train/` exists, else one
    /// tree of class folders. The two subtrees must have the same classes.
    pub fn scan(dir: &Path) -> Result<ImageFolder, DataError> {
        let train_dir = dir.join("train");
        if train_dir.is_dir() {
            let (classes, train) = scan_classes(&train_dir)?;
            let test_dir = ["test", "val"]
                .iter()
                .map(|t| dir.join(t))
                .find(|d| d.is_dir());
            let test = match test_dir {
                None => None,
                Some(t) => {
                    let (test_classes, files) = scan_classes(&t)?;
                    if test_classes != classes {
                        return Err(DataError::Mismatch {
                            what: format!("{} and {}", train_dir.display(), t.display()),
                            reason: format!(
                                "the class folders differ: {classes:?} against {test_classes:?}"
                            ),
                        });
                    }
                    Some(files)
                }
            };
            return Ok(ImageFolder {
                root: dir.to_path_buf(),
                classes,
                train,
                test,
            });
        }
        let (classes, train) = scan_classes(dir)?;
        Ok(ImageFolder {
            root: dir.to_path_buf(),
            classes,
            train,
            test: None,
        })
    }
}

/// The class folders of `dir` (sorted) and their image files (sorted within a class).
fn scan_classes(dir: &Path) -> Result<(Vec<String>, Vec<Labelled>), DataError> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut classes: Vec<String> = std::fs::read_dir(dir)
        .map_err(io)?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    if classes.len() < 2 {
        return Err(DataError::Format {
            path: dir.to_path_buf(),
            reason: format!(
                "an image folder needs a sub-folder per class, at least 2; found {}",
                classes.len()
            ),
        });
    }
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let cdir = dir.join(class);
        let mut these: Vec<PathBuf> = std::fs::read_dir(&cdir)
            .map_err(|source| DataError::Io {
                path: cdir.clone(),
                source,
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        if these.is_empty() {
            return Err(DataError::Format {
                path: cdir,
                reason: format!("class {class:?} has no .png, .jpg or .jpeg file"),
            });
        }
        these.sort();
        files.extend(these.into_iter().map(|path| Labelled { path, label }));
    }
    Ok((classes, files))
}

/// One image file as the description's input `[channels, height, width]` (channels 1: grey,
/// 3: RGB), values in [0, 1], planar.
pub fn decode(path: &Path, shape: [usize; 3]) -> Result<Vec<f32>, DataError> {
    let bytes = crate::files::read(path).map_err(|e| DataError::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    decode_bytes(&bytes, path, shape)
}

/// [`decode`] on the bytes of a PNG or JPEG file (`path` names it in errors). The format is
/// read from the bytes; the decoder's default limit (512 MiB) bounds what one file may
/// allocate.
pub fn decode_bytes(
    bytes: &[u8],
    path: &Path,
    [c, h, w]: [usize; 3],
) -> Result<Vec<f32>, DataError> {
    let bad = |reason: String| DataError::Format {
        path: path.to_path_buf(),
        reason,
    };
    if c != 1 && c != 3 {
        return Err(bad(format!(
            "images convert to 1 (grey) or 3 (RGB) channels, the description's input has {c}"
        )));
    }
    let img = image::io::Reader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(format!("cannot read image: {e}")))?
        .decode()
        .map_err(|e| bad(format!("cannot decode image: {e}")))?;
    let resize = |i: image::DynamicImage| {
        if (i.width() as usize, i.height() as usize) == (w, h) {
            i
        } else {
            i.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle)
        }
    };
    let img = resize(img);
    let mut out = vec![0f32; c * h * w];
    if c == 1 {
        for (o, v) in out.iter_mut().zip(img.to_luma8().as_raw()) {
            *o = *v as f32 / 255.0;
        }
    } else {
        let rgb = img.to_rgb8();
        for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
            for ch in 0..3 {
                out[ch * h * w + i] = px[ch] as f32 / 255.0;
            }
        }
    }
    Ok(out)
}

/// Decodes `items` into a dataset of `shape` with `classes` classes (on every thread); files
/// that cannot be read are left out and returned with the reason.
pub fn load(
    items: &[Labelled],
    shape: [usize; 3],
    classes: usize,
) -> (Dataset, Vec<(PathBuf, String)>) {
    let decoded: Vec<Result<Vec<f32>, DataError>> =
        items.par_iter().map(|it| decode(&it.path, shape)).collect();
    let mut images = Vec::with_capacity(items.len() * shape.iter().product::<usize>());
    let mut labels = Vec::with_capacity(items.len());
    let mut skipped = Vec::new();
    for (it, d) in items.iter().zip(decoded) {
        match d {
            Ok(px) => {
                images.extend(px);
                labels.push(it.label);
            }
            Err(e) => skipped.push((it.path.clone(), e.to_string())),
        }
    }
    (
        Dataset {
            images,
            labels,
            shape,
            classes,
            files: None,
        },
        skipped,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary folder of class folders with real images cut from the committed photographs.
    fn folder(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("onionnet-folder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let photo = image::open("data/photos/camera.png").unwrap().to_luma8();
        for (c, class) in ["cat", "dog"].iter().enumerate() {
            std::fs::create_dir_all(d.join(class)).unwrap();
            for i in 0..3 {
                let crop = image::imageops::crop_imm(&photo, 40 * (i + c as u32), 30, 50, 40);
                crop.to_image()
                    .save(d.join(class).join(format!("{i}.png")))
                    .unwrap();
            }
        }
        d
    }

    #[test]
    fn classes_sorted_and_images_resized() {
        let d = folder("scan");
        std::fs::write(d.join("dog").join("notes.txt"), "not an image").unwrap();
        std::fs::write(d.join("dog").join("broken.jpg"), b"\xff\xd8 not a jpeg").unwrap();
        let f = ImageFolder::scan(&d).unwrap();
        assert_eq!(f.classes, ["cat", "dog"]);
        assert!(f.test.is_none());
        // (the text file is not an image; the broken JPEG is, and fails to decode)
        assert_eq!(f.train.len(), 7);
        let (data, skipped) = load(&f.train, [1, 28, 28], 2);
        assert_eq!(data.len(), 6);
        assert_eq!(data.labels, [0, 0, 0, 1, 1, 1]);
        assert_eq!(data.images.len(), 6 * 28 * 28);
        assert!(data.images.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].0.ends_with("broken.jpg"), "{skipped:?}");
        let (rgb, _) = load(&f.train[..1], [3, 8, 8], 2);
        // a grey image in RGB: three equal planes
        assert_eq!(rgb.images[..64], rgb.images[64..128]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn train_and_test_subtrees_must_agree() {
        let d = std::env::temp_dir().join(format!("onionnet-folder-split-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let src = folder("split-src");
        for t in ["train", "test"] {
            for c in ["cat", "dog"] {
                std::fs::create_dir_all(d.join(t).join(c)).unwrap();
                std::fs::copy(src.join(c).join("0.png"), d.join(t).join(c).join("0.png")).unwrap();
            }
        }
        let f = ImageFolder::scan(&d).unwrap();
        assert_eq!(f.train.len(), 2);
        assert_eq!(f.test.as_ref().map(Vec::len), Some(2));
        std::fs::create_dir_all(d.join("test").join("bird")).unwrap();
        std::fs::copy(src.join("cat").join("0.png"), d.join("test/bird/0.png")).unwrap();
        let err = ImageFolder::scan(&d).unwrap_err().to_string();
        assert!(err.contains("class folders differ"), "{err}");
        // one class only, and an empty class: clear errors naming the folder
        let one = std::env::temp_dir().join(format!("onionnet-folder-one-{}", std::process::id()));
        std::fs::create_dir_all(one.join("only")).unwrap();
        let err = ImageFolder::scan(&one).unwrap_err().to_string();
        assert!(err.contains("at least 2"), "{err}");
        std::fs::create_dir_all(one.join("empty")).unwrap();
        std::fs::copy(src.join("cat").join("0.png"), one.join("only/0.png")).unwrap();
        let err = ImageFolder::scan(&one).unwrap_err().to_string();
        assert!(err.contains("\"empty\" has no"), "{err}");
        for p in [d, src, one] {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}
