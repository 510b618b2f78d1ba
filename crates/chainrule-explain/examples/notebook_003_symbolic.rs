//! Notebook 003's network written out as one formula, with its shared bias w0, and the
//! partial derivatives of its binary cross-entropy loss, as the notebook gets them
//! from sympy; each derivative is evaluated at the starting weights next to autodiff.
//!
//! `cargo run -p chainrule-explain --example notebook_003_symbolic [-- --latex | --json]`
//! (`--json` is what tools/check_sympy.py reads).

#[path = "../../chainrule/examples/notebook_003.rs"]
#[allow(dead_code)]
mod notebook_003;

use chainrule::{Result, Tape};
use chainrule_explain::symbolic::{Expr, from_scalar_tape};

fn main() -> Result<()> {
    let format = std::env::args().nth(1).unwrap_or_default();
    let tape = Tape::<f64>::new();
    let vars: Vec<_> = notebook_003::START
        .iter()
        .map(|&w| tape.param_scalar(w))
        .collect();
    let (f5, loss) = notebook_003::network(&vars);
    let names = vars
        .iter()
        .zip(notebook_003::NAMES)
        .map(|(v, n)| (v.id(), n.to_string()))
        .collect();
    let output = from_scalar_tape(&tape, f5.id(), &names)?;
    let loss_expr = from_scalar_tape(&tape, loss.id(), &names)?;
    let env = notebook_003::NAMES
        .iter()
        .map(|n| n.to_string())
        .zip(notebook_003::START)
        .collect();
    let autodiff = notebook_003::gradient(&notebook_003::START)?;
    let render = |e: &Expr| {
        if format == "--latex" {
            e.latex()
        } else {
            e.text()
        }
    };
    if format == "--json" {
        let derivatives: serde_json::Map<String, serde_json::Value> = notebook_003::NAMES
            .iter()
            .zip(autodiff)
            .map(|(n, g)| {
                (
                    n.to_string(),
                    serde_json::json!({"sympy": loss_expr.diff(n).sympy(), "autodiff": g}),
                )
            })
            .collect();
        let params: serde_json::Map<String, serde_json::Value> = notebook_003::NAMES
            .iter()
            .zip(notebook_003::START)
            .map(|(n, v)| (n.to_string(), v.into()))
            .collect();
        println!(
            "{}",
            serde_json::json!({"outputs": [[output.sympy()]], "output_value": output.eval(&env), "loss": loss_expr.sympy(), "params": params, "inputs": {}, "derivatives": derivatives})
        );
        return Ok(());
    }
    println!(
        "f5 = {}\n   = {:?} at the starting weights (the notebook: 0.649864477526152)\n",
        render(&output),
        output.eval(&env).unwrap_or(f64::NAN)
    );
    println!("L = {}\n", render(&loss_expr));
    for (name, g) in notebook_003::NAMES.iter().zip(autodiff) {
        let d = loss_expr.diff(name);
        println!(
            "∂L/∂{name} = {}\n    = {:?}   (autodiff: {g:?})\n",
            render(&d),
            d.eval(&env).unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
