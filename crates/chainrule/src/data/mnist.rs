//! MNIST, read from the IDX files it ships in.

use super::{Dataset, Target};
use crate::io::{read_file, read_idx, stream_idx};
use crate::{Error, Result, Tensor};
use std::path::Path;

/// Finds an MNIST file in `dir` under the names it is distributed with
/// (`train-images-idx3-ubyte` or `train-images.idx3-ubyte`, each plain or `.gz`).
fn mnist_file(dir: &Path, split: &str, what: &str, rank: &str) -> Result<std::path::PathBuf> {
    [
        format!("{split}-{what}-{rank}-ubyte"),
        format!("{split}-{what}.{rank}-ubyte"),
    ]
    .iter()
    .flat_map(|n| [dir.join(n), dir.join(format!("{n}.gz"))])
    .find(|p| p.is_file())
    .ok_or_else(|| Error::Io {
        path: dir.display().to_string(),
        message: format!("no {split}-{what}-{rank}-ubyte file (plain or .gz) in this MNIST folder"),
    })
}

/// Reads one split of MNIST (`"train"` or `"t10k"`) from the IDX files in `dir`:
/// images as `[N, 784]` pixel values 0–255 in f32, labels as class indices.
///
/// # Errors
/// [`Error::Io`] when a file is missing, [`Error::Format`] when one is malformed or
/// the label count differs from the image count.
///
/// ```
/// assert!(chainrule::data::read_mnist(std::path::Path::new("/no/such/dir"), "train").is_err());
/// ```
pub fn read_mnist(dir: &Path, split: &str) -> Result<Dataset<f32>> {
    // The pixels go to f32 as they are decompressed: the bytes are never held whole.
    let path = mnist_file(dir, split, "images", "idx3")?;
    let mut pixels: Vec<f32> = Vec::new();
    let shape = stream_idx(
        &read_file(&path)?,
        &path.display().to_string(),
        &mut pixels,
        f32::from,
    )?;
    // Every error names the file at fault (the images, then the labels).
    if shape.len() != 3 {
        return Err(Error::Format {
            path: path.display().to_string(),
            message: format!("images of shape {shape:?}: MNIST's are [N, rows, columns]"),
        });
    }
    let labels_path = mnist_file(dir, split, "labels", "idx1")?;
    let labels = read_idx(&labels_path)?;
    let rows = shape[0];
    let features: usize = shape[1..].iter().product();
    if labels.shape.len() != 1 || labels.values.len() != rows {
        return Err(Error::Format {
            path: labels_path.display().to_string(),
            message: format!(
                "labels of shape {:?} for the {rows} images of {}",
                labels.shape,
                path.display()
            ),
        });
    }
    let x = Tensor::from_vec(pixels, &[rows, features])?;
    Dataset::new(
        x,
        Target::Classes(labels.values.iter().map(|&l| usize::from(l)).collect()),
    )
}
