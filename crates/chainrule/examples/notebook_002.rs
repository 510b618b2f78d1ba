//! Notebook 002: one neuron's forward and backward pass, then a dense layer's backward
//! pass for a batch in matrix form, with the upstream gradient (`dvalues`) fed in
//! through autodiff rather than multiplied by hand.
//!
//! Run with `cargo run -p chainrule --example notebook_002`.
//!
//! The layer follows PyTorch's layout, `weights` `[neurons, inputs]` and
//! `out = inputs · weightsᵀ + biases`, which is the notebook's `weights` array as
//! written. The notebook prints `dweights` as `inputsᵀ · dvalues` (`[inputs, neurons]`),
//! the transpose of the PyTorch-layout gradient; we print it the notebook's way.

use chainrule::{Result, Tape, Tensor};

/// Everything the notebook prints.
#[derive(Debug)]
pub struct Report {
    /// The single neuron: x·w products, z, ReLU output, ReLU derivative at z.
    pub neuron: NeuronReport,
    /// dinputs for one sample with dvalues = [[1, 1, 1]].
    pub dinputs_single: Tensor<f64>,
    /// dinputs for the batch dvalues = [[1,1,1],[2,2,2],[3,3,3],[4,4,4]].
    pub dinputs_batch: Tensor<f64>,
    /// dweights as the notebook prints them, `[inputs, neurons]`.
    pub dweights: Tensor<f64>,
    /// dbiases, `[1, neurons]`.
    pub dbiases: Tensor<f64>,
}

/// The single neuron's numbers.
#[derive(Debug)]
pub struct NeuronReport {
    /// x[i]·w[i] for i = 0, 1, 2.
    pub products: Vec<f64>,
    /// z = Σ x·w + b.
    pub z: f64,
    /// relu(z).
    pub y: f64,
    /// ∂relu/∂z at z.
    pub relu_dz: f64,
}

fn neuron() -> Result<NeuronReport> {
    let tape = Tape::<f64>::new();
    let x = tape.constant(Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3])?);
    let w = tape.param(Tensor::from_vec(vec![-3.0, -1.0, 2.0], &[3])?);
    let b = tape.param_scalar(1.0);
    let products = x.mul(w)?;
    let z = products.sum(&[], false)?.add(b)?;
    let y = z.relu();
    let grads = y.backward_retain_all()?;
    Ok(NeuronReport {
        products: products.value().to_vec(),
        z: z.item()?,
        y: y.item()?,
        relu_dz: grads.wrt(z).expect("z is on the path").item()?,
    })
}

/// The gradients of a dense layer when `dvalues` = ∂L/∂out arrives from above:
/// L = Σ(out ⊙ dvalues) has exactly that gradient, so backward from it gives
/// (dinputs, dweights in PyTorch layout, dbiases).
fn layer_backward(
    inputs: &Tensor<f64>,
    weights: &Tensor<f64>,
    biases: &Tensor<f64>,
    dvalues: &Tensor<f64>,
) -> Result<[Tensor<f64>; 3]> {
    let tape = Tape::<f64>::new();
    let x = tape.param(inputs.clone());
    let w = tape.param(weights.clone());
    let b = tape.param(biases.clone());
    let out = x.matmul(w.t()?)?.add(b)?;
    let surrogate = out.mul(tape.constant(dvalues.clone()))?.sum(&[], false)?;
    let mut grads = surrogate.backward()?;
    let mut take = |v| grads.take(v).expect("every parameter is on the path");
    Ok([take(x), take(w), take(b)])
}

/// Runs the neuron and the layer.
pub fn run() -> Result<Report> {
    let weights = Tensor::from_vec(
        vec![
            0.2, 0.8, -0.5, 1.0, //
            0.5, -0.91, 0.26, -0.5, //
            -0.26, -0.27, 0.17, 0.87,
        ],
        &[3, 4],
    )?;
    let biases = Tensor::from_vec(vec![2.0, 3.0, 0.5], &[1, 3])?;
    let inputs = Tensor::from_vec(
        vec![
            1.0, 2.0, 3.0, 2.5, //
            2.0, 5.0, -1.0, 2.0, //
            -1.5, 2.7, 3.3, -0.8, //
            -2.4, -1.0, -0.3, -2.3,
        ],
        &[4, 4],
    )?;
    let dvalues_batch =
        Tensor::from_vec((1..=4).flat_map(|r| [f64::from(r); 3]).collect(), &[4, 3])?;

    let one_sample = inputs.narrow(0, 0, 1)?;
    let [dinputs_single, _, _] =
        layer_backward(&one_sample, &weights, &biases, &Tensor::ones(&[1, 3]))?;
    let [dinputs_batch, dweights, dbiases] =
        layer_backward(&inputs, &weights, &biases, &dvalues_batch)?;

    Ok(Report {
        neuron: neuron()?,
        dinputs_single: dinputs_single.reshape(&[4])?,
        dinputs_batch,
        dweights: dweights.t()?,
        dbiases,
    })
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let r = run()?;
    let n = &r.neuron;
    println!("xw0, xw1, xw2: {:?}", n.products);
    println!("z: {:?}", n.z);
    println!("y: {:?}", n.y);
    println!("relu_dz: {:?}", n.relu_dz);
    println!("\ndinputs (one sample):\n{:.2}", r.dinputs_single);
    println!("\ndinputs (batch):\n{:.2}", r.dinputs_batch);
    println!("\ndweights:\n{:.1}", r.dweights);
    println!("\ndbiases:\n{}", r.dbiases);
    Ok(())
}
