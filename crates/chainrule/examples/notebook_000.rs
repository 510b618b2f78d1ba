//! Notebook 000: a 2-2-1 ReLU network, loss C = (pred − true)², one gradient-descent
//! step with learning rate 0.01, every derivative computed by chainrule's autodiff
//! instead of by hand.
//!
//! Run with `cargo run -p chainrule --example notebook_000`.
//!
//! Wiring (as in the notebook): node 1 = relu(x1·w1 + x2·w3 + b1),
//! node 2 = relu(x1·w2 + x2·w4 + b2), node 3 = relu(n1·w5 + n2·w6 + b3).

use chainrule::{Result, Tape};

/// Everything the notebook prints.
#[derive(Debug)]
pub struct Report {
    /// Node outputs after ReLU: node 1, node 2, node 3 (the prediction).
    pub nodes: [f64; 3],
    /// The loss (prediction − true)².
    pub loss: f64,
    /// ∂L/∂w5, ∂L/∂w6, ∂L/∂b3.
    pub output_grads: [f64; 3],
    /// Parameter names, in the notebook's print order.
    pub names: [&'static str; 9],
    /// The parameters before the step.
    pub old: [f64; 9],
    /// The parameters after one gradient-descent step.
    pub new: [f64; 9],
}

/// Runs the forward pass, backward pass and update.
pub fn run() -> Result<Report> {
    let names = ["w1", "w2", "w3", "w4", "w5", "w6", "b1", "b2", "b3"];
    let old = [1.0, 0.5, 1.0, -0.5, 1.0, 1.0, 0.5, 0.0, 0.5];
    let (input1, input2, true_value, lr) = (1.0, 0.0, 2.0, 0.01);

    let tape = Tape::<f64>::new();
    let p: Vec<_> = old.iter().map(|&v| tape.param_scalar(v)).collect();
    let [w1, w2, w3, w4, w5, w6, b1, b2, b3] = p[..] else {
        unreachable!("nine parameters")
    };
    let x1 = tape.constant_scalar(input1);
    let x2 = tape.constant_scalar(input2);

    let node1 = (x1 * w1 + x2 * w3 + b1).relu();
    let node2 = (x1 * w2 + x2 * w4 + b2).relu();
    let node3 = (node1 * w5 + node2 * w6 + b3).relu();
    let loss = (node3 - true_value).powf(2.0);

    let grads = loss.backward()?;
    let grad = |v| grads.wrt(v).map_or(Ok(0.0), |g| g.item());
    let mut new = old;
    for (slot, &param) in new.iter_mut().zip(&p) {
        *slot -= lr * grad(param)?;
    }
    Ok(Report {
        nodes: [node1.item()?, node2.item()?, node3.item()?],
        loss: loss.item()?,
        output_grads: [grad(w5)?, grad(w6)?, grad(b3)?],
        names,
        old,
        new,
    })
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let r = run()?;
    println!("NODE 1 OUTPUT: {:?}", r.nodes[0]);
    println!("NODE 2 OUTPUT: {:?}", r.nodes[1]);
    println!("NODE 3 OUTPUT: {:?}", r.nodes[2]);
    println!("Predicted: {} --> True value should be: 2", r.nodes[2]);
    println!("loss: {:?}", r.loss);
    println!("deriv_L_w5: {:?}", r.output_grads[0]);
    println!("deriv_L_w6: {:?}", r.output_grads[1]);
    println!("deriv_L_b3: {:?}", r.output_grads[2]);
    println!("ORIGINAL WEIGHTS AND BIASES");
    for (name, value) in r.names.iter().zip(r.old) {
        println!("{name}: {value:?}");
    }
    println!("\n#################################");
    println!("NEW WEIGHTS AND BIASES");
    for (name, value) in r.names.iter().zip(r.new) {
        println!("{name}: {value:?}");
    }
    Ok(())
}
