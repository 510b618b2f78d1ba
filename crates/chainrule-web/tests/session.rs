//! The playground's API (what the page calls) against independent computations.

use chainrule::data::{Target, synthetic};
use chainrule::loss::Loss;
use chainrule::nn::{Module, Sequential};
use chainrule::{Result, Tensor};
use chainrule_web::session::Session;
use serde_json::{Value, json};

fn settings(model: Value, extra: Value) -> String {
    let mut s = json!({
        "model": model,
        "data": {"name": "spiral", "samples": 30, "noise": 0.1},
        "loss": "cross_entropy",
        "optimizer": {"type": "sgd", "lr": 0.1},
        "batch_size": 30,
        "seed": 7,
    });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s.to_string()
}

fn linear_2_3() -> Value {
    json!({"layers": [{"type": "linear", "in": 2, "out": 3}]})
}

fn values(params: &Value, name: &str) -> Vec<f64> {
    params[name]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[test]
fn one_full_batch_sgd_step_matches_softmax_cross_entropy_by_hand() -> Result<()> {
    let mut s = Session::new(&settings(linear_2_3(), json!({})))?;
    let before = s.parameters();
    let (w, b) = (values(&before, "0.weight"), values(&before, "0.bias"));
    let (x, labels) = (s.points(), s.labels());
    let n = labels.len() as f64;
    // C = mean over rows of −log softmax(Wx + b)[class]; ∂C/∂z = (softmax − onehot)/N,
    // ∂C/∂W[j,k] = Σ ∂C/∂z_j · x_k, ∂C/∂b_j = Σ ∂C/∂z_j.
    let (mut gw, mut gb, mut loss) = (vec![0.0; 6], vec![0.0; 3], 0.0);
    for (row, &class) in x.chunks(2).zip(&labels) {
        let z: Vec<f64> = (0..3)
            .map(|j| w[j * 2] * row[0] + w[j * 2 + 1] * row[1] + b[j])
            .collect();
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
        loss -= (z[class as usize] - max - sum.ln()) / n;
        for j in 0..3 {
            let dz = ((z[j] - max).exp() / sum - f64::from(j == class as usize)) / n;
            gw[j * 2] += dz * row[0];
            gw[j * 2 + 1] += dz * row[1];
            gb[j] += dz;
        }
    }
    let losses = s.train(1)?;
    assert!((losses[0] - loss).abs() < 1e-12, "{} vs {loss}", losses[0]);
    let after = s.parameters();
    for (i, (new, old)) in values(&after, "0.weight").iter().zip(&w).enumerate() {
        assert!((new - (old - 0.1 * gw[i])).abs() < 1e-12);
    }
    for (i, (new, old)) in values(&after, "0.bias").iter().zip(&b).enumerate() {
        assert!((new - (old - 0.1 * gb[i])).abs() < 1e-12);
    }
    assert_eq!(s.steps(), 1);
    Ok(())
}

#[test]
fn the_points_are_the_librarys_synthetic_data_set() -> Result<()> {
    let s = Session::new(&settings(linear_2_3(), json!({})))?;
    let data = synthetic::generate::<f64>("spiral", 30, 0.1, 7)?;
    assert_eq!(s.points(), data.x.to_vec());
    let Target::Classes(classes) = data.target else {
        panic!("spiral has classes")
    };
    let labels: Vec<u32> = classes.iter().map(|&c| c as u32).collect();
    assert_eq!(s.labels(), labels);
    Ok(())
}

#[test]
fn explain_returns_the_same_derivation_as_the_explain_crate() -> Result<()> {
    let model = json!({"layers": [
        {"type": "linear", "in": 2, "out": 4}, {"type": "tanh"},
        {"type": "linear", "in": 4, "out": 3}]});
    let s = Session::new(&settings(model.clone(), json!({})))?;
    let library = Sequential::<f64>::from_json(&model.to_string(), 7)?;
    let data = synthetic::generate::<f64>("spiral", 30, 0.1, 7)?.rows(&[5])?;
    let which = chainrule_explain::derive::ParamElement::parse("0.weight[1,0]")?;
    let d = chainrule_explain::derive::explain(
        &library,
        &data.x,
        &data.target,
        Loss::CrossEntropy,
        0.1,
        &which,
    )?;
    assert_eq!(s.explain("0.weight[1,0]", 5, "markdown")?, d.markdown());
    assert_eq!(s.explain("0.weight[1,0]", 5, "json")?, d.json().to_string());
    assert_eq!(s.elements().len(), 4 * 2 + 4 + 3 * 4 + 3);
    assert!(s.elements().contains(&"2.bias[2]".to_string()));
    Ok(())
}

#[test]
fn graph_and_gradcheck_run_on_the_current_network() -> Result<()> {
    let model = json!({"layers": [
        {"type": "linear", "in": 2, "out": 3}, {"type": "relu"},
        {"type": "linear", "in": 3, "out": 3}]});
    let s = Session::new(&settings(model, json!({})))?;
    assert!(s.graph(0)?.contains("<svg"));
    let (table, passed) = s.gradcheck(4)?;
    assert!(passed, "{table}");
    assert!(table.contains("0.weight"));
    Ok(())
}

#[test]
fn the_grid_prediction_equals_the_models_forward_pass_at_the_cell_centres() -> Result<()> {
    let mut s = Session::new(&settings(linear_2_3(), json!({})))?;
    let grid = s.predict_grid((-1.0, 1.0), (0.0, 2.0), 2, 1)?;
    // Cell centres (−0.5, 1) and (0.5, 1).
    let model = Sequential::<f64>::from_json(&linear_2_3().to_string(), 7)?;
    let tape = chainrule::Tape::new();
    let params = model.bind(&tape);
    let x = tape.constant(Tensor::from_vec(vec![-0.5, 1.0, 0.5, 1.0], &[2, 2])?);
    let expected = model.forward(&params, x)?.value().to_vec();
    assert_eq!(grid.len(), expected.len());
    for (a, b) in grid.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    assert_eq!(s.outputs(), 3);
    Ok(())
}

#[test]
fn a_small_network_learns_the_moons() -> Result<()> {
    let model = json!({"layers": [
        {"type": "linear", "in": 2, "out": 16}, {"type": "tanh"},
        {"type": "linear", "in": 16, "out": 2}]});
    let extra = json!({"data": {"name": "moons", "samples": 200},
                       "optimizer": {"type": "adam", "lr": 0.03}, "batch_size": 20});
    let mut s = Session::new(&settings(model, extra))?;
    let first = s.loss()?;
    let losses = s.train(400)?;
    assert_eq!(losses.len(), 400);
    assert!(s.loss()? < first / 3.0, "{first} → {}", s.loss()?);
    assert!(s.accuracy()? > 0.9, "accuracy {}", s.accuracy()?);
    Ok(())
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let good = linear_2_3();
    for bad in [
        "not json".to_string(),
        json!({}).to_string(),
        settings(good.clone(), json!({"data": {"name": "nope"}})),
        settings(good.clone(), json!({"data": {"samples": 0}})),
        settings(good.clone(), json!({"loss": "nope"})),
        settings(good.clone(), json!({"optimizer": {"type": "nope"}})),
        settings(good.clone(), json!({"batch_size": 0})),
        settings(good.clone(), json!({"seed": -1})),
        settings(
            json!({"layers": [{"type": "linear", "in": 3, "out": 3}]}),
            json!({}),
        ),
        settings(
            json!({"layers": [{"type": "linear", "in": 2, "out": 2}]}),
            json!({}),
        ),
    ] {
        assert!(Session::new(&bad).is_err(), "{bad}");
    }
    let mut s = Session::new(&settings(good, json!({}))).unwrap();
    assert!(s.predict_grid((0.0, 1.0), (0.0, 1.0), 0, 5).is_err());
    assert!(
        s.predict_grid((0.0, 1.0), (0.0, 1.0), 100_000, 100_000)
            .is_err()
    );
    assert!(s.predict_grid((0.0, f64::NAN), (0.0, 1.0), 2, 2).is_err());
    assert!(s.explain("0.weight[9,9]", 0, "markdown").is_err());
    assert!(s.explain("garbage", 0, "markdown").is_err());
    assert!(s.explain("0.weight[0,0]", 30, "markdown").is_err());
    assert!(s.explain("0.weight[0,0]", 0, "pdf").is_err());
    assert!(s.graph(1000).is_err());
    assert!(s.gradcheck(0).is_err());
    assert!(s.gradcheck(1000).is_err());
}
