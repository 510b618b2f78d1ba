//! Derivations, drawings, closed forms and gradient checks: the CLI's `explain`,
//! `graph`, `symbolic` and `gradcheck` (crates/chainrule-cli/src/explain.rs) as
//! functions that return their renderings and their data (JSON text) instead of
//! printing them.

use crate::convert::{array, batch, loss};
use crate::errors::{OrPy, invalid};
use crate::model::Model;
use crate::{guard, released};
use chainrule::data::Target;
use chainrule::loss::Loss;
use chainrule::nn::{Module, Sequential};
use chainrule::{Tape, Tensor};
use chainrule_explain::derive::{ParamElement, all_elements};
use chainrule_explain::formula::Formula;
use chainrule_explain::graph::{Detail, Graph};
use chainrule_explain::symbolic::Expr;
use chainrule_explain::symbolic::from_sequential;
use chainrule_explain::{check, spatial};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The most samples an explanation shows (each sample's chain is written out).
const MAX_EXPLAIN_SAMPLES: usize = 64;
/// The most samples `symbolic` writes out.
const MAX_SYMBOLIC_SAMPLES: usize = 16;

/// A model in f64, a batch and a loss: what every explanation works on.
type Problem = (Sequential<f64>, Tensor<f64>, Target<f64>, Loss);

/// Each layer's output, ∂C/∂(each layer's output), each layer's operations, the loss.
type Trace<'py> = (
    Vec<Bound<'py, PyAny>>,
    Vec<Bound<'py, PyAny>>,
    Vec<Vec<String>>,
    f64,
);

/// The model in f64 with (x, y) read for `loss`.
fn problem(
    model: &Model,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    loss_name: &str,
) -> PyResult<Problem> {
    let loss = loss(loss_name)?;
    let m = model.net.f64(x.py())?;
    let (x, y) = batch(&m, (x, "x"), (y, "y"), loss)?;
    Ok((m, x, y, loss))
}

/// One derivation's renderings: (text, markdown, json, verified).
type Rendered = (String, String, String, bool);

/// The [`Rendered`] of a derivation: the layer-stack, tensor-layer and formula
/// derivations have these four methods, though no common trait.
macro_rules! rendered {
    ($d:expr) => {{
        let d = $d;
        (d.text(), d.markdown(), d.json().to_string(), d.verified())
    }};
}

/// `chainrule explain`: the derivation of `param` (every element of a linear stack,
/// or each tensor's largest-gradient element of a network with tensor layers, when
/// `None`).
#[pyfunction]
#[pyo3(signature = (model, x, y, loss, param=None, lr=0.01))]
fn explain(
    py: Python<'_>,
    model: PyRef<'_, Model>,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    loss: &str,
    param: Option<&str>,
    lr: f64,
) -> PyResult<Vec<Rendered>> {
    guard(|| {
        let (m, x, y, loss) = problem(&model, x, y, loss)?;
        if x.shape()[0] > MAX_EXPLAIN_SAMPLES {
            return Err(invalid(
                "x",
                format!(
                    "{} samples; explain shows every sample's chain, so give at most {MAX_EXPLAIN_SAMPLES}",
                    x.shape()[0]
                ),
            ));
        }
        released(py, || {
            if spatial::is_tensor_network(&m) {
                let elements = match param {
                    Some(p) => vec![p.to_string()],
                    None => spatial::largest_elements(&m, &x, &y, loss).py()?,
                };
                return elements
                    .iter()
                    .map(|e| {
                        let d = spatial::explain_element(&m, &x, &y, loss, lr, e).py()?;
                        Ok(rendered!(d))
                    })
                    .collect();
            }
            let elements = match param {
                Some(p) => vec![ParamElement::parse(p).py()?],
                None => all_elements(&m),
            };
            elements
                .iter()
                .map(|e| {
                    let d = chainrule_explain::derive::explain(&m, &x, &y, loss, lr, e).py()?;
                    Ok(rendered!(d))
                })
                .collect()
        })
    })
}

/// A formula network's forward pass and derivations: (forward values as JSON text,
/// derivations). `param=None` derives every parameter.
#[pyfunction]
#[pyo3(signature = (text, param=None, lr=0.01))]
fn explain_formula(
    py: Python<'_>,
    text: &str,
    param: Option<&str>,
    lr: f64,
) -> PyResult<(String, Vec<Rendered>)> {
    guard(|| {
        released(py, || {
            let formula = Formula::parse(text).py_in("formula")?;
            let names: Vec<String> = match param {
                Some(p) => vec![p.to_string()],
                None => formula.params().into_iter().map(|(n, _)| n).collect(),
            };
            let derivations = names
                .iter()
                .map(|n| Ok(rendered!(formula.explain(n, lr).py()?)))
                .collect::<PyResult<Vec<_>>>()?;
            let forward = formula.forward().py()?;
            let values: serde_json::Map<String, Value> = forward
                .iter()
                .map(|(n, v)| (n.clone(), (*v).into()))
                .collect();
            let summary = json!({
                "forward": values,
                "params": formula.params().into_iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "inputs": formula.inputs().into_iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "output": formula.output_name(),
                "loss": formula.loss_name(),
            });
            Ok((summary.to_string(), derivations))
        })
    })
}

/// A formula network's parameters and their values, in order.
#[pyfunction]
fn formula_params(py: Python<'_>, text: &str) -> PyResult<Vec<(String, f64)>> {
    guard(|| released(py, || Ok(Formula::parse(text).py_in("formula")?.params())))
}

/// Autodiff's ∂L/∂θ of a formula network for every parameter, in order.
#[pyfunction]
fn formula_gradient(py: Python<'_>, text: &str) -> PyResult<Vec<(String, f64)>> {
    guard(|| {
        released(py, || {
            let formula = Formula::parse(text).py_in("formula")?;
            let tape = Tape::new();
            let vars = formula.record(&tape);
            let grads = vars[formula.loss_name()].backward().py()?;
            formula
                .params()
                .into_iter()
                .map(|(n, _)| {
                    let g = grads.wrt(vars[&n]).map_or(Ok(0.0), |g| g.item()).py()?;
                    Ok((n, g))
                })
                .collect()
        })
    })
}

/// `chainrule graph`: the computation graph of the loss, with values and gradients,
/// as (SVG, DOT), laid out as the command draws it.
#[pyfunction]
fn graph(
    py: Python<'_>,
    model: PyRef<'_, Model>,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    loss: &str,
) -> PyResult<(String, String)> {
    guard(|| {
        let (m, x, y, loss) = problem(&model, x, y, loss)?;
        released(py, || {
            let pass = Graph::of_model(&m, &x, &y, loss, Detail::Auto).py()?;
            Ok((pass.graph.to_svg(), pass.graph.to_dot()))
        })
    })
}

/// `chainrule graph` of a formula network, as (SVG, DOT).
#[pyfunction]
fn graph_formula(py: Python<'_>, text: &str) -> PyResult<(String, String)> {
    guard(|| {
        released(py, || {
            let formula = Formula::parse(text).py_in("formula")?;
            let g = Graph::of_formula(&formula, Detail::Auto).py()?;
            Ok((g.to_svg(), g.to_dot()))
        })
    })
}

/// The JSON of `symbolic` and `symbolic_formula`: the outputs' and the loss's closed
/// forms with their values, the parameters (symbol, element, value), the inputs
/// (symbol, value), and every ∂C/∂θ with its value beside autodiff's.
fn symbolic_json(
    outputs: &[Vec<Expr>],
    loss: &Expr,
    env: &BTreeMap<String, f64>,
    params: &[(String, String, f64)],
    inputs: &[(String, f64)],
    derivatives: &[(String, Expr)],
    autodiff: &[f64],
) -> Value {
    let derivatives: Vec<Value> = derivatives
        .iter()
        .zip(autodiff)
        .zip(params)
        .map(|(((symbol, d), g), (_, element, _))| {
            json!({"symbol": symbol, "param": element, "sympy": d.sympy(), "latex": d.latex(), "text": d.text(), "value": d.eval(env), "autodiff": g})
        })
        .collect();
    json!({
        "outputs": outputs.iter().map(|row| row.iter().map(Expr::sympy).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "loss": loss.sympy(),
        "loss_latex": loss.latex(),
        "loss_value": loss.eval(env),
        "params": params.iter().map(|(symbol, element, value)| json!({"symbol": symbol, "param": element, "value": value})).collect::<Vec<_>>(),
        "inputs": inputs.iter().map(|(symbol, value)| json!({"symbol": symbol, "value": value})).collect::<Vec<_>>(),
        "derivatives": derivatives,
    })
}

/// `chainrule symbolic --format json`: outputs, loss and every ∂C/∂θ as sympy text,
/// with values and autodiff's gradients.
#[pyfunction]
#[pyo3(signature = (model, x, y, loss, symbolic_inputs=false))]
fn symbolic(
    py: Python<'_>,
    model: PyRef<'_, Model>,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    loss: &str,
    symbolic_inputs: bool,
) -> PyResult<String> {
    guard(|| {
        let (m, x, y, loss) = problem(&model, x, y, loss)?;
        if x.shape()[0] > MAX_SYMBOLIC_SAMPLES {
            return Err(invalid(
                "x",
                format!(
                    "{} samples; symbolic writes out every sample's terms, so give at most {MAX_SYMBOLIC_SAMPLES}",
                    x.shape()[0]
                ),
            ));
        }
        released(py, || {
            let s = from_sequential(&m, &x, &y, loss, symbolic_inputs).py()?;
            let (_, grads) = chainrule::train::loss_and_grads(&m, &x, &y, loss).py()?;
            let autodiff: Vec<f64> = m
                .params()
                .iter()
                .zip(grads)
                .flat_map(|(p, g)| g.map_or_else(|| vec![0.0; p.value.len()], |t| t.to_vec()))
                .collect();
            let out = symbolic_json(
                &s.outputs,
                &s.loss,
                &s.env(),
                &s.params,
                &s.inputs,
                &s.derivatives(),
                &autodiff,
            );
            Ok(out.to_string())
        })
    })
}

/// `chainrule symbolic --format json` of a formula network (with its output's value).
#[pyfunction]
#[pyo3(signature = (text, symbolic_inputs=false))]
fn symbolic_formula(py: Python<'_>, text: &str, symbolic_inputs: bool) -> PyResult<String> {
    guard(|| {
        released(py, || {
            let formula = Formula::parse(text).py_in("formula")?;
            let expression = |name: &str| formula.expression(name, symbolic_inputs).py();
            let loss = expression(formula.loss_name())?;
            let output = formula.output_name().map(expression).transpose()?;
            let params = formula.params();
            let mut env: BTreeMap<String, f64> = params.iter().cloned().collect();
            let inputs = if symbolic_inputs {
                formula.inputs()
            } else {
                Vec::new()
            };
            env.extend(inputs.iter().cloned());
            let tape = Tape::new();
            let vars = formula.record(&tape);
            let grads = vars[formula.loss_name()].backward().py()?;
            let autodiff = params
                .iter()
                .map(|(n, _)| grads.wrt(vars[n]).map_or(Ok(0.0), |g| g.item()))
                .collect::<chainrule::Result<Vec<f64>>>()
                .py()?;
            let derivatives: Vec<(String, Expr)> = params
                .iter()
                .map(|(n, _)| (n.clone(), loss.diff(n)))
                .collect();
            // A formula's parameter is its own symbol.
            let params: Vec<(String, String, f64)> =
                params.into_iter().map(|(n, v)| (n.clone(), n, v)).collect();
            let output_value = output.as_ref().and_then(|e| e.eval(&env));
            let outputs: Vec<Vec<Expr>> = output.into_iter().map(|e| vec![e]).collect();
            let mut out = symbolic_json(
                &outputs,
                &loss,
                &env,
                &params,
                &inputs,
                &derivatives,
                &autodiff,
            );
            out["output_value"] = json!(output_value);
            Ok(out.to_string())
        })
    })
}

/// `chainrule gradcheck`: chainrule's backprop against central differences of its
/// own forward pass, per parameter tensor, in f64; when a tensor fails, the
/// operations whose local derivative disagrees, each with the layer it belongs to.
#[pyfunction]
#[pyo3(signature = (model, x, y, loss, tolerance=1e-6, step=1e-6))]
fn gradcheck<'py>(
    py: Python<'py>,
    model: PyRef<'_, Model>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    loss: &str,
    tolerance: f64,
    step: f64,
) -> PyResult<Bound<'py, PyDict>> {
    guard(|| {
        let (m, x, y, loss) = problem(&model, x, y, loss)?;
        let (report, ends) = released(py, || {
            let report = check::check_model(&m, &x, &y, loss, tolerance, step)?;
            // The check records bind, x, forward, loss on a fresh tape; recording the
            // same again gives the same node ids, and each layer's last node.
            let tape = Tape::new();
            let params = m.bind(&tape);
            let outputs = m.forward_trace(&params, tape.constant(x))?;
            let ends: Vec<usize> = outputs.iter().map(|v| v.id()).collect();
            Ok::<_, chainrule::Error>((report, ends))
        })
        .py()?;
        let out = PyDict::new(py);
        let tensors = PyList::empty(py);
        for t in &report.tensors {
            let d = PyDict::new(py);
            d.set_item("name", &t.name)?;
            d.set_item("elements", t.elements)?;
            d.set_item("worst_error", t.worst_error)?;
            d.set_item("worst_element", t.worst_element)?;
            d.set_item("backprop", t.backprop)?;
            d.set_item("numeric", t.numeric)?;
            tensors.append(d)?;
        }
        let culprits = PyList::empty(py);
        for c in &report.culprits {
            let d = PyDict::new(py);
            d.set_item("node", c.node)?;
            d.set_item("label", &c.label)?;
            d.set_item("error", c.error)?;
            // None: the loss's own operations.
            d.set_item("layer", ends.iter().position(|&end| c.node <= end))?;
            culprits.append(d)?;
        }
        out.set_item("tensors", tensors)?;
        out.set_item("culprits", culprits)?;
        out.set_item("passed", report.passed())?;
        out.set_item("table", report.table())?;
        Ok(out)
    })
}

/// One forward and backward pass in f64, for comparing layer by layer with another
/// framework: (each layer's output, ∂C/∂(each layer's output), the operations each
/// layer recorded, the loss).
#[pyfunction]
fn trace<'py>(
    py: Python<'py>,
    model: PyRef<'_, Model>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    loss: &str,
) -> PyResult<Trace<'py>> {
    guard(|| {
        let (m, x, y, loss) = problem(&model, x, y, loss)?;
        let (values, upstream, ops, loss) = released(py, || -> chainrule::Result<_> {
            let tape = Tape::new();
            let params = m.bind(&tape);
            let xv = tape.constant(x);
            let outputs = m.forward_trace(&params, xv)?;
            let last = outputs.last().copied().unwrap_or(xv);
            let c = loss.compute(last, &y)?;
            let grads = c.backward_retain_all()?;
            let mut values = Vec::new();
            let mut upstream = Vec::new();
            let mut ops = Vec::new();
            let mut start = xv.id() + 1;
            for v in &outputs {
                values.push(v.value());
                let g = grads.wrt(*v).cloned();
                upstream.push(g.unwrap_or_else(|| Tensor::zeros(&v.shape())));
                ops.push((start..=v.id()).filter_map(|id| tape.label(id)).collect());
                start = v.id() + 1;
            }
            Ok((values, upstream, ops, c.item()?))
        })
        .py()?;
        // The tape is gone, so each tensor holds its storage alone and moves to NumPy
        // without a copy.
        let arrays = |tensors: Vec<Tensor<f64>>| -> PyResult<Vec<_>> {
            tensors.into_iter().map(|t| array(py, t)).collect()
        };
        Ok((arrays(values)?, arrays(upstream)?, ops, loss))
    })
}

/// Adds this module's functions to the extension module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(explain, m)?)?;
    m.add_function(wrap_pyfunction!(explain_formula, m)?)?;
    m.add_function(wrap_pyfunction!(formula_gradient, m)?)?;
    m.add_function(wrap_pyfunction!(formula_params, m)?)?;
    m.add_function(wrap_pyfunction!(graph, m)?)?;
    m.add_function(wrap_pyfunction!(graph_formula, m)?)?;
    m.add_function(wrap_pyfunction!(symbolic, m)?)?;
    m.add_function(wrap_pyfunction!(symbolic_formula, m)?)?;
    m.add_function(wrap_pyfunction!(gradcheck, m)?)?;
    m.add_function(wrap_pyfunction!(trace, m)?)?;
    Ok(())
}
