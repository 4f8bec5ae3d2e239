//! IDX files (the MNIST format): big-endian magic `0x0000_08_NN` (unsigned bytes, NN
//! dimensions), the dimension sizes as u32, then the data. Gzipped files are read
//! transparently (the Debian package and the committed subset are gzipped).

use crate::error::DataError;
use std::io::Read;
use std::path::Path;

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads `path`, gunzipping when it ends in `.gz`.
pub fn read(path: &Path) -> Result<Idx, DataError> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Format {
                path: path.to_path_buf(),
                reason: format!("not a valid gzip stream: {e}"),
            })?;
        out
    } else {
        raw
    };
    parse(&bytes).map_err(|reason| DataError::Format {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses an in-memory IDX file.
pub fn parse(bytes: &[u8]) -> Result<Idx, String> {
    if bytes.len() < 4 {
        return Err(format!(
            "{} bytes is too short for an IDX header",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(format!(
            "bad magic {:02x}{:02x}{:02x}{:02x}: expected 000008NN (unsigned byte IDX)",
            bytes[0], bytes[1], bytes[2], bytes[3]
        ));
    }
    let nd = bytes[3] as usize;
    let header = 4 + 4 * nd;
    if nd == 0 || bytes.len() < header {
        return Err(format!("truncated header for {nd} dimensions"));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() - header != n {
        return Err(format!(
            "dimensions {dims:?} need {n} data bytes, the file has {}",
            bytes.len() - header
        ));
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Serialises an IDX array (used to cut the committed subset; tests round-trip it).
pub fn encode(idx: &Idx) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, idx.dims.len() as u8];
    for d in &idx.dims {
        out.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    out.extend_from_slice(&idx.data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let idx = Idx {
            dims: vec![2, 3],
            data: vec![1, 2, 3, 4, 5, 6],
        };
        let bytes = encode(&idx);
        let back = parse(&bytes).unwrap();
        assert_eq!(back.dims, vec![2, 3]);
        assert_eq!(back.data, idx.data);
        assert!(
            parse(&bytes[..bytes.len() - 1])
                .unwrap_err()
                .contains("need 6 data bytes")
        );
        let mut bad = bytes.clone();
        bad[2] = 0x0d;
        assert!(parse(&bad).unwrap_err().contains("bad magic"));
    }
}
