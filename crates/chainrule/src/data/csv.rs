//! CSV files with a header row: numeric feature columns and one target column.

use super::{Dataset, MAX_CLASSES, Target};
use crate::io::read_file;
use crate::{Error, Float, Result, Tensor};
use std::path::Path;

/// What the target column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// Class labels: non-negative integers used as class indices, or names mapped to
    /// indices in sorted order.
    Classes,
    /// Numbers to regress.
    Values,
}

/// A CSV file read as a data set.
#[derive(Debug, Clone)]
pub struct CsvData<F: Float = f32> {
    /// Features and targets.
    pub dataset: Dataset<F>,
    /// The feature columns' names, in order.
    pub feature_names: Vec<String>,
    /// For named classes, the name of each class index.
    pub class_names: Option<Vec<String>>,
}

/// Reads a CSV file whose first row names the columns; `target` names the target
/// column, every other column is a numeric feature.
///
/// # Errors
/// [`Error::Io`] when unreadable; [`Error::Format`] naming the line and column of a
/// malformed row, a missing or non-numeric value, a class index of
/// [`MAX_CLASSES`] or more (or more than [`MAX_CLASSES`] class names), a target
/// column that does not exist, or no feature column beside it.
///
/// ```
/// use chainrule::data::{read_csv, TargetKind};
/// let dir = std::env::temp_dir().join(format!("chainrule-csv-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// std::fs::write(dir.join("d.csv"), "a,b,species\n1,2,setosa\n3,4,virginica\n5,6,setosa\n").unwrap();
/// let data = read_csv::<f64>(&dir.join("d.csv"), "species", TargetKind::Classes)?;
/// assert_eq!(data.dataset.x.to_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
/// assert_eq!(data.dataset.target, chainrule::data::Target::Classes(vec![0, 1, 0]));
/// assert_eq!(data.class_names.unwrap(), ["setosa", "virginica"]);
/// std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn read_csv<F: Float>(path: &Path, target: &str, kind: TargetKind) -> Result<CsvData<F>> {
    read_csv_bytes(&read_file(path)?, &path.display().to_string(), target, kind)
}

/// Parses CSV bytes as [`read_csv`] does; `name` names the source.
///
/// # Errors
/// [`Error::Format`] as [`read_csv`].
///
/// ```
/// use chainrule::data::{read_csv_bytes, TargetKind};
/// let d = read_csv_bytes::<f32>(b"a,y\n1,0\n", "d.csv", "y", TargetKind::Classes)?;
/// assert_eq!(d.dataset.len(), 1);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn read_csv_bytes<F: Float>(
    bytes: &[u8],
    name: &str,
    target: &str,
    kind: TargetKind,
) -> Result<CsvData<F>> {
    let name = name.to_string();
    let bad = |message: String| Error::Format {
        path: name.clone(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| bad(format!("header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let target_column = headers.iter().position(|h| h == target).ok_or_else(|| {
        bad(format!(
            "no column named {target:?} (columns: {})",
            headers.join(", ")
        ))
    })?;
    let feature_names: Vec<String> = headers
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != target_column)
        .map(|(_, h)| h.clone())
        .collect();
    if feature_names.is_empty() {
        return Err(bad(format!(
            "no feature columns: {target:?} is the only column (a CSV needs at least one numeric column beside its target)"
        )));
    }

    let mut features: Vec<F> = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let line = row + 2;
        let record = record.map_err(|e| bad(format!("line {line}: {e}")))?;
        if record.len() != headers.len() {
            return Err(bad(format!(
                "line {line}: {} fields, the header has {}",
                record.len(),
                headers.len()
            )));
        }
        for (column, field) in record.iter().enumerate() {
            let field = field.trim();
            if column == target_column {
                labels.push(field.to_string());
                continue;
            }
            let value: f64 = field
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| {
                    bad(format!(
                        "line {line}, column {:?}: {field:?} is not a finite number",
                        headers[column]
                    ))
                })?;
            features.push(F::from_f64(value));
        }
    }
    let rows = labels.len();
    let x = Tensor::from_vec(features, &[rows, feature_names.len()])?;
    let (target, class_names) = match kind {
        TargetKind::Values => {
            let values = labels
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    l.parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .map(F::from_f64)
                        .ok_or_else(|| {
                            bad(format!(
                                "line {}, column {target:?}: {l:?} is not a finite number",
                                i + 2
                            ))
                        })
                })
                .collect::<Result<Vec<F>>>()?;
            (Target::Values(Tensor::from_vec(values, &[rows, 1])?), None)
        }
        TargetKind::Classes => {
            let indices: Option<Vec<usize>> = labels.iter().map(|l| l.parse().ok()).collect();
            match indices {
                Some(indices) => {
                    // A class index sizes the model's output: bounded where it is read.
                    if let Some(row) = indices.iter().position(|&c| c >= MAX_CLASSES) {
                        return Err(bad(format!(
                            "line {}, column {target:?}: class {} is not below {MAX_CLASSES}, the most classes chainrule takes (class labels are indices from 0)",
                            row + 2,
                            indices[row]
                        )));
                    }
                    (Target::Classes(indices), None)
                }
                None => {
                    let mut names = labels.clone();
                    names.sort();
                    names.dedup();
                    if names.len() > MAX_CLASSES {
                        return Err(bad(format!(
                            "column {target:?}: {} different class names, more than the {MAX_CLASSES} classes chainrule takes",
                            names.len()
                        )));
                    }
                    let indices = labels
                        .iter()
                        .map(|l| names.binary_search(l).expect("collected"))
                        .collect();
                    (Target::Classes(indices), Some(names))
                }
            }
        }
    };
    Ok(CsvData {
        dataset: Dataset::new(x, target)?,
        feature_names,
        class_names,
    })
}
