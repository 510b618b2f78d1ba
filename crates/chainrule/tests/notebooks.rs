//! Every number the five teaching notebooks print, reproduced by the `notebook_*`
//! examples and asserted here to 1e-12 (f64). The expected values are copied from
//! the notebooks' printed output (../shared/notebooks/), not from chainrule.

#[path = "../examples/notebook_000.rs"]
#[allow(dead_code)]
mod notebook_000;
#[path = "../examples/notebook_001.rs"]
#[allow(dead_code)]
mod notebook_001;
#[path = "../examples/notebook_002.rs"]
#[allow(dead_code)]
mod notebook_002;
#[path = "../examples/notebook_003.rs"]
#[allow(dead_code)]
mod notebook_003;
#[path = "../examples/notebook_004.rs"]
#[allow(dead_code)]
mod notebook_004;

use chainrule::Tensor;

const TOLERANCE: f64 = 1e-12;

#[track_caller]
fn assert_close(label: &str, got: f64, expected: f64) {
    assert!(
        (got - expected).abs() <= TOLERANCE * expected.abs().max(1.0),
        "{label}: got {got:?}, the notebook prints {expected:?}"
    );
}

#[track_caller]
fn assert_all_close(label: &str, got: &[f64], expected: &[f64]) {
    assert_eq!(got.len(), expected.len(), "{label}: element count");
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        assert_close(&format!("{label}[{i}]"), g, e);
    }
}

fn values(t: &Tensor<f64>) -> Vec<f64> {
    t.to_vec()
}

#[test]
fn notebook_000_relu_network_step_matches_the_notebook() {
    let r = notebook_000::run().unwrap();
    assert_all_close("node outputs", &r.nodes, &[1.5, 0.5, 2.5]);
    assert_close("loss", r.loss, 0.25);
    assert_all_close("dL/dw5, dL/dw6, dL/db3", &r.output_grads, &[1.5, 0.5, 1.0]);
    assert_all_close(
        "new w1..w6, b1..b3",
        &r.new,
        &[0.99, 0.49, 1.0, -0.5, 0.985, 0.995, 0.49, -0.01, 0.49],
    );
}

#[test]
fn notebook_001_chain_rule_examples_match_the_notebook_and_keras() {
    let r = notebook_001::run().unwrap();
    assert_close("single weight", r.single_w, 1.8);
    assert_all_close("first step", &r.chain_step1, &[1.0, -1.0, -1.0, -1.0, 4.0]);
    assert_all_close(
        "second step",
        &r.chain_step2,
        &[0.6, -0.6, -0.6, -0.36, 1.8495999999999997],
    );
    assert_all_close(
        "sigmoid step w2, b2, w1, b1",
        &r.sigmoid_params,
        &[
            2.0040000160377818,
            2.0045413593412063,
            1.000953627199678,
            1.000953627199678,
        ],
    );
    assert_all_close(
        "sigmoid prediction and loss after the step",
        &r.sigmoid_after,
        &[0.9774686759735803, 1.045570308615223],
    );
    // Keras prints the starting prediction in float32: 0.9772815.
    assert!((r.sigmoid_before[0] - 0.9772815).abs() < 5e-8);
}

#[test]
fn notebook_002_neuron_and_layer_backward_match_the_notebook() {
    let r = notebook_002::run().unwrap();
    assert_all_close("x·w", &r.neuron.products, &[-3.0, 2.0, 6.0]);
    assert_close("z", r.neuron.z, 6.0);
    assert_close("relu(z)", r.neuron.y, 6.0);
    assert_close("relu'(z)", r.neuron.relu_dz, 1.0);
    assert_all_close(
        "dinputs, one sample",
        &values(&r.dinputs_single),
        &[0.44, -0.38, -0.07, 1.37],
    );
    let row = [0.44, -0.38, -0.07, 1.37];
    let batch: Vec<f64> = (1..=4)
        .flat_map(|k| row.map(|v| v * f64::from(k)))
        .collect();
    assert_eq!(r.dinputs_batch.shape(), &[4, 4]);
    assert_all_close("dinputs, batch", &values(&r.dinputs_batch), &batch);
    assert_eq!(r.dweights.shape(), &[4, 3]);
    let dweights: Vec<f64> = [-9.1, 16.1, 9.7, -5.1]
        .iter()
        .flat_map(|&v| [v; 3])
        .collect();
    assert_all_close("dweights", &values(&r.dweights), &dweights);
    assert_all_close("dbiases", &values(&r.dbiases), &[10.0, 10.0, 10.0]);
}

#[test]
fn notebook_003_symbolic_network_trains_like_the_notebook() {
    let r = notebook_003::run().unwrap();
    assert_close(
        "f5 at the starting weights",
        r.initial_output,
        0.649864477526152,
    );
    assert_close(
        "f5 after 999 one-weight-at-a-time iterations",
        r.sequential_output,
        0.999453185534398,
    );
    assert_close(
        "f5 after 999 simultaneous iterations",
        r.simultaneous_output,
        0.9994550920282003,
    );
}

#[test]
fn notebook_004_numpy_network_step_matches_the_notebook() {
    let r = notebook_004::run().unwrap();
    assert_close("prediction", r.prediction, 1.98);
    assert_close("ground truth", r.truth, 7.0);
    assert_close("loss", r.loss, 12.6002);
    assert_all_close(
        "layer 1",
        &values(&r.grads[0]),
        &[-8.534, -17.068, 0.0, 0.0],
    );
    assert_all_close(
        "layer 2",
        &values(&r.grads[1]),
        &[-2.51, -3.263, 0.0, -11.546, -15.0098, 0.0],
    );
    assert_all_close("layer 3", &values(&r.grads[2]), &[-5.02, -6.1746, -2.761]);
    assert_close(
        "updated prediction",
        r.updated_prediction,
        2.1435048475206897,
    );
    assert_close("updated loss", r.updated_loss, 11.792772583027517);
}
