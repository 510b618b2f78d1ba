//! Derivations of tensor networks (tests/reference's spatial cases, made by PyTorch):
//! every parameter tensor, at its largest and at seeded random elements, sums to
//! autodiff's gradient; every operation's sum on the way down from the loss (batch
//! norm's three paths among them) adds up to autodiff's gradient there; and a
//! convolution's sum has one term per sample and output position.

mod common;

use chainrule::Tensor;
use chainrule::data::Target;
use chainrule::io::{read_npy, read_safetensors};
use chainrule::loss::Loss;
use chainrule::nn::{Module, Sequential};
use chainrule_explain::spatial::{explain_element, is_tensor_network, largest_elements};
use common::{Stream, random_elements};
use std::path::{Path, PathBuf};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../chainrule/tests/reference");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("f64_spatial")
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 9, "the spatial reference cases in {root:?}");
    cases
}

fn load(case: &Path) -> (Sequential<f64>, Tensor<f64>, Target<f64>, Loss) {
    let mut model = Sequential::<f64>::from_json(
        &std::fs::read_to_string(case.join("model.json")).unwrap(),
        0,
    )
    .unwrap();
    model
        .load(read_safetensors(&case.join("params.safetensors")).unwrap())
        .unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("config.json")).unwrap()).unwrap();
    let loss = Loss::from_name(config["loss"].as_str().unwrap()).unwrap();
    let x: Tensor<f64> = read_npy(&case.join("x.npy")).unwrap().to_tensor().unwrap();
    let outputs = model.output_features().unwrap();
    let y = Target::from_npy(
        &read_npy(&case.join("y.npy")).unwrap(),
        loss,
        x.shape()[0],
        outputs,
    )
    .unwrap();
    (model, x, y, loss)
}

/// A number that a text line shows after `marker`.
fn number_after(line: &str, marker: &str) -> f64 {
    let rest = &line[line.rfind(marker).unwrap() + marker.len()..];
    rest.trim()
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .split([';', ' '])
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn every_sum_equals_autodiff_on_the_reference_cases() {
    let mut rng = Stream(0x2545_f491_4f6c_dd1d);
    let mut paths = 0;
    for case in cases() {
        let (model, x, y, loss) = load(&case);
        assert!(is_tensor_network(&model), "{case:?}");
        let mut elements = largest_elements(&model, &x, &y, loss).unwrap();
        elements.extend(random_elements(&model, &mut rng));
        for element in elements {
            let d = explain_element(&model, &x, &y, loss, 0.1, &element).unwrap();
            assert!(
                d.verified(),
                "{case:?} {element}: {} vs {}",
                d.gradient,
                d.autodiff
            );
            let terms = d.shown.len() + d.rest.0;
            let shown: f64 = d.shown.iter().map(|t| t.value).sum();
            assert!((shown + d.rest.1 - d.gradient).abs() <= 1e-12 * d.gradient.abs().max(1.0));
            if element.starts_with("0.weight") && model.params()[0].value.ndim() == 4 {
                // One term per sample and output position of the convolution.
                let out = model.output_shape(0).unwrap();
                assert_eq!(
                    terms + d.padded,
                    x.shape()[0] * out[1] * out[2],
                    "{case:?} {element}"
                );
            }
            // Every operation on the way down from the loss: its declared sum with
            // the numbers equals autodiff's gradient at that node.
            for line in d.upstream.iter().filter(|l| l.contains("; autodiff")) {
                let total = number_after(line.split("; autodiff").next().unwrap(), "=");
                let autodiff = number_after(line, "autodiff");
                assert!((total - autodiff).abs() <= 1e-10, "{line}");
                assert!(line.ends_with('✓'), "{line}");
                if line.contains("through σ²") {
                    paths += 1;
                }
            }
        }
    }
    assert!(paths > 0, "some derivation passes through batch norm");
}
