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

use chainrule::data::{Dataset, Standardizer, Target, read_mnist};
use chainrule::io::{npy_bytes, write_atomic};
use chainrule::nn::Sequential;
use chainrule::train::{Event, TrainConfig, fit, predict};
use chainrule::{Error, Result, Tensor};
use std::path::{Path, PathBuf};

const MODEL: &str = r#"{"layers": [
  {"type": "linear", "in": 784, "out": 128},
  {"type": "relu"},
  {"type": "linear", "in": 128, "out": 10}
]}"#;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(data) = args.get(1) else {
        eprintln!("usage: mnist_mlp DATA_DIR [OUT_DIR]");
        std::process::exit(2);
    };
    let out_dir = PathBuf::from(args.get(2).map_or("runs/mnist_mlp", String::as_str));
    let pixels = |split: &str| -> Result<(Tensor<f32>, Vec<usize>)> {
        let data = read_mnist(Path::new(data), split)?;
        let Target::Classes(labels) = data.target else {
            unreachable!("MNIST has class labels")
        };
        Ok((data.x.map(|v| v / 255.0), labels))
    };
    let (x_train, y_train) = pixels("train")?;
    let (x_test, y_test) = pixels("t10k")?;
    // Standardise with the training set's pixel mean and standard deviation (one
    // scaler for all pixels: per-pixel statistics would blow up the near-constant
    // border pixels).
    let all_pixels = Standardizer::fit(&x_train.reshape(&[x_train.len(), 1])?)?;
    let standardise = |x: &Tensor<f32>| -> Result<Tensor<f32>> {
        all_pixels
            .transform(&x.reshape(&[x.len(), 1])?)?
            .reshape(x.shape())
    };
    let (x_train, x_test) = (standardise(&x_train)?, standardise(&x_test)?);
    println!(
        "MNIST: {} training and {} test images",
        y_train.len(),
        y_test.len()
    );

    let mut model = Sequential::<f32>::from_json(MODEL, 0)?;
    let train = Dataset::new(x_train, Target::Classes(y_train))?;
    let test = Dataset::new(x_test, Target::Classes(y_test))?;
    let mut config = TrainConfig::from_json(
        r#"{"loss": "cross_entropy", "optimizer": {"type": "sgd", "lr": 0.1}, "batch_size": 64, "shuffle": true, "epochs": 3}"#,
    )?;
    config.seed = 1;
    fit(&mut model, &train, Some(&test), &config, |event| {
        if let Event::Epoch(m) = event {
            let test = m.validation.expect("a test set is given");
            println!(
                "epoch {}: train loss {:.4}  test loss {:.4}  test accuracy {:.2}%  {:.2} s",
                m.epoch + 1,
                m.train.loss,
                test.loss,
                100.0 * test.accuracy.unwrap_or(0.0),
                m.seconds
            );
        }
    })?;

    std::fs::create_dir_all(&out_dir).map_err(|e| Error::Io {
        path: out_dir.display().to_string(),
        message: e.to_string(),
    })?;
    model.save_checkpoint(&out_dir)?;
    let sample = test.x.narrow(0, 0, 64)?;
    write_atomic(&out_dir.join("sample_x.npy"), &npy_bytes(&sample))?;
    write_atomic(
        &out_dir.join("sample_logits.npy"),
        &npy_bytes(&predict(&mut model, &sample)?),
    )?;
    println!("checkpoint written to {}", out_dir.display());
    Ok(())
}
