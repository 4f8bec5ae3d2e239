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

/// The most data bytes an IDX file may declare (4 GiB: 70,000 Fashion-MNIST images are 55 MB).
const MAX_BYTES: usize = 1 << 32;

/// Reads `path`, gunzipping when it ends in `.gz`. The header is read first, so a file that
/// declares more data than it has, or than onionnet accepts, is refused before its data are
/// decompressed.
pub fn read(path: &Path) -> Result<Idx, DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file = std::io::BufReader::new(file);
    let gz = path.extension().is_some_and(|e| e == "gz");
    read_stream(file, gz, path)
}

/// [`read`] on a stream (`gz`: gzipped; `path` names it in errors).
pub fn read_stream(file: impl Read, gz: bool, path: &Path) -> Result<Idx, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bad = |reason: String| DataError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let stream = |e: std::io::Error| {
        if gz {
            bad(format!("not a valid gzip stream: {e}"))
        } else {
            io(e)
        }
    };
    let mut head = vec![0u8; 4];
    let got = read_up_to(&mut reader, &mut head).map_err(stream)?;
    head.truncate(got);
    let nd = header_dims(&head).map_err(bad)?;
    head.resize(4 + 4 * nd, 0);
    let got = read_up_to(&mut reader, &mut head[4..]).map_err(stream)?;
    head.truncate(4 + got);
    let (dims, n) = header(&head).map_err(bad)?;
    let mut data = Vec::with_capacity(n);
    (&mut reader)
        .take(n as u64 + 1)
        .read_to_end(&mut data)
        .map_err(stream)?;
    if data.len() > n {
        return Err(bad(format!(
            "the file has more than the {n} data bytes its dimensions {dims:?} declare"
        )));
    }
    if data.len() < n {
        return Err(bad(format!(
            "dimensions {dims:?} need {n} data bytes, the file has {}",
            data.len()
        )));
    }
    Ok(Idx { dims, data })
}

/// Fills `buf` as far as the stream goes; the number of bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            k => got += k,
        }
    }
    Ok(got)
}

/// The number of dimensions the 4-byte magic declares.
fn header_dims(bytes: &[u8]) -> Result<usize, String> {
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
    match bytes[3] as usize {
        0 => Err("magic declares 0 dimensions".into()),
        nd => Ok(nd),
    }
}

/// The dimensions of the header at the start of `bytes`, and the data bytes they declare.
fn header(bytes: &[u8]) -> Result<(Vec<usize>, usize), String> {
    let nd = header_dims(bytes)?;
    if bytes.len() < 4 + 4 * nd {
        return Err(format!("truncated header for {nd} dimensions"));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_BYTES)
        .ok_or_else(|| {
            format!("dimensions {dims:?} declare more than {MAX_BYTES} data bytes (4 GiB)")
        })?;
    Ok((dims, n))
}

/// Parses an in-memory IDX file.
pub fn parse(bytes: &[u8]) -> Result<Idx, String> {
    let (dims, n) = header(bytes)?;
    let start = 4 + 4 * dims.len();
    if bytes.len() - start != n {
        return Err(format!(
            "dimensions {dims:?} need {n} data bytes, the file has {}",
            bytes.len() - start
        ));
    }
    Ok(Idx {
        dims,
        data: bytes[start..].to_vec(),
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

    fn gz_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("onionnet-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        path
    }

    #[test]
    fn a_huge_declared_size_is_refused_before_decompressing() {
        // 65536 x 65536 x 2 bytes (8 GiB) declared; a few bytes of data
        let mut bytes = vec![0, 0, 8, 3];
        for d in [65536u32, 65536, 2] {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend_from_slice(&[0; 16]);
        let e = read(&gz_file("huge.gz", &bytes)).unwrap_err().to_string();
        assert!(
            e.contains("huge.gz") && e.contains("declare more than"),
            "{e}"
        );
        // dimensions whose product wraps around in 64 bits
        let mut bytes = vec![0, 0, 8, 4];
        for _ in 0..4 {
            bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        }
        let e = read(&gz_file("wrap.gz", &bytes)).unwrap_err().to_string();
        assert!(e.contains("declare more than"), "{e}");
    }

    #[test]
    fn a_stream_longer_than_declared_is_refused_without_reading_it_all() {
        // declares 4 bytes, then 64 MB of zeros (compressing to ~64 KB)
        let mut bytes = vec![0, 0, 8, 1];
        bytes.extend_from_slice(&4u32.to_be_bytes());
        bytes.resize(bytes.len() + (64 << 20), 0);
        let e = read(&gz_file("long.gz", &bytes)).unwrap_err().to_string();
        assert!(e.contains("more than the 4 data bytes"), "{e}");
        let idx = read(&gz_file(
            "ok.gz",
            &encode(&Idx {
                dims: vec![4],
                data: vec![1, 2, 3, 4],
            }),
        ))
        .unwrap();
        assert_eq!(idx.data, vec![1, 2, 3, 4]);
    }
}
