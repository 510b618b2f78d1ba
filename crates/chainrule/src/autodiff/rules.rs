//! The derivative table: every operation the tape records, with its forward and its
//! local derivative side by side.
//!
//! Conventions, used in every rule: `x` (or `a`, `b`) are the inputs, `out` is the
//! forward result, `g` is ∂L/∂out (the gradient flowing in from above), and each rule
//! returns ∂L/∂input for the inputs whose `need` flag is set. A gradient may have the
//! broadcast shape of `out`: the tape reduces it to the input's shape in one place
//! ([`Tensor::sum_to_shape`]), so no rule deals with broadcasting.

use crate::{Float, Result, Tensor};
use ndarray::{ArrayD, Axis, IxDyn, Slice};
use std::borrow::Cow;
use std::fmt::Debug;

/// Gradients returned by a rule: one entry per input, `None` where not needed.
///
/// ```
/// use chainrule::{autodiff::InputGrads, Tensor};
/// let grads: InputGrads<f64> = vec![Some(Tensor::scalar(1.0)), None];
/// assert!(grads[1].is_none());
/// ```
pub type InputGrads<F> = Vec<Option<Tensor<F>>>;

/// One differentiable operation: its forward and its local derivative.
///
/// Implement it to add an operation of your own and record it with
/// [`Tape::apply`](super::Tape::apply).
///
/// ```
/// use chainrule::autodiff::{InputGrads, Rule, Tape};
/// use chainrule::{Result, Tensor};
///
/// /// cube(x) = x³, d/dx = 3x²
/// #[derive(Debug)]
/// struct Cube;
/// impl Rule<f64> for Cube {
///     fn label(&self) -> String { "cube".into() }
///     fn forward(&self, x: &[&Tensor<f64>]) -> Result<Tensor<f64>> {
///         Ok(x[0].map(|v| v * v * v))
///     }
///     fn backward(&self, x: &[&Tensor<f64>], _out: &Tensor<f64>, g: &Tensor<f64>,
///                 _need: &[bool]) -> Result<InputGrads<f64>> {
///         Ok(vec![Some(g.mul(&x[0].map(|v| 3.0 * v * v))?)])
///     }
/// }
///
/// let tape = Tape::new();
/// let x = tape.param_scalar(2.0);
/// let y = tape.apply(Box::new(Cube), &[x])?;
/// assert_eq!(y.backward()?.wrt(x).unwrap().item()?, 12.0);
/// # Ok::<(), chainrule::Error>(())
/// ```
pub trait Rule<F: Float>: Debug {
    /// A short name for graphs and derivations (`"mul"`, `"relu"`, `"sum[1]"`).
    ///
    /// ```
    /// let tape = chainrule::Tape::<f64>::new();
    /// let y = tape.param_scalar(1.0).sigmoid();
    /// assert_eq!(tape.label(y.id()).as_deref(), Some("sigmoid"));
    /// ```
    fn label(&self) -> String;

    /// Computes the output from the input values.
    ///
    /// # Errors
    /// When the inputs' shapes do not fit the operation.
    ///
    /// ```
    /// use chainrule::{Tape, Tensor};
    /// // Every recorded value is its rule's forward applied to the inputs' values:
    /// let tape = Tape::<f64>::new();
    /// let y = tape.param(Tensor::from_vec(vec![-1.0, 2.0], &[2])?).relu();
    /// assert_eq!(y.value().to_vec(), vec![0.0, 2.0]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    fn forward(&self, x: &[&Tensor<F>]) -> Result<Tensor<F>>;

    /// Computes ∂L/∂x for each input `i` with `need[i]`, from the inputs, the output
    /// and `g` = ∂L/∂out.
    ///
    /// # Errors
    /// Only if the tensors are inconsistent with the forward pass.
    ///
    /// ```
    /// // mul's rule returns (g·b, g·a); only the input that needs one gets it.
    /// let tape = chainrule::Tape::<f64>::new();
    /// let a = tape.param_scalar(3.0);
    /// let b = tape.constant_scalar(4.0);
    /// let grads = (a * b).backward()?;
    /// assert_eq!(grads.wrt(a).unwrap().item()?, 4.0);
    /// assert!(grads.wrt(b).is_none());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    fn backward(
        &self,
        x: &[&Tensor<F>],
        out: &Tensor<F>,
        g: &Tensor<F>,
        need: &[bool],
    ) -> Result<InputGrads<F>>;
}

/// Computes a gradient only when it is needed.
fn when<F: Float>(
    need: bool,
    grad: impl FnOnce() -> Result<Tensor<F>>,
) -> Result<Option<Tensor<F>>> {
    if need { grad().map(Some) } else { Ok(None) }
}

/// Declares a rule's struct: a unit struct, or one with the rule's parameters.
macro_rules! rule_struct {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub(crate) struct $name;
    };
    ($(#[$doc:meta])* $name:ident { $($field:ident : $ty:ty),* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub(crate) struct $name { $(pub(crate) $field: $ty),* }
    };
}

/// Defines a rule's struct, label, forward and backward in one block:
/// `rule!(Name { fields } "label", |x| forward, |x, out, g, need| backward)`.
macro_rules! rule {
    (
        $(#[$doc:meta])*
        $name:ident $({ $($field:ident : $ty:ty),* $(,)? })?,
        label: |$ls:ident| $label:expr,
        forward: |$fs:ident, $fx:ident| $forward:expr,
        backward: |$bs:ident, $bx:ident, $out:ident, $g:ident, $need:ident| $backward:expr $(,)?
    ) => {
        rule_struct!($(#[$doc])* $name $({ $($field: $ty),* })?);

        impl<F: Float> Rule<F> for $name {
            #[allow(unused_variables)]
            fn label(&self) -> String {
                let $ls = self;
                $label
            }
            #[allow(unused_variables)]
            fn forward(&self, $fx: &[&Tensor<F>]) -> Result<Tensor<F>> {
                let $fs = self;
                $forward
            }
            #[allow(unused_variables)]
            fn backward(
                &self,
                $bx: &[&Tensor<F>],
                $out: &Tensor<F>,
                $g: &Tensor<F>,
                $need: &[bool],
            ) -> Result<InputGrads<F>> {
                let $bs = self;
                $backward
            }
        }
    };
}

// ---------------------------------------------------------------------------------
// Arithmetic (broadcasting)
// ---------------------------------------------------------------------------------

rule!(
    /// a + b. ∂/∂a = 1, ∂/∂b = 1 (a bias added to every row is this rule, broadcast).
    Add,
    label: |s| "add".into(),
    forward: |s, x| x[0].add(x[1]),
    backward: |s, x, out, g, need| Ok(vec![when(need[0], || Ok(g.clone()))?, when(need[1], || Ok(g.clone()))?]),
);

rule!(
    /// a − b. ∂/∂a = 1, ∂/∂b = −1.
    Sub,
    label: |s| "sub".into(),
    forward: |s, x| x[0].sub(x[1]),
    backward: |s, x, out, g, need| Ok(vec![when(need[0], || Ok(g.clone()))?, when(need[1], || Ok(g.scale(-F::one())))?]),
);

rule!(
    /// a · b (element-wise). ∂/∂a = b, ∂/∂b = a.
    Mul,
    label: |s| "mul".into(),
    forward: |s, x| x[0].mul(x[1]),
    backward: |s, x, out, g, need| Ok(vec![when(need[0], || g.mul(x[1]))?, when(need[1], || g.mul(x[0]))?]),
);

rule!(
    /// a / b. ∂/∂a = 1/b, ∂/∂b = −a/b² = −out/b.
    Div,
    label: |s| "div".into(),
    forward: |s, x| x[0].div(x[1]),
    backward: |s, x, out, g, need| Ok(vec![
        when(need[0], || g.div(x[1]))?,
        when(need[1], || g.mul(out)?.div(x[1]).map(|t| t.scale(-F::one())))?,
    ]),
);

rule!(
    /// −x. d/dx = −1.
    Neg,
    label: |s| "neg".into(),
    forward: |s, x| Ok(x[0].scale(-F::one())),
    backward: |s, x, out, g, need| Ok(vec![Some(g.scale(-F::one()))]),
);

rule!(
    /// a · b (matrix product, batched). ∂/∂a = g · bᵀ, ∂/∂b = aᵀ · g.
    MatMul,
    label: |s| "matmul".into(),
    forward: |s, x| x[0].matmul(x[1]),
    backward: |s, x, out, g, need| Ok(vec![
        when(need[0], || g.matmul(&x[1].t()?))?,
        when(need[1], || x[0].t()?.matmul(g))?,
    ]),
);

rule!(
    /// A dense layer, y = x·Wᵀ (+ b), x [N, in], W [out, in], b [out]: matmul, transpose
    /// and bias add as one node, so that no gradient is ever transposed.
    /// ∂/∂x = g·W, ∂/∂W = gᵀ·x, ∂/∂b = Σ over rows of g. (The composed form is the test
    /// oracle.)
    Linear,
    label: |s| "linear".into(),
    forward: |s, x| linear_forward(x, false),
    backward: |s, x, out, g, need| linear_backward(x, g, need),
);

rule!(
    /// relu(x·Wᵀ (+ b)): a dense layer and the ReLU after it as one node, the ReLU
    /// applied in the pass that adds the bias. With z the layer's output, relu′(z) is 1
    /// where z > 0, which is where the output is > 0, so the backward pass masks g by
    /// the output and continues as [`Linear`]'s. The same values, bit for bit, as the
    /// two nodes `linear` and `relu` (the test oracle).
    LinearRelu,
    label: |s| "linear+relu".into(),
    forward: |s, x| linear_forward(x, true),
    backward: |s, x, out, g, need| {
        let active = out.as_slice().map_or_else(|| Cow::Owned(out.to_vec()), Cow::Borrowed);
        let g_values = g.as_slice().map_or_else(|| Cow::Owned(g.to_vec()), Cow::Borrowed);
        let fill = |masked: &mut [std::mem::MaybeUninit<F>]| {
            crate::parallel::for_each_block(masked, 1, |start, block| {
                let values = g_values[start..].iter().zip(&active[start..]);
                // A select, not a branch: the signs are random, and the loop vectorizes.
                for (m, (&g, &y)) in block.iter_mut().zip(values) {
                    m.write(if y > F::zero() { g } else { F::zero() });
                }
            });
        };
        // SAFETY: the blocks cover the whole slice, and each element is written.
        let masked = unsafe { crate::tensor::pool::take_filled(out.shape(), fill) };
        let grads = linear_backward(x, &masked, need);
        crate::tensor::pool::recycle(masked);
        grads
    },
);

/// `x·Wᵀ (+ b)` for [`Linear`] and [`LinearRelu`]: the bias row is added to the fresh
/// product in place and, with `relu`, max(·, 0) is taken in the same pass, exactly as
/// the `relu` rule takes it; large outputs are shared among the training team by rows.
fn linear_forward<F: Float>(x: &[&Tensor<F>], relu: bool) -> Result<Tensor<F>> {
    let mut y = x[0].matmul(&x[1].t()?)?;
    let columns = y.shape()[y.ndim() - 1];
    let bias = match x.get(2) {
        Some(b) if b.shape() == [columns] => Some(
            b.as_slice()
                .map_or_else(|| Cow::Owned(b.to_vec()), Cow::Borrowed),
        ),
        // Any other shape takes the broadcasting add (and its errors).
        Some(b) => {
            y = y.add(b)?;
            None
        }
        None => None,
    };
    if bias.is_none() && !relu {
        return Ok(y);
    }
    crate::parallel::for_each_block(y.as_mut_slice(), columns, |_, block| {
        for row in block.chunks_mut(columns.max(1)) {
            if let Some(bias) = &bias {
                row.iter_mut().zip(bias.iter()).for_each(|(v, &b)| *v += b);
            }
            if relu {
                row.iter_mut()
                    .for_each(|v| *v = if *v > F::zero() { *v } else { F::zero() });
            }
        }
    });
    Ok(y)
}

/// The input gradients of a dense layer from `g` = ∂L/∂y: g·W, gᵀ·x and the column
/// sums of g, each computed only when needed.
fn linear_backward<F: Float>(
    x: &[&Tensor<F>],
    g: &Tensor<F>,
    need: &[bool],
) -> Result<InputGrads<F>> {
    let mut grads = vec![
        when(need[0], || g.matmul(x[1]))?,
        when(need[1], || g.t()?.matmul(x[0]))?,
    ];
    if x.len() == 3 {
        grads.push(when(need[2], || g.sum(&[0], false))?);
    }
    Ok(grads)
}

// ---------------------------------------------------------------------------------
// Reductions
// ---------------------------------------------------------------------------------

rule!(
    /// Σ over axes (all when empty). ∂/∂x = 1, so g is spread back over the summed axes.
    Sum { axes: Vec<usize>, keepdim: bool },
    label: |s| format!("sum{:?}", s.axes),
    forward: |s, x| x[0].sum(&s.axes, s.keepdim),
    backward: |s, x, out, g, need| Ok(vec![Some(expand_reduced(g, x[0].shape(), &s.axes)?)]),
);

rule!(
    /// mean over axes. ∂/∂x = 1/n for the n elements each output averages.
    Mean { axes: Vec<usize>, keepdim: bool },
    label: |s| format!("mean{:?}", s.axes),
    forward: |s, x| x[0].mean(&s.axes, s.keepdim),
    backward: |s, x, out, g, need| {
        let n = F::from_f64(x[0].reduced_count("mean", &s.axes)? as f64);
        Ok(vec![Some(expand_reduced(&g.scale(F::one() / n), x[0].shape(), &s.axes)?)])
    },
);

rule!(
    /// max over axes. ∂/∂x = 1 at the maximum, 0 elsewhere; tied maxima share the
    /// gradient equally (as `torch.amax`).
    Max { axes: Vec<usize>, keepdim: bool },
    label: |s| format!("max{:?}", s.axes),
    forward: |s, x| x[0].max(&s.axes, s.keepdim),
    backward: |s, x, out, g, need| {
        let shape = x[0].shape();
        let peak = expand_reduced(out, shape, &s.axes)?;
        let is_max = x[0].zip_with(&peak, "max", |v, m| if v == m { F::one() } else { F::zero() })?;
        let ties = expand_reduced(&is_max.sum(&s.axes, s.keepdim)?, shape, &s.axes)?;
        Ok(vec![Some(expand_reduced(g, shape, &s.axes)?.mul(&is_max)?.div(&ties)?)])
    },
);

// ---------------------------------------------------------------------------------
// Element-wise functions
// ---------------------------------------------------------------------------------

rule!(
    /// eˣ. d/dx eˣ = eˣ = out.
    Exp,
    label: |s| "exp".into(),
    forward: |s, x| Ok(x[0].map(F::exp)),
    backward: |s, x, out, g, need| Ok(vec![Some(g.mul(out)?)]),
);

rule!(
    /// ln x. d/dx ln x = 1/x.
    Log,
    label: |s| "log".into(),
    forward: |s, x| Ok(x[0].map(F::ln)),
    backward: |s, x, out, g, need| Ok(vec![Some(g.div(x[0])?)]),
);

rule!(
    /// xᵖ for a constant p. d/dx xᵖ = p·xᵖ⁻¹.
    PowScalar { p: f64 },
    label: |s| format!("pow({})", s.p),
    forward: |s, x| { let p = F::from_f64(s.p); Ok(x[0].map(|v| v.powf(p))) },
    backward: |s, x, out, g, need| {
        let p = F::from_f64(s.p);
        Ok(vec![Some(g.mul(&x[0].map(|v| p * v.powf(p - F::one())))?)])
    },
);

rule!(
    /// √x. d/dx √x = 1/(2√x) = 1/(2·out).
    Sqrt,
    label: |s| "sqrt".into(),
    forward: |s, x| Ok(x[0].map(F::sqrt)),
    backward: |s, x, out, g, need| Ok(vec![Some(g.div(&out.scale(F::from_f64(2.0)))?)]),
);

rule!(
    /// |x|. d/dx |x| = sign(x), taken as 0 at x = 0 (as PyTorch).
    Abs,
    label: |s| "abs".into(),
    forward: |s, x| Ok(x[0].map(F::abs)),
    backward: |s, x, out, g, need| Ok(vec![Some(g.zip_with(x[0], "abs", |g, x| {
        if x > F::zero() { g } else if x < F::zero() { -g } else { F::zero() }
    })?)]),
);

rule!(
    /// max(a, b) element-wise. The gradient goes to the larger input; on a tie each
    /// input gets half (as `torch.maximum`).
    Maximum,
    label: |s| "maximum".into(),
    forward: |s, x| x[0].zip_with(x[1], "maximum", |a, b| if a >= b || a.is_nan() { a } else { b }),
    backward: |s, x, out, g, need| pick_larger(x, g, need, |a, b| a > b),
);

rule!(
    /// min(a, b) element-wise. The gradient goes to the smaller input; ties split it.
    Minimum,
    label: |s| "minimum".into(),
    forward: |s, x| x[0].zip_with(x[1], "minimum", |a, b| if a <= b || a.is_nan() { a } else { b }),
    backward: |s, x, out, g, need| pick_larger(x, g, need, |a, b| a < b),
);

rule!(
    /// clamp(x, min, max). d/dx = 1 where min ≤ x ≤ max, else 0 (as PyTorch).
    Clamp { min: f64, max: f64 },
    label: |s| format!("clamp({}, {})", s.min, s.max),
    forward: |s, x| { let (lo, hi) = (F::from_f64(s.min), F::from_f64(s.max)); Ok(x[0].map(|v| v.max(lo).min(hi))) },
    backward: |s, x, out, g, need| {
        let (lo, hi) = (F::from_f64(s.min), F::from_f64(s.max));
        Ok(vec![Some(g.zip_with(x[0], "clamp", |g, x| if x >= lo && x <= hi { g } else { F::zero() })?)])
    },
);

rule!(
    /// relu(x) = max(x, 0). d/dx = 1 for x > 0 and 0 for x ≤ 0: the derivative at
    /// exactly 0 is taken as 0, as PyTorch and the notebooks do.
    Relu,
    label: |s| "relu".into(),
    forward: |s, x| Ok(x[0].map(|v| if v > F::zero() { v } else { F::zero() })),
    backward: |s, x, out, g, need| Ok(vec![Some(g.zip_with(x[0], "relu", |g, x| if x > F::zero() { g } else { F::zero() })?)]),
);

rule!(
    /// leaky_relu(x) = x for x > 0, slope·x otherwise. d/dx = 1 for x > 0, slope for
    /// x ≤ 0 (at exactly 0 the slope, as PyTorch).
    LeakyRelu { slope: f64 },
    label: |s| format!("leaky_relu({})", s.slope),
    forward: |s, x| { let a = F::from_f64(s.slope); Ok(x[0].map(|v| if v > F::zero() { v } else { a * v })) },
    backward: |s, x, out, g, need| {
        let a = F::from_f64(s.slope);
        Ok(vec![Some(g.zip_with(x[0], "leaky_relu", |g, x| if x > F::zero() { g } else { a * g })?)])
    },
);

rule!(
    /// σ(x) = 1/(1 + e⁻ˣ). d/dx σ = σ(1 − σ) = out·(1 − out).
    Sigmoid,
    label: |s| "sigmoid".into(),
    forward: |s, x| Ok(x[0].sigmoid()),
    backward: |s, x, out, g, need| Ok(vec![Some(g.mul(&out.map(|s| s * (F::one() - s)))?)]),
);

rule!(
    /// tanh x. d/dx tanh = 1 − tanh² = 1 − out².
    Tanh,
    label: |s| "tanh".into(),
    forward: |s, x| Ok(x[0].map(F::tanh)),
    backward: |s, x, out, g, need| Ok(vec![Some(g.mul(&out.map(|t| F::one() - t * t))?)]),
);

// ---------------------------------------------------------------------------------
// Softmax family
// ---------------------------------------------------------------------------------

rule!(
    /// softmax along an axis. ∂L/∂x = out ⊙ (g − Σ(g ⊙ out)), the sum along the axis.
    Softmax { axis: usize },
    label: |s| format!("softmax[{}]", s.axis),
    forward: |s, x| x[0].softmax(s.axis),
    backward: |s, x, out, g, need| {
        let dot = g.mul(out)?.sum(&[s.axis], true)?;
        Ok(vec![Some(out.mul(&g.sub(&dot)?)?)])
    },
);

rule!(
    /// log_softmax along an axis. ∂L/∂x = g − softmax(x) ⊙ Σg = g − e^out ⊙ Σg.
    LogSoftmax { axis: usize },
    label: |s| format!("log_softmax[{}]", s.axis),
    forward: |s, x| x[0].log_softmax(s.axis),
    backward: |s, x, out, g, need| {
        let total = g.sum(&[s.axis], true)?;
        Ok(vec![Some(g.sub(&out.map(F::exp).mul(&total)?)?)])
    },
);

// ---------------------------------------------------------------------------------
// Indexing and shape (the derivative moves gradient elements back where they came from)
// ---------------------------------------------------------------------------------

rule!(
    /// out[i] = x[i, indices[i]] (one class per row, for cross-entropy).
    /// ∂L/∂x[i, indices[i]] = g[i], 0 elsewhere.
    Gather { indices: Vec<usize> },
    label: |s| "gather".into(),
    forward: |s, x| x[0].gather(&s.indices),
    backward: |s, x, out, g, need| Ok(vec![Some(g.scatter(&s.indices, x[0].shape()[1])?)]),
);

rule!(
    /// Rows of x at indices (a mini-batch). ∂L/∂x accumulates g's rows back into them.
    SelectRows { indices: Vec<usize> },
    label: |s| "select_rows".into(),
    forward: |s, x| x[0].select_rows(&s.indices),
    backward: |s, x, out, g, need| Ok(vec![Some(g.scatter_add_rows(&s.indices, x[0].shape()[0])?)]),
);

rule!(
    /// x[start .. start+len] along an axis. ∂L/∂x is g in that range, 0 elsewhere.
    Narrow { axis: usize, start: usize, len: usize },
    label: |s| format!("narrow[{}, {}..{}]", s.axis, s.start, s.start + s.len),
    forward: |s, x| x[0].narrow(s.axis, s.start, s.len),
    backward: |s, x, out, g, need| {
        let mut grad = ArrayD::<F>::zeros(IxDyn(x[0].shape()));
        grad.slice_axis_mut(Axis(s.axis), Slice::from(s.start..s.start + s.len)).assign(&g.view());
        Ok(vec![Some(Tensor::from_array(grad))])
    },
);

rule!(
    /// Inputs joined along an axis. ∂L/∂xᵢ is the slice of g that xᵢ filled.
    Concat { axis: usize },
    label: |s| format!("concat[{}]", s.axis),
    forward: |s, x| Tensor::concat(x, s.axis),
    backward: |s, x, out, g, need| {
        let mut start = 0;
        x.iter().zip(need).map(|(xi, &n)| {
            let len = xi.shape()[s.axis];
            start += len;
            when(n, || g.narrow(s.axis, start - len, len))
        }).collect()
    },
);

rule!(
    /// The same elements under a new shape. ∂L/∂x is g under x's shape.
    Reshape { shape: Vec<usize> },
    label: |s| format!("reshape{:?}", s.shape),
    forward: |s, x| x[0].reshape(&s.shape),
    backward: |s, x, out, g, need| Ok(vec![Some(g.reshape(x[0].shape())?)]),
);

rule!(
    /// Axes reordered. ∂L/∂x is g under the inverse permutation.
    Permute { axes: Vec<usize> },
    label: |s| format!("permute{:?}", s.axes),
    forward: |s, x| x[0].permute(&s.axes),
    backward: |s, x, out, g, need| {
        let mut inverse = vec![0; s.axes.len()];
        for (i, &a) in s.axes.iter().enumerate() { inverse[a] = i; }
        Ok(vec![Some(g.permute(&inverse)?)])
    },
);

rule!(
    /// The last two axes swapped. ∂L/∂x = gᵀ.
    Transpose,
    label: |s| "transpose".into(),
    forward: |s, x| x[0].t(),
    backward: |s, x, out, g, need| Ok(vec![Some(g.t()?)]),
);

// ---------------------------------------------------------------------------------
// Helpers shared by the rules above
// ---------------------------------------------------------------------------------

/// Spreads a reduction's gradient (or output) back over the reduced axes of `shape`,
/// whether the reduction kept its axes or not.
fn expand_reduced<F: Float>(g: &Tensor<F>, shape: &[usize], axes: &[usize]) -> Result<Tensor<F>> {
    let kept: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if axes.is_empty() || axes.contains(&i) {
                1
            } else {
                d
            }
        })
        .collect();
    g.reshape(&kept)?.broadcast_to(shape)
}

/// The gradient of an element-wise selection between two inputs: `wins(a, b)` sends g
/// to a, `wins(b, a)` to b, a tie splits it in half.
fn pick_larger<F: Float>(
    x: &[&Tensor<F>],
    g: &Tensor<F>,
    need: &[bool],
    wins: fn(F, F) -> bool,
) -> Result<InputGrads<F>> {
    let half = F::from_f64(0.5);
    let share = |first: bool| {
        let (a, b) = if first { (x[0], x[1]) } else { (x[1], x[0]) };
        let weight = a.zip_with(b, "select", |a, b| {
            if wins(a, b) {
                F::one()
            } else if a == b {
                half
            } else {
                F::zero()
            }
        })?;
        g.mul(&weight)
    };
    Ok(vec![
        when(need[0], || share(true))?,
        when(need[1], || share(false))?,
    ])
}

// ---------------------------------------------------------------------------------
// Fused loss terms (one node each, for PyTorch's exact gradients at the edges)
// ---------------------------------------------------------------------------------

/// PyTorch's floor on p(1 − p) in BCE's gradient: the f32 value of 1e-12, in every
/// dtype.
const BCE_EPSILON: f64 = 1e-12_f32 as f64;

rule!(
    /// Element-wise binary cross-entropy of probabilities p against targets y:
    /// −(y·max(ln p, −100) + (1 − y)·max(ln(1 − p), −100)), logs clamped as PyTorch's
    /// `BCELoss`. ∂/∂p = (p − y) / max(p(1 − p), ε) with ε = f32(1e-12) (PyTorch's
    /// formula, finite even at p = 0 or 1); ∂/∂y = max(ln(1 − p), −100) − max(ln p, −100).
    BinaryCrossEntropy,
    label: |s| "bce".into(),
    forward: |s, x| x[0].zip_with(x[1], "bce", |p, y| {
        let floor = F::from_f64(-100.0);
        -(y * p.ln().max(floor) + (F::one() - y) * (F::one() - p).ln().max(floor))
    }),
    backward: |s, x, out, g, need| {
        let eps = F::from_f64(BCE_EPSILON);
        let floor = F::from_f64(-100.0);
        Ok(vec![
            when(need[0], || g.mul(&x[0].zip_with(x[1], "bce", |p, y| (p - y) / (p * (F::one() - p)).max(eps))?))?,
            when(need[1], || g.mul(&x[0].map(|p| (F::one() - p).ln().max(floor) - p.ln().max(floor))))?,
        ])
    },
);

rule!(
    /// Softmax cross-entropy of logits x [N, C] against class indices, averaged over the
    /// rows (PyTorch's `CrossEntropyLoss`): (1/N) Σₙ (ln Σ_c e^{x_nc} − x_n,yₙ), the
    /// log-sum-exp shifted by the row's maximum. ∂/∂x = (softmax(x) − onehot(y)) / N,
    /// in one pass. (The composed form, −mean(gather(log_softmax(x))), is the test
    /// oracle.)
    SoftmaxCrossEntropy { classes: Vec<usize> },
    label: |s| "cross_entropy".into(),
    forward: |s, x| {
        let picked = x[0].log_softmax(1)?.gather(&s.classes)?;
        let rows = F::from_f64(s.classes.len() as f64);
        Ok(picked.sum(&[], false)?.scale(F::one() / rows).scale(-F::one()))
    },
    backward: |s, x, out, g, need| {
        let mut p = x[0].softmax(1)?;
        let columns = p.shape().get(1).copied().unwrap_or(1);
        let scale = g.item()? / F::from_f64(s.classes.len() as f64);
        let values = p.as_mut_slice();
        for (row, &class) in s.classes.iter().enumerate() {
            values[row * columns + class] -= F::one();
        }
        values.iter_mut().for_each(|v| *v *= scale);
        Ok(vec![Some(p)])
    },
);

rule!(
    /// Element-wise binary cross-entropy on logits x against targets y (PyTorch's
    /// `BCEWithLogitsLoss`): max(x, 0) − x·y + ln(1 + e^−|x|), stable for any x.
    /// ∂/∂x = σ(x) − y; ∂/∂y = −x.
    BinaryCrossEntropyWithLogits,
    label: |s| "bce_logits".into(),
    forward: |s, x| x[0].zip_with(x[1], "bce_logits", |x, y| {
        x.max(F::zero()) - x * y + (-x.abs()).exp().ln_1p()
    }),
    backward: |s, x, out, g, need| Ok(vec![
        when(need[0], || g.mul(&x[0].zip_with(x[1], "bce_logits", |x, y| crate::tensor::sigmoid(x) - y)?))?,
        when(need[1], || g.mul(&x[0].scale(-F::one())))?,
    ]),
);
