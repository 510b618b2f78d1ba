//! Notebook 003: a 2-2-1 sigmoid network written as one formula, with a bias `w0`
//! shared by every weighted input, trained by gradient descent on binary
//! cross-entropy (learning rate 0.3, one sample x = (0.35, 0.9), y = 1).
//!
//! Run with `cargo run -p chainrule --example notebook_003`.
//!
//! z3 = (x1·w13 + w0) + (x2·w23 + w0), z4 likewise with w14, w24,
//! z5 = (f3·w35 + w0) + (f4·w45 + w0), f = σ(z), L = −y·ln f5 − (1 − y)·ln(1 − f5).
//!
//! The notebook's loop updates the seven weights one after another, each update
//! using the weights already updated in that iteration; its stop test is computed
//! once before the loop and never refreshed, so the loop runs until `i` reaches 1000:
//! exactly 999 iterations. We reproduce that schedule, and also run the standard
//! simultaneous update (every gradient taken at the same point) for comparison: there
//! the network is a custom [`Module`] trained by the library's own `fit` with SGD and
//! the `bce` loss, like any other model.

use chainrule::data::{Dataset, Target};
use chainrule::nn::{Module, Param};
use chainrule::train::{TrainConfig, fit};
use chainrule::{Result, Tape, Tensor, Var};

const X1: f64 = 0.35;
const X2: f64 = 0.9;
const Y: f64 = 1.0;
const LR: f64 = 0.3;
const ITERATIONS: usize = 999;

/// Parameter names in the notebook's update order.
pub const NAMES: [&str; 7] = ["w0", "w13", "w14", "w23", "w24", "w35", "w45"];

/// The notebook's starting weights, in [`NAMES`] order.
pub const START: [f64; 7] = [0.1, 0.2, 0.8, 0.6, 0.4, 0.1, 0.5];

/// Everything the notebook prints, plus the simultaneous-update comparison.
#[derive(Debug)]
pub struct Report {
    /// f5 at the starting weights.
    pub initial_output: f64,
    /// f5 after 999 iterations of the notebook's one-weight-at-a-time updates.
    pub sequential_output: f64,
    /// The weights after the sequential schedule.
    pub sequential_weights: [f64; 7],
    /// f5 after 999 iterations of the standard simultaneous update.
    pub simultaneous_output: f64,
}

/// The network's output f5 and loss L for weights `p` in [`NAMES`] order.
pub fn network<'t>(p: &[Var<'t, f64>]) -> (Var<'t, f64>, Var<'t, f64>) {
    let [w0, w13, w14, w23, w24, w35, w45] = p[..] else {
        unreachable!("seven weights")
    };
    let f3 = ((w13 * X1 + w0) + (w23 * X2 + w0)).sigmoid();
    let f4 = ((w14 * X1 + w0) + (w24 * X2 + w0)).sigmoid();
    let f5 = ((f3 * w35 + w0) + (f4 * w45 + w0)).sigmoid();
    let one_minus = -f5 + 1.0;
    let loss = -(f5.log() * Y) - one_minus.log() * (1.0 - Y);
    (f5, loss)
}

/// f5 at `weights`.
pub fn output(weights: &[f64; 7]) -> Result<f64> {
    let tape = Tape::<f64>::new();
    let vars: Vec<_> = weights.iter().map(|&w| tape.constant_scalar(w)).collect();
    network(&vars).0.item()
}

/// ∂L/∂w for all seven weights at `weights`.
pub fn gradient(weights: &[f64; 7]) -> Result<[f64; 7]> {
    let tape = Tape::<f64>::new();
    let vars: Vec<_> = weights.iter().map(|&w| tape.param_scalar(w)).collect();
    let grads = network(&vars).1.backward()?;
    let mut out = [0.0; 7];
    for (slot, var) in out.iter_mut().zip(vars) {
        *slot = grads.wrt(var).map_or(Ok(0.0), |g| g.item())?;
    }
    Ok(out)
}

/// Trains from [`START`] as the notebook does: each weight updated in turn, at the
/// weights already updated.
pub fn train_one_weight_at_a_time() -> Result<[f64; 7]> {
    let mut w = START;
    for _ in 0..ITERATIONS {
        for k in 0..w.len() {
            w[k] -= LR * gradient(&w)?[k];
        }
    }
    Ok(w)
}

/// The notebook's network as a [`Module`]: seven scalar parameters, the input a
/// `[1, 2]` row (x1, x2), the output f5 as `[1, 1]`.
pub struct SharedBiasNetwork {
    params: Vec<Param<f64>>,
}

impl SharedBiasNetwork {
    /// The network at the given weights, in [`NAMES`] order.
    pub fn new(weights: &[f64; 7]) -> Self {
        let params = NAMES
            .iter()
            .zip(weights)
            .map(|(n, &w)| Param::new(*n, Tensor::scalar(w)))
            .collect();
        SharedBiasNetwork { params }
    }
}

impl Module<f64> for SharedBiasNetwork {
    fn params(&self) -> &[Param<f64>] {
        &self.params
    }

    fn params_mut(&mut self) -> &mut [Param<f64>] {
        &mut self.params
    }

    fn forward<'t>(&self, p: &[Var<'t, f64>], x: Var<'t, f64>) -> Result<Var<'t, f64>> {
        let [w0, w13, w14, w23, w24, w35, w45] = p[..] else {
            unreachable!("seven weights")
        };
        let (x1, x2) = (x.narrow(1, 0, 1)?, x.narrow(1, 1, 1)?);
        let f3 = ((x1 * w13 + w0) + (x2 * w23 + w0)).sigmoid();
        let f4 = ((x1 * w14 + w0) + (x2 * w24 + w0)).sigmoid();
        Ok(((f3 * w35 + w0) + (f4 * w45 + w0)).sigmoid())
    }
}

/// Trains from [`START`] with the standard simultaneous update: the library's `fit`,
/// SGD at the notebook's learning rate, `bce`, one sample per step, 999 steps.
pub fn train_simultaneously() -> Result<[f64; 7]> {
    let mut model = SharedBiasNetwork::new(&START);
    let data = Dataset::new(
        Tensor::from_vec(vec![X1, X2], &[1, 2])?,
        Target::Values(Tensor::full(&[1, 1], Y)),
    )?;
    let config = TrainConfig::from_json(&format!(
        r#"{{"loss": "bce", "optimizer": {{"type": "sgd", "lr": {LR}}}, "batch_size": 1, "epochs": {ITERATIONS}}}"#
    ))?;
    fit(&mut model, &data, None, &config, |_| {})?;
    let mut w = [0.0; 7];
    for (slot, p) in w.iter_mut().zip(model.params()) {
        *slot = p.value.item()?;
    }
    Ok(w)
}

/// Runs both schedules.
pub fn run() -> Result<Report> {
    let sequential_weights = train_one_weight_at_a_time()?;
    Ok(Report {
        initial_output: output(&START)?,
        sequential_output: output(&sequential_weights)?,
        sequential_weights,
        simultaneous_output: output(&train_simultaneously()?)?,
    })
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let r = run()?;
    println!("Results of random parameters");
    println!("f5 = {:?}", r.initial_output);
    println!(
        "\nResults of trained parameters ({ITERATIONS} iterations, one weight at a time, as the notebook)"
    );
    for (name, value) in NAMES.iter().zip(r.sequential_weights) {
        println!("New {name}: {value:?}");
    }
    println!("f5 = {:?}", r.sequential_output);
    println!("\nStandard simultaneous update ({ITERATIONS} iterations)");
    println!("f5 = {:?}", r.simultaneous_output);
    Ok(())
}
