//! The optimizer's update of one parameter element, written out with its numbers:
//! what `explain` shows for a trained run instead of plain gradient descent (Adam's
//! bias-corrected moments from the run's saved `exp_avg` and `exp_avg_sq`, SGD's
//! momentum buffer, …).
//!
//! Each formula is the one in the optimizer's file in `chainrule::optim` (PyTorch's
//! single-tensor update), evaluated here in f64 from the saved state; the result is
//! compared with what the library's own [`Optimizer::step`] gives for the same
//! element and state, so a written-out step that drifts from the real one shows ✗.

use crate::notation::{number, operand};
use chainrule::nn::Param;
use chainrule::optim::{Optimizer, OptimizerConfig};
use chainrule::{Result, Tensor};
use serde_json::json;
use std::collections::BTreeMap;

/// One line of a written-out step: what it computes, with symbols, then with the
/// numbers put in, and its value (and the state buffer it updates, if any).
#[derive(Debug, Clone, PartialEq)]
pub struct StepLine {
    /// The formula in symbols, e.g. `m ← β₁·m + (1 − β₁)·g`.
    pub formula: String,
    /// The same with the numbers put in.
    pub numbers: String,
    /// Its value.
    pub value: f64,
    /// The optimizer state it updates, under `torch.optim`'s name (`exp_avg`, …).
    pub state: Option<&'static str>,
}

/// The update of one parameter element by a run's optimizer, written out.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The optimizer, as `torch.optim` names it (`SGD`, `Adam`, `AdamW`, …).
    pub optimizer: &'static str,
    /// The parameter's symbol in the lines (`w`, `b`).
    pub symbol: String,
    /// The step this update would be, counted from 1 (the saved `step` plus one).
    pub t: u64,
    /// The hyper-parameters used, by name (lr, betas, eps, …).
    pub settings: Vec<(&'static str, f64)>,
    /// The lines, in the order the optimizer computes them; the last gives `new`.
    pub lines: Vec<StepLine>,
    /// The element before the step.
    pub old: f64,
    /// The element after it, from the written-out lines.
    pub new: f64,
    /// The element after the library's [`Optimizer::step`] with the same state and
    /// gradient.
    pub library: f64,
}

/// What a step needs of a parameter element: its value, its gradient and its saved
/// optimizer state.
#[derive(Debug, Clone, PartialEq)]
pub struct ElementState {
    /// The element's value.
    pub value: f64,
    /// ∂C/∂θ for the element (after any clipping).
    pub grad: f64,
    /// Steps the optimizer has taken (its saved `step`; 0 before the first).
    pub step: u64,
    /// The saved buffers' values at this element, by `torch.optim`'s name.
    pub buffers: BTreeMap<String, f64>,
}

impl ElementState {
    /// The element `index` of parameter `name` in an optimizer state dictionary (as
    /// [`Optimizer::state_dict`] writes it: `{name}.step`, `{name}.exp_avg`, …).
    ///
    /// ```
    /// use chainrule::Tensor;
    /// use chainrule_explain::step::ElementState;
    /// let mut state = std::collections::BTreeMap::new();
    /// state.insert("0.weight.step".to_string(), Tensor::scalar(3.0));
    /// state.insert("0.weight.exp_avg".to_string(), Tensor::from_vec(vec![0.5, 0.25], &[1, 2])?);
    /// let e = ElementState::from_state_dict(&state, "0.weight", &[0, 1], 2.0, 0.1)?;
    /// assert_eq!((e.step, e.buffers["exp_avg"]), (3, 0.25));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`chainrule::Error::InvalidValue`] when a buffer does not hold the index.
    pub fn from_state_dict(
        state: &BTreeMap<String, Tensor<f64>>,
        name: &str,
        index: &[usize],
        value: f64,
        grad: f64,
    ) -> Result<ElementState> {
        let prefix = format!("{name}.");
        let mut step = 0;
        let mut buffers = BTreeMap::new();
        for (key, tensor) in state {
            let Some(buffer) = key.strip_prefix(&prefix) else {
                continue;
            };
            if buffer.contains('.') {
                continue; // another parameter whose name starts with this one's
            }
            if buffer == "step" {
                step = tensor.item()? as u64;
            } else {
                let v = tensor
                    .get(index)
                    .ok_or_else(|| chainrule::Error::InvalidValue {
                        field: key.clone(),
                        message: format!("holds no element {index:?}"),
                    })?;
                buffers.insert(buffer.to_string(), v);
            }
        }
        Ok(ElementState {
            value,
            grad,
            step,
            buffers,
        })
    }
}

/// Builds the lines of a step: each pushes a line and returns its value.
struct Lines(Vec<StepLine>);

impl Lines {
    fn push(
        &mut self,
        formula: &str,
        numbers: String,
        value: f64,
        state: Option<&'static str>,
    ) -> f64 {
        self.0.push(StepLine {
            formula: formula.to_string(),
            numbers,
            value,
            state,
        });
        value
    }
}

/// `name`'s saved value at the element, or `start` (the value a fresh buffer starts
/// from).
fn saved(e: &ElementState, name: &str, start: f64) -> f64 {
    e.buffers.get(name).copied().unwrap_or(start)
}

impl Step {
    /// The update of the element `e` of parameter `symbol` by `config`, written
    /// out, and checked against the library's [`Optimizer::step`].
    ///
    /// ```
    /// use chainrule::optim::OptimizerConfig;
    /// use chainrule_explain::step::{ElementState, Step};
    /// // Adam's second step, by hand: g = 0.5, m = 0.1, v = 0.001 before it;
    /// // m ← 0.9·0.1 + 0.1·0.5 = 0.14, v ← 0.999·0.001 + 0.001·0.25 = 0.001249,
    /// // m̂ = 0.14/(1 − 0.9²) = 0.7368…, v̂ = 0.001249/(1 − 0.999²) = 0.6248…,
    /// // w ← 1 − 0.1·m̂/(√v̂ + 1e-8) = 0.9067…
    /// let adam = OptimizerConfig::from_json(&serde_json::json!({"type": "adam", "lr": 0.1}))?;
    /// let e = ElementState { value: 1.0, grad: 0.5, step: 1,
    ///     buffers: [("exp_avg".to_string(), 0.1), ("exp_avg_sq".to_string(), 0.001)].into() };
    /// let step = Step::new(&adam, "w", &e)?;
    /// let m_hat = 0.14 / (1.0 - 0.81);
    /// let v_hat = 0.001249 / (1.0 - 0.999f64.powi(2));
    /// assert!((step.new - (1.0 - 0.1 * m_hat / (v_hat.sqrt() + 1e-8))).abs() < 1e-12);
    /// assert!(step.verified());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    ///
    /// # Errors
    /// Those of [`Optimizer::load_state_dict`] and [`Optimizer::step`] (none for a
    /// well-formed state).
    pub fn new(config: &OptimizerConfig, symbol: &str, e: &ElementState) -> Result<Step> {
        let s = symbol;
        let t = e.step + 1;
        let mut lines = Lines(Vec::new());
        let (old, g0) = (e.value, e.grad);
        let n = number;
        let o = operand;
        // `g ← g + λ·θ`, PyTorch's L2 weight decay, shared by every optimizer but AdamW.
        let l2 = |lines: &mut Lines, wd: f64| {
            if wd == 0.0 {
                return g0;
            }
            lines.push(
                &format!("g ← g + λ·{s}"),
                format!("{} + {} · {}", n(g0), n(wd), o(old)),
                g0 + wd * old,
                None,
            )
        };
        let (optimizer, settings, new) = match *config {
            OptimizerConfig::Sgd {
                lr,
                momentum,
                dampening,
                nesterov,
                weight_decay,
            } => {
                let g = l2(&mut lines, weight_decay);
                let direction = if momentum == 0.0 {
                    g
                } else {
                    let b = if e.step == 0 {
                        lines.push("b ← g (the first step)", n(g), g, Some("momentum_buffer"))
                    } else {
                        let b = saved(e, "momentum_buffer", 0.0);
                        lines.push(
                            "b ← μ·b + (1 − τ)·g",
                            format!(
                                "{} · {} + {} · {}",
                                n(momentum),
                                o(b),
                                n(1.0 - dampening),
                                o(g)
                            ),
                            b * momentum + g * (1.0 - dampening),
                            Some("momentum_buffer"),
                        )
                    };
                    if nesterov {
                        lines.push(
                            "d = g + μ·b (Nesterov)",
                            format!("{} + {} · {}", n(g), n(momentum), o(b)),
                            g + b * momentum,
                            None,
                        )
                    } else {
                        b
                    }
                };
                let what = if momentum == 0.0 {
                    "g"
                } else if nesterov {
                    "d"
                } else {
                    "b"
                };
                let new = lines.push(
                    &format!("{s} ← {s} − η·{what}"),
                    format!("{} − {} · {}", n(old), n(lr), o(direction)),
                    old - lr * direction,
                    None,
                );
                let settings = vec![
                    ("lr", lr),
                    ("momentum", momentum),
                    ("dampening", dampening),
                    ("nesterov", f64::from(u8::from(nesterov))),
                    ("weight_decay", weight_decay),
                ];
                ("SGD", settings, new)
            }
            OptimizerConfig::Adam {
                lr,
                betas: (b1, b2),
                eps,
                weight_decay,
                amsgrad,
                decoupled,
            } => {
                let (p, g) = if decoupled {
                    let p = if weight_decay == 0.0 {
                        old
                    } else {
                        lines.push(
                            &format!("{s} ← {s}·(1 − η·λ)"),
                            format!("{} · (1 − {} · {})", o(old), n(lr), n(weight_decay)),
                            old * (1.0 - lr * weight_decay),
                            None,
                        )
                    };
                    (p, g0)
                } else {
                    (old, l2(&mut lines, weight_decay))
                };
                let m0 = saved(e, "exp_avg", 0.0);
                let v0 = saved(e, "exp_avg_sq", 0.0);
                let m = lines.push(
                    "m ← β₁·m + (1 − β₁)·g",
                    format!("{} · {} + {} · {}", n(b1), o(m0), n(1.0 - b1), o(g)),
                    b1 * m0 + (1.0 - b1) * g,
                    Some("exp_avg"),
                );
                let v = lines.push(
                    "v ← β₂·v + (1 − β₂)·g²",
                    format!("{} · {} + {} · {}²", n(b2), o(v0), n(1.0 - b2), o(g)),
                    b2 * v0 + (1.0 - b2) * g * g,
                    Some("exp_avg_sq"),
                );
                let v = if amsgrad {
                    let max = saved(e, "max_exp_avg_sq", 0.0);
                    lines.push(
                        "v_max ← max(v_max, v)",
                        format!("max({}, {})", n(max), n(v)),
                        max.max(v),
                        Some("max_exp_avg_sq"),
                    )
                } else {
                    v
                };
                let which = if amsgrad { "v_max" } else { "v" };
                let m_hat = lines.push(
                    "m̂ = m/(1 − β₁ᵗ)",
                    format!("{} / (1 − {}^{t})", o(m), n(b1)),
                    m / (1.0 - b1.powf(t as f64)),
                    None,
                );
                let v_hat = lines.push(
                    &format!("v̂ = {which}/(1 − β₂ᵗ)"),
                    format!("{} / (1 − {}^{t})", n(v), n(b2)),
                    v / (1.0 - b2.powf(t as f64)),
                    None,
                );
                let new = lines.push(
                    &format!("{s} ← {s} − η·m̂/(√v̂ + ε)"),
                    format!(
                        "{} − {} · {} / (√{} + {})",
                        n(p),
                        n(lr),
                        o(m_hat),
                        n(v_hat),
                        n(eps)
                    ),
                    p - lr * m_hat / (v_hat.sqrt() + eps),
                    None,
                );
                let settings = vec![
                    ("lr", lr),
                    ("beta1", b1),
                    ("beta2", b2),
                    ("eps", eps),
                    ("weight_decay", weight_decay),
                ];
                (if decoupled { "AdamW" } else { "Adam" }, settings, new)
            }
            OptimizerConfig::RmsProp {
                lr,
                alpha,
                eps,
                momentum,
                centered,
                weight_decay,
            } => {
                let g = l2(&mut lines, weight_decay);
                let s0 = saved(e, "square_avg", 0.0);
                let sq = lines.push(
                    "s ← α·s + (1 − α)·g²",
                    format!("{} · {} + {} · {}²", n(alpha), n(s0), n(1.0 - alpha), o(g)),
                    alpha * s0 + (1.0 - alpha) * g * g,
                    Some("square_avg"),
                );
                let denominator = if centered {
                    let a0 = saved(e, "grad_avg", 0.0);
                    let a = lines.push(
                        "a ← α·a + (1 − α)·g",
                        format!("{} · {} + {} · {}", n(alpha), o(a0), n(1.0 - alpha), o(g)),
                        alpha * a0 + (1.0 - alpha) * g,
                        Some("grad_avg"),
                    );
                    lines.push(
                        "d = √(s − a²) + ε",
                        format!("√({} − {}²) + {}", n(sq), o(a), n(eps)),
                        (sq - a * a).sqrt() + eps,
                        None,
                    )
                } else {
                    lines.push(
                        "d = √s + ε",
                        format!("√{} + {}", n(sq), n(eps)),
                        sq.sqrt() + eps,
                        None,
                    )
                };
                let new = if momentum > 0.0 {
                    let b0 = saved(e, "momentum_buffer", 0.0);
                    let b = lines.push(
                        "b ← μ·b + g/d",
                        format!(
                            "{} · {} + {} / {}",
                            n(momentum),
                            o(b0),
                            o(g),
                            n(denominator)
                        ),
                        momentum * b0 + g / denominator,
                        Some("momentum_buffer"),
                    );
                    lines.push(
                        &format!("{s} ← {s} − η·b"),
                        format!("{} − {} · {}", n(old), n(lr), o(b)),
                        old - lr * b,
                        None,
                    )
                } else {
                    lines.push(
                        &format!("{s} ← {s} − η·g/d"),
                        format!("{} − {} · {} / {}", n(old), n(lr), o(g), n(denominator)),
                        old - lr * g / denominator,
                        None,
                    )
                };
                let settings = vec![
                    ("lr", lr),
                    ("alpha", alpha),
                    ("eps", eps),
                    ("momentum", momentum),
                    ("weight_decay", weight_decay),
                ];
                ("RMSprop", settings, new)
            }
            OptimizerConfig::Adagrad {
                lr,
                lr_decay,
                eps,
                weight_decay,
                initial_accumulator_value,
            } => {
                let g = l2(&mut lines, weight_decay);
                let s0 = saved(e, "sum", initial_accumulator_value);
                let sum = lines.push(
                    "s ← s + g²",
                    format!("{} + {}²", n(s0), o(g)),
                    s0 + g * g,
                    Some("sum"),
                );
                let clr = lines.push(
                    "η_t = η/(1 + (t − 1)·δ)",
                    format!("{} / (1 + {} · {})", n(lr), t - 1, n(lr_decay)),
                    lr / (1.0 + (t - 1) as f64 * lr_decay),
                    None,
                );
                let new = lines.push(
                    &format!("{s} ← {s} − η_t·g/(√s + ε)"),
                    format!(
                        "{} − {} · {} / (√{} + {})",
                        n(old),
                        n(clr),
                        o(g),
                        n(sum),
                        n(eps)
                    ),
                    old - clr * g / (sum.sqrt() + eps),
                    None,
                );
                let settings = vec![
                    ("lr", lr),
                    ("lr_decay", lr_decay),
                    ("eps", eps),
                    ("weight_decay", weight_decay),
                ];
                ("Adagrad", settings, new)
            }
            OptimizerConfig::Adadelta {
                lr,
                rho,
                eps,
                weight_decay,
            } => {
                let g = l2(&mut lines, weight_decay);
                let s0 = saved(e, "square_avg", 0.0);
                let a0 = saved(e, "acc_delta", 0.0);
                let sq = lines.push(
                    "s ← ρ·s + (1 − ρ)·g²",
                    format!("{} · {} + {} · {}²", n(rho), n(s0), n(1.0 - rho), o(g)),
                    rho * s0 + (1.0 - rho) * g * g,
                    Some("square_avg"),
                );
                let delta = lines.push(
                    "Δ = √(a + ε)/√(s + ε)·g",
                    format!(
                        "√({} + {}) / √({} + {}) · {}",
                        n(a0),
                        n(eps),
                        n(sq),
                        n(eps),
                        o(g)
                    ),
                    (a0 + eps).sqrt() / (sq + eps).sqrt() * g,
                    None,
                );
                lines.push(
                    "a ← ρ·a + (1 − ρ)·Δ²",
                    format!("{} · {} + {} · {}²", n(rho), n(a0), n(1.0 - rho), o(delta)),
                    rho * a0 + (1.0 - rho) * delta * delta,
                    Some("acc_delta"),
                );
                let new = lines.push(
                    &format!("{s} ← {s} − η·Δ"),
                    format!("{} − {} · {}", n(old), n(lr), o(delta)),
                    old - lr * delta,
                    None,
                );
                let settings = vec![
                    ("lr", lr),
                    ("rho", rho),
                    ("eps", eps),
                    ("weight_decay", weight_decay),
                ];
                ("Adadelta", settings, new)
            }
        };
        Ok(Step {
            optimizer,
            symbol: symbol.to_string(),
            t,
            settings,
            lines: lines.0,
            old,
            new,
            library: library_step(config, e)?,
        })
    }

    /// Whether the written-out step lands where the library's step does (relative
    /// 1e-9: the lines round in another order than the library's loop, and Adam's
    /// division by √v̂ + ε can magnify that where v̂ is tiny).
    pub fn verified(&self) -> bool {
        (self.new - self.library).abs() <= 1e-9 * self.library.abs().max(1.0)
    }

    /// Text lines, indented by `indent`: a heading with the optimizer and its
    /// settings, then one line per quantity.
    ///
    /// ```
    /// use chainrule::optim::OptimizerConfig;
    /// use chainrule_explain::step::{ElementState, Step};
    /// let sgd = OptimizerConfig::from_json(&serde_json::json!({"type": "sgd", "lr": 0.1}))?;
    /// let e = ElementState { value: 2.0, grad: 2.0, step: 4, buffers: Default::default() };
    /// assert!(Step::new(&sgd, "w", &e)?.text("  ").contains("w ← w − η·g = 2 − 0.1 · 2 = 1.8"));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn text(&self, indent: &str) -> String {
        let settings: Vec<String> = self
            .settings
            .iter()
            .filter(|(k, v)| *k == "lr" || *v != 0.0)
            .map(|(k, v)| format!("{k} = {}", number(*v)))
            .collect();
        let mut out = format!(
            "{indent}update by the run's optimizer, {} (step {}; {}):\n",
            self.optimizer,
            self.t,
            settings.join(", ")
        );
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let state = line
                .state
                .map_or(String::new(), |s| format!("   (saved {s})"));
            let check = if i == last {
                format!(
                    "   (the library's step: {} {})",
                    number(self.library),
                    if self.verified() {
                        "✓"
                    } else {
                        "✗ MISMATCH"
                    }
                )
            } else {
                String::new()
            };
            out += &format!(
                "{indent}  {} = {} = {}{state}{check}\n",
                line.formula,
                line.numbers,
                number(line.value)
            );
        }
        out
    }

    /// JSON: the optimizer, its settings, each line and the library's result.
    ///
    /// ```
    /// use chainrule::optim::OptimizerConfig;
    /// use chainrule_explain::step::{ElementState, Step};
    /// let sgd = OptimizerConfig::from_json(&serde_json::json!({"type": "sgd", "lr": 0.1}))?;
    /// let e = ElementState { value: 2.0, grad: 2.0, step: 0, buffers: Default::default() };
    /// assert_eq!(Step::new(&sgd, "w", &e)?.json()["new"], 1.8);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn json(&self) -> serde_json::Value {
        let settings: serde_json::Map<String, serde_json::Value> = self
            .settings
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        json!({
            "optimizer": self.optimizer,
            "t": self.t,
            "settings": settings,
            "lines": self.lines.iter().map(|l| json!({
                "formula": l.formula,
                "numbers": l.numbers,
                "value": l.value,
                "state": l.state,
            })).collect::<Vec<_>>(),
            "old": self.old,
            "new": self.new,
            "library": self.library,
            "verified": self.verified(),
        })
    }
}

/// The element after one step of the library's optimizer from the saved state.
fn library_step(config: &OptimizerConfig, e: &ElementState) -> Result<f64> {
    let name = "p";
    let mut params = vec![Param::new(name, Tensor::<f64>::scalar(e.value))];
    let mut state: BTreeMap<String, Tensor<f64>> = e
        .buffers
        .iter()
        .map(|(k, v)| (format!("{name}.{k}"), Tensor::scalar(*v)))
        .collect();
    if e.step > 0 {
        state.insert(format!("{name}.step"), Tensor::scalar(e.step as f64));
    }
    let mut optimizer = Optimizer::<f64>::new(config.clone());
    if !state.is_empty() {
        optimizer.load_state_dict(&params, &state)?;
    }
    optimizer.step(&mut params, &[Some(Tensor::scalar(e.grad))])?;
    params[0].value.item()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> OptimizerConfig {
        OptimizerConfig::from_json(&json).unwrap()
    }

    /// Every optimizer and variant, from a fresh state and from a saved one: the
    /// written-out step agrees with the library's step (an independent
    /// implementation: the library's loop over slices).
    #[test]
    fn every_written_out_step_lands_where_the_library_steps() {
        let configs = [
            serde_json::json!({"type": "sgd", "lr": 0.1}),
            serde_json::json!({"type": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
            serde_json::json!({"type": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": true}),
            serde_json::json!({"type": "adam", "lr": 0.01, "weight_decay": 0.1}),
            serde_json::json!({"type": "adam", "lr": 0.01, "amsgrad": true}),
            serde_json::json!({"type": "adamw", "lr": 0.01}),
            serde_json::json!({"type": "rmsprop", "lr": 0.01, "momentum": 0.5, "centered": true, "weight_decay": 0.1}),
            serde_json::json!({"type": "rmsprop", "lr": 0.01}),
            serde_json::json!({"type": "adagrad", "lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.2}),
            serde_json::json!({"type": "adadelta", "lr": 1.0, "weight_decay": 0.01}),
        ];
        let buffers: BTreeMap<String, f64> = [
            ("momentum_buffer", -0.3),
            ("exp_avg", 0.2),
            ("exp_avg_sq", 0.05),
            ("max_exp_avg_sq", 0.07),
            ("square_avg", 0.04),
            ("grad_avg", 0.1),
            ("sum", 0.9),
            ("acc_delta", 0.02),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for json in configs {
            let c = config(json.clone());
            for (step, buffers) in [(0, BTreeMap::new()), (7, buffers.clone())] {
                let e = ElementState {
                    value: 0.75,
                    grad: -0.4,
                    step,
                    buffers: buffers.clone(),
                };
                let s = Step::new(&c, "w", &e).unwrap();
                assert!(
                    s.verified(),
                    "{json} at step {step}: {} vs the library's {}",
                    s.new,
                    s.library
                );
                assert_ne!(s.new, s.old, "{json}: the step moves the weight");
            }
        }
    }

    #[test]
    fn sgd_without_momentum_is_plain_gradient_descent() {
        // w ← 2 − 0.1 · 2 = 1.8, by hand.
        let e = ElementState {
            value: 2.0,
            grad: 2.0,
            step: 3,
            buffers: BTreeMap::new(),
        };
        let s = Step::new(
            &config(serde_json::json!({"type": "sgd", "lr": 0.1})),
            "w",
            &e,
        )
        .unwrap();
        assert_eq!(s.lines.len(), 1);
        assert_eq!(s.new, 1.8);
    }
}
