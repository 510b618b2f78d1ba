//! Parameter files in the safetensors format, with PyTorch `state_dict()` names.

use super::{read_file, write_atomic};
use crate::{Error, Float, Result, Tensor};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::BTreeMap;
use std::path::Path;

/// The suffix of PyTorch's batch-norm batch counters (`{i}.num_batches_tracked`): the
/// one kind of tensor stored as I64 with shape `[]`, as PyTorch's `state_dict()` holds
/// it. In memory it is a scalar of `F` (exact up to 2²⁴ batches in f32, 2⁵³ in f64).
pub const COUNTER_SUFFIX: &str = ".num_batches_tracked";

/// Reads every tensor of a safetensors file as `F`, which must be the file's dtype
/// (all tensors alike, but for the I64 batch counters, see [`COUNTER_SUFFIX`]).
///
/// # Errors
/// [`Error::Io`] when unreadable; [`Error::Format`] when the file is not valid
/// safetensors, a tensor's dtype is not `F`'s (F16/BF16 are not supported yet), or
/// a value is not finite.
///
/// ```
/// use chainrule::{io, Tensor};
/// let mut named = std::collections::BTreeMap::new();
/// named.insert("0.weight".to_string(), Tensor::<f32>::ones(&[2, 3]));
/// let bytes = io::safetensors_bytes(&named)?;
/// let dir = std::env::temp_dir().join(format!("chainrule-st-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// std::fs::write(dir.join("p.safetensors"), bytes).unwrap();
/// let back = io::read_safetensors::<f32>(&dir.join("p.safetensors"))?;
/// assert_eq!(back, named);
/// std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn read_safetensors<F: Float>(path: &Path) -> Result<BTreeMap<String, Tensor<F>>> {
    safetensors_from_bytes(&read_file(path)?, &path.display().to_string())
}

/// Parses safetensors bytes as [`read_safetensors`] does; `name` names the source.
///
/// # Errors
/// [`Error::Format`] as [`read_safetensors`].
///
/// ```
/// assert!(chainrule::io::safetensors_from_bytes::<f32>(b"\x02\0\0\0\0\0\0\0{}", "p").unwrap().is_empty());
/// assert!(chainrule::io::safetensors_from_bytes::<f32>(b"junk", "p").is_err());
/// ```
pub fn safetensors_from_bytes<F: Float>(
    bytes: &[u8],
    name: &str,
) -> Result<BTreeMap<String, Tensor<F>>> {
    let name = name.to_string();
    let bad = |message: String| Error::Format {
        path: name.clone(),
        message,
    };
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let mut out = BTreeMap::new();
    for (key, view) in file.tensors() {
        let values: Vec<F> = match (view.dtype(), F::DTYPE) {
            (Dtype::I64, _) if key.ends_with(COUNTER_SUFFIX) => {
                if !view.shape().is_empty() {
                    return Err(bad(format!(
                        "tensor {key:?} has shape {:?}; a batch counter is a scalar, shape []",
                        view.shape()
                    )));
                }
                let count = i64::from_le_bytes(
                    view.data()
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| bad(format!("tensor {key:?} is truncated")))?,
                );
                let exact = if F::DTYPE == "F32" {
                    1i64 << 24
                } else {
                    1i64 << 53
                };
                if !(0..=exact).contains(&count) {
                    return Err(bad(format!(
                        "tensor {key:?} counts {count} batches, outside 0..={exact}"
                    )));
                }
                vec![F::from_f64(count as f64)]
            }
            (Dtype::F32, "F32") => view
                .data()
                .chunks_exact(4)
                .map(|c| {
                    F::from_f64(f64::from(f32::from_le_bytes(
                        c.try_into().expect("4 bytes"),
                    )))
                })
                .collect(),
            (Dtype::F64, "F64") => view
                .data()
                .chunks_exact(8)
                .map(|c| F::from_f64(f64::from_le_bytes(c.try_into().expect("8 bytes"))))
                .collect(),
            (Dtype::F16 | Dtype::BF16, _) => {
                return Err(bad(format!(
                    "tensor {key:?} is {:?}: F16/BF16 parameters are not supported yet",
                    view.dtype()
                )));
            }
            (dtype, expected) => {
                // All of one other dtype (a float64 PyTorch model, read for f32
                // training), or one tensor that differs from the rest.
                let same = file
                    .tensors()
                    .iter()
                    .filter(|(k, _)| !k.ends_with(COUNTER_SUFFIX))
                    .all(|(_, v)| v.dtype() == dtype);
                return Err(bad(if same {
                    format!(
                        "every tensor is {dtype:?}, and {expected} is read here: save them as {} (in PyTorch, `model.{}()` before saving)",
                        if expected == "F32" {
                            "float32"
                        } else {
                            "float64"
                        },
                        if expected == "F32" { "float" } else { "double" }
                    )
                } else {
                    format!(
                        "tensor {key:?} is {dtype:?}, expected {expected} like the other tensors"
                    )
                }));
            }
        };
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return Err(bad(format!(
                "tensor {key:?} holds a non-finite value ({v})"
            )));
        }
        out.insert(key.clone(), Tensor::from_vec(values, view.shape())?);
    }
    Ok(out)
}

/// The dtype every tensor of a safetensors file has: `"F32"` or `"F64"`.
///
/// # Errors
/// [`Error::Format`] for an invalid file, mixed dtypes, or another dtype.
///
/// ```
/// assert!(chainrule::io::read_file(std::path::Path::new("/nope")).is_err());
/// ```
pub fn safetensors_dtype(path: &Path) -> Result<&'static str> {
    let bytes = read_file(path)?;
    let bad = |message: String| Error::Format {
        path: path.display().to_string(),
        message,
    };
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    // The batch counters are I64 whatever the parameters' dtype.
    let mut dtypes = file
        .tensors()
        .into_iter()
        .filter(|(k, v)| !(v.dtype() == Dtype::I64 && k.ends_with(COUNTER_SUFFIX)))
        .map(|(_, v)| v.dtype())
        .collect::<Vec<_>>();
    dtypes.dedup();
    match dtypes.as_slice() {
        [Dtype::F32] => Ok("F32"),
        [Dtype::F64] => Ok("F64"),
        [] => Err(bad("holds no tensors".into())),
        [Dtype::F16 | Dtype::BF16] => Err(bad("F16/BF16 parameters are not supported yet".into())),
        [other] => Err(bad(format!(
            "dtype {other:?} is not supported (expected F32 or F64)"
        ))),
        _ => Err(bad(
            "tensors have different dtypes; all must be F32 or all F64".into(),
        )),
    }
}

/// Serialises named tensors to safetensors bytes (little-endian, dtype from `F`).
///
/// # Errors
/// [`Error::Format`] if the safetensors crate rejects the data.
///
/// ```
/// use chainrule::{io, Tensor};
/// let mut named = std::collections::BTreeMap::new();
/// named.insert("b".to_string(), Tensor::<f64>::zeros(&[3]));
/// assert!(io::safetensors_bytes(&named)?.len() > 24);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn safetensors_bytes<F: Float>(named: &BTreeMap<String, Tensor<F>>) -> Result<Vec<u8>> {
    let dtype = if F::DTYPE == "F32" {
        Dtype::F32
    } else {
        Dtype::F64
    };
    let buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = named
        .iter()
        .map(|(k, t)| {
            if k.ends_with(COUNTER_SUFFIX) && t.shape().is_empty() {
                let count = t.to_vec()[0].as_f64() as i64;
                return (k.clone(), Dtype::I64, vec![], count.to_le_bytes().to_vec());
            }
            let bytes = t
                .to_vec()
                .iter()
                .flat_map(|v| {
                    if dtype == Dtype::F32 {
                        (v.as_f64() as f32).to_le_bytes().to_vec()
                    } else {
                        v.as_f64().to_le_bytes().to_vec()
                    }
                })
                .collect();
            (k.clone(), dtype, t.shape().to_vec(), bytes)
        })
        .collect();
    let views = buffers
        .iter()
        .map(|(k, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|v| (k.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Format {
            path: "safetensors".into(),
            message: e.to_string(),
        })?;
    safetensors::serialize(views, None).map_err(|e| Error::Format {
        path: "safetensors".into(),
        message: e.to_string(),
    })
}

/// Writes named tensors to a safetensors file atomically (see
/// [`write_atomic`](super::write_atomic)).
///
/// # Errors
/// [`Error::Io`] when the folder is missing or the write fails.
///
/// ```
/// use chainrule::{io, Tensor};
/// let mut named = std::collections::BTreeMap::new();
/// named.insert("0.bias".to_string(), Tensor::<f32>::zeros(&[2]));
/// assert!(io::write_safetensors(std::path::Path::new("/no/such/dir/p.safetensors"), &named).is_err());
/// ```
pub fn write_safetensors<F: Float>(path: &Path, named: &BTreeMap<String, Tensor<F>>) -> Result<()> {
    write_atomic(path, &safetensors_bytes(named)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 15): a file of F64 tensors only, read for f32 training, was
    /// refused with "expected F32 like the other tensors", when there were no others.
    #[test]
    fn a_file_all_of_another_dtype_is_told_to_be_saved_in_the_one_read() {
        let named: BTreeMap<String, Tensor<f64>> = [
            ("0.weight".to_string(), Tensor::zeros(&[2, 2])),
            ("0.bias".to_string(), Tensor::zeros(&[2])),
        ]
        .into();
        let bytes = safetensors_bytes(&named).unwrap();
        let message = safetensors_from_bytes::<f32>(&bytes, "p.safetensors")
            .unwrap_err()
            .to_string();
        assert!(message.contains("every tensor is F64"), "{message}");
        assert!(
            message.contains("float32") && !message.contains("other tensors"),
            "{message}"
        );
    }
}
