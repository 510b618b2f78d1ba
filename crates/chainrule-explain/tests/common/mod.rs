//! Loading the notebooks' networks (examples/notebooks/) for the tests.
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
