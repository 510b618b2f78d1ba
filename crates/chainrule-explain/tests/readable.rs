//! Derivations a person can read at real sizes (issue 15, item 3): long sums show
//! their largest terms and a total for the rest, dead units are named, and no step
//! is written twice.

use chainrule::Tensor;
use chainrule::loss::{Loss, Target};
use chainrule::nn::{Module, Sequential};
use chainrule_explain::derive::{ParamElement, explain};

/// A 2-16-16-1 ReLU network whose second layer's units 1, 3, 5, … have a bias of
/// −100, so that they are dead on any small input.
fn network() -> Sequential<f64> {
    let mut m = Sequential::<f64>::from_json(
        r#"{"layers": [{"type": "linear", "in": 2, "out": 16}, {"type": "relu"},
                       {"type": "linear", "in": 16, "out": 16}, {"type": "relu"},
                       {"type": "linear", "in": 16, "out": 1}]}"#,
        3,
    )
    .unwrap();
    let bias: Vec<f64> = (0..16)
        .map(|i| if i % 2 == 0 { -100.0 } else { 0.5 })
        .collect();
    m.params_mut()[3].value = Tensor::from_vec(bias, &[16]).unwrap();
    // The first layer's unit 1 alive on the sample below: its bias is large.
    let mut b1 = m.params()[1].value.to_vec();
    b1[0] = 5.0;
    m.params_mut()[1].value = Tensor::from_vec(b1, &[16]).unwrap();
    m
}

/// The derivation of `param` on the sample (0.3, −0.2) with target 1, mse.
fn derivation(m: &Sequential<f64>, param: &str) -> chainrule_explain::derive::Derivation {
    let x = Tensor::from_vec(vec![0.3, -0.2], &[1, 2]).unwrap();
    let y = Target::Values(Tensor::from_vec(vec![1.0], &[1, 1]).unwrap());
    explain(
        m,
        &x,
        &y,
        Loss::Mse,
        0.1,
        &ParamElement::parse(param).unwrap(),
    )
    .unwrap()
}

#[test]
fn a_hidden_units_sum_names_its_dead_units_and_shows_its_largest_terms() {
    let m = network();
    let d = derivation(&m, "0.weight[0,1]");
    assert!(d.verified());
    let text = d.text();
    // Independently: the second layer's pre-activations, and which are ≤ 0.
    let p: Vec<Vec<f64>> = m.params().iter().map(|p| p.value.to_vec()).collect();
    let input = [0.3, -0.2];
    let a1: Vec<f64> = (0..16)
        .map(|j| (p[0][2 * j] * input[0] + p[0][2 * j + 1] * input[1] + p[1][j]).max(0.0))
        .collect();
    let z2: Vec<f64> = (0..16)
        .map(|i| (0..16).map(|k| p[2][16 * i + k] * a1[k]).sum::<f64>() + p[3][i])
        .collect();
    let dead: Vec<String> = (0..16)
        .filter(|&i| z2[i] <= 0.0)
        .map(|i| (i + 1).to_string())
        .collect();
    let live = 16 - dead.len();
    assert!(
        live > 6,
        "the network should leave more live units than are written out"
    );
    let line = format!(
        "{} of them are dead (relu′(z⁽²⁾ᵢ) = 0) and contribute 0: i = {}",
        dead.len(),
        dead.join(", ")
    );
    assert!(text.contains(&line), "{line}\n in\n{text}");
    // More live units than the terms written out: the rest are totalled.
    assert!(
        text.contains(&format!("the other {} units'", live - 6)),
        "{text}"
    );
    // Each step once.
    assert!(!text.contains("= 1 = 1"), "{text}");
}

#[test]
fn a_bias_factor_is_written_once() {
    let d = derivation(&network(), "4.bias[0]");
    let text = d.text();
    assert!(text.contains("∂z⁽³⁾₁/∂b⁽³⁾₁ = 1\n"), "{text}");
    assert!(!text.contains("= 1 = 1"), "{text}");
}
