//! Every PyTorch reference case (tests/reference/, made by tools/make_reference.py)
//! through the library: the loss and gradients over all of x, and the parameters
//! after training as config.json (and extra.json: schedule, clipping) says, buffers
//! (batch norm's running statistics) included; cases marked `"eval"` in extra.json
//! compare gradients in evaluation mode only.
//! f64: 1e-10 relative; f32: 1e-5.

use chainrule::data::{Dataset, Target};
use chainrule::io::{read_npy, read_safetensors};
use chainrule::nn::{Mode, Module, Sequential};
use chainrule::optim::Schedule;
use chainrule::train::{TrainConfig, fit, loss_and_grads};
use chainrule::{Float, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 76,
        "expected the committed reference cases in {root:?}"
    );
    cases
}

fn tolerance<F: Float>() -> f64 {
    if F::DTYPE == "F64" { 1e-10 } else { 1e-5 }
}

#[track_caller]
fn assert_close<F: Float>(
    case: &Path,
    what: &str,
    got: &BTreeMap<String, Tensor<F>>,
    expected: &BTreeMap<String, Tensor<F>>,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{case:?} {what}: names"
    );
    for (name, e) in expected {
        let g = &got[name];
        assert_eq!(g.shape(), e.shape(), "{case:?} {what} {name}: shape");
        for (a, b) in g.to_vec().iter().zip(e.to_vec()) {
            let (a, b) = (a.as_f64(), b.as_f64());
            assert!(
                (a - b).abs() <= tolerance::<F>() * b.abs().max(1.0),
                "{case:?} {what} {name}: {a} vs PyTorch {b}"
            );
        }
    }
}

fn run<F: Float>(case: &Path) {
    let file = |name: &str| case.join(name);
    let mut model =
        Sequential::<F>::from_json(&std::fs::read_to_string(file("model.json")).unwrap(), 0)
            .unwrap();
    model
        .load(read_safetensors(&file("params.safetensors")).unwrap())
        .unwrap();
    let mut config =
        TrainConfig::from_json(&std::fs::read_to_string(file("config.json")).unwrap()).unwrap();
    // Options beyond the contract (schedule, clipping, evaluation mode), for the
    // cases that have them.
    let mut eval = false;
    if let Ok(text) = std::fs::read_to_string(file("extra.json")) {
        let extra: serde_json::Value = serde_json::from_str(&text).unwrap();
        if !extra["schedule"].is_null() {
            config.schedule = Schedule::from_json(&extra["schedule"]).unwrap();
        }
        config.clip_grad_norm = extra["clip_grad_norm"].as_f64();
        eval = extra["eval"].as_bool() == Some(true);
    }
    if eval {
        model.set_mode(Mode::Eval);
    }
    let x: Tensor<F> = read_npy(&file("x.npy")).unwrap().to_tensor().unwrap();
    let outputs = model.output_features().unwrap();
    let y = Target::from_npy(
        &read_npy(&file("y.npy")).unwrap(),
        config.loss,
        x.shape()[0],
        outputs,
    )
    .unwrap();

    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file("expected.json")).unwrap()).unwrap();
    let (loss, grads) = loss_and_grads(&model, &x, &y, config.loss).unwrap();
    let want = expected["loss"].as_f64().unwrap();
    assert!(
        (loss.as_f64() - want).abs() <= tolerance::<F>() * want.abs().max(1.0),
        "{case:?}: loss {loss} vs PyTorch {want}"
    );
    let names = model.params().iter().map(|p| p.name.clone());
    let grads: BTreeMap<_, _> = names
        .clone()
        .zip(grads.into_iter().map(Option::unwrap))
        .collect();
    assert_close(
        case,
        "gradient",
        &grads,
        &read_safetensors(&file("grads.safetensors")).unwrap(),
    );
    if eval {
        return;
    }

    fit(
        &mut model,
        &Dataset::new(x, y).unwrap(),
        None,
        &config,
        |_| {},
    )
    .unwrap();
    assert_close(
        case,
        "trained",
        &model.state_dict(),
        &read_safetensors(&file("trained.safetensors")).unwrap(),
    );
}

#[test]
fn library_matches_pytorch_on_every_reference_case() {
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("f64") {
            run::<f64>(&case)
        } else {
            run::<f32>(&case)
        }
    }
}
