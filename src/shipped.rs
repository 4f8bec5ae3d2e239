//! The descriptions and data locations that ship with onionnet. The descriptions are compiled
//! into the binary, so an installed `onionnet` runs them from any directory by name
//! (`onionnet bench 2ch-deep`); the data sets are looked up at run time, and a missing one is
//! an error that says how to get it.

use crate::error::{DataError, SpecError};
use crate::spec::Spec;
use std::path::{Path, PathBuf};

/// The shipped descriptions: name and text (`specs/NAME.toml` in the repository).
pub const SPECS: [(&str, &str); 7] = [
    (
        "fashion-retrieval",
        include_str!("../specs/fashion-retrieval.toml"),
    ),
    (
        "fashion-3stage",
        include_str!("../specs/fashion-3stage.toml"),
    ),
    ("2ch-deep", include_str!("../specs/2ch-deep.toml")),
    ("alexnet-64", include_str!("../specs/alexnet-64.toml")),
    ("detection", include_str!("../specs/detection.toml")),
    (
        "resnet-fashion",
        include_str!("../specs/resnet-fashion.toml"),
    ),
    ("resnet18-32", include_str!("../specs/resnet18-32.toml")),
];

/// Loads a description: the file at `arg` where there is one, else the shipped description
/// that `arg` names (`2ch-deep`, `2ch-deep.toml` or `specs/2ch-deep.toml`).
pub fn load_spec(arg: &Path) -> Result<Spec, SpecError> {
    if arg.exists() {
        return Spec::from_file(arg);
    }
    let name = arg.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let plain = arg.extension().is_none_or(|e| e == "toml")
        && arg
            .parent()
            .is_none_or(|p| p.as_os_str().is_empty() || p == Path::new("specs"));
    match SPECS.iter().find(|(n, _)| *n == name).filter(|_| plain) {
        Some((n, text)) => Spec::from_toml(text, &shipped_path(n)),
        None => Err(SpecError::Io {
            path: arg.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no such file, and not the name of a shipped description ({})",
                    names()
                ),
            ),
        }),
    }
}

/// The shipped description called `name` (one of [`SPECS`]).
pub fn spec(name: &str) -> Spec {
    load_spec(Path::new(name)).unwrap_or_else(|e| panic!("shipped description {name}: {e}"))
}

/// How a shipped description is named in messages and stored with checkpoints.
fn shipped_path(name: &str) -> PathBuf {
    PathBuf::from(format!("specs/{name}.toml"))
}

fn names() -> String {
    SPECS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// The repository's `data/` folder, from the current directory: the committed Fashion-MNIST
/// subset and the photographs of the patch-matching and detection experiments. Running from
/// elsewhere is an error that names what is missing and how to get it.
pub fn data_dir(what: &str) -> Result<PathBuf, DataError> {
    let dir = PathBuf::from("data");
    if dir.join(what).exists() {
        Ok(dir)
    } else {
        Err(DataError::Io {
            path: dir.join(what),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not found: these files ship in the onionnet repository's data/ folder; \
                 run from a checkout of it, or pass --data",
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_descriptions_load_by_name_and_path() {
        for (name, _) in SPECS {
            let by_name = load_spec(Path::new(name)).unwrap();
            assert_eq!(by_name.name, name);
            let by_path = load_spec(Path::new(&format!("specs/{name}.toml"))).unwrap();
            assert_eq!(by_path.layers, by_name.layers);
        }
        let err = load_spec(Path::new("no-such-net")).unwrap_err().to_string();
        assert!(err.contains("no-such-net"), "{err}");
        let err = format!(
            "{:#}",
            anyhow::Error::from(load_spec(Path::new("x/2ch-deep.toml")).unwrap_err())
        );
        assert!(
            err.contains("fashion-retrieval, fashion-3stage, 2ch-deep"),
            "{err}"
        );
    }
}
