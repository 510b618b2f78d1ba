//! Convolution, pooling and batch norm at the shapes of the PyTorch MNIST example's
//! network (x [64, 1, 28, 28] → conv 1→32 3×3 → relu → conv 32→64 3×3 → relu →
//! max_pool 2 → …), in f32, on a training team of 1 and of 2 threads (as `fit` runs
//! them). Throughput: convolutions in FLOP (multiply-adds × 2: the forward's, and the
//! backward's two products), the others in elements of their input. Each output is
//! handed back for reuse, as the training loop does with a step's tensors.

use chainrule::Tensor;
use chainrule::tensor::{Window2d, recycle, recycle_indices, with_training_team};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn rand(shape: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::rand_uniform(shape, -1.0, 1.0, seed).unwrap()
}

fn kernels(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv");
    let window = Window2d::square(3);
    // (name, input [N, C, H, W], output channels, input gradient needed)
    let layers = [
        ("conv1", [64, 1, 28, 28], 32, false),
        ("conv2", [64, 32, 26, 26], 64, true),
    ];
    for threads in [1, 2] {
        for &(name, shape, o, need_input) in &layers {
            let x = rand(&shape, 1);
            let w = rand(&[o, shape[1], 3, 3], 2);
            let b = rand(&[o], 3);
            let y = x.conv2d(&w, Some(&b), &window).unwrap();
            let g = rand(y.shape(), 4);
            let macs = y.len() * shape[1] * 9;
            group.throughput(Throughput::Elements(2 * macs as u64));
            group.bench_function(format!("{name}_forward_{threads}t"), |bench| {
                with_training_team(threads, || {
                    bench.iter(|| recycle(black_box(x.conv2d(&w, Some(&b), &window).unwrap())))
                })
            });
            let products = if need_input { 2 } else { 1 };
            group.throughput(Throughput::Elements(2 * products * macs as u64));
            group.bench_function(format!("{name}_backward_{threads}t"), |bench| {
                let need = [need_input, true, true];
                with_training_team(threads, || {
                    bench.iter(|| {
                        let grads = Tensor::conv2d_backward(&x, &w, &g, &window, need).unwrap();
                        grads
                            .into_iter()
                            .flatten()
                            .for_each(|t| recycle(black_box(t)));
                    })
                })
            });
        }
        let h = rand(&[64, 64, 24, 24], 5);
        let pool = Window2d {
            stride: [2, 2],
            ..Window2d::square(2)
        };
        let gp = rand(&[64, 64, 12, 12], 6);
        group.throughput(Throughput::Elements(h.len() as u64));
        group.bench_function(format!("max_pool_forward_{threads}t"), |bench| {
            with_training_team(threads, || {
                bench.iter(|| recycle(black_box(h.max_pool2d(&pool).unwrap())))
            })
        });
        // What training runs: the forward that keeps each maximum's index, and the
        // backward that sends the gradient through them.
        group.bench_function(format!("max_pool_forward_indices_{threads}t"), |bench| {
            with_training_team(threads, || {
                bench.iter(|| {
                    let (y, at) = h.max_pool2d_with_indices(&pool).unwrap();
                    recycle(black_box(y));
                    recycle_indices(black_box(at));
                })
            })
        });
        let (_, at) = h.max_pool2d_with_indices(&pool).unwrap();
        group.bench_function(format!("max_pool_backward_{threads}t"), |bench| {
            with_training_team(threads, || {
                bench.iter(|| {
                    recycle(black_box(
                        Tensor::max_pool2d_backward_indices(h.shape(), &at, &gp).unwrap(),
                    ))
                })
            })
        });
        // Dropout at the shape of the example's first (after the pooling, p = 0.25).
        group.bench_function(format!("dropout_{threads}t"), |bench| {
            with_training_team(threads, || {
                bench.iter(|| {
                    let (y, mask) = gp.dropout(0.25, 9);
                    recycle(black_box(y));
                    recycle(black_box(mask));
                })
            })
        });
        let (gamma, beta) = (rand(&[64], 7), rand(&[64], 8));
        group.bench_function(format!("batch_norm_forward_{threads}t"), |bench| {
            with_training_team(threads, || {
                bench.iter(|| {
                    let (y, _, _) = h.batch_norm(Some(&gamma), Some(&beta), 1e-5).unwrap();
                    recycle(black_box(y));
                })
            })
        });
        group.bench_function(format!("batch_norm_backward_{threads}t"), |bench| {
            with_training_team(threads, || {
                bench.iter(|| {
                    black_box(Tensor::batch_norm_backward(
                        &h,
                        Some(&gamma),
                        &h,
                        1e-5,
                        [true; 3],
                    ))
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
