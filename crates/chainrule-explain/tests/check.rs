//! Model gradient checks: every layer/loss/activation combination passes; a wrong
//! derivative fails and is named.

use chainrule::autodiff::{Elementwise, inject_fault};
use chainrule::loss::{Loss, Target};
use chainrule::nn::{Module, Param, Sequential};
use chainrule::{Result, Tensor, Var};
use chainrule_explain::check::check_model;

fn model(activation: &str, outputs: usize, last: Option<&str>) -> Sequential<f64> {
    let mut layers = vec![
        serde_json::json!({"type": "linear", "in": 3, "out": 5}),
        serde_json::json!({"type": activation}),
        serde_json::json!({"type": "linear", "in": 5, "out": outputs}),
    ];
    if let Some(last) = last {
        layers.push(serde_json::json!({"type": last}));
    }
    Sequential::from_json(&serde_json::json!({ "layers": layers }).to_string(), 3).unwrap()
}

#[test]
fn every_layer_loss_and_activation_combination_passes() {
    let x = Tensor::<f64>::rand_uniform(&[6, 3], -1.5, 1.5, 4).unwrap();
    let values = Target::Values(Tensor::rand_uniform(&[6, 2], -1.0, 1.0, 5).unwrap());
    let probabilities = Target::Values(Tensor::rand_uniform(&[6, 2], 0.05, 0.95, 6).unwrap());
    let activations = Elementwise::LAYERS.map(Elementwise::name);
    for activation in activations.into_iter().chain(["softmax", "identity"]) {
        let cases: [(Loss, Sequential<f64>, &Target<f64>); 8] = [
            (Loss::Mse, model(activation, 2, None), &values),
            (Loss::Sse, model(activation, 2, None), &values),
            (Loss::HalfSse, model(activation, 2, None), &values),
            (Loss::Mae, model(activation, 2, None), &values),
            (Loss::Huber, model(activation, 2, Some("tanh")), &values),
            (
                Loss::Bce,
                model(activation, 2, Some("sigmoid")),
                &probabilities,
            ),
            (Loss::BceLogits, model(activation, 2, None), &probabilities),
            (
                Loss::CrossEntropy,
                model(activation, 2, None),
                &Target::Classes(vec![0, 1, 1, 0, 1, 0]),
            ),
        ];
        for (loss, m, target) in cases {
            let report = check_model(&m, &x, target, loss, 1e-6, 1e-6).unwrap();
            assert!(
                report.passed(),
                "{activation} with {loss:?}:\n{}",
                report.table()
            );
        }
    }
}

/// A layer whose tanh has a wrong derivative (doubled, by the test builds' fault
/// injection): the kind of bug gradcheck exists for.
#[derive(Clone)]
struct WrongTanh {
    params: Vec<Param<f64>>,
}

impl Module<f64> for WrongTanh {
    fn params(&self) -> &[Param<f64>] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [Param<f64>] {
        &mut self.params
    }
    fn forward<'t>(&self, p: &[Var<'t, f64>], x: Var<'t, f64>) -> Result<Var<'t, f64>> {
        Ok(x.matmul(p[0].t()?)?.tanh())
    }
}

#[test]
fn a_wrong_local_derivative_fails_and_is_named() {
    let model = WrongTanh {
        params: vec![Param::new(
            "0.weight",
            Tensor::rand_uniform(&[2, 3], -1.0, 1.0, 1).unwrap(),
        )],
    };
    let x = Tensor::rand_uniform(&[4, 3], -1.0, 1.0, 2).unwrap();
    let y = Target::Values(Tensor::zeros(&[4, 2]));
    inject_fault(Some("tanh"));
    let report = check_model(&model, &x, &y, Loss::Mse, 1e-6, 1e-6);
    inject_fault(None);
    let report = report.unwrap();
    assert!(!report.passed());
    let names: Vec<&str> = report.culprits.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(names, ["tanh"], "only the wrong operation is blamed");
}
