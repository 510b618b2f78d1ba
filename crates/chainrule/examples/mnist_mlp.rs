//! A 784-128-10 ReLU MLP trained on MNIST with softmax cross-entropy and SGD
//! (lr 0.1, batch 64, rows reshuffled every epoch, pixels standardised with the
//! training set's mean and standard deviation), 3 epochs, printing per-epoch loss,
//! test accuracy and time. Writes a checkpoint PyTorch can load (model.json,
//! params.safetensors) with a sample of inputs and chainrule's logits, which
//! `tools/check_checkpoint.py` compares with PyTorch's.
//!
//! `cargo run --release -p chainrule --example mnist_mlp -- DATA_DIR [OUT_DIR]`
//! DATA_DIR holds the four MNIST IDX files (plain or .gz); OUT_DIR defaults to
//! `runs/mnist_mlp`.

use chainrule::io::{npy_bytes, read_idx, write_atomic, write_safetensors};
use chainrule::loss::Target;
use chainrule::nn::{Module, Sequential};
use chainrule::train::{TrainConfig, fit};
use chainrule::{Error, Result, Tape, Tensor};
use std::path::{Path, PathBuf};
use std::time::Instant;

const MODEL: &str = r#"{"layers": [
  {"type": "linear", "in": 784, "out": 128},
  {"type": "relu"},
  {"type": "linear", "in": 128, "out": 10}
]}"#;

/// Finds `stem` in `dir` under the names MNIST is distributed with.
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let (kind, rest) = stem.split_once('-').expect("stem has a dash");
    let (what, idx) = rest.split_once('-').expect("stem has two dashes");
    let names = [
        format!("{kind}-{what}-{idx}"),
        format!("{kind}-{what}.{idx}"),
    ];
    names
        .iter()
        .flat_map(|n| [dir.join(n), dir.join(format!("{n}.gz"))])
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Io {
            path: dir.join(stem).display().to_string(),
            message: "no such MNIST file (plain or .gz)".into(),
        })
}

/// Images scaled to [0, 1] as `[N, 784]`, and labels.
fn load(dir: &Path, split: &str) -> Result<(Tensor<f32>, Vec<usize>)> {
    let images = read_idx(&find(dir, &format!("{split}-images-idx3-ubyte"))?)?;
    let labels = read_idx(&find(dir, &format!("{split}-labels-idx1-ubyte"))?)?;
    let n = images.shape[0];
    let x = Tensor::from_vec(
        images
            .values
            .iter()
            .map(|&b| f32::from(b) / 255.0)
            .collect(),
        &[n, 784],
    )?;
    Ok((x, labels.values.iter().map(|&l| usize::from(l)).collect()))
}

/// Logits for `x`, computed without recording gradients, 1000 rows at a time.
fn logits(model: &Sequential<f32>, x: &Tensor<f32>) -> Result<Tensor<f32>> {
    let rows = x.shape()[0];
    let mut parts = Vec::new();
    for start in (0..rows).step_by(1000) {
        let tape = Tape::new();
        let out = tape.no_grad(|| {
            let params = model.bind(&tape);
            model.forward(
                &params,
                tape.constant(x.narrow(0, start, 1000.min(rows - start))?),
            )
        })?;
        parts.push(out.value());
    }
    Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)
}

fn accuracy(model: &Sequential<f32>, x: &Tensor<f32>, labels: &[usize]) -> Result<f64> {
    let out = logits(model, x)?;
    let classes = out.shape()[1];
    let values = out.to_vec();
    let correct = values
        .chunks_exact(classes)
        .zip(labels)
        .filter(|&(row, &label)| {
            let best = row
                .iter()
                .enumerate()
                .fold(0, |b, (i, &v)| if v > row[b] { i } else { b });
            best == label
        })
        .count();
    Ok(correct as f64 / labels.len() as f64)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(data) = args.get(1) else {
        eprintln!("usage: mnist_mlp DATA_DIR [OUT_DIR]");
        std::process::exit(2);
    };
    let out_dir = PathBuf::from(args.get(2).map_or("runs/mnist_mlp", String::as_str));
    let (x_train, y_train) = load(Path::new(data), "train")?;
    let (x_test, y_test) = load(Path::new(data), "t10k")?;
    // Standardise with the training set's pixel mean and standard deviation.
    let mean = x_train.mean(&[], false)?.item()?;
    let std = x_train
        .map(|v| (v - mean) * (v - mean))
        .mean(&[], false)?
        .item()?
        .sqrt();
    let standardise = |x: &Tensor<f32>| x.map(|v| (v - mean) / std);
    let (x_train, x_test) = (standardise(&x_train), standardise(&x_test));
    println!(
        "MNIST: {} training and {} test images",
        y_train.len(),
        y_test.len()
    );

    let mut model = Sequential::<f32>::from_json(MODEL, 0)?;
    let target = Target::Classes(y_train);
    let mut config = TrainConfig::from_json(
        r#"{"loss": "cross_entropy", "optimizer": {"type": "sgd", "lr": 0.1}, "batch_size": 64, "shuffle": true}"#,
    )?;
    for epoch in 1..=3 {
        config.seed = epoch;
        let start = Instant::now();
        let (mut total, mut steps) = (0.0, 0);
        fit(&mut model, &x_train, &target, &config, |_, _, loss| {
            total += f64::from(loss);
            steps += 1;
        })?;
        let seconds = start.elapsed().as_secs_f64();
        let acc = accuracy(&model, &x_test, &y_test)?;
        println!(
            "epoch {epoch}: train loss {:.4}  test accuracy {:.2}%  {seconds:.2} s",
            total / f64::from(steps),
            100.0 * acc
        );
    }

    std::fs::create_dir_all(&out_dir).map_err(|e| Error::Io {
        path: out_dir.display().to_string(),
        message: e.to_string(),
    })?;
    write_atomic(&out_dir.join("model.json"), MODEL.as_bytes())?;
    let named = model
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    write_safetensors(&out_dir.join("params.safetensors"), &named)?;
    let sample = x_test.narrow(0, 0, 64)?;
    write_atomic(&out_dir.join("sample_x.npy"), &npy_bytes(&sample))?;
    write_atomic(
        &out_dir.join("sample_logits.npy"),
        &npy_bytes(&logits(&model, &sample)?),
    )?;
    println!("checkpoint written to {}", out_dir.display());
    Ok(())
}
