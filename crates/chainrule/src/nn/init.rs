//! Weight initializers, each driven by an explicit seed (same seed, same weights).
//!
//! Fans follow PyTorch for a weight of shape `[out, in]`: fan_in = in, fan_out = out.

use crate::error::invalid;
use crate::{Float, Result, Tensor};

/// How to draw a layer's initial weights.
///
/// ```
/// use chainrule::nn::Init;
/// let w = Init::XavierUniform.weight::<f64>(&[64, 32], 1)?;
/// let bound = (6.0f64 / 96.0).sqrt();
/// assert!(w.to_vec().iter().all(|v| v.abs() <= bound));
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// PyTorch's `nn.Linear` default: weight and bias uniform in ±1/√fan_in.
    PytorchDefault,
    /// Glorot/Xavier uniform: ±√(6 / (fan_in + fan_out)) (`xavier_uniform_`, gain 1).
    XavierUniform,
    /// Glorot/Xavier normal: std √(2 / (fan_in + fan_out)) (`xavier_normal_`, gain 1).
    XavierNormal,
    /// He/Kaiming uniform for ReLU: ±√(6 / fan_in) (`kaiming_uniform_(nonlinearity="relu")`).
    HeUniform,
    /// He/Kaiming normal for ReLU: std √(2 / fan_in) (`kaiming_normal_(nonlinearity="relu")`).
    HeNormal,
}

impl Init {
    /// Every initializer with its config name.
    pub const NAMES: [(&'static str, Init); 5] = [
        ("pytorch", Init::PytorchDefault),
        ("xavier_uniform", Init::XavierUniform),
        ("xavier_normal", Init::XavierNormal),
        ("he_uniform", Init::HeUniform),
        ("he_normal", Init::HeNormal),
    ];

    /// The initializer of a config name (`pytorch`, `xavier_uniform`, `xavier_normal`,
    /// `he_uniform`, `he_normal`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidValue`] for an unknown name.
    ///
    /// ```
    /// use chainrule::nn::Init;
    /// assert_eq!(Init::from_name("he_normal")?, Init::HeNormal);
    /// assert!(Init::from_name("orthogonal").is_err());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn from_name(name: &str) -> Result<Init> {
        Init::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, i)| i)
            .ok_or_else(|| {
                let known: Vec<_> = Init::NAMES.iter().map(|(n, _)| *n).collect();
                invalid(
                    "init",
                    format!(
                        "unknown initializer {name:?} (expected one of {})",
                        known.join(", ")
                    ),
                )
            })
    }

    /// A weight tensor of `shape` `[out, in]`, or `[out, in, kh, kw]` for a
    /// convolution, whose fans count the kernel's taps too (`in·kh·kw` and
    /// `out·kh·kw`, as PyTorch's).
    ///
    /// # Errors
    /// [`crate::Error::InvalidValue`] for a shape of rank below 2 or a zero fan.
    ///
    /// ```
    /// use chainrule::nn::Init;
    /// let a = Init::HeNormal.weight::<f32>(&[10, 20], 5)?;
    /// assert_eq!(a, Init::HeNormal.weight::<f32>(&[10, 20], 5)?);
    /// assert_ne!(a, Init::HeNormal.weight::<f32>(&[10, 20], 6)?);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn weight<F: Float>(self, shape: &[usize], seed: u64) -> Result<Tensor<F>> {
        let &[outputs, inputs, ref kernel @ ..] = shape else {
            return Err(invalid(
                "init",
                format!("weights must be [out, in] or [out, in, kh, kw], got {shape:?}"),
            ));
        };
        let taps: usize = kernel.iter().product();
        let (fan_in, fan_out) = (inputs * taps, outputs * taps);
        if fan_in == 0 || fan_out == 0 {
            return Err(invalid("init", format!("shape {shape:?} has a zero fan")));
        }
        let (fan_in, fan_out) = (fan_in as f64, fan_out as f64);
        let uniform = |bound: f64| Tensor::rand_uniform(shape, -bound, bound, seed);
        let normal = |std: f64| Tensor::rand_normal(shape, 0.0, std, seed);
        match self {
            Init::PytorchDefault => uniform(1.0 / fan_in.sqrt()),
            Init::XavierUniform => uniform((6.0 / (fan_in + fan_out)).sqrt()),
            Init::XavierNormal => normal((2.0 / (fan_in + fan_out)).sqrt()),
            Init::HeUniform => uniform((6.0 / fan_in).sqrt()),
            Init::HeNormal => normal((2.0 / fan_in).sqrt()),
        }
    }

    /// A bias of `outputs` values for a layer with `fan_in` inputs: PyTorch's default
    /// draws it uniform in ±1/√fan_in; the other initializers start it at zero (as
    /// Keras does).
    ///
    /// # Errors
    /// Only for a zero `fan_in`.
    ///
    /// ```
    /// use chainrule::nn::Init;
    /// assert_eq!(Init::XavierUniform.bias::<f64>(3, 4, 0)?.to_vec(), vec![0.0; 3]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn bias<F: Float>(self, outputs: usize, fan_in: usize, seed: u64) -> Result<Tensor<F>> {
        if fan_in == 0 {
            return Err(invalid("init", "a layer needs at least one input"));
        }
        match self {
            Init::PytorchDefault => {
                let bound = 1.0 / (fan_in as f64).sqrt();
                Tensor::rand_uniform(&[outputs], -bound, bound, seed)
            }
            _ => Ok(Tensor::zeros(&[outputs])),
        }
    }
}
