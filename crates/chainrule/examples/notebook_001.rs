//! Notebook 001: the chain rule through weights, biases and sigmoids, one
//! gradient-descent step at a time (learning rate 0.1, loss C = (a − y)²), as the
//! notebook computes by hand and checks against Keras.
//!
//! Run with `cargo run -p chainrule --example notebook_001`.

use chainrule::{Result, Tape, Var};

const LR: f64 = 0.1;

/// Everything the notebook prints.
#[derive(Debug)]
pub struct Report {
    /// Super-simple example: w after one step (x = 1, w = 2, y = 1).
    pub single_w: f64,
    /// Example 2, first step: (new w_2, new w_1, a_1, a_2 = ŷ, MSE).
    pub chain_step1: [f64; 5],
    /// Example 2, second step from the first step's weights.
    pub chain_step2: [f64; 5],
    /// Sigmoid example: prediction and MSE before the step.
    pub sigmoid_before: [f64; 2],
    /// Sigmoid example: new w_2, b_2, w_1, b_1.
    pub sigmoid_params: [f64; 4],
    /// Sigmoid example: prediction and MSE after the step.
    pub sigmoid_after: [f64; 2],
}

/// One gradient-descent step on `params` for a network `forward(x, params) -> ŷ`,
/// with loss (ŷ − y)². Returns the updated parameters.
fn sgd_step(
    params: &[f64],
    x: f64,
    y: f64,
    forward: impl for<'t> Fn(Var<'t, f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
) -> Result<Vec<f64>> {
    let tape = Tape::<f64>::new();
    let vars: Vec<_> = params.iter().map(|&p| tape.param_scalar(p)).collect();
    let prediction = forward(tape.constant_scalar(x), &vars);
    let loss = (prediction - y).powf(2.0);
    let grads = loss.backward()?;
    params
        .iter()
        .zip(&vars)
        .map(|(&p, &v)| Ok(p - LR * grads.wrt(v).map_or(Ok(0.0), |g| g.item())?))
        .collect()
}

/// ŷ and (ŷ − y)² without recording gradients.
fn evaluate(
    params: &[f64],
    x: f64,
    y: f64,
    forward: impl for<'t> Fn(Var<'t, f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
) -> Result<[f64; 2]> {
    let tape = Tape::<f64>::new();
    let vars: Vec<_> = params.iter().map(|&p| tape.constant_scalar(p)).collect();
    let prediction = forward(tape.constant_scalar(x), &vars);
    Ok([prediction.item()?, (prediction - y).powf(2.0).item()?])
}

/// x ── w ──> ŷ
fn single<'t>(x: Var<'t, f64>, p: &[Var<'t, f64>]) -> Var<'t, f64> {
    x * p[0]
}

/// x ── w_1 ──> [n1] ── w_2 ──> ŷ, params `[w_1, w_2]`.
fn chain<'t>(x: Var<'t, f64>, p: &[Var<'t, f64>]) -> Var<'t, f64> {
    (x * p[0]) * p[1]
}

/// z1 = x·w1 + b1, a1 = σ(z1), z2 = a1·w2 + b2, a2 = σ(z2); params `[w1, b1, w2, b2]`.
fn sigmoid_net<'t>(x: Var<'t, f64>, p: &[Var<'t, f64>]) -> Var<'t, f64> {
    let a_1 = (x * p[0] + p[1]).sigmoid();
    (a_1 * p[2] + p[3]).sigmoid()
}

/// Runs the three examples.
pub fn run() -> Result<Report> {
    let single_w = sgd_step(&[2.0], 1.0, 1.0, single)?[0];

    let chain_report = |params: &[f64]| -> Result<[f64; 5]> {
        let new = sgd_step(params, 1.0, 1.0, chain)?;
        let a_1 = 1.0 * new[0]; // a_1 = x·w_1 with x = 1
        let [a_2, mse] = evaluate(&new, 1.0, 1.0, chain)?;
        Ok([new[1], new[0], a_1, a_2, mse])
    };
    let chain_step1 = chain_report(&[2.0, 3.0])?;
    let chain_step2 = chain_report(&[chain_step1[1], chain_step1[0]])?;

    let start = [1.0, 1.0, 2.0, 2.0];
    let sigmoid_before = evaluate(&start, 1.0, 2.0, sigmoid_net)?;
    let new = sgd_step(&start, 1.0, 2.0, sigmoid_net)?;
    let sigmoid_after = evaluate(&new, 1.0, 2.0, sigmoid_net)?;

    Ok(Report {
        single_w,
        chain_step1,
        chain_step2,
        sigmoid_before,
        sigmoid_params: [new[2], new[3], new[0], new[1]],
        sigmoid_after,
    })
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let r = run()?;
    println!("## Super-simple example");
    println!("{:?}", r.single_w);
    for (title, step) in [
        ("## Super-simple example 2", r.chain_step1),
        ("## May as well do another epoch", r.chain_step2),
    ] {
        println!("\n{title}");
        println!("New w_2: {:?}", step[0]);
        println!("New w_1: {:?}", step[1]);
        println!("Update network...");
        println!("{:?} {:?}", step[2], step[3]);
        println!("y_hat:  {:?} MSE:  {:?}", step[3], step[4]);
    }
    println!("\n## Lets mix it up a bit! (sigmoid, biases)");
    println!(
        "before: y_hat: {:?} MSE: {:?}",
        r.sigmoid_before[0], r.sigmoid_before[1]
    );
    let p = r.sigmoid_params;
    println!("New w_2: {:?}", p[0]);
    println!("New b_2: {:?}", p[1]);
    println!("New w_1: {:?}", p[2]);
    println!("New b_1: {:?}", p[3]);
    println!("Update network...");
    println!(
        "y_hat:  {:?} MSE:  {:?}",
        r.sigmoid_after[0], r.sigmoid_after[1]
    );
    Ok(())
}
