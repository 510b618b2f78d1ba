//! `explain` on the notebooks' networks (examples/notebooks/): every derivation is
//! checked against autodiff, and the numbers the notebooks print are asserted.

mod common;

use chainrule::loss::{Loss, Target};
use chainrule_explain::derive::{Derivation, ParamElement, all_elements, explain};
use common::{Notebook, notebook};

fn derive(nb: &Notebook, param: &str) -> Derivation {
    explain(
        &nb.model,
        &nb.x,
        &nb.y,
        nb.loss,
        nb.lr,
        &ParamElement::parse(param).unwrap(),
    )
    .unwrap()
}

#[track_caller]
fn close(got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-12 * want.abs().max(1.0),
        "{got} vs {want}"
    );
}

fn factors(d: &Derivation) -> Vec<f64> {
    d.samples[0].factors.iter().map(|f| f.value).collect()
}

#[test]
fn every_derivation_of_every_notebook_equals_autodiff() {
    for name in common::NOTEBOOKS {
        let nb = notebook(name);
        for element in all_elements(&nb.model) {
            let d = explain(&nb.model, &nb.x, &nb.y, nb.loss, nb.lr, &element).unwrap();
            assert!(
                d.verified(),
                "{name} {}: chain {} vs autodiff {}",
                d.param,
                d.gradient,
                d.autodiff
            );
        }
    }
}

#[test]
fn notebook_000_derivations_have_the_notebooks_numbers() {
    let nb = notebook("000");
    // ∂L/∂w5 = a⁽¹⁾₁ · relu′(z⁽²⁾₁) · 2(a⁽²⁾₁ − y) = 1.5 · 1 · 2(2.5 − 2)
    let w5 = derive(&nb, "2.weight[0,0]");
    assert_eq!(factors(&w5), [1.5, 1.0, 1.0]);
    close(w5.gradient, 1.5);
    close(w5.update.2, 0.985);
    close(derive(&nb, "2.weight[0,1]").gradient, 0.5); // w6
    close(derive(&nb, "2.bias[0]").gradient, 1.0); // b3
    // The hidden weights: w1 = 0.weight[0,0], w3 = [0,1], w2 = [1,0], w4 = [1,1].
    let new: Vec<f64> = [
        "0.weight[0,0]",
        "0.weight[1,0]",
        "0.weight[0,1]",
        "0.weight[1,1]",
        "2.weight[0,0]",
        "2.weight[0,1]",
        "0.bias[0]",
        "0.bias[1]",
        "2.bias[0]",
    ]
    .iter()
    .map(|p| derive(&nb, p).update.2)
    .collect();
    for (got, want) in new
        .iter()
        .zip([0.99, 0.49, 1.0, -0.5, 0.985, 0.995, 0.49, -0.01, 0.49])
    {
        close(*got, want);
    }
    // w2 feeds node 2: its chain uses node 2's ReLU derivative (z⁽¹⁾₂ = 0.5), not
    // node 1's as the notebook's text writes, and ∂C/∂a⁽¹⁾₂ sums over the one unit
    // it feeds: w6 · relu′(z⁽²⁾₁) · ∂C/∂a⁽²⁾₁ = 1 · 1 · 1.
    let w2 = derive(&nb, "0.weight[1,0]");
    assert_eq!(
        w2.samples[0].factors[1].substituted.as_deref(),
        Some("relu′(0.5)")
    );
    let hidden = w2.samples[0].hidden.as_ref().unwrap();
    assert_eq!(hidden.terms, [(1.0, 1.0, 1.0)]);
}

#[test]
fn notebook_001_derivations_have_the_notebooks_numbers() {
    close(
        derive(&notebook("001_single_weight"), "0.weight[0,0]")
            .update
            .2,
        1.8,
    );
    let two = notebook("001_two_weights");
    close(derive(&two, "1.weight[0,0]").update.2, 1.0); // w_2: 3 → 1
    close(derive(&two, "0.weight[0,0]").update.2, -1.0); // w_1: 2 → -1
    let sig = notebook("001_sigmoid_biases");
    for (param, want) in [
        ("2.weight[0,0]", 2.0040000160377818),
        ("2.bias[0]", 2.0045413593412063),
        ("0.weight[0,0]", 1.000953627199678),
        ("0.bias[0]", 1.000953627199678),
    ] {
        close(derive(&sig, param).update.2, want);
    }
    // w_1's chain: x · σ′(z₁) · Σ (w₂ · σ′(z₂) · 2(a₂ − y)), five factors as the notebook writes.
    let w1 = derive(&sig, "0.weight[0,0]");
    let h = w1.samples[0].hidden.as_ref().unwrap();
    assert_eq!(h.terms.len(), 1);
    assert_eq!(h.terms[0].0, 2.0);
}

#[test]
fn notebook_004_derivations_have_the_notebooks_gradients() {
    let nb = notebook("004");
    // The notebook's gradient matrices, bias in column 0.
    let expected = [
        ("0.bias[0]", -8.534),
        ("0.weight[0,0]", -17.068),
        ("0.bias[1]", 0.0),
        ("0.weight[1,0]", 0.0),
        ("2.bias[0]", -2.51),
        ("2.weight[0,0]", -3.263),
        ("2.weight[0,1]", 0.0),
        ("2.bias[1]", -11.546),
        ("2.weight[1,0]", -15.0098),
        ("2.weight[1,1]", 0.0),
        ("4.bias[0]", -5.02),
        ("4.weight[0,0]", -6.1746),
        ("4.weight[0,1]", -2.761),
    ];
    for (param, want) in expected {
        close(derive(&nb, param).gradient, want);
    }
}

#[test]
fn a_batch_derivation_sums_per_sample_terms_with_the_reduction_factor() {
    let nb = notebook("000");
    // Two samples and mse: each ∂C/∂a carries 2/M with M = 2.
    let x = chainrule::Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], &[2, 2]).unwrap();
    let y = Target::Values(chainrule::Tensor::from_vec(vec![2.0, 1.0], &[2, 1]).unwrap());
    let d = explain(
        &nb.model,
        &x,
        &y,
        Loss::Mse,
        0.1,
        &ParamElement::parse("2.weight[0,0]").unwrap(),
    )
    .unwrap();
    assert_eq!(d.samples.len(), 2);
    assert!(d.verified());
    assert!(d.reduction.contains("M = 2"));
    let text = d.text();
    assert!(
        text.contains("sample 2") && text.contains("sum over the 2 samples"),
        "{text}"
    );
}

#[test]
fn renderings_carry_the_same_numbers() {
    let d = derive(&notebook("000"), "2.weight[0,0]");
    let text = d.text();
    assert!(
        text.contains("∂C/∂w⁽²⁾₁,₁")
            && text.contains("1.5 · 1 · 1 = 1.5")
            && text.contains("0.985"),
        "{text}"
    );
    let md = d.markdown();
    assert!(
        md.contains(r"\frac{\partial C}{\partial w^{(2)}_{1,1}}") && md.contains("0.985"),
        "{md}"
    );
    let json = d.json();
    assert_eq!(json["gradient"], 1.5);
    assert_eq!(json["samples"][0]["factors"].as_array().unwrap().len(), 3);
    assert_eq!(json["update"]["new"], 0.985);
}
