//! Files: NumPy `.npy` arrays, IDX arrays, safetensors parameter files, atomic
//! writes, and checkpoint folders that are replaced as a whole. Turning files into
//! data sets (CSV, MNIST) is [`crate::data`]'s job.
//!
//! Every reader checks a header's declared sizes against the bytes actually present
//! before allocating, and names the file in its errors.

mod checkpoint;
mod idx;
mod npy;
mod safetensors;

pub use checkpoint::{CheckpointDir, CheckpointSave, SavedCheckpoint};
pub(crate) use idx::stream_idx;
pub use idx::{IdxArray, read_idx, read_idx_bytes};
pub use npy::{NpyArray, npy_bytes, read_npy, read_npy_bytes};
pub use safetensors::{
    COUNTER_SUFFIX, read_safetensors, safetensors_bytes, safetensors_dtype, safetensors_from_bytes,
    write_safetensors,
};

use crate::{Error, Result};
use std::io::{Read, Write};
use std::path::Path;

pub(crate) fn io_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Reads a whole file, naming it in the error.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read.
///
/// ```
/// assert!(chainrule::io::read_file(std::path::Path::new("/no/such/file")).is_err());
/// ```
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
    // A FIFO or a character device (/dev/zero) has no size and may never end: only
    // regular files are read, and never beyond the size they had when opened.
    if !meta.is_file() {
        return Err(io_error(
            path,
            "not a regular file (a folder, a FIFO or a device): refusing to read it",
        ));
    }
    let len = meta.len();
    if let Some(available) = available_memory()
        && len > available
    {
        return Err(io_error(
            path,
            format!(
                "{len} bytes do not fit in the {available} bytes of memory available; nothing was loaded"
            ),
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, e))?;
    if bytes.len() as u64 > len {
        return Err(io_error(path, "the file grew while it was read"));
    }
    Ok(bytes)
}

/// [`read_file`] for a UTF-8 text file (a model, a config, a CSV).
///
/// # Errors
/// As [`read_file`], and [`Error::Format`](crate::Error::Format) for bytes that
/// are not UTF-8.
///
/// ```
/// assert!(chainrule::io::read_text(std::path::Path::new("/dev/zero")).is_err());
/// ```
pub fn read_text(path: &Path) -> Result<String> {
    String::from_utf8(read_file(path)?).map_err(|_| crate::Error::Format {
        path: path.display().to_string(),
        message: "not UTF-8 text".into(),
    })
}

/// The memory the system can still give us, if known: the least of Linux's
/// MemAvailable, the process's address-space limit (`ulimit -v`, RLIMIT_AS) and its
/// cgroup's room (`memory.max` − `memory.current`). Sizes read from a file are
/// checked against it before anything is reserved, so that a hostile header is
/// refused with a message instead of an abort in the allocator.
pub(crate) fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib.saturating_mul(1024))
        });
    // "Max address space   unlimited   unlimited   bytes": the soft limit.
    let address_space = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits
                .lines()
                .find(|l| l.starts_with("Max address space"))?;
            line.trim_start_matches("Max address space")
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        });
    let cgroup = (|| {
        let max: u64 = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let current: u64 = std::fs::read_to_string("/sys/fs/cgroup/memory.current")
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some(max.saturating_sub(current))
    })();
    [meminfo, address_space, cgroup].into_iter().flatten().min()
}

/// Refuses `bytes` of memory for `what` of `path` when they exceed
/// [`available_memory`]: called before a size read from a file is reserved.
pub(crate) fn check_memory(path: &str, what: &str, bytes: u64) -> Result<()> {
    match available_memory() {
        Some(available) if bytes > available => Err(Error::Format {
            path: path.to_string(),
            message: format!(
                "{what} needs {bytes} bytes of memory, more than the {available} available; nothing was loaded"
            ),
        }),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` atomically: to a temporary file in the same folder,
/// flushed to disk, then renamed over `path`. Readers see the old file or the new
/// one, never a partial one, and a failure leaves no temporary file behind.
///
/// # Errors
/// [`Error::Io`] when the folder does not exist or a write fails.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("chainrule-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("out.txt");
/// chainrule::io::write_atomic(&path, b"hello")?;
/// assert_eq!(std::fs::read(&path).unwrap(), b"hello");
/// assert!(chainrule::io::write_atomic(&dir.join("missing/out.txt"), b"x").is_err());
/// std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes).map_err(|e| io_error(path, e)))
}

/// [`write_atomic`] for output made a piece at a time: `write` writes into the
/// temporary file (buffered), which replaces `path` only if it succeeds, so that
/// output larger than memory never has to be held whole.
///
/// # Errors
/// As [`write_atomic`], and whatever `write` returns (the temporary file is then
/// removed and `path` left as it was).
///
/// ```
/// let dir = std::env::temp_dir().join(format!("chainrule-doc-with-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("rows.csv");
/// chainrule::io::write_atomic_with(&path, |w| {
///     for i in 0..3 {
///         writeln!(w, "{i}").map_err(|e| chainrule::Error::Io { path: "rows.csv".into(), message: e.to_string() })?;
///     }
///     Ok::<(), chainrule::Error>(())
/// })?;
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n1\n2\n");
/// std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn write_atomic_with<E: From<Error>>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(io_error(path, "the output folder does not exist").into());
    }
    let name = path
        .file_name()
        .ok_or_else(|| io_error(path, "not a file name"))?;
    // Replace only a regular file: never a device node, a FIFO, a folder or a link
    // (renaming over a link replaces the link, so writing "through" one could
    // put a regular file where /dev/null was).
    if let Ok(existing) = std::fs::symlink_metadata(path)
        && !existing.file_type().is_file()
    {
        return Err(io_error(
            path,
            "exists and is not a regular file (a link, a device, a FIFO or a folder): refusing to replace it",
        )
        .into());
    }
    let temp = folder.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let file = std::fs::File::create(&temp).map_err(|e| io_error(path, e))?;
    let mut out = std::io::BufWriter::new(file);
    let result = write(&mut out).and_then(|()| {
        (|| {
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            std::fs::rename(&temp, path)
        })()
        .map_err(|e| io_error(path, e).into())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
