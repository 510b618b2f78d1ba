//! IDX files, the format MNIST ships in, plain or gzip-compressed.

use super::read_file;
use crate::{Error, Result};
use std::io::Read;
use std::path::Path;

/// The largest decompressed IDX file accepted (MNIST's training images are 47 MB).
const MAX_IDX_BYTES: u64 = 1 << 31;

/// An unsigned-byte IDX array: its shape and values (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Dimensions, outermost first (`[60000, 28, 28]` for MNIST's training images).
    pub shape: Vec<usize>,
    /// The bytes.
    pub values: Vec<u8>,
}

/// Reads an unsigned-byte IDX file (`.gz` decompressed on the fly, by name or magic).
///
/// # Errors
/// [`Error::Io`] when unreadable; [`Error::Format`] when the header is invalid, the
/// type is not unsigned byte, or the data length does not match the header.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("chainrule-idx-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let mut bytes = vec![0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3];
/// bytes.extend([1, 2, 3, 4, 5, 6]);
/// std::fs::write(dir.join("a.idx"), &bytes).unwrap();
/// let a = chainrule::io::read_idx(&dir.join("a.idx"))?;
/// assert_eq!((a.shape, a.values), (vec![2, 3], vec![1, 2, 3, 4, 5, 6]));
/// std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    read_idx_bytes(&read_file(path)?, &path.display().to_string())
}

/// Parses IDX bytes (gzip-compressed or not) as [`read_idx`] does; `name` names the
/// source.
///
/// # Errors
/// [`Error::Format`] as [`read_idx`].
///
/// ```
/// let a = chainrule::io::read_idx_bytes(&[0, 0, 8, 1, 0, 0, 0, 2, 7, 9], "a")?;
/// assert_eq!(a.values, vec![7, 9]);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn read_idx_bytes(raw: &[u8], name: &str) -> Result<IdxArray> {
    let mut values = Vec::new();
    let shape = stream_idx(raw, name, &mut values, |b| b)?;
    Ok(IdxArray { shape, values })
}

/// Parses IDX bytes (gzip-compressed or not), appending each data byte to `out`
/// through `convert` as it is decompressed, so that a caller converting the data (to
/// f32) never holds the whole byte array. Returns the shape.
pub(crate) fn stream_idx<T>(
    raw: &[u8],
    name: &str,
    out: &mut Vec<T>,
    convert: impl Fn(u8) -> T,
) -> Result<Vec<usize>> {
    let bad = |message: String| Error::Format {
        path: name.to_string(),
        message,
    };
    let gzip = raw.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read + '_> = if gzip {
        Box::new(flate2::read::GzDecoder::new(raw).take(MAX_IDX_BYTES + 1))
    } else {
        Box::new(raw)
    };
    let io = |e: std::io::Error| {
        bad(if gzip {
            format!("gzip: {e}")
        } else {
            e.to_string()
        })
    };
    // Reads up to buf.len() bytes, fewer only at the end of the data.
    let fill = |reader: &mut Box<dyn Read + '_>, buf: &mut [u8]| -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match reader.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(got)
    };
    let mut magic = [0u8; 4];
    if fill(&mut reader, &mut magic)? < 4 || magic[0] != 0 || magic[1] != 0 {
        return Err(bad("not an IDX file (bad magic number)".into()));
    }
    if magic[2] != 0x08 {
        return Err(bad(format!(
            "IDX element type 0x{:02x} is not supported (expected unsigned byte, 0x08)",
            magic[2]
        )));
    }
    let rank = usize::from(magic[3]);
    let mut dims = vec![0u8; 4 * rank];
    if fill(&mut reader, &mut dims)? < dims.len() {
        return Err(bad("truncated header".into()));
    }
    let shape: Vec<usize> = dims
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")) as usize)
        .collect();
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&c| c as u64 <= MAX_IDX_BYTES)
        .ok_or_else(|| bad("shape too large".into()))?;
    // The declared size is checked against the bytes present before anything is
    // reserved: a plain file's are all here; a gzip stream's are not known until it
    // is decompressed, so its values are reserved as they arrive (a header of 18
    // bytes once reserved 8 GiB).
    let header = 4 + dims.len();
    if !gzip && raw.len() - header != count {
        return Err(bad(format!(
            "shape {shape:?} needs {count} data bytes, the file has {}",
            raw.len() - header
        )));
    }
    super::check_memory(
        name,
        &format!("shape {shape:?}"),
        (count as u64).saturating_mul(std::mem::size_of::<T>() as u64),
    )?;
    // A gzip stream ends with its uncompressed length mod 2³² (ISIZE). When that
    // agrees with the header, the values are reserved at once: growing by doubling
    // copied 128 MB into 188 MB for MNIST's training images, a peak 100 MB above the
    // data. The size passed the memory check above, so a file that lies in both
    // places reserves no more than a plain file of its declared size could; one
    // that disagrees is reserved as its data arrives.
    let declared = (header as u64 + count as u64) % (1 << 32);
    let trailer = raw
        .len()
        .checked_sub(4)
        .map(|at| u32::from_le_bytes(raw[at..].try_into().expect("4 bytes")));
    if !gzip || trailer.is_some_and(|size| u64::from(size) == declared) {
        out.reserve_exact(count);
    }
    let mut buf = vec![0u8; 1 << 16];
    let mut seen = 0usize;
    loop {
        let want = buf.len().min(count - seen.min(count)).max(1);
        let got = fill(&mut reader, &mut buf[..want])?;
        if got == 0 {
            break;
        }
        if seen + got > count {
            // More data than the header declares: count the rest for the message.
            seen += got;
            loop {
                let more = fill(&mut reader, &mut buf)?;
                if more == 0 {
                    break;
                }
                seen += more;
            }
            break;
        }
        if out.capacity() - out.len() < got {
            // At most double what has arrived (and 1 MiB to start), never more
            // than the header declares: the memory follows the data present.
            out.reserve_exact((count - seen).min(seen.max(1 << 20)));
        }
        out.extend(buf[..got].iter().map(|&b| convert(b)));
        seen += got;
    }
    if seen as u64 > MAX_IDX_BYTES {
        return Err(bad("decompresses to more than 2 GiB".into()));
    }
    if seen != count {
        return Err(bad(format!(
            "shape {shape:?} needs {count} data bytes, the file has {seen}"
        )));
    }
    Ok(shape)
}
