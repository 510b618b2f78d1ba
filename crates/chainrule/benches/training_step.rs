//! The hot operations of a training step: a linear layer forward and backward, a
//! linear layer and its ReLU fused and as two nodes, softmax cross-entropy, an SGD
//! step, and a whole W1 step and W3 step.

use chainrule::data::Target;
use chainrule::loss::Loss;
use chainrule::nn::{Param, Sequential};
use chainrule::optim::{Optimizer, OptimizerConfig};
use chainrule::train::loss_and_grads;
use chainrule::{Gradients, Tape, Tensor, Var};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("training_step");
    let x = Tensor::<f32>::rand_uniform(&[64, 784], 0.0, 1.0, 1).unwrap();
    let w = Tensor::<f32>::rand_uniform(&[128, 784], -0.05, 0.05, 2).unwrap();
    let b = Tensor::<f32>::zeros(&[128]);
    group.throughput(Throughput::Elements(64));
    group.bench_function("linear_forward_backward_64x784x128", |bench| {
        bench.iter(|| black_box(layer_pass(&x, &w, &b, |x, w, b| x.linear(w, Some(b)))))
    });
    // W2's second layer and its ReLU, as training records them (one fused node) and as
    // two nodes; one thread (outside `fit` there is no team).
    let h = Tensor::<f32>::rand_uniform(&[256, 1024], 0.0, 1.0, 4).unwrap();
    let w2 = Tensor::<f32>::rand_uniform(&[1024, 1024], -0.03, 0.03, 5).unwrap();
    let b2 = Tensor::<f32>::rand_uniform(&[1024], -0.03, 0.03, 6).unwrap();
    group.throughput(Throughput::Elements(256));
    group.bench_function(
        "linear_relu_fused_forward_backward_256x1024x1024",
        |bench| {
            bench.iter(|| {
                black_box(layer_pass(&h, &w2, &b2, |x, w, b| {
                    x.linear_relu(w, Some(b))
                }))
            })
        },
    );
    group.bench_function("linear_then_relu_forward_backward_256x1024x1024", |bench| {
        bench.iter(|| {
            black_box(layer_pass(&h, &w2, &b2, |x, w, b| {
                Ok(x.linear(w, Some(b))?.relu())
            }))
        })
    });
    group.throughput(Throughput::Elements(64));
    let logits = Tensor::<f32>::rand_uniform(&[64, 10], -3.0, 3.0, 3).unwrap();
    let classes = Target::Classes((0..64).map(|i| i % 10).collect());
    group.bench_function("softmax_cross_entropy_64x10", |bench| {
        bench.iter(|| {
            let tape = Tape::new();
            let l = Loss::CrossEntropy
                .compute(tape.param(logits.clone()), &classes)
                .unwrap();
            black_box(l.backward().unwrap())
        })
    });
    let config =
        OptimizerConfig::from_json(&serde_json::json!({"type": "sgd", "lr": 0.1, "momentum": 0.9}))
            .unwrap();
    let mut optimizer = Optimizer::new(config);
    let mut params = vec![Param::new("w", w.clone())];
    let grads = vec![Some(w.scale(0.01))];
    group.bench_function("sgd_momentum_step_100k", |bench| {
        bench.iter(|| optimizer.step(&mut params, &grads).unwrap())
    });

    let w1 = Sequential::<f32>::from_json(
        r#"{"layers": [{"type": "linear", "in": 784, "out": 128}, {"type": "relu"}, {"type": "linear", "in": 128, "out": 10}]}"#,
        0,
    )
    .unwrap();
    group.bench_function("w1_forward_backward_batch_64", |bench| {
        bench.iter(|| black_box(loss_and_grads(&w1, &x, &classes, Loss::CrossEntropy).unwrap()))
    });
    let w3 = Sequential::<f32>::from_json(
        r#"{"layers": [{"type": "linear", "in": 2, "out": 2}, {"type": "relu"}, {"type": "linear", "in": 2, "out": 1}]}"#,
        0,
    )
    .unwrap();
    let xor = Tensor::<f32>::from_vec(vec![1.0, 0.0], &[1, 2]).unwrap();
    let y = Target::Values(Tensor::<f32>::full(&[1, 1], 1.0));
    group.throughput(Throughput::Elements(1));
    group.bench_function("w3_forward_backward_one_sample", |bench| {
        bench.iter(|| black_box(loss_and_grads(&w3, &xor, &y, Loss::Mse).unwrap()))
    });
    group.finish();
}

/// One forward and backward pass of `layer` on a fresh tape, with `x` a constant and
/// `w` and `b` parameters; the gradients of the sum of its output.
fn layer_pass(
    x: &Tensor<f32>,
    w: &Tensor<f32>,
    b: &Tensor<f32>,
    layer: impl for<'t> Fn(Var<'t, f32>, Var<'t, f32>, Var<'t, f32>) -> chainrule::Result<Var<'t, f32>>,
) -> Gradients<f32> {
    let tape = Tape::new();
    let (x, w, b) = (
        tape.constant(x.clone()),
        tape.param(w.clone()),
        tape.param(b.clone()),
    );
    let y = layer(x, w, b).unwrap().sum(&[], false).unwrap();
    y.backward().unwrap()
}

criterion_group!(benches, steps);
criterion_main!(benches);
