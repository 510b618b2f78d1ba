//! Loading the notebooks' networks (examples/notebooks/) for the tests, and the
//! seeded stream the property tests draw from.
#![allow(dead_code)] // each test file uses part of it

use chainrule::Tensor;
use chainrule::io::{read_npy, read_safetensors};
use chainrule::loss::{Loss, Target};
use chainrule::nn::Sequential;
use std::path::Path;

/// A notebook's network, data, loss and learning rate.
pub struct Notebook {
    pub model: Sequential<f64>,
    pub x: Tensor<f64>,
    pub y: Target<f64>,
    pub loss: Loss,
    pub lr: f64,
}

/// The networks every test goes through.
pub const NOTEBOOKS: [&str; 5] = [
    "000",
    "001_single_weight",
    "001_two_weights",
    "001_sigmoid_biases",
    "004",
];

pub fn notebook(name: &str) -> Notebook {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/notebooks")
        .join(name);
    let mut model =
        Sequential::<f64>::from_json(&std::fs::read_to_string(dir.join("model.json")).unwrap(), 0)
            .unwrap();
    model
        .load(read_safetensors(&dir.join("params.safetensors")).unwrap())
        .unwrap();
    let x: Tensor<f64> = read_npy(&dir.join("x.npy")).unwrap().to_tensor().unwrap();
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("explain.json")).unwrap()).unwrap();
    let loss = Loss::from_name(settings["loss"].as_str().unwrap()).unwrap();
    let outputs = model.output_features().unwrap();
    let y = Target::from_npy(
        &read_npy(&dir.join("y.npy")).unwrap(),
        loss,
        x.shape()[0],
        outputs,
    )
    .unwrap();
    Notebook {
        model,
        x,
        y,
        loss,
        lr: settings["lr"].as_f64().unwrap(),
    }
}

/// xorshift64: a seeded stream, the same on every machine.
pub struct Stream(pub u64);

impl Stream {
    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
    /// True once in `one_in` draws, on average.
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    /// A number in [−1, 1).
    pub fn uniform(&mut self) -> f64 {
        self.below(1 << 20) as f64 / (1 << 19) as f64 - 1.0
    }
}

/// One element of each of `model`'s parameter tensors, picked by `rng`, named as
/// `explain --param` takes it (`0.weight[1,0,2,2]`).
pub fn random_elements(model: &Sequential<f64>, rng: &mut Stream) -> Vec<String> {
    use chainrule::nn::Module;
    model
        .params()
        .iter()
        .map(|p| {
            let index: Vec<String> = p
                .value
                .shape()
                .iter()
                .map(|&s| rng.below(s).to_string())
                .collect();
            format!("{}[{}]", p.name, index.join(","))
        })
        .collect()
}
