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

#[path = "../../chainrule/examples/notebook_003.rs"]
#[allow(dead_code)]
mod notebook_003;

/// Notebook 003's network as a formula file (examples/notebooks/003/network.formula).
fn notebook_003_formula() -> chainrule_explain::formula::Formula {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/notebooks/003/network.formula");
    chainrule_explain::formula::Formula::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn notebook_003_formula_has_the_notebooks_output_and_starting_weights() {
    let formula = notebook_003_formula();
    let params = formula.params();
    let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, notebook_003::NAMES);
    let values: Vec<f64> = params.iter().map(|(_, v)| *v).collect();
    assert_eq!(values, notebook_003::START);
    let forward = formula.forward().unwrap();
    let f5 = forward.iter().find(|(n, _)| n == "f5").unwrap().1;
    // The notebook prints f5 = 0.649864477526152 (15 significant digits).
    assert!((f5 - 0.649864477526152).abs() < 1e-15, "{f5}");
    assert_eq!(formula.output_name(), Some("f5"));
    assert_eq!(formula.loss_name(), "L");
}

#[test]
fn notebook_003_derivations_sum_paths_through_the_shared_bias() {
    let formula = notebook_003_formula();
    // The hand-written network of the notebook_003 example, on its own tape.
    let want = notebook_003::gradient(&notebook_003::START).unwrap();
    for ((name, start), want) in notebook_003::NAMES
        .iter()
        .zip(notebook_003::START)
        .zip(want)
    {
        let d = formula.explain(name, 0.3).unwrap();
        assert!(d.verified(), "{name}: {} vs {}", d.gradient, d.autodiff);
        close(d.gradient, want);
        // L = −ln f5 (y = 1): a central difference of the notebook's output.
        let h = 1e-6;
        let loss_at = |delta: f64| {
            let mut w = notebook_003::START;
            w[notebook_003::NAMES.iter().position(|n| n == name).unwrap()] += delta;
            -notebook_003::output(&w).unwrap().ln()
        };
        let numeric = (loss_at(h) - loss_at(-h)) / (2.0 * h);
        assert!((d.gradient - numeric).abs() < 1e-8, "{name}: {numeric}");
        assert_eq!(d.update, (0.3, start, start - 0.3 * d.autodiff));
    }
    // w0 reaches L three ways: through z3, through z4, and straight into z5; it is
    // added twice to each, so each path starts with ∂z/∂w0 = 2.
    let d = formula.explain("w0", 0.3).unwrap();
    let vias: Vec<String> = d.paths.iter().map(|p| p.via.join(" ")).collect();
    assert_eq!(vias, ["w0 z3 f3 z5 f5 L", "w0 z4 f4 z5 f5 L", "w0 z5 f5 L"]);
    for path in &d.paths {
        assert_eq!(path.factors[0].value, 2.0);
        let product: f64 = path.factors.iter().map(|f| f.value).product();
        assert_eq!(path.term, product);
    }
    // w13 has one path: ∂z3/∂w13 = x1, then σ′ = f3(1 − f3), then ∂z5/∂f3 = w35.
    let d = formula.explain("w13", 0.3).unwrap();
    let values: Vec<f64> = d.paths[0].factors.iter().map(|f| f.value).collect();
    let f3 = 1.0 / (1.0 + (-0.81f64).exp());
    close(values[0], 0.35);
    close(values[1], f3 * (1.0 - f3));
    close(values[2], 0.1);
    let text = d.text();
    assert!(text.contains("∂z3/∂w13 = x1 = 0.35"), "{text}");
    assert!(text.contains("f3(1 − f3)"), "{text}");
}
