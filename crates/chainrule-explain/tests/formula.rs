//! Formula networks: the parser refuses bad text with the line at fault, and every
//! derivation equals backprop and finite differences.

use chainrule::Error;
use chainrule_explain::formula::{Formula, MAX_PATHS};

#[track_caller]
fn refused(text: &str, line: usize, words: &[&str]) {
    match Formula::parse(text) {
        Err(Error::InvalidValue { field, message }) => {
            assert_eq!(field, format!("line {line}"), "{message}");
            for w in words {
                assert!(message.contains(w), "{message:?} lacks {w:?}");
            }
        }
        other => panic!("{text:?} gave {other:?}"),
    }
}

#[test]
fn bad_formulas_name_the_line_and_the_fault() {
    refused(
        "param w = 1\nL = w * v",
        2,
        &["`v`", "before it is defined"],
    );
    refused("param w = 1\nparam w = 2", 2, &["`w`", "already defined"]);
    refused("param w = one", 1, &["finite number"]);
    refused("param w = inf", 1, &["finite number"]);
    refused(
        "param w = 1\n\n# c\nL = foo(w)",
        4,
        &["unknown function `foo`"],
    );
    refused("param w = 1\nL = (w + 1", 2, &["expected `)`"]);
    refused("param w = 1\nL = w ** w", 2, &["exponent must be a number"]);
    refused("param w = 1\nL = w 2", 2, &["unexpected text"]);
    refused("param w = 1\nL w", 2, &["NAME = EXPRESSION"]);
    refused("param w = 1\nweight v = 2", 2, &["`weight`"]);
    refused("param w = 1\nloss A = w\nloss B = w", 3, &["second `loss`"]);
    refused("param 2w = 1", 1, &["not a name"]);
    refused("param exp = 1", 1, &["already defined"]);
    refused(
        &format!("param w = 1\nL = {}w{}", "(".repeat(500), ")".repeat(500)),
        2,
        &["nests more than 64"],
    );
    refused("param w = 1", 0, &["no statement computes a loss"]);
}

#[test]
fn derivations_equal_backprop_and_finite_differences() {
    // Every function, both exponent spellings, a parameter used by several
    // statements, and an output that is not the last statement.
    let source = |w: f64, v: f64| {
        format!(
            "input x = 0.7\nparam w = {w}\nparam v = {v}\n\
             a = tanh(x*w + v) + sqrt(abs(w) + 1)\n\
             b = relu(a*v - 0.1) + exp(-w^2) / (1 + v**2)\n\
             output o = sigmoid(a*b + w)\n\
             loss L = -log(o) + 0.5*(b - 1)**2"
        )
    };
    let (w, v) = (0.4, -0.3);
    let formula = Formula::parse(&source(w, v)).unwrap();
    let loss = |w: f64, v: f64| {
        let f = Formula::parse(&source(w, v)).unwrap();
        f.forward().unwrap().last().unwrap().1
    };
    let h = 1e-6;
    for (name, numeric) in [
        ("w", (loss(w + h, v) - loss(w - h, v)) / (2.0 * h)),
        ("v", (loss(w, v + h) - loss(w, v - h)) / (2.0 * h)),
    ] {
        let d = formula.explain(name, 0.1).unwrap();
        assert!(d.verified(), "{name}: {} vs {}", d.gradient, d.autodiff);
        assert!(
            (d.gradient - numeric).abs() < 1e-7,
            "{name}: {} vs {numeric}",
            d.gradient
        );
        assert!(d.paths.len() > 1, "{name} reaches L along several paths");
    }
    // The symbolic closed form agrees too.
    let closed = formula.expression("L", false).unwrap();
    assert!(formula.expression("nowhere", false).is_err());
    let env = [("w".to_string(), w), ("v".to_string(), v)]
        .into_iter()
        .collect();
    let d = formula.explain("v", 0.1).unwrap();
    let symbolic = closed.diff("v").eval(&env).unwrap();
    assert!(
        (symbolic - d.autodiff).abs() < 1e-12,
        "{symbolic} vs {}",
        d.autodiff
    );
}

#[test]
fn a_formula_with_too_many_paths_is_explained_by_direct_uses() {
    // Each layer doubles the paths: 2^8 = 256 paths from w to L.
    let mut text = String::from("param w = 0.5\nq0 = w");
    for k in 1..=8 {
        let p = k - 1;
        text += &format!("\na{k} = sigmoid(q{p})\nb{k} = q{p}*0.5\nq{k} = a{k} + b{k}");
    }
    text += "\nL = q8**2";
    let formula = Formula::parse(&text).unwrap();
    let d = formula.explain("w", 0.1).unwrap();
    assert!(d.by_consumer && d.paths.len() <= MAX_PATHS);
    assert!(d.verified(), "{} vs {}", d.gradient, d.autodiff);
}

#[test]
fn unknown_parameters_are_refused() {
    let formula = Formula::parse("input x = 1\nparam w = 2\nL = x*w").unwrap();
    assert!(
        formula.explain("x", 0.1).is_err(),
        "an input is not a parameter"
    );
    assert!(formula.explain("nope", 0.1).is_err());
}

#[test]
fn closed_forms_that_explode_are_refused() {
    // Each statement uses the one before twice: the closed form doubles each time.
    let mut text = String::from("param w = 0.5\nq0 = w");
    for k in 1..=40 {
        text += &format!("\nq{k} = sigmoid(q{p}) * tanh(q{p})", p = k - 1);
    }
    let formula = Formula::parse(&text).unwrap();
    assert!(formula.expression("q40", false).is_err());
    // The derivation does not expand anything: one path per statement.
    let d = formula.explain("w", 0.1).unwrap();
    assert!(d.verified(), "{} vs {}", d.gradient, d.autodiff);
}

#[test]
fn any_name_the_parser_accepts_is_rendered() {
    // Found by fuzzing: names starting with `_` or with a multi-byte letter before an
    // underscore made the LaTeX rendering panic.
    let formula =
        Formula::parse("param _w = 0.5\nparam σ2_x = 1.5\nparam é = 2\n_ = _w*σ2_x*é\nL_ = _**2")
            .unwrap();
    for (name, _) in formula.params() {
        let d = formula.explain(&name, 0.1).unwrap();
        assert!(d.verified(), "{name}");
        assert!(!d.markdown().is_empty() && !d.text().is_empty());
    }
}

/// A formula with more than MAX_PATHS paths from `w`, where `w` reaches the loss
/// directly and through an alias `a0 = w`.
fn aliased(consumers: usize) -> String {
    let mut text = String::from("input x = 0.5\ninput y = 1\nparam w = 0.3\na0 = w\n");
    for i in 0..consumers {
        text += &format!("b{i} = a0 * {}\n", 1.0 + i as f64 / 10.0);
    }
    let sum: Vec<String> = (0..consumers).map(|i| format!("b{i}")).collect();
    text += &format!(
        "output f = {} + w*x\nloss L = (f - y)**2\n",
        sum.join(" + ")
    );
    text
}

#[test]
fn an_alias_among_many_paths_counts_its_own_gradient_once() {
    // Past 64 paths the derivation sums ∂q/∂w · ∂L/∂q over w's direct uses; an alias
    // shared w's node on the tape, so its ∂L/∂a0 was all of w's gradient and the
    // sum counted the direct use twice.
    let f = Formula::parse(&aliased(70)).unwrap();
    let d = f.explain("w", 0.1).unwrap();
    assert!(d.by_consumer);
    assert!(d.verified(), "{} vs {}", d.gradient, d.autodiff);
}

#[test]
fn deep_long_and_wide_formulas_are_refused_or_explained_quickly() {
    // 30,000 signs or a 30,000-term sum overflowed the stack; 160 nested sigmoids took
    // half a minute; 400 parameters in one sum took minutes. Now: refused at once,
    // naming the line, or explained in work linear in the file.
    let minus = format!("param w = 1\nL = {}w", "-".repeat(30_000));
    refused(&minus, 2, &["nests more than 64"]);
    let sum = format!("param w = 1\nL = {}", vec!["w"; 30_000].join(" + "));
    refused(&sum, 2, &["more than 2000 operations"]);
    let mut nested = String::from("w");
    for _ in 0..160 {
        nested = format!("sigmoid({nested})");
    }
    refused(
        &format!("param w = 1\nL = {nested}"),
        2,
        &["nests more than 64"],
    );
    let mut wide = String::from("input x = 0.5\ninput y = 1\n");
    for i in 0..400 {
        wide += &format!("param w{i} = 0.{}\n", i % 9 + 1);
    }
    let terms: Vec<String> = (0..400).map(|i| format!("w{i}*x")).collect();
    wide += &format!("f = {}\nL = (f - y)**2\n", terms.join(" + "));
    let f = Formula::parse(&wide).unwrap();
    // Each derivation is linear in the file; a sample of the 400 keeps the test short.
    for (name, _) in f.params().into_iter().step_by(37) {
        let d = f.explain(&name, 0.1).unwrap();
        assert!(d.verified(), "{name}");
    }
}
