//! A property test of the derivations of tensor networks: random stacks of a
//! convolution (random kernel, stride, padding and dilation), batch norm or not, an
//! activation of the table, a max or average pooling or none, dropout or not, then
//! flatten and a linear layer, batch or layer norm or not, under every loss that
//! takes raw outputs, on 1 to 3 samples, in training or evaluation mode. For every
//! parameter tensor, at its largest element and at a random one, the derivation's
//! sum must equal autodiff's gradient, and so must every line of the walk from that
//! term up to the loss: each operation's declared sum against autodiff's number at
//! that node.

mod common;

use chainrule::Tensor;
use chainrule::autodiff::Elementwise;
use chainrule::loss::{Loss, Target};
use chainrule::nn::{Mode, Module, Sequential};
use chainrule_explain::spatial::{explain_element, is_tensor_network, largest_elements};
use common::{Stream, random_elements};

/// The output size of a window along one axis, as PyTorch computes it (0 when the
/// window does not fit).
fn out_size(size: usize, kernel: usize, stride: usize, padding: usize, dilation: usize) -> usize {
    let span = dilation * (kernel - 1) + 1;
    (size + 2 * padding)
        .checked_sub(span)
        .map_or(0, |room| room / stride + 1)
}

/// A random network, as model JSON, and its output width.
fn network(rng: &mut Stream) -> (String, usize, Vec<usize>, bool) {
    let channels = 1 + rng.below(2);
    let (h, w) = (5 + rng.below(3), 5 + rng.below(3));
    let mut layers = Vec::new();
    // A convolution whose output is at least 2×2.
    let (out_channels, (oh, ow), conv) = loop {
        let (k, s, p, d) = (
            1 + rng.below(3),
            1 + rng.below(2),
            rng.below(2),
            1 + rng.below(2),
        );
        let (oh, ow) = (out_size(h, k, s, p, d), out_size(w, k, s, p, d));
        if oh >= 2 && ow >= 2 && p < k {
            let out = 1 + rng.below(3);
            let bias = !rng.chance(3);
            break (
                out,
                (oh, ow),
                format!(
                    r#"{{"type": "conv2d", "in_channels": {channels}, "out_channels": {out}, "kernel_size": {k}, "stride": {s}, "padding": {p}, "dilation": {d}, "bias": {bias}}}"#
                ),
            );
        }
    };
    layers.push(conv);
    if rng.chance(2) {
        layers.push(format!(
            r#"{{"type": "batch_norm2d", "num_features": {out_channels}, "affine": {}}}"#,
            !rng.chance(4)
        ));
    }
    let f = Elementwise::LAYERS[rng.below(Elementwise::LAYERS.len())];
    layers.push(format!(r#"{{"type": "{}"}}"#, f.name()));
    let (mut oh, mut ow) = (oh, ow);
    match rng.below(3) {
        0 => {
            layers.push(r#"{"type": "max_pool2d", "kernel_size": 2}"#.into());
            (oh, ow) = (oh / 2, ow / 2);
        }
        1 => {
            layers.push(r#"{"type": "avg_pool2d", "kernel_size": 2, "stride": 1}"#.into());
            (oh, ow) = (oh - 1, ow - 1);
        }
        _ => {}
    }
    if rng.chance(2) {
        layers.push(r#"{"type": "dropout", "p": 0.3}"#.into());
    }
    layers.push(r#"{"type": "flatten"}"#.into());
    let features = out_channels * oh * ow;
    let classes = 2 + rng.below(2);
    let hidden = 2 + rng.below(3);
    layers.push(format!(
        r#"{{"type": "linear", "in": {features}, "out": {hidden}}}"#
    ));
    match rng.below(3) {
        0 => layers.push(format!(
            r#"{{"type": "batch_norm1d", "num_features": {hidden}}}"#
        )),
        1 => layers.push(format!(
            r#"{{"type": "layer_norm", "normalized_shape": [{hidden}]}}"#
        )),
        _ => {}
    }
    layers.push(r#"{"type": "tanh"}"#.into());
    layers.push(format!(
        r#"{{"type": "linear", "in": {hidden}, "out": {classes}}}"#
    ));
    let eval = rng.chance(3);
    (
        format!(
            r#"{{"input": [{channels}, {h}, {w}], "layers": [{}]}}"#,
            layers.join(", ")
        ),
        classes,
        vec![channels, h, w],
        eval,
    )
}

#[test]
fn every_derivation_of_random_tensor_networks_equals_autodiff() {
    let mut rng = Stream(0x005e_ed0f_7e45_0123);
    let mut walked = 0;
    for case in 0..40 {
        let (json, classes, input, eval) = network(&mut rng);
        let mut model =
            Sequential::<f64>::from_json(&json, case).unwrap_or_else(|e| panic!("{json}: {e}"));
        // Training mode with one sample would leave batch norm one value per channel.
        let rows = if eval {
            1 + rng.below(3)
        } else {
            2 + rng.below(2)
        };
        model.set_mode(if eval { Mode::Eval } else { Mode::Train });
        model.set_noise_key(case);
        // Running statistics other than 0 and 1, so that evaluation mode reads them.
        for b in model.buffers_mut() {
            if b.name.ends_with("running_mean") || b.name.ends_with("running_var") {
                let values: Vec<f64> = (0..b.value.len())
                    .map(|_| 0.5 + rng.uniform().abs())
                    .collect();
                b.value = Tensor::from_vec(values, b.value.shape()).unwrap();
            }
        }
        let shape: Vec<usize> = std::iter::once(rows).chain(input).collect();
        let values = (0..shape.iter().product()).map(|_| rng.uniform()).collect();
        let x = Tensor::from_vec(values, &shape).unwrap();
        let (loss, y) = if rng.chance(2) {
            (
                Loss::CrossEntropy,
                Target::Classes((0..rows).map(|_| rng.below(classes)).collect()),
            )
        } else {
            let values = (0..rows * classes).map(|_| rng.uniform()).collect();
            (
                Loss::Mse,
                Target::Values(Tensor::from_vec(values, &[rows, classes]).unwrap()),
            )
        };
        assert!(is_tensor_network(&model), "{json}");
        let mut elements = largest_elements(&model, &x, &y, loss).unwrap();
        elements.extend(random_elements(&model, &mut rng));
        for element in &elements {
            let d = explain_element(&model, &x, &y, loss, 0.1, element)
                .unwrap_or_else(|e| panic!("case {case} {element}: {e}\n{json}"));
            assert!(
                d.verified(),
                "case {case} {element}: {} but autodiff {}\n{json}",
                d.gradient,
                d.autodiff
            );
            for line in &d.upstream {
                // Only the loss's own operations are left without a declared sum.
                assert!(
                    !(line.starts_with("layer ") && line.contains("(from the loss)")),
                    "case {case} {element}: a layer without its sum: {line}\n{json}"
                );
                if line.contains("; autodiff") {
                    assert!(line.ends_with('✓'), "case {case} {element}: {line}\n{json}");
                    walked += 1;
                }
            }
        }
    }
    assert!(
        walked > 100,
        "the walks went up through operations: {walked}"
    );
}
