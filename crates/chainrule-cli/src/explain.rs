//! `chainrule explain`: chain-rule derivations with numbers.

use anyhow::{Result, anyhow, bail};
use chainrule::Tensor;
use chainrule::data::Target;
use chainrule::io::{read_npy, read_safetensors};
use chainrule::loss::Loss;
use chainrule::nn::{Mode, Module, Sequential};
use chainrule_explain::derive::{ParamElement, all_elements, explain};
use chainrule_explain::formula::Formula;
use chainrule_explain::spatial;
use std::path::PathBuf;

/// A model, its parameters, a batch and a loss: a folder with model.json,
/// params.safetensors, x.npy, y.npy and explain.json, and/or explicit files.
#[derive(clap::Args, Debug)]
pub struct Inputs {
    /// A folder holding model.json, params.safetensors, x.npy, y.npy and explain.json
    /// (loss, lr), as examples/notebooks/*; flags override its files.
    pub dir: Option<PathBuf>,
    /// Model JSON.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Parameters (safetensors).
    #[arg(long)]
    pub params: Option<PathBuf>,
    /// Inputs: one sample or a small batch (.npy).
    #[arg(long)]
    pub x: Option<PathBuf>,
    /// Targets (.npy).
    #[arg(long)]
    pub y: Option<PathBuf>,
    /// Loss name.
    #[arg(long)]
    pub loss: Option<String>,
    /// A network written as named scalar formulas (the folder's network.formula, if
    /// it has one): see examples/notebooks/003.
    #[arg(long)]
    pub formula: Option<PathBuf>,
    /// Run the model in evaluation mode (batch norm's running statistics, no
    /// dropout); training mode otherwise, as `grad`.
    #[arg(long)]
    pub eval: bool,
    /// The seed of dropout's masks in training mode (as `grad --seed`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `chainrule explain` arguments.
#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Learning rate of the update shown.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Parameter element, e.g. 2.weight[0,1] or 0.bias[1]; all of them when omitted.
    #[arg(long)]
    pub param: Option<String>,
    /// Output: text (Unicode), markdown (with LaTeX) or json.
    #[arg(long, default_value = "text")]
    pub format: String,
}

fn pick(flag: &Option<PathBuf>, dir: &Option<PathBuf>, name: &str) -> Result<PathBuf> {
    match (flag, dir) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(d)) => Ok(d.join(name)),
        (None, None) => bail!(
            "--{}: needed (or give a folder holding {name})",
            name.split('.').next().unwrap_or(name)
        ),
    }
}

/// The loaded inputs, in f64 (explanations and checks need exact numbers).
pub struct Problem {
    pub model: Sequential<f64>,
    pub x: chainrule::Tensor<f64>,
    pub y: Target<f64>,
    pub loss: Loss,
    /// The learning rate explain.json gives, if any.
    pub lr: Option<f64>,
}

/// The folder's explain.json (loss, lr), or an empty object.
fn settings(args: &Inputs) -> Result<serde_json::Value> {
    Ok(match &args.dir {
        Some(dir) if dir.join("explain.json").is_file() => {
            let path = dir.join("explain.json");
            serde_json::from_str(&chainrule::io::read_text(&path)?)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?
        }
        _ => serde_json::json!({}),
    })
}

/// The formula network the inputs name (`--formula`, or the folder's
/// network.formula), with explain.json's learning rate; `None` for a layer stack.
fn load_formula(args: &Inputs) -> Result<Option<(Formula, Option<f64>)>> {
    let path = match (&args.formula, &args.dir) {
        (Some(path), _) => path.clone(),
        (None, Some(dir)) if dir.join("network.formula").is_file() => dir.join("network.formula"),
        _ => return Ok(None),
    };
    let text = String::from_utf8(chainrule::io::read_file(&path)?)
        .map_err(|_| anyhow!("{}: not UTF-8 text", path.display()))?;
    let formula = Formula::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Some((formula, settings(args)?["lr"].as_f64())))
}

pub fn load(args: &Inputs) -> Result<Problem> {
    let settings = settings(args)?;
    let model_path = pick(&args.model, &args.dir, "model.json")?;
    let params_path = pick(&args.params, &args.dir, "params.safetensors")?;
    let x_path = pick(&args.x, &args.dir, "x.npy")?;
    let y_path = pick(&args.y, &args.dir, "y.npy")?;
    let loss_name = args
        .loss
        .clone()
        .or_else(|| settings["loss"].as_str().map(String::from))
        .ok_or_else(|| anyhow!("--loss: needed"))?;
    let loss = Loss::from_name(&loss_name).map_err(|e| anyhow!("--{e}"))?;

    let text = chainrule::io::read_text(&model_path)?;
    let mut model = Sequential::<f64>::from_json(&text, 0)
        .map_err(|e| anyhow!("{}: {e}", model_path.display()))?;
    model
        .load(read_safetensors::<f64>(&params_path).or_else(|_| {
            read_safetensors::<f32>(&params_path)
                .map(|m| m.into_iter().map(|(k, v)| (k, v.cast())).collect())
        })?)
        .map_err(|e| anyhow!("{}: {e}", params_path.display()))?;
    if args.eval {
        model.set_mode(Mode::Eval);
    } else {
        model.set_noise_key(chainrule::train::noise_key(args.seed, 0));
    }
    let x = read_npy(&x_path)?.to_tensor::<f64>()?;
    model
        .check_input(&x)
        .map_err(|e| anyhow!("{}: {e}", x_path.display()))?;
    let outputs = model.output_features().unwrap_or(x.shape()[1]);
    let y = Target::from_npy(&read_npy(&y_path)?, loss, x.shape()[0], outputs)
        .map_err(|e| anyhow!("{}: {e}", y_path.display()))?;
    if x.shape()[0] > 64 {
        bail!(
            "{}: {} samples; explain shows every sample's chain, so give at most 64",
            x_path.display(),
            x.shape()[0]
        );
    }
    Ok(Problem {
        model,
        x,
        y,
        loss,
        lr: settings["lr"].as_f64(),
    })
}

pub fn run(args: &ExplainArgs) -> Result<()> {
    if let Some((formula, lr)) = load_formula(&args.inputs)? {
        return explain_formula(&formula, args.lr.or(lr).unwrap_or(0.01), args);
    }
    let Problem {
        model,
        x,
        y,
        loss,
        lr,
    } = load(&args.inputs)?;
    let lr = args.lr.or(lr).unwrap_or(0.01);
    if x.shape()[0] > 64 {
        bail!(
            "x: {} samples; explain shows every sample's chain, so give at most 64",
            x.shape()[0]
        );
    }
    if spatial::is_tensor_network(&model) {
        return explain_sums(&model, &x, &y, loss, lr, args);
    }
    let elements = match &args.param {
        Some(p) => vec![ParamElement::parse(p).map_err(|e| anyhow!("--{e}"))?],
        None => all_elements(&model),
    };
    let mut derivations = Vec::with_capacity(elements.len());
    for element in &elements {
        derivations.push(explain(&model, &x, &y, loss, lr, element).map_err(|e| anyhow!("--{e}"))?);
    }
    show(&derivations, &args.format, "the chain's product")
}

/// What `explain` prints of a derivation, whichever kind it is.
trait Shown {
    fn text(&self) -> String;
    fn markdown(&self) -> String;
    fn json(&self) -> serde_json::Value;
    fn verified(&self) -> bool;
    /// The parameter element, the derivation's gradient, and autodiff's.
    fn outcome(&self) -> (&str, f64, f64);
}

/// Both derivation kinds have the same methods and fields under the same names.
macro_rules! shown {
    ($($kind:ty),*) => {$(
        impl Shown for $kind {
            fn text(&self) -> String {
                self.text()
            }
            fn markdown(&self) -> String {
                self.markdown()
            }
            fn json(&self) -> serde_json::Value {
                self.json()
            }
            fn verified(&self) -> bool {
                self.verified()
            }
            fn outcome(&self) -> (&str, f64, f64) {
                (&self.param, self.gradient, self.autodiff)
            }
        }
    )*};
}

shown!(
    chainrule_explain::derive::Derivation,
    spatial::SumDerivation
);

/// Prints `derivations` in `format` (text, markdown or json), then fails naming the
/// first whose `what` (its product, its sum) differs from autodiff.
fn show<D: Shown>(derivations: &[D], format: &str, what: &str) -> Result<()> {
    let blocks = |f: fn(&D) -> String| derivations.iter().map(f).collect::<Vec<_>>().join("\n");
    match format {
        "text" => print!("{}", blocks(D::text)),
        "markdown" => print!("{}", blocks(D::markdown)),
        "json" => println!(
            "{}",
            serde_json::Value::Array(derivations.iter().map(D::json).collect())
        ),
        other => bail!("--format: {other:?} must be text, markdown or json"),
    }
    if let Some(bad) = derivations.iter().find(|d| !d.verified()) {
        let (param, gradient, autodiff) = bad.outcome();
        bail!("{param}: {what} {gradient} differs from autodiff's {autodiff}");
    }
    Ok(())
}

/// `chainrule explain` on a network of tensor layers (convolution, pooling,
/// normalisation, dropout): each gradient as its sum over samples and positions; with
/// no `--param`, each parameter tensor's element with the largest gradient.
fn explain_sums(
    model: &Sequential<f64>,
    x: &Tensor<f64>,
    y: &Target<f64>,
    loss: Loss,
    lr: f64,
    args: &ExplainArgs,
) -> Result<()> {
    let elements = match &args.param {
        Some(p) => vec![p.clone()],
        None => spatial::largest_elements(model, x, y, loss)?,
    };
    let derivations = elements
        .iter()
        .map(|e| spatial::explain_element(model, x, y, loss, lr, e).map_err(|e| anyhow!("--{e}")))
        .collect::<Result<Vec<_>>>()?;
    show(&derivations, &args.format, "the sum")
}

/// `chainrule explain` on a formula network: the forward pass, then one derivation
/// per parameter (a sum over the paths from the parameter to the loss).
fn explain_formula(formula: &Formula, lr: f64, args: &ExplainArgs) -> Result<()> {
    let names: Vec<String> = match &args.param {
        Some(p) => vec![p.clone()],
        None => formula.params().into_iter().map(|(n, _)| n).collect(),
    };
    let derivations = names
        .iter()
        .map(|n| formula.explain(n, lr).map_err(|e| anyhow!("--{e}")))
        .collect::<Result<Vec<_>>>()?;
    let forward = formula.forward()?;
    let role = |name: &str| {
        if Some(name) == formula.output_name() {
            " (output)"
        } else if name == formula.loss_name() {
            " (loss)"
        } else {
            ""
        }
    };
    let given: std::collections::BTreeSet<String> = formula
        .params()
        .into_iter()
        .chain(formula.inputs())
        .map(|(name, _)| name)
        .collect();
    let computed: Vec<&(String, f64)> =
        forward.iter().filter(|(n, _)| !given.contains(n)).collect();
    match args.format.as_str() {
        "text" => {
            println!("forward pass:");
            for (name, value) in &computed {
                println!("  {name} = {value:?}{}", role(name));
            }
            println!();
            let blocks: Vec<String> = derivations.iter().map(|d| d.text()).collect();
            print!("{}", blocks.join("\n"));
        }
        "markdown" => {
            println!("| quantity | value |\n| --- | --- |");
            for (name, value) in &computed {
                println!("| `{name}`{} | {value:?} |", role(name));
            }
            println!();
            let blocks: Vec<String> = derivations.iter().map(|d| d.markdown()).collect();
            print!("{}", blocks.join("\n"));
        }
        "json" => {
            let values: serde_json::Map<String, serde_json::Value> = forward
                .iter()
                .map(|(n, v)| (n.clone(), (*v).into()))
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "forward": values,
                    "output": formula.output_name(),
                    "loss": formula.loss_name(),
                    "derivations": derivations.iter().map(|d| d.json()).collect::<Vec<_>>(),
                })
            );
        }
        other => bail!("--format: {other:?} must be text, markdown or json"),
    }
    if let Some(bad) = derivations.iter().find(|d| !d.verified()) {
        bail!(
            "{}: the paths' sum {} differs from autodiff's {}",
            bad.param,
            bad.gradient,
            bad.autodiff
        );
    }
    Ok(())
}

/// `chainrule gradcheck` arguments.
#[derive(clap::Args, Debug)]
pub struct GradcheckArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Largest accepted error, |backprop − numeric| / max(1, |backprop|, |numeric|).
    #[arg(long, default_value_t = 1e-6)]
    pub tolerance: f64,
    /// Finite-difference step.
    #[arg(long, default_value_t = 1e-6)]
    pub step: f64,
}

pub fn gradcheck(args: &GradcheckArgs) -> Result<()> {
    let report = match load_formula(&args.inputs)? {
        Some((formula, _)) => {
            chainrule_explain::check::check_formula(&formula, args.tolerance, args.step)?
        }
        None => {
            let problem = load(&args.inputs)?;
            chainrule_explain::check::check_model(
                &problem.model,
                &problem.x,
                &problem.y,
                problem.loss,
                args.tolerance,
                args.step,
            )?
        }
    };
    print!("{}", report.table());
    if report.passed() {
        println!(
            "all {} tensors within {} ✓",
            report.tensors.len(),
            args.tolerance
        );
        return Ok(());
    }
    let worst = report
        .tensors
        .iter()
        .max_by(|a, b| a.worst_error.total_cmp(&b.worst_error))
        .expect("a failing tensor");
    let culprits: Vec<String> = report
        .culprits
        .iter()
        .map(|c| format!("`{}` (node {}, error {:.3e})", c.label, c.node, c.error))
        .collect();
    let blame = if culprits.is_empty() {
        "no single operation's local derivative disagrees; the step may be too large for this model"
            .to_string()
    } else {
        format!(
            "the local derivative of {} disagrees with finite differences",
            culprits.join(", ")
        )
    };
    bail!(
        "gradcheck: {} exceeds the tolerance (error {:.3e} > {}); {blame}",
        worst.name,
        worst.worst_error,
        args.tolerance
    )
}

/// `chainrule graph` arguments.
#[derive(clap::Args, Debug)]
pub struct GraphArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Where to write the SVG; the DOT goes beside it (same name, .dot).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn graph(args: &GraphArgs) -> Result<()> {
    use chainrule::nn::Module;
    let tape = chainrule::Tape::new();
    let (loss, names) = if let Some((formula, _)) = load_formula(&args.inputs)? {
        let vars = formula.record(&tape);
        let names: std::collections::BTreeMap<usize, String> =
            vars.iter().map(|(n, v)| (v.id(), n.clone())).collect();
        (vars[formula.loss_name()], names)
    } else {
        let problem = load(&args.inputs)?;
        let params = problem.model.bind(&tape);
        let x = tape.constant(problem.x.clone());
        let prediction = problem.model.forward(&params, x)?;
        let loss = problem.loss.compute(prediction, &problem.y)?;
        let mut names: std::collections::BTreeMap<usize, String> = problem
            .model
            .params()
            .iter()
            .zip(&params)
            .map(|(p, v)| (v.id(), p.name.clone()))
            .collect();
        names.insert(x.id(), "x".into());
        (loss, names)
    };
    let grads = loss.backward_retain_all()?;
    let drawing = chainrule_explain::graph::Graph::from_tape(&tape, loss.id(), &grads, &names);
    let svg = if args.out.extension().is_some_and(|e| e == "svg") {
        args.out.clone()
    } else {
        args.out.with_extension("svg")
    };
    chainrule::io::write_atomic(&svg, drawing.to_svg().as_bytes())?;
    chainrule::io::write_atomic(&svg.with_extension("dot"), drawing.to_dot().as_bytes())?;
    println!(
        "{} nodes: {} and {}",
        drawing.nodes.len(),
        svg.display(),
        svg.with_extension("dot").display()
    );
    Ok(())
}

/// `chainrule symbolic` arguments.
#[derive(clap::Args, Debug)]
pub struct SymbolicArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Keep the inputs as symbols x_1, x_2, … instead of substituting the sample.
    #[arg(long)]
    pub symbolic_inputs: bool,
    /// Output: text, latex, sympy or json (sympy syntax, values and autodiff gradients).
    #[arg(long, default_value = "text")]
    pub format: String,
}

pub fn symbolic(args: &SymbolicArgs) -> Result<()> {
    use chainrule_explain::symbolic::{Expr, from_sequential};
    if !["text", "latex", "sympy", "json"].contains(&args.format.as_str()) {
        bail!(
            "--format: {:?} must be text, latex, sympy or json",
            args.format
        );
    }
    if let Some((formula, _)) = load_formula(&args.inputs)? {
        return symbolic_formula(&formula, args);
    }
    let problem = load(&args.inputs)?;
    if problem.x.shape()[0] > 16 {
        bail!(
            "x: {} samples; symbolic writes out every sample's terms, so give at most 16",
            problem.x.shape()[0]
        );
    }
    let s = from_sequential(
        &problem.model,
        &problem.x,
        &problem.y,
        problem.loss,
        args.symbolic_inputs,
    )
    .map_err(|e| anyhow!("{e}"))?;
    let env = s.env();
    let (_, grads) =
        chainrule::train::loss_and_grads(&problem.model, &problem.x, &problem.y, problem.loss)?;
    let autodiff: Vec<f64> = grads
        .iter()
        .flat_map(|g| g.as_ref().map(|t| t.to_vec()).unwrap_or_default())
        .collect();
    let derivatives = s.derivatives();
    let render = |e: &Expr| match args.format.as_str() {
        "latex" => e.latex(),
        "sympy" | "json" => e.sympy(),
        _ => e.text(),
    };
    if args.format == "json" {
        let params: serde_json::Map<String, serde_json::Value> = s
            .params
            .iter()
            .map(|(sym, _, v)| (sym.clone(), (*v).into()))
            .collect();
        let inputs: serde_json::Map<String, serde_json::Value> = s
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), (*v).into()))
            .collect();
        let ders: serde_json::Map<String, serde_json::Value> = derivatives
            .iter()
            .zip(&autodiff)
            .map(|((sym, d), g)| {
                (
                    sym.clone(),
                    serde_json::json!({"sympy": d.sympy(), "value": d.eval(&env), "autodiff": g}),
                )
            })
            .collect();
        let outputs: Vec<Vec<String>> = s
            .outputs
            .iter()
            .map(|row| row.iter().map(Expr::sympy).collect())
            .collect();
        println!(
            "{}",
            serde_json::json!({"outputs": outputs, "loss": s.loss.sympy(), "loss_value": s.loss.eval(&env), "params": params, "inputs": inputs, "derivatives": ders})
        );
        return Ok(());
    }
    for (n, row) in s.outputs.iter().enumerate() {
        for (j, e) in row.iter().enumerate() {
            println!("output[{n}][{j}] = {}", render(e));
        }
    }
    println!("C = {}\n", render(&s.loss));
    for (((sym, d), g), (_, name, _)) in derivatives.iter().zip(&autodiff).zip(&s.params) {
        let value = d.eval(&env).unwrap_or(f64::NAN);
        let ok = (value - g).abs() <= 1e-10 * g.abs().max(1.0);
        println!(
            "∂C/∂{sym} ({name}) = {}\n    = {value}   (autodiff: {g} {})",
            render(d),
            if ok { "✓" } else { "✗" }
        );
    }
    Ok(())
}

/// `chainrule symbolic` on a formula network: its output and loss written out as
/// functions of the parameters, and each ∂L/∂θ next to autodiff.
fn symbolic_formula(formula: &Formula, args: &SymbolicArgs) -> Result<()> {
    use chainrule_explain::symbolic::Expr;
    let expression = |name: &str| formula.expression(name, args.symbolic_inputs);
    let loss = expression(formula.loss_name())?;
    let output = formula.output_name().map(expression).transpose()?;
    let params = formula.params();
    let mut env: std::collections::BTreeMap<String, f64> = params.iter().cloned().collect();
    let inputs: Vec<(String, f64)> = if args.symbolic_inputs {
        formula.inputs()
    } else {
        Vec::new()
    };
    env.extend(inputs.iter().cloned());
    let tape = chainrule::Tape::new();
    let vars = formula.record(&tape);
    let grads = vars[formula.loss_name()].backward()?;
    let autodiff: Vec<f64> = params
        .iter()
        .map(|(n, _)| grads.wrt(vars[n]).map_or(Ok(0.0), |g| g.item()))
        .collect::<chainrule::Result<_>>()?;
    let derivatives: Vec<(String, Expr)> = params
        .iter()
        .map(|(n, _)| (n.clone(), loss.diff(n)))
        .collect();
    let render = |e: &Expr| match args.format.as_str() {
        "latex" => e.latex(),
        "sympy" | "json" => e.sympy(),
        _ => e.text(),
    };
    if args.format == "json" {
        let to_map = |pairs: &[(String, f64)]| -> serde_json::Map<String, serde_json::Value> {
            pairs
                .iter()
                .map(|(n, v)| (n.clone(), (*v).into()))
                .collect()
        };
        let ders: serde_json::Map<String, serde_json::Value> = derivatives
            .iter()
            .zip(&autodiff)
            .map(|((n, d), g)| {
                (
                    n.clone(),
                    serde_json::json!({"sympy": d.sympy(), "value": d.eval(&env), "autodiff": g}),
                )
            })
            .collect();
        let outputs: Vec<Vec<String>> = output.iter().map(|e| vec![e.sympy()]).collect();
        println!(
            "{}",
            serde_json::json!({
                "outputs": outputs,
                "output_value": output.as_ref().and_then(|e| e.eval(&env)),
                "loss": loss.sympy(),
                "loss_value": loss.eval(&env),
                "params": to_map(&params),
                "inputs": to_map(&inputs),
                "derivatives": ders,
            })
        );
        return Ok(());
    }
    if let (Some(name), Some(e)) = (formula.output_name(), &output) {
        println!(
            "{name} = {}\n    = {:?}\n",
            render(e),
            e.eval(&env).unwrap_or(f64::NAN)
        );
    }
    println!("{} = {}\n", formula.loss_name(), render(&loss));
    for ((name, d), g) in derivatives.iter().zip(&autodiff) {
        let value = d.eval(&env).unwrap_or(f64::NAN);
        let ok = (value - g).abs() <= 1e-10 * g.abs().max(1.0);
        println!(
            "∂{}/∂{name} = {}\n    = {value:?}   (autodiff: {g:?} {})\n",
            formula.loss_name(),
            render(d),
            if ok { "✓" } else { "✗" }
        );
    }
    Ok(())
}
