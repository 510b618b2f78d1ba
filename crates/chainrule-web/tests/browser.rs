//! The WebAssembly API in headless Chromium (issue 16, item 4): the JavaScript face
//! of the playground, called as the page calls it, on the notebooks' worked
//! examples, with the notebooks' own numbers.
//!
//! Run with `CHROMEDRIVER=/usr/bin/chromedriver cargo test --target
//! wasm32-unknown-unknown -p chainrule-web --test browser` and
//! `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner`, as .ci/run
//! does. (Natively the file is empty: the same API's native tests are session.rs.)
#![cfg(target_arch = "wasm32")]

use chainrule_web::{Playground, explain_formula, formula_params};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

/// Notebook 000's network, parameters and one sample, as the page's preset builds
/// them (loss SSE, plain gradient descent at η = 0.01, one batch).
fn notebook_000() -> Playground {
    let settings = format!(
        r#"{{"model": {}, "data": {{"validation": 0}}, "loss": "sse",
            "optimizer": {{"type": "sgd", "lr": 0.01}}, "batch_size": 1000000, "seed": 0}}"#,
        include_str!("../../../examples/notebooks/000/model.json")
    );
    let mut p = Playground::with_data(
        &settings,
        include_bytes!("../../../examples/notebooks/000/x.npy"),
        include_bytes!("../../../examples/notebooks/000/y.npy"),
    )
    .unwrap();
    p.load_parameters(include_bytes!(
        "../../../examples/notebooks/000/params.safetensors"
    ))
    .unwrap();
    p
}

/// Parameter `name`'s values from `Playground::parameters`' JSON.
fn values(p: &Playground, name: &str) -> Vec<f64> {
    let all: serde_json::Value = serde_json::from_str(&p.parameters()).unwrap();
    all[name]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[wasm_bindgen_test]
fn one_step_of_notebook_000_gives_the_notebooks_new_weights() {
    let mut p = notebook_000();
    p.train(1).unwrap();
    // Notebook 000 after one step: w1 → 0.99, w2 → 0.49 (the first layer's first
    // column), w5 → 0.985, w6 → 0.995.
    let first = values(&p, "0.weight");
    let second = values(&p, "2.weight");
    assert!((first[0] - 0.99).abs() < 1e-12, "{first:?}");
    assert!((first[2] - 0.49).abs() < 1e-12, "{first:?}");
    assert!((second[0] - 0.985).abs() < 1e-12, "{second:?}");
    assert!((second[1] - 0.995).abs() < 1e-12, "{second:?}");
}

#[wasm_bindgen_test]
fn w5s_derivation_has_the_notebooks_factors() {
    let p = notebook_000();
    let d: serde_json::Value =
        serde_json::from_str(&p.explain("2.weight[0,0]", 0, "json").unwrap()).unwrap();
    // ∂C/∂w5 = a⁽¹⁾₁ · relu′(z⁽²⁾₁) · 2(a⁽²⁾₁ − y) = 1.5 · 1 · 1.
    let factors: Vec<f64> = d["samples"][0]["factors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["value"].as_f64().unwrap())
        .collect();
    assert_eq!(factors, [1.5, 1.0, 1.0]);
    assert_eq!(d["verified"], true);
    assert!((d["update"]["new"].as_f64().unwrap() - 0.985).abs() < 1e-12);
}

#[wasm_bindgen_test]
fn notebook_003s_formula_is_explained_in_the_browser() {
    let formula = include_str!("../../../examples/notebooks/003/network.formula");
    let params: Vec<(String, f64)> =
        serde_json::from_str(&formula_params(formula).unwrap()).unwrap();
    assert_eq!(params.len(), 7);
    assert_eq!(params[0], ("w0".to_string(), 0.1));
    let d: serde_json::Value =
        serde_json::from_str(&explain_formula(formula, "w0", 0.3, "json").unwrap()).unwrap();
    // w0 reaches the loss by three paths (through f3, through f4, and directly into
    // z5), and their sum is backprop's gradient.
    assert_eq!(d["paths"].as_array().unwrap().len(), 3);
    assert_eq!(d["verified"], true);
}

#[wasm_bindgen_test]
fn bad_settings_throw_an_error_naming_the_field_not_a_panic() {
    let settings = format!(
        r#"{{"model": {}, "data": {{"name": "no-such-set"}}}}"#,
        include_str!("../../../examples/notebooks/000/model.json")
    );
    let err = match Playground::new(&settings) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    let message = js_sys_message(&err);
    assert!(
        message.contains("data") && message.contains("no-such-set"),
        "{message}"
    );
}

/// An exception's message (a JavaScript `Error`'s `message`).
fn js_sys_message(e: &JsValue) -> String {
    js_message(e).unwrap_or_else(|| format!("{e:?}"))
}

fn js_message(e: &JsValue) -> Option<String> {
    let message = js_get(e, "message")?;
    message.as_string()
}

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    #[wasm_bindgen::prelude::wasm_bindgen(js_namespace = Reflect, js_name = get)]
    fn reflect_get(target: &JsValue, key: &JsValue) -> JsValue;
}

fn js_get(e: &JsValue, key: &str) -> Option<JsValue> {
    let v = reflect_get(e, &JsValue::from_str(key));
    (!v.is_undefined()).then_some(v)
}
