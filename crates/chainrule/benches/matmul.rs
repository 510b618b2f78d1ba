//! Matrix products of the speed workloads' shapes (W1: 784-128-10 at batch 64; W2:
//! 784-1024-1024-10 at batch 256), forward and the two backward products, in f32.
//! Throughput is counted in multiply-adds × 2 (FLOP).

use chainrule::Tensor;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn products(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul");
    for &(name, m, k, n) in &[
        ("w1_layer1_forward", 64, 784, 128),
        ("w1_layer2_forward", 64, 128, 10),
        ("w2_layer2_forward", 256, 1024, 1024),
        ("w2_layer1_forward", 256, 784, 1024),
        ("square_1024", 1024, 1024, 1024),
    ] {
        let a = Tensor::<f32>::rand_uniform(&[m, k], -1.0, 1.0, 1).unwrap();
        let b = Tensor::<f32>::rand_uniform(&[k, n], -1.0, 1.0, 2).unwrap();
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.bench_function(name, |bench| {
            bench.iter(|| black_box(a.matmul(&b).unwrap()))
        });
        // A layer's forward product, x·Wᵀ with W [n, k] as stored: Wᵀ's columns are
        // k values apart (padded first when that is a multiple of 2 KiB).
        let w = b.t().unwrap().reshape(&[n, k]).unwrap();
        group.bench_function(format!("{name}_layer"), |bench| {
            bench.iter(|| black_box(a.matmul(&w.t().unwrap()).unwrap()))
        });
        // The weight gradient's product, gᵀ·x, with a transposed (strided) operand.
        let g = Tensor::<f32>::rand_uniform(&[m, n], -1.0, 1.0, 3).unwrap();
        group.bench_function(format!("{name}_weight_grad"), |bench| {
            bench.iter(|| black_box(g.t().unwrap().matmul(&a).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, products);
criterion_main!(benches);
