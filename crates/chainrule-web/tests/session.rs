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

fn notebook_file(name: &str, file: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/notebooks")
        .join(name)
        .join(file);
    std::fs::read(path).unwrap()
}

/// Notebook 000 as the page's preset builds it: its files, SSE, full-batch SGD at
/// the notebook's η = 0.01.
fn notebook_000() -> Result<Session> {
    let model: Value = serde_json::from_slice(&notebook_file("000", "model.json")).unwrap();
    let settings = json!({"model": model, "loss": "sse",
                          "optimizer": {"type": "sgd", "lr": 0.01}, "batch_size": 1000});
    let mut s = Session::with_data(
        &settings.to_string(),
        &notebook_file("000", "x.npy"),
        &notebook_file("000", "y.npy"),
    )?;
    s.load_parameters(&notebook_file("000", "params.safetensors"))?;
    Ok(s)
}

#[test]
fn the_notebook_000_preset_steps_to_the_notebooks_new_weights() -> Result<()> {
    let mut s = notebook_000()?;
    s.train(1)?;
    let p = s.parameters();
    // The notebook's weights after one step: w1 → 0.99, w2 → 0.49, w5 → 0.985,
    // w6 → 0.995 (w1 = 0.weight[0,0], w2 = 0.weight[1,0]).
    let close = |got: f64, want: f64| assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    close(values(&p, "0.weight")[0], 0.99);
    close(values(&p, "0.weight")[2], 0.49);
    close(values(&p, "2.weight")[0], 0.985);
    close(values(&p, "2.weight")[1], 0.995);
    Ok(())
}

#[test]
fn the_trace_of_a_sample_matches_autodiff_and_the_notebooks_forward_pass() -> Result<()> {
    let s = notebook_000()?;
    let t = s.trace(0)?;
    // Notebook 000: the output z = a = 2.5 against y = 2, so C = (2.5 − 2)² = 0.25.
    assert_eq!(t["layers"][3]["value"], json!([2.5]));
    assert_eq!(t["loss"], json!(0.25));
    // Its gradients are those of a one-sample batch, and "new" is θ − η·∂C/∂θ.
    let grads =
        chainrule::train::loss_and_grads(s.model(), &s.data().x, &s.data().target, Loss::Sse)?.1;
    for (p, g) in s.model().params().iter().zip(grads) {
        let traced = &t["params"][&p.name];
        let want = g.unwrap().to_vec();
        assert_eq!(traced["grad"], json!(want), "{}", p.name);
        for ((new, old), g) in traced["new"]
            .as_array()
            .unwrap()
            .iter()
            .zip(p.value.to_vec())
            .zip(&want)
        {
            assert_eq!(new.as_f64().unwrap(), old - 0.01 * g);
        }
    }
    assert_eq!(t["params"]["2.weight"]["new"][0], json!(0.985));
    Ok(())
}

#[test]
fn parameters_written_as_safetensors_load_back_exactly() -> Result<()> {
    let mut a = Session::new(&settings(linear_2_3(), json!({})))?;
    a.train(3)?;
    let bytes = a.parameters_safetensors()?;
    let read = chainrule::io::safetensors_from_bytes::<f64>(&bytes, "p")?;
    assert_eq!(read, a.model().state_dict());
    let mut b = Session::new(&settings(linear_2_3(), json!({"seed": 99})))?;
    assert_ne!(b.parameters(), a.parameters());
    b.load_parameters(&bytes)?;
    assert_eq!(b.parameters(), a.parameters());
    assert!(b.load_parameters(b"junk").is_err());
    let wider = json!({"layers": [{"type": "linear", "in": 2, "out": 4}]});
    let mut c = Session::new(&settings(wider, json!({"data": {"name": "blobs"}})))?;
    assert!(c.load_parameters(&bytes).is_err());
    Ok(())
}

#[test]
fn the_validation_split_holds_out_points_and_scores_them() -> Result<()> {
    let extra = json!({"data": {"name": "spiral", "samples": 30, "noise": 0.1, "validation": 0.2}});
    let mut s = Session::new(&settings(linear_2_3(), extra))?;
    assert_eq!((s.labels().len(), s.validation_labels().len()), (24, 6));
    // Together they are the whole generated set.
    let whole = synthetic::generate::<f64>("spiral", 30, 0.1, 7)?.x.to_vec();
    let mut rows: Vec<Vec<u64>> = whole
        .chunks(2)
        .map(|r| r.iter().map(|v| v.to_bits()).collect())
        .collect();
    let mut both: Vec<Vec<u64>> = s
        .points()
        .chunks(2)
        .chain(s.validation_points().chunks(2))
        .map(|r| r.iter().map(|v| v.to_bits()).collect())
        .collect();
    rows.sort();
    both.sort();
    assert_eq!(rows, both);
    // Accuracy by hand from the grid prediction at the validation points.
    let points = s.validation_points();
    let labels = s.validation_labels();
    let mut right = 0;
    for (p, &k) in points.chunks(2).zip(&labels) {
        let out = s.predict_grid((p[0], p[0]), (p[1], p[1]), 1, 1)?;
        let best = (0..3).fold(0, |b, i| if out[i] > out[b] { i } else { b });
        right += usize::from(best == k as usize);
    }
    let acc = s.validation_accuracy()?.unwrap();
    assert!((acc - right as f64 / 6.0).abs() < 1e-15);
    assert!(s.validation_loss()?.unwrap() > 0.0);
    let mut none = Session::new(&settings(linear_2_3(), json!({})))?;
    assert_eq!(none.validation_accuracy()?, None);
    Ok(())
}

#[test]
fn a_layer_grid_of_the_last_layer_is_the_prediction_and_of_a_hidden_one_its_activation()
-> Result<()> {
    let model = json!({"layers": [
        {"type": "linear", "in": 2, "out": 3}, {"type": "tanh"},
        {"type": "linear", "in": 3, "out": 3}]});
    let mut s = Session::new(&settings(model, json!({})))?;
    let (xr, yr) = ((-1.0, 1.0), (-2.0, 0.5));
    assert_eq!(
        s.layer_grid(2, xr, yr, 4, 3)?,
        s.predict_grid(xr, yr, 4, 3)?
    );
    let hidden = s.layer_grid(1, xr, yr, 4, 3)?;
    let p = s.parameters();
    let (w, b) = (values(&p, "0.weight"), values(&p, "0.bias"));
    // Cell (i = 1, j = 2): x = −1 + 2·1.5/4 = −0.25, y = −2 + 2.5·2.5/3.
    let (x, y) = (-0.25, -2.0 + 2.5 * 2.5 / 3.0);
    for unit in 0..3 {
        let want = (w[unit * 2] * x + w[unit * 2 + 1] * y + b[unit]).tanh();
        let got = hidden[(2 * 4 + 1) * 3 + unit];
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
    assert!(s.layer_grid(3, xr, yr, 4, 3).is_err());
    Ok(())
}

#[test]
fn the_blobs_are_three_balanced_clusters_around_their_centres() -> Result<()> {
    let model = json!({"layers": [{"type": "linear", "in": 2, "out": 3}]});
    let extra = json!({"data": {"name": "blobs", "samples": 600, "noise": 0.3}});
    let s = Session::new(&settings(model.clone(), extra.clone()))?;
    assert_eq!(s.points(), Session::new(&settings(model, extra))?.points());
    let (p, labels) = (s.points(), s.labels());
    for k in 0..3u32 {
        let members: Vec<&[f64]> = p
            .chunks(2)
            .zip(&labels)
            .filter(|(_, l)| **l == k)
            .map(|(r, _)| r)
            .collect();
        assert_eq!(members.len(), 200);
        let angle = std::f64::consts::FRAC_PI_2 + k as f64 * 2.0 * std::f64::consts::PI / 3.0;
        let mean_x = members.iter().map(|r| r[0]).sum::<f64>() / 200.0;
        let mean_y = members.iter().map(|r| r[1]).sum::<f64>() / 200.0;
        // The mean of 200 deviates of σ = 0.3 is within 4σ/√200 ≈ 0.085 of the centre.
        assert!((mean_x - 1.5 * angle.cos()).abs() < 0.085, "{k}: {mean_x}");
        assert!((mean_y - 1.5 * angle.sin()).abs() < 0.085, "{k}: {mean_y}");
        let var = members.iter().map(|r| (r[0] - mean_x).powi(2)).sum::<f64>() / 199.0;
        assert!((var.sqrt() - 0.3).abs() < 0.06, "{k}: σ {}", var.sqrt());
    }
    Ok(())
}

#[test]
fn notebook_003s_formula_explains_every_parameter_as_the_explain_crate() -> Result<()> {
    let text = String::from_utf8(notebook_file("003", "network.formula")).unwrap();
    let d: Value = serde_json::from_str(&chainrule_web::session::explain_formula(
        &text, "w35", 0.3, "json",
    )?)
    .unwrap();
    let formula = chainrule_explain::formula::Formula::parse(&text)?;
    // ∂L/∂w35 by a central difference of the formula's own loss (step 1e-6).
    let loss_at = |delta: f64| -> f64 {
        let mut f = formula.clone();
        f.set_param("w35", 0.1 + delta).unwrap();
        let values = f.forward().unwrap();
        values.iter().find(|(n, _)| n == "L").unwrap().1
    };
    let numeric = (loss_at(1e-6) - loss_at(-1e-6)) / 2e-6;
    let gradient = d["gradient"].as_f64().unwrap();
    assert!((gradient - numeric).abs() < 1e-8, "{gradient} vs {numeric}");
    assert!(chainrule_web::session::explain_formula(&text, "nope", 0.3, "json").is_err());
    Ok(())
}
