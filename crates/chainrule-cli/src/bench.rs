//! `chainrule bench`: the three workloads of the speed issue, timed over several runs.
//!
//! - W1: MLP 784-128-10 ReLU, softmax cross-entropy, SGD lr 0.1, batch 64, one MNIST
//!   epoch in file order (the last batch partial).
//! - W2: MLP 784-1024-1024-10, the same with batch 256.
//! - W3: the 2-2-1 network (ReLU hidden layer, linear output, MSE), one sample per SGD
//!   step (lr 0.05), cycling through the four XOR samples, 100,000 steps.
//! - W4: the CNN of PyTorch's MNIST example ([`CNN`]: two 3×3 convolutions, max
//!   pooling, dropout, two linear layers), Adadelta lr 1.0, batch 64, in training
//!   mode: [`W4_BATCHES`] batches of MNIST timed and scaled to a 60,000-sample epoch
//!   (tools/bench_pytorch.py times PyTorch alike). GFLOP/s counts 6 multiply-adds
//!   per weight use (forward 2, backward 4), about 4.3 TFLOP per epoch.
//!
//! Only the training loop is timed; data is in memory before the clock starts. Heap
//! allocations inside the loop are counted too (the CLI's allocator counts them).
//! GFLOP/s counts 6 · weights · samples per epoch (forward 2, backward 4).

use anyhow::{Result, bail};
use chainrule::Tensor;
use chainrule::data::{Dataset, Target};
use chainrule::nn::{Module, Sequential};
use chainrule::train::{TrainConfig, evaluate, fit};
use std::alloc::{GlobalAlloc, Layout};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// An allocator that counts heap allocations (one relaxed atomic add each), so that
/// the benchmark can say how many a training step makes.
pub struct Counting<A> {
    inner: A,
}

/// Allocations made through [`Counting`] since the program started.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

impl<A> Counting<A> {
    /// Wraps `inner`.
    pub const fn new(inner: A) -> Self {
        Counting { inner }
    }
}

// SAFETY: every call is forwarded unchanged to the wrapped allocator (a
// GlobalAlloc must be an unsafe impl; counting allocations is what `chainrule bench`
// measures them with). Tested by the_counting_allocator_counts_and_forwards_every_call.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// One workload's timings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Timing {
    pub workload: String,
    /// Seconds per run (an epoch for W1/W2, all steps for W3).
    pub seconds: Vec<f64>,
    /// What one run processes: samples (W1/W2) or steps (W3).
    pub units: f64,
    /// Floating-point operations per run (6 · weights · samples), W1/W2.
    pub flops: Option<f64>,
    /// Test accuracy after the last run's epoch, W1/W2.
    pub accuracy: Option<f64>,
    /// Heap allocations per training step (the last run, everything inside `fit`).
    pub allocations_per_step: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn mlp(sizes: &[usize]) -> Result<Sequential<f32>> {
    let layers: Vec<serde_json::Value> = sizes
        .windows(2)
        .enumerate()
        .flat_map(|(i, w)| {
            let linear = serde_json::json!({"type": "linear", "in": w[0], "out": w[1]});
            if i + 2 < sizes.len() {
                vec![linear, serde_json::json!({"type": "relu"})]
            } else {
                vec![linear]
            }
        })
        .collect();
    Ok(Sequential::from_json(
        &serde_json::json!({ "layers": layers }).to_string(),
        0,
    )?)
}

fn mnist_epoch(
    name: &str,
    sizes: &[usize],
    batch: usize,
    train: &Dataset<f32>,
    test: &Dataset<f32>,
    runs: usize,
) -> Result<Timing> {
    let config = TrainConfig::from_json(&format!(
        r#"{{"loss": "cross_entropy", "optimizer": {{"type": "sgd", "lr": 0.1}}, "batch_size": {batch}, "epochs": 1}}"#
    ))?;
    let mut seconds = Vec::with_capacity(runs);
    let mut accuracy = None;
    let mut weights = 0;
    let mut allocated = 0;
    for _ in 0..runs {
        let mut model = mlp(sizes)?;
        weights = model.params().iter().map(|p| p.value.len()).sum::<usize>();
        let (started, before) = (Instant::now(), allocations());
        fit(&mut model, train, None, &config, |_| {})?;
        seconds.push(started.elapsed().as_secs_f64());
        allocated = allocations() - before;
        accuracy = evaluate(&mut model, test, config.loss)?.accuracy;
    }
    let samples = train.len() as f64;
    Ok(Timing {
        workload: name.into(),
        seconds,
        units: samples,
        flops: Some(6.0 * weights as f64 * samples),
        accuracy,
        allocations_per_step: allocated as f64 / train.len().div_ceil(batch) as f64,
    })
}

/// The network of PyTorch's MNIST example (examples/configs/mnist_cnn.toml).
pub const CNN: &str = r#"{"input": [1, 28, 28], "layers": [
    {"type": "conv2d", "in_channels": 1, "out_channels": 32, "kernel_size": 3}, {"type": "relu"},
    {"type": "conv2d", "in_channels": 32, "out_channels": 64, "kernel_size": 3}, {"type": "relu"},
    {"type": "max_pool2d", "kernel_size": 2}, {"type": "dropout", "p": 0.25}, {"type": "flatten"},
    {"type": "linear", "in": 9216, "out": 128}, {"type": "relu"}, {"type": "dropout", "p": 0.5},
    {"type": "linear", "in": 128, "out": 10}]}"#;

/// The batches W4 times (of 64 samples: 6,400 of MNIST's 60,000).
pub const W4_BATCHES: usize = 100;

/// Multiply-adds of [`CNN`]'s forward pass for one sample: each layer's weights
/// times the positions they are applied at.
const CNN_MACS: f64 = (32.0 * 9.0 * 676.0) + (64.0 * 288.0 * 576.0) + 9216.0 * 128.0 + 1280.0;

fn cnn_epoch(train: &Dataset<f32>, runs: usize) -> Result<Timing> {
    const BATCH: usize = 64;
    let rows: Vec<usize> = (0..(W4_BATCHES * BATCH).min(train.len())).collect();
    let part = train.rows(&rows)?;
    // Normalised as the example normalises (its Normalize((0.1307,), (0.3081,))), as
    // images.
    let mut x = part.x.reshape(&[rows.len(), 1, 28, 28])?;
    x.as_mut_slice()
        .iter_mut()
        .for_each(|v| *v = (*v - 0.1307) / 0.3081);
    let data = Dataset::new(x, part.target)?;
    let config = TrainConfig::from_json(&format!(
        r#"{{"loss": "cross_entropy", "optimizer": {{"type": "adadelta", "lr": 1.0}}, "batch_size": {BATCH}, "epochs": 1}}"#
    ))?;
    let scale = 60_000.0 / rows.len() as f64;
    let mut seconds = Vec::with_capacity(runs);
    let mut allocated = 0;
    for _ in 0..runs {
        let mut model = Sequential::<f32>::from_json(CNN, 1)?;
        let (started, before) = (Instant::now(), allocations());
        fit(&mut model, &data, None, &config, |_| {})?;
        seconds.push(started.elapsed().as_secs_f64() * scale);
        allocated = allocations() - before;
    }
    Ok(Timing {
        workload: "W4".into(),
        seconds,
        units: 60_000.0,
        flops: Some(6.0 * CNN_MACS * 60_000.0),
        accuracy: None,
        allocations_per_step: allocated as f64 / W4_BATCHES as f64,
    })
}

fn xor_steps(runs: usize) -> Result<Timing> {
    const STEPS: usize = 100_000;
    let x = Tensor::from_vec(vec![0.0f32, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], &[4, 2])?;
    let y = Tensor::from_vec(vec![0.0f32, 1.0, 1.0, 0.0], &[4, 1])?;
    let data = Dataset::new(x, Target::Values(y))?;
    let config = TrainConfig::from_json(&format!(
        r#"{{"loss": "mse", "optimizer": {{"type": "sgd", "lr": 0.05}}, "batch_size": 1, "epochs": {}}}"#,
        STEPS / 4
    ))?;
    let mut seconds = Vec::with_capacity(runs);
    let mut allocated = 0;
    for _ in 0..runs {
        let mut model = Sequential::<f32>::from_json(
            r#"{"layers": [{"type": "linear", "in": 2, "out": 2}, {"type": "relu"}, {"type": "linear", "in": 2, "out": 1}]}"#,
            0,
        )?;
        let (started, before) = (Instant::now(), allocations());
        fit(&mut model, &data, None, &config, |_| {})?;
        seconds.push(started.elapsed().as_secs_f64());
        allocated = allocations() - before;
    }
    Ok(Timing {
        workload: "W3".into(),
        seconds,
        units: STEPS as f64,
        flops: None,
        accuracy: None,
        allocations_per_step: allocated as f64 / STEPS as f64,
    })
}

pub fn run(
    data: Option<&Path>,
    workloads: &[String],
    runs: usize,
    threads: usize,
    json: bool,
) -> Result<()> {
    if runs == 0 {
        bail!("--runs: must be at least 1");
    }
    chainrule::tensor::set_num_threads(threads);
    let needs_mnist = workloads
        .iter()
        .any(|w| w == "w1" || w == "w2" || w == "w4");
    let mnist = match (needs_mnist, data) {
        (false, _) => None,
        (true, Some(dir)) => {
            // Pixels to [0, 1] in place: a scaled copy would double the peak memory.
            let scale = |d: Dataset<f32>| -> Result<Dataset<f32>> {
                let mut x = d.x;
                x.as_mut_slice().iter_mut().for_each(|v| *v /= 255.0);
                Ok(Dataset::new(x, d.target)?)
            };
            Some((
                scale(chainrule::data::read_mnist(dir, "train")?)?,
                scale(chainrule::data::read_mnist(dir, "t10k")?)?,
            ))
        }
        (true, None) => {
            bail!("--data: W1, W2 and W4 train on MNIST; give its folder (IDX files, plain or .gz)")
        }
    };
    let mut timings = Vec::new();
    for w in workloads {
        let timing = match (w.as_str(), &mnist) {
            ("w1", Some((train, test))) => {
                mnist_epoch("W1", &[784, 128, 10], 64, train, test, runs)?
            }
            ("w2", Some((train, test))) => {
                mnist_epoch("W2", &[784, 1024, 1024, 10], 256, train, test, runs)?
            }
            ("w3", _) => xor_steps(runs)?,
            ("w4", Some((train, _))) => cnn_epoch(train, runs)?,
            (other, _) => {
                bail!("--workloads: unknown workload {other:?} (expected w1, w2, w3, w4)")
            }
        };
        if !json {
            print_timing(&timing);
        }
        timings.push(timing);
    }
    if json {
        println!("{}", serde_json::to_string(&timings)?);
    }
    Ok(())
}

fn print_timing(t: &Timing) {
    let (med, min, max) = (
        median(&t.seconds),
        t.seconds.iter().copied().fold(f64::INFINITY, f64::min),
        t.seconds.iter().copied().fold(0.0, f64::max),
    );
    match t.flops {
        Some(flops) => println!(
            "{}: {med:.3} s/epoch (min {min:.3}, max {max:.3}, {} runs)  {:.0} samples/s  {:.1} GFLOP/s  {}  {:.0} allocations/step",
            t.workload,
            t.seconds.len(),
            t.units / med,
            flops / med / 1e9,
            t.accuracy
                .map_or("(timed part of an epoch)".to_string(), |a| format!(
                    "test accuracy {:.2}%",
                    100.0 * a
                )),
            t.allocations_per_step
        ),
        None => println!(
            "{}: {:.2} µs/step (min {:.2}, max {:.2}, {} runs of {} steps)  {:.1} allocations/step",
            t.workload,
            med / t.units * 1e6,
            min / t.units * 1e6,
            max / t.units * 1e6,
            t.seconds.len(),
            t.units,
            t.allocations_per_step
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    #[test]
    fn the_counting_allocator_counts_and_forwards_every_call() {
        let counting = Counting::new(System);
        let layout = Layout::from_size_align(64, 16).unwrap();
        let before = allocations();
        // SAFETY: each pointer comes from `counting` with `layout` (its size updated
        // by realloc) and is freed once, as GlobalAlloc requires.
        unsafe {
            let zeroed = counting.alloc_zeroed(layout);
            assert!(!zeroed.is_null() && (zeroed as usize).is_multiple_of(16));
            assert!((0..64).all(|i| *zeroed.add(i) == 0));
            let p = counting.alloc(layout);
            p.copy_from(zeroed.cast_const(), 64);
            *p = 7;
            counting.dealloc(zeroed, layout);
            let grown = counting.realloc(p, layout, 4096);
            assert_eq!(
                (*grown, *grown.add(63)),
                (7, 0),
                "realloc keeps the contents"
            );
            counting.dealloc(grown, Layout::from_size_align(4096, 16).unwrap());
        }
        // alloc_zeroed, alloc and realloc; not the deallocations. (Other tests of
        // this binary may allocate through the global allocator meanwhile.)
        assert!(allocations() - before >= 3);
    }
}
