//! Notebook 004: a NumPy network class (1 → 2 → 2 → 1, ReLU, no output activation)
//! with forward, backward and a weight update, regressing y = x² + 3 at x = 2 with
//! L = ½(y − ŷ)² and learning rate 0.001.
//!
//! Run with `cargo run -p chainrule --example notebook_004`.
//!
//! As in the notebook, each weight matrix stores its layer's bias as the first
//! column, and each layer's input column vector gets a leading 1
//! (`np.vstack([[1], x])`), so one matrix product computes weights and bias.

use chainrule::{Result, Tape, Tensor, Var};

const LR: f64 = 0.001;

/// Everything the notebook prints.
#[derive(Debug)]
pub struct Report {
    /// ŷ before the update.
    pub prediction: f64,
    /// The ground truth y = x² + 3.
    pub truth: f64,
    /// ½(y − ŷ)² before the update.
    pub loss: f64,
    /// ∂L/∂W for the three weight matrices (bias in column 0).
    pub grads: [Tensor<f64>; 3],
    /// ŷ after the update.
    pub updated_prediction: f64,
    /// The loss after the update.
    pub updated_loss: f64,
}

/// The notebook's starting weight matrices.
fn initial_weights() -> Result<[Tensor<f64>; 3]> {
    Ok([
        Tensor::from_vec(vec![-0.1, 0.7, 0.3, -0.2], &[2, 2])?,
        Tensor::from_vec(vec![-0.2, 1.1, 0.2, -0.1, 0.5, -0.3], &[2, 3])?,
        Tensor::from_vec(vec![0.1, 0.5, 2.3], &[1, 3])?,
    ])
}

/// ŷ = W3·[1; relu(W2·[1; relu(W1·[1; x])])].
fn forward<'t>(w: &[Var<'t, f64>], x: Var<'t, f64>) -> Result<Var<'t, f64>> {
    let with_bias = |v: Var<'t, f64>| {
        let one = v.tape().constant(Tensor::ones(&[1, 1]));
        Var::concat(&[one, v], 0)
    };
    let a1 = w[0].matmul(with_bias(x)?)?.relu();
    let a2 = w[1].matmul(with_bias(a1)?)?.relu();
    w[2].matmul(with_bias(a2)?)
}

/// (ŷ, L, ∂L/∂W) at `weights`.
fn step(weights: &[Tensor<f64>; 3], x: f64, y: f64) -> Result<(f64, f64, [Tensor<f64>; 3])> {
    let tape = Tape::<f64>::new();
    let w: Vec<_> = weights.iter().map(|t| tape.param(t.clone())).collect();
    let x = tape.constant(Tensor::full(&[1, 1], x));
    let prediction = forward(&w, x)?;
    let loss = (tape.constant(Tensor::full(&[1, 1], y)) - prediction).powf(2.0) * 0.5;
    let mut grads = loss.backward()?;
    let mut take = |v| grads.take(v).expect("every weight is on the path");
    let g = [take(w[0]), take(w[1]), take(w[2])];
    Ok((prediction.item()?, loss.item()?, g))
}

/// Forward, backward, update, forward again.
pub fn run() -> Result<Report> {
    let x = 2.0;
    let truth = x * x + 3.0;
    let weights = initial_weights()?;
    let (prediction, loss, grads) = step(&weights, x, truth)?;
    let updated: Vec<Tensor<f64>> = weights
        .iter()
        .zip(&grads)
        .map(|(w, g)| w.sub(&g.scale(LR)))
        .collect::<Result<_>>()?;
    let updated: [Tensor<f64>; 3] = updated.try_into().expect("three matrices");
    let (updated_prediction, updated_loss, _) = step(&updated, x, truth)?;
    Ok(Report {
        prediction,
        truth,
        loss,
        grads,
        updated_prediction,
        updated_loss,
    })
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let r = run()?;
    println!("Prediction by network: {:?}", r.prediction);
    println!("Ground truth: {:?}", r.truth);
    println!("Loss: {:?}", r.loss);
    for (i, g) in r.grads.iter().enumerate() {
        println!("Gradients layer {}:\n{}\n", i + 1, g);
    }
    println!("Updated prediciton {:?}", r.updated_prediction);
    println!("Loss: {:?}", r.updated_loss);
    Ok(())
}
