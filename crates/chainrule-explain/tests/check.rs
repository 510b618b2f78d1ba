//! Model gradient checks: every layer/loss/activation combination passes; a wrong
//! derivative fails and is named.

use chainrule::autodiff::{InputGrads, Rule};
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
    for activation in [
        "relu",
        "leaky_relu",
        "sigmoid",
        "tanh",
        "softmax",
        "identity",
    ] {
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

/// x² with a wrong derivative (x instead of 2x): the kind of bug gradcheck exists for.
#[derive(Debug)]
struct BadSquare;

impl Rule<f64> for BadSquare {
    fn label(&self) -> String {
        "bad_square".into()
    }
    fn forward(&self, x: &[&Tensor<f64>]) -> Result<Tensor<f64>> {
        Ok(x[0].map(|v| v * v))
    }
    fn backward(
        &self,
        x: &[&Tensor<f64>],
        _: &Tensor<f64>,
        g: &Tensor<f64>,
        _: &[bool],
    ) -> Result<InputGrads<f64>> {
        Ok(vec![Some(g.mul(x[0])?)])
    }
}

#[derive(Clone)]
struct SquaredLinear {
    params: Vec<Param<f64>>,
}

impl Module<f64> for SquaredLinear {
    fn params(&self) -> &[Param<f64>] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [Param<f64>] {
        &mut self.params
    }
    fn forward<'t>(&self, p: &[Var<'t, f64>], x: Var<'t, f64>) -> Result<Var<'t, f64>> {
        let z = x.matmul(p[0].t()?)?;
        z.tape().apply(Box::new(BadSquare), &[z])
    }
}

#[test]
fn a_wrong_local_derivative_fails_and_is_named() {
    let model = SquaredLinear {
        params: vec![Param::new(
            "0.weight",
            Tensor::rand_uniform(&[2, 3], -1.0, 1.0, 1).unwrap(),
        )],
    };
    let x = Tensor::rand_uniform(&[4, 3], -1.0, 1.0, 2).unwrap();
    let y = Target::Values(Tensor::zeros(&[4, 2]));
    let report = check_model(&model, &x, &y, Loss::Mse, 1e-6, 1e-6).unwrap();
    assert!(!report.passed());
    let names: Vec<&str> = report.culprits.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(names, ["bad_square"], "only the wrong rule is blamed");
}
