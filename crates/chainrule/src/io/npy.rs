//! NumPy `.npy` files: format versions 1 to 3, little- and big-endian, C and Fortran
//! order, element types f32, f64, i32, i64 and u8.

use super::read_file;
use crate::{Error, Result, Tensor};
use std::path::Path;

/// The contents of a `.npy` file, by element type (row-major after reading).
#[derive(Debug, Clone, PartialEq)]
pub enum NpyArray {
    /// float32 values.
    F32(Vec<usize>, Vec<f32>),
    /// float64 values.
    F64(Vec<usize>, Vec<f64>),
    /// int32 values.
    I32(Vec<usize>, Vec<i32>),
    /// int64 values.
    I64(Vec<usize>, Vec<i64>),
    /// uint8 values.
    U8(Vec<usize>, Vec<u8>),
}

impl NpyArray {
    /// The shape.
    ///
    /// ```
    /// assert_eq!(chainrule::io::NpyArray::U8(vec![2], vec![1, 2]).shape(), &[2]);
    /// ```
    pub fn shape(&self) -> &[usize] {
        match self {
            NpyArray::F32(s, _)
            | NpyArray::F64(s, _)
            | NpyArray::I32(s, _)
            | NpyArray::I64(s, _)
            | NpyArray::U8(s, _) => s,
        }
    }

    /// NumPy's name of the element type.
    ///
    /// ```
    /// assert_eq!(chainrule::io::NpyArray::F32(vec![0], vec![]).dtype(), "float32");
    /// ```
    pub fn dtype(&self) -> &'static str {
        match self {
            NpyArray::F32(..) => "float32",
            NpyArray::F64(..) => "float64",
            NpyArray::I32(..) => "int32",
            NpyArray::I64(..) => "int64",
            NpyArray::U8(..) => "uint8",
        }
    }

    /// Whether the elements are floating point.
    ///
    /// ```
    /// assert!(!chainrule::io::NpyArray::I64(vec![0], vec![]).is_float());
    /// ```
    pub fn is_float(&self) -> bool {
        matches!(self, NpyArray::F32(..) | NpyArray::F64(..))
    }

    /// The values as a tensor of `F` (integers converted exactly where they fit).
    ///
    /// # Errors
    /// [`Error::ElementCount`] only if the array is inconsistent.
    ///
    /// ```
    /// use chainrule::io::NpyArray;
    /// let t = NpyArray::I32(vec![2], vec![3, -1]).to_tensor::<f64>()?;
    /// assert_eq!(t.to_vec(), vec![3.0, -1.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn to_tensor<F: crate::Float>(&self) -> Result<Tensor<F>> {
        let values: Vec<F> = match self {
            NpyArray::F32(_, v) => v.iter().map(|&x| F::from_f64(f64::from(x))).collect(),
            NpyArray::F64(_, v) => v.iter().map(|&x| F::from_f64(x)).collect(),
            NpyArray::I32(_, v) => v.iter().map(|&x| F::from_f64(f64::from(x))).collect(),
            NpyArray::I64(_, v) => v.iter().map(|&x| F::from_f64(x as f64)).collect(),
            NpyArray::U8(_, v) => v.iter().map(|&x| F::from_f64(f64::from(x))).collect(),
        };
        Tensor::from_vec(values, self.shape())
    }
}

/// Reads a `.npy` file.
///
/// # Errors
/// [`Error::Io`] when it cannot be read, [`Error::Format`] when it is not a valid
/// `.npy` file of a supported type (the message says what is wrong).
///
/// ```
/// assert!(chainrule::io::read_npy(std::path::Path::new("/no/such.npy")).is_err());
/// ```
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    read_npy_bytes(&read_file(path)?, &path.display().to_string())
}

/// Parses `.npy` bytes; `name` names the source in errors.
///
/// # Errors
/// [`Error::Format`] as [`read_npy`].
///
/// ```
/// let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
/// let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
/// let padded = format!("{header:<117}\n");
/// bytes.extend((padded.len() as u16).to_le_bytes());
/// bytes.extend(padded.as_bytes());
/// bytes.extend(1.5f64.to_le_bytes());
/// bytes.extend((-2.0f64).to_le_bytes());
/// let a = chainrule::io::read_npy_bytes(&bytes, "x.npy")?;
/// assert_eq!(a, chainrule::io::NpyArray::F64(vec![2], vec![1.5, -2.0]));
/// # Ok::<(), chainrule::Error>(())
/// ```
///
/// A key given twice is refused (NumPy would read the last one, and the two readers
/// would disagree about the array):
///
/// ```
/// let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
/// let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), 'shape': (1,), }";
/// let padded = format!("{header:<117}\n");
/// bytes.extend((padded.len() as u16).to_le_bytes());
/// bytes.extend(padded.as_bytes());
/// bytes.extend([0u8; 16]);
/// let err = chainrule::io::read_npy_bytes(&bytes, "y.npy").unwrap_err();
/// assert_eq!(err.to_string(), r#"y.npy: header has "shape" 2 times"#);
/// ```
pub fn read_npy_bytes(bytes: &[u8], name: &str) -> Result<NpyArray> {
    let bad = |message: String| Error::Format {
        path: name.to_string(),
        message,
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file (bad magic string)".into()));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!("unsupported .npy format version {v}"))),
    };
    let header_end = start
        .checked_add(header_len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| bad("truncated header".into()))?;
    let header = std::str::from_utf8(&bytes[start..header_end])
        .map_err(|_| bad("header is not UTF-8".into()))?;
    // NumPy reads the last of a repeated key; a reader that took the first would see
    // another array than NumPy does, so a repeated key is refused.
    for key in ["descr", "fortran_order", "shape"] {
        let times = header.matches(&format!("'{key}'")).count()
            + header.matches(&format!("\"{key}\"")).count();
        if times > 1 {
            return Err(bad(format!("header has {key:?} {times} times")));
        }
    }
    let descr = dict_value(header, "descr").ok_or_else(|| bad("header has no 'descr'".into()))?;
    let fortran = match dict_value(header, "fortran_order") {
        Some("True") => true,
        Some("False") => false,
        _ => return Err(bad("header has no valid 'fortran_order'".into())),
    };
    let shape = parse_shape(
        dict_value(header, "shape").ok_or_else(|| bad("header has no 'shape'".into()))?,
    )
    .ok_or_else(|| bad("header has an invalid 'shape'".into()))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    // The byte-order character, then the type code (split by characters: a hostile
    // header may put a multi-byte character first; found by fuzzing).
    let order_len = descr.chars().next().map_or(0, char::len_utf8);
    let (order, kind) = descr.split_at(order_len);
    let little = match order {
        "<" | "|" | "=" => true,
        ">" => false,
        _ => return Err(bad(format!("unsupported dtype {descr:?}"))),
    };
    let width = match kind {
        "f4" | "i4" => 4,
        "f8" | "i8" => 8,
        "u1" | "i1" | "b1" if kind == "u1" => 1,
        _ => {
            return Err(bad(format!(
                "unsupported dtype {descr:?} (expected float32, float64, int32, int64 or uint8)"
            )));
        }
    };
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
    // ndarray also needs the product of the non-zero sizes to fit in an isize, even
    // when another size is 0 (found by fuzzing).
    let nonzero = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize);
    if nonzero.is_none() {
        return Err(bad(format!("shape {shape:?} is too large")));
    }
    let data = &bytes[header_end..];
    let expected = count
        .checked_mul(width)
        .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
    if data.len() != expected {
        return Err(bad(format!(
            "shape {shape:?} of {descr} needs {expected} data bytes, the file has {}",
            data.len()
        )));
    }
    // Fortran order stores the transpose: read with the reversed shape, then permute.
    let stored_shape: Vec<usize> = if fortran {
        shape.iter().rev().copied().collect()
    } else {
        shape.clone()
    };
    macro_rules! decode {
        ($variant:ident, $t:ty, $n:expr) => {{
            let values: Vec<$t> = data
                .chunks_exact($n)
                .map(|c| {
                    let arr: [u8; $n] = c.try_into().expect("chunk width");
                    if little {
                        <$t>::from_le_bytes(arr)
                    } else {
                        <$t>::from_be_bytes(arr)
                    }
                })
                .collect();
            let values = if fortran {
                to_row_major(values, &stored_shape)
            } else {
                values
            };
            NpyArray::$variant(shape, values)
        }};
    }
    Ok(match kind {
        "f4" => decode!(F32, f32, 4),
        "f8" => decode!(F64, f64, 8),
        "i4" => decode!(I32, i32, 4),
        "i8" => decode!(I64, i64, 8),
        _ => decode!(U8, u8, 1),
    })
}

/// Reorders values stored row-major under `reversed_shape` into row-major order of
/// the reversed-back shape (the transpose).
fn to_row_major<T: Copy>(values: Vec<T>, reversed_shape: &[usize]) -> Vec<T> {
    let array = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(reversed_shape), values)
        .expect("length checked");
    array.reversed_axes().iter().copied().collect()
}

/// The raw text of `key`'s value in a Python dict literal header.
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let pattern_single = format!("'{key}'");
    let pattern_double = format!("\"{key}\"");
    let at = header
        .find(&pattern_single)
        .or_else(|| header.find(&pattern_double))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Parses a Python tuple of sizes: `()`, `(3,)`, `(3, 2)`.
fn parse_shape(text: &str) -> Option<Vec<usize>> {
    let inner = text.strip_prefix('(')?.strip_suffix(')')?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse().ok())
        .collect()
}

/// Serialises a tensor as a version-1 `.npy` file (little-endian, C order,
/// float32 or float64 by `F`).
///
/// ```
/// use chainrule::{io, Tensor};
/// let t = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2])?;
/// let back = io::read_npy_bytes(&io::npy_bytes(&t), "t.npy")?;
/// assert_eq!(back, io::NpyArray::F32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
/// # Ok::<(), chainrule::Error>(())
/// ```
pub fn npy_bytes<F: crate::Float>(tensor: &Tensor<F>) -> Vec<u8> {
    let descr = if F::DTYPE == "F32" { "<f4" } else { "<f8" };
    let dims: Vec<String> = tensor.shape().iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending in a newline.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in tensor.to_vec() {
        if F::DTYPE == "F32" {
            bytes.extend((v.as_f64() as f32).to_le_bytes());
        } else {
            bytes.extend(v.as_f64().to_le_bytes());
        }
    }
    bytes
}
