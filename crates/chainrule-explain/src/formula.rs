//! Networks written as named scalar formulas, the way notebook 003 writes its
//! network, and chain-rule derivations over them.
//!
//! A formula file has one statement per line (`#` starts a comment):
//!
//! ```text
//! input x1 = 0.35            # a number that is not trained
//! param w0 = 0.1             # a trained parameter with its starting value
//! z3 = (x1*w13 + w0) + (x2*w23 + w0)
//! f3 = sigmoid(z3)
//! output f5 = sigmoid(z5)    # the network's output (shown by `chainrule symbolic`)
//! loss L = -y*log(f5) - (1 - y)*log(1 - f5)
//! ```
//!
//! Expressions take numbers, earlier names, `+ - * /`, `**` or `^` with a constant
//! exponent, and `sigmoid exp log tanh relu abs sqrt`. The loss is the statement
//! marked `loss`, or the last one.
//!
//! A layer stack cannot express what such a network may do (notebook 003 adds its one
//! bias w0 to every weighted input), so its derivation is a sum over the *paths* from a
//! parameter to the loss through the named quantities: for each path the product of the
//! local derivatives ∂q/∂p along it. Each local derivative is the symbolic derivative
//! of the statement that defines q ([`Expr::diff`]); the sum is checked against
//! backprop on a tape built from the same statements.

use crate::derive::{Factor, agrees, closing_text};
use crate::notation::{number, operand, partial_latex, partial_text};
use crate::symbolic::{Expr, latex_symbol};
use chainrule::autodiff::Elementwise;
use chainrule::{Error, Result, Tape, Var};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// Paths from one parameter to the loss beyond which a derivation lists the direct
/// consumers instead (∂q/∂θ · ∂L/∂q), so that a deep formula cannot explode.
pub const MAX_PATHS: usize = 64;

/// Statements a formula file may hold.
pub const MAX_STATEMENTS: usize = 1_000;

/// How deep parentheses, calls and signs may nest in one expression: deeper nesting
/// is refused before anything recurses over it (and a closed form's simplification
/// grows with the nesting's cube).
pub const MAX_NESTING: usize = 64;

/// Operations (numbers, names, operators, calls) one statement may hold: every walk
/// over a statement recurses at most this deep, and a longer statement is better
/// split into named quantities anyway.
pub const MAX_STATEMENT_NODES: usize = 2_000;

/// A consumer's statement above this many operations gets its local derivative's
/// value from backprop over that statement alone, not from a symbolic derivative
/// (whose simplification grows faster than the statement), so that explaining every
/// parameter stays linear in the file.
const SYMBOLIC_FACTOR_NODES: usize = 100;

/// Terms a closed form may grow to (each statement may use the ones before it more
/// than once, so closed forms can grow exponentially).
pub const MAX_TERMS: usize = 100_000;

/// A parsed expression (kept as written, so that `sigmoid(z)` stays a sigmoid).
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Num(f64),
    Name(String),
    Neg(Box<Node>),
    Binary(char, Box<Node>, Box<Node>),
    Pow(Box<Node>, f64),
    Call(Elementwise, Box<Node>),
}

/// What a named quantity is.
#[derive(Debug, Clone, PartialEq)]
enum Role {
    Input(f64),
    Param(f64),
    Defined(Node),
}

/// One named quantity of a formula network.
#[derive(Debug, Clone, PartialEq)]
struct Quantity {
    name: String,
    role: Role,
}

/// A network written as named scalar formulas.
#[derive(Debug, Clone, PartialEq)]
pub struct Formula {
    quantities: Vec<Quantity>,
    output: Option<usize>,
    loss: usize,
    /// For each quantity, the statements that use it directly and lead to the loss.
    uses: Vec<Vec<usize>>,
}

fn invalid(line: usize, message: impl Into<String>) -> Error {
    Error::InvalidValue {
        field: format!("line {line}"),
        message: message.into(),
    }
}

/// A recursive-descent parser over one expression.
struct Parser<'a> {
    chars: Vec<char>,
    at: usize,
    line: usize,
    known: &'a BTreeMap<String, usize>,
    depth: usize,
    /// Nodes made so far, against [`MAX_STATEMENT_NODES`].
    nodes: usize,
}

impl Parser<'_> {
    fn peek(&mut self) -> Option<char> {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
        self.chars.get(self.at).copied()
    }

    fn error(&self, message: &str) -> Error {
        invalid(
            self.line,
            format!("{message} at column {} of the expression", self.at + 1),
        )
    }

    /// Enters one level of nesting (a parenthesis, a call, a sign, an exponent).
    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error(&format!(
                "the expression nests more than {MAX_NESTING} deep (parentheses, calls and signs); name its inner parts (z1 = …) and use the names"
            )));
        }
        Ok(())
    }

    /// Counts one node against [`MAX_STATEMENT_NODES`].
    fn count(&mut self) -> Result<()> {
        self.nodes += 1;
        if self.nodes > MAX_STATEMENT_NODES {
            return Err(self.error(&format!(
                "the statement has more than {MAX_STATEMENT_NODES} operations; split it into named quantities"
            )));
        }
        Ok(())
    }

    fn sum(&mut self) -> Result<Node> {
        self.enter()?;
        let mut left = self.product()?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.at += 1;
            self.count()?;
            left = Node::Binary(op, Box::new(left), Box::new(self.product()?));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn product(&mut self) -> Result<Node> {
        let mut left = self.unary()?;
        loop {
            match self.peek() {
                Some('*') if self.chars.get(self.at + 1) != Some(&'*') => {}
                Some('/') => {}
                _ => return Ok(left),
            }
            let op = self.chars[self.at];
            self.at += 1;
            self.count()?;
            left = Node::Binary(op, Box::new(left), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Node> {
        match self.peek() {
            Some(sign @ ('-' | '+')) => {
                self.at += 1;
                self.enter()?;
                self.count()?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(if sign == '-' {
                    Node::Neg(Box::new(inner))
                } else {
                    inner
                })
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<Node> {
        let base = self.atom()?;
        let caret = self.peek() == Some('^');
        let stars = self.peek() == Some('*') && self.chars.get(self.at + 1) == Some(&'*');
        if !caret && !stars {
            return Ok(base);
        }
        self.at += if caret { 1 } else { 2 };
        self.count()?;
        let exponent = match self.unary()? {
            Node::Num(p) => p,
            Node::Neg(inner) => match *inner {
                Node::Num(p) => -p,
                _ => return Err(self.error("an exponent must be a number")),
            },
            _ => return Err(self.error("an exponent must be a number")),
        };
        Ok(Node::Pow(Box::new(base), exponent))
    }

    fn atom(&mut self) -> Result<Node> {
        self.count()?;
        match self.peek() {
            Some('(') => {
                self.at += 1;
                let inner = self.sum()?;
                if self.peek() != Some(')') {
                    return Err(self.error("expected `)`"));
                }
                self.at += 1;
                Ok(inner)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => {
                let start = self.at;
                while self
                    .chars
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_digit() || *c == '.' || *c == 'e' || *c == 'E')
                    || (matches!(self.chars.get(self.at), Some('+' | '-'))
                        && matches!(self.chars.get(self.at - 1), Some('e' | 'E')))
                {
                    self.at += 1;
                }
                let text: String = self.chars[start..self.at].iter().collect();
                text.parse()
                    .map(Node::Num)
                    .map_err(|_| self.error(&format!("{text:?} is not a number")))
            }
            Some(c) if is_name_start(c) => {
                let start = self.at;
                while self.chars.get(self.at).is_some_and(|c| is_name_char(*c)) {
                    self.at += 1;
                }
                let name: String = self.chars[start..self.at].iter().collect();
                if self.peek() == Some('(') {
                    let function = Elementwise::from_name(&name)
                        .ok_or_else(|| self.error(&format!("unknown function `{name}`")))?;
                    self.at += 1;
                    let argument = self.sum()?;
                    if self.peek() != Some(')') {
                        return Err(self.error("expected `)`"));
                    }
                    self.at += 1;
                    return Ok(Node::Call(function, Box::new(argument)));
                }
                if !self.known.contains_key(&name) {
                    return Err(invalid(
                        self.line,
                        format!("`{name}` is used before it is defined"),
                    ));
                }
                Ok(Node::Name(name))
            }
            Some(c) => Err(self.error(&format!("unexpected `{c}`"))),
            None => Err(self.error("the expression ends early")),
        }
    }
}

fn is_name_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn names_in(node: &Node, out: &mut BTreeSet<String>) {
    match node {
        Node::Num(_) => {}
        Node::Name(n) => {
            out.insert(n.clone());
        }
        Node::Neg(x) | Node::Pow(x, _) | Node::Call(_, x) => names_in(x, out),
        Node::Binary(_, l, r) => {
            names_in(l, out);
            names_in(r, out);
        }
    }
}

/// The expression as a symbolic [`Expr`], with each name replaced by `name`'s answer.
fn to_expr(node: &Node, name: &dyn Fn(&str) -> Expr) -> Expr {
    let go = |n: &Node| to_expr(n, name);
    match node {
        Node::Num(v) => Expr::Num(*v),
        Node::Name(n) => name(n),
        Node::Neg(x) => -go(x),
        Node::Binary(op, l, r) => match op {
            '+' => go(l) + go(r),
            '-' => go(l) - go(r),
            '*' => go(l) * go(r),
            _ => go(l) / go(r),
        },
        Node::Pow(x, p) => Expr::Pow(Box::new(go(x)), *p).simplify(),
        Node::Call(f, x) => go(x).apply(*f),
    }
}

/// The expression recorded on a tape, with each name looked up in `vars`.
fn to_var<'t>(
    node: &Node,
    tape: &'t Tape<f64>,
    vars: &BTreeMap<String, Var<'t, f64>>,
) -> Var<'t, f64> {
    let go = |n: &Node| to_var(n, tape, vars);
    match node {
        Node::Num(v) => tape.constant_scalar(*v),
        Node::Name(n) => vars[n],
        Node::Neg(x) => -go(x),
        Node::Binary(op, l, r) => match op {
            '+' => go(l) + go(r),
            '-' => go(l) - go(r),
            '*' => go(l) * go(r),
            _ => go(l) / go(r),
        },
        Node::Pow(x, p) => go(x).powf(*p),
        Node::Call(f, x) => go(x).map(*f),
    }
}

/// One path from a parameter to the loss, with its chain of local derivatives.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    /// The quantities along the path, from the parameter to the loss.
    pub via: Vec<String>,
    /// ∂q₁/∂θ, ∂q₂/∂q₁, …, ∂L/∂qₖ.
    pub factors: Vec<Factor>,
    /// The product of the factors.
    pub term: f64,
}

/// A derivation of ∂L/∂θ for one parameter θ of a [`Formula`].
#[derive(Debug, Clone, PartialEq)]
pub struct PathDerivation {
    /// The parameter's name.
    pub param: String,
    /// The loss's name.
    ///
    /// ```
    /// let f = chainrule_explain::formula::Formula::parse("input x = 3\nparam w = 2\noutput y = x*w\nloss L = (y - 1)**2")?;
    /// assert_eq!(f.loss_name(), "L");
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub loss: String,
    /// Every path from θ to the loss (or, past [`MAX_PATHS`], one two-factor chain per
    /// direct consumer q of θ: ∂q/∂θ · ∂L/∂q with ∂L/∂q from backprop).
    pub paths: Vec<Path>,
    /// Whether `paths` are the direct consumers rather than whole paths.
    pub by_consumer: bool,
    /// Σ of the path terms.
    pub gradient: f64,
    /// What backprop computed for θ (the check).
    pub autodiff: f64,
    /// The gradient-descent step: learning rate, old value, new value.
    pub update: (f64, f64, f64),
}

impl Formula {
    /// Parses a formula file's text.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the line: a syntax error, a name used before it
    /// is defined or defined twice, an unknown function, a non-finite number, no
    /// statement that computes something.
    ///
    /// ```
    /// use chainrule_explain::formula::Formula;
    /// let f = Formula::parse("param w = 2\ninput x = 3\nloss L = (w*x - 1)**2")?;
    /// assert_eq!(f.params(), [("w".to_string(), 2.0)]);
    /// assert!(Formula::parse("param w = 2\nL = w * v").is_err()); // v is not defined
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn parse(text: &str) -> Result<Formula> {
        let mut quantities: Vec<Quantity> = Vec::new();
        let mut known: BTreeMap<String, usize> = BTreeMap::new();
        let (mut output, mut loss) = (None, None);
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let statement = raw.split('#').next().unwrap_or("").trim();
            if statement.is_empty() {
                continue;
            }
            if quantities.len() == MAX_STATEMENTS {
                return Err(invalid(
                    line,
                    format!("more than {MAX_STATEMENTS} statements"),
                ));
            }
            let (head, body) = statement
                .split_once('=')
                .ok_or_else(|| invalid(line, "expected `NAME = EXPRESSION`"))?;
            let words: Vec<&str> = head.split_whitespace().collect();
            let (keyword, name) = match words.as_slice() {
                [name] => ("", *name),
                [keyword, name] => (*keyword, *name),
                _ => return Err(invalid(line, "expected `[input|param|output|loss] NAME =`")),
            };
            if !name.starts_with(is_name_start) || !name.chars().all(is_name_char) {
                return Err(invalid(line, format!("`{name}` is not a name")));
            }
            if known.contains_key(name) || Elementwise::from_name(name).is_some() {
                return Err(invalid(line, format!("`{name}` is already defined")));
            }
            let number = || -> Result<f64> {
                body.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| invalid(line, format!("`{name}` needs a finite number")))
            };
            let role = match keyword {
                "input" => Role::Input(number()?),
                "param" => Role::Param(number()?),
                "" | "output" | "loss" => {
                    let mut parser = Parser {
                        chars: body.chars().collect(),
                        at: 0,
                        line,
                        known: &known,
                        depth: 0,
                        nodes: 0,
                    };
                    let node = parser.sum()?;
                    if parser.peek().is_some() {
                        return Err(parser.error("unexpected text after the expression"));
                    }
                    let slot = if keyword == "output" {
                        &mut output
                    } else {
                        &mut loss
                    };
                    if !keyword.is_empty() {
                        if slot.is_some() {
                            return Err(invalid(line, format!("a second `{keyword}`")));
                        }
                        *slot = Some(quantities.len());
                    }
                    Role::Defined(node)
                }
                other => {
                    return Err(invalid(
                        line,
                        format!("`{other}` is not input, param, output or loss"),
                    ));
                }
            };
            known.insert(name.to_string(), quantities.len());
            quantities.push(Quantity {
                name: name.to_string(),
                role,
            });
        }
        let last_defined = quantities
            .iter()
            .rposition(|q| matches!(q.role, Role::Defined(_)));
        let loss = loss
            .or(last_defined)
            .ok_or_else(|| invalid(0, "no statement computes a loss"))?;
        // Who uses whom, kept only where it leads to the loss, so that a search for
        // paths never wanders into a dead end.
        let mut uses = vec![Vec::new(); quantities.len()];
        let mut reaches = vec![false; quantities.len()];
        reaches[loss] = true;
        for c in (0..=loss).rev() {
            if !reaches[c] {
                continue;
            }
            if let Role::Defined(node) = &quantities[c].role {
                let mut used = BTreeSet::new();
                names_in(node, &mut used);
                for name in used {
                    let q = known[&name];
                    uses[q].push(c);
                    reaches[q] = true;
                }
            }
        }
        for u in &mut uses {
            u.sort_unstable();
        }
        Ok(Formula {
            quantities,
            output,
            loss,
            uses,
        })
    }

    /// The parameters with their values, in file order.
    ///
    /// ```
    /// let f = chainrule_explain::formula::Formula::parse("input x = 3\nparam w = 2\noutput y = x*w\nloss L = (y - 1)**2")?;
    /// assert_eq!(f.params(), [("w".to_string(), 2.0)]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn params(&self) -> Vec<(String, f64)> {
        self.leaves(|role| match role {
            Role::Param(v) => Some(*v),
            _ => None,
        })
    }

    /// The quantities `value` gives a number for, with that number, in file order.
    fn leaves(&self, value: impl Fn(&Role) -> Option<f64>) -> Vec<(String, f64)> {
        self.quantities
            .iter()
            .filter_map(|q| value(&q.role).map(|v| (q.name.clone(), v)))
            .collect()
    }

    /// Sets parameter `name` to `value` (to explain or check the network at another
    /// point).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] (field `param`) when `name` is not a parameter.
    ///
    /// ```
    /// let mut f = chainrule_explain::formula::Formula::parse("param w = 2\nL = w*w")?;
    /// f.set_param("w", 3.0)?;
    /// assert_eq!(f.forward()?[1].1, 9.0);
    /// assert!(f.set_param("L", 1.0).is_err());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn set_param(&mut self, name: &str, value: f64) -> Result<()> {
        match self.quantities.iter_mut().find(|q| q.name == name) {
            Some(Quantity {
                role: Role::Param(v),
                ..
            }) => {
                *v = value;
                Ok(())
            }
            _ => Err(Error::InvalidValue {
                field: "param".into(),
                message: format!("{name:?} is not a parameter"),
            }),
        }
    }

    /// The inputs with their values, in file order.
    ///
    /// ```
    /// let f = chainrule_explain::formula::Formula::parse("input x = 3\nparam w = 2\noutput y = x*w\nloss L = (y - 1)**2")?;
    /// assert_eq!(f.inputs(), [("x".to_string(), 3.0)]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn inputs(&self) -> Vec<(String, f64)> {
        self.leaves(|role| match role {
            Role::Input(v) => Some(*v),
            _ => None,
        })
    }

    /// The loss's name.
    pub fn loss_name(&self) -> &str {
        &self.quantities[self.loss].name
    }

    /// The output's name, if a statement is marked `output`.
    ///
    /// ```
    /// let f = chainrule_explain::formula::Formula::parse("input x = 3\nparam w = 2\noutput y = x*w\nloss L = (y - 1)**2")?;
    /// assert_eq!(f.output_name(), Some("y"));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn output_name(&self) -> Option<&str> {
        self.output.map(|i| self.quantities[i].name.as_str())
    }

    /// Records the network on `tape`: parameters as trainable scalars, inputs as
    /// constants; returns every quantity's variable by name.
    ///
    /// ```
    /// let f = chainrule_explain::formula::Formula::parse("input x = 3\nparam w = 2\noutput y = x*w\nloss L = (y - 1)**2")?;
    /// let tape = chainrule::Tape::new();
    /// let vars = f.record(&tape);
    /// let grads = vars["L"].backward()?;
    /// assert_eq!(grads.wrt(vars["w"]).unwrap().item()?, 2.0 * 5.0 * 3.0); // 2(y − 1)·x
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn record<'t>(&self, tape: &'t Tape<f64>) -> BTreeMap<String, Var<'t, f64>> {
        let mut vars = BTreeMap::new();
        for q in &self.quantities {
            let var = match &q.role {
                Role::Input(v) => tape.constant_scalar(*v),
                Role::Param(v) => tape.param_scalar(*v),
                // An alias (`a0 = w`) is a node of its own, so that backprop's
                // ∂L/∂a0 is the gradient through a0 alone, not all of w's.
                Role::Defined(Node::Name(n)) => {
                    let same: Var<'t, f64> = vars[n];
                    same.reshape(&[]).unwrap_or(same)
                }
                Role::Defined(node) => to_var(node, tape, &vars),
            };
            vars.insert(q.name.clone(), var);
        }
        vars
    }

    /// Every quantity's value (the forward pass), in file order.
    ///
    /// ```
    /// let f = chainrule_explain::formula::Formula::parse("param w = 2\nz = 3*w + 1")?;
    /// assert_eq!(f.forward()?[1], ("z".to_string(), 7.0));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    ///
    /// Values may be NaN or ±∞ where the formula is (the log of a negative number);
    /// they are reported as they are.
    ///
    /// # Errors
    /// Only if the tape fails to read a scalar back, which a parsed formula never makes.
    pub fn forward(&self) -> Result<Vec<(String, f64)>> {
        let tape = Tape::new();
        let vars = self.record(&tape);
        self.quantities
            .iter()
            .map(|q| Ok((q.name.clone(), vars[&q.name].item()?)))
            .collect()
    }

    /// The closed form of quantity `name` as a function of the parameters, with the
    /// inputs substituted as numbers (as notebook 003 does) or kept as symbols.
    ///
    /// ```
    /// let f = chainrule_explain::formula::Formula::parse("input x = 3\nparam w = 2\nz = x*w + w")?;
    /// assert_eq!(f.expression("z", false)?.text(), "4·w");
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidValue`] when `name` is not in the formula, or when a closed form
    /// on the way grows past [`MAX_TERMS`].
    pub fn expression(&self, name: &str, symbolic_inputs: bool) -> Result<Expr> {
        let mut expanded: BTreeMap<&str, Expr> = BTreeMap::new();
        for q in &self.quantities {
            let expr = match &q.role {
                Role::Input(v) if !symbolic_inputs => Expr::Num(*v),
                Role::Input(_) | Role::Param(_) => Expr::Sym(q.name.clone()),
                Role::Defined(node) => to_expr(node, &|n| expanded[n].clone()),
            };
            if terms(&expr) > MAX_TERMS {
                return Err(Error::InvalidValue {
                    field: q.name.clone(),
                    message: format!(
                        "its closed form has more than {MAX_TERMS} terms; write out a quantity nearer the parameters"
                    ),
                });
            }
            if q.name == name {
                return Ok(expr);
            }
            expanded.insert(&q.name, expr);
        }
        Err(Error::InvalidValue {
            field: name.to_string(),
            message: "not in the formula".into(),
        })
    }

    /// The defining statement of quantity `q` with every other name kept as a symbol.
    fn local(&self, q: usize) -> Option<Expr> {
        match &self.quantities[q].role {
            Role::Defined(node) => Some(to_expr(node, &|n| Expr::Sym(n.to_string()))),
            _ => None,
        }
    }

    /// The local derivative ∂c/∂p as a chain factor: symbolic, substituted, valued.
    fn factor(&self, c: usize, p: usize, env: &BTreeMap<String, f64>) -> Factor {
        let (cn, pn) = (&self.quantities[c].name, &self.quantities[p].name);
        let name = (
            partial_text(cn, pn),
            partial_latex(&latex_symbol(cn), &latex_symbol(pn)),
        );
        // An activation of a single quantity reads as the notebooks write it.
        if let Role::Defined(Node::Call(f, arg)) = &self.quantities[c].role
            && **arg == Node::Name(pn.clone())
        {
            let (a, z) = (env[cn], env[pn]);
            if let Some(notation) = f.derivative_notation(
                (pn, &latex_symbol(pn)),
                (cn, &latex_symbol(cn)),
                (&number(z), &number(a)),
            ) {
                return Factor {
                    name,
                    formula: (notation.text, notation.latex),
                    substituted: Some(notation.with_numbers),
                    value: f.derivative(z, a),
                };
            }
        }
        if let Role::Defined(node) = &self.quantities[c].role
            && size(node) > SYMBOLIC_FACTOR_NODES
        {
            return Factor {
                name,
                formula: (
                    format!("backprop through {cn}'s own statement"),
                    r"\text{backprop through the statement}".into(),
                ),
                substituted: None,
                value: local_gradient(node, pn, env),
            };
        }
        let derivative = self.local(c).expect("a consumer is defined").diff(pn);
        let value = derivative.eval(env).unwrap_or(f64::NAN);
        let substituted = substitute(&derivative, env).text();
        let text = derivative.text();
        Factor {
            name,
            substituted: (substituted != text && substituted != number(value))
                .then_some(substituted),
            formula: (text, derivative.latex()),
            value,
        }
    }

    /// Explains ∂L/∂`param`, with learning rate `lr` for the update.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] (field `param`) when `param` is not a parameter.
    ///
    /// ```
    /// use chainrule_explain::formula::Formula;
    /// // w is used twice: ∂z/∂w = x + 1 = 4; z = 8, so ∂L/∂z = 2(z − 1) = 14.
    /// let f = Formula::parse("input x = 3\nparam w = 2\nz = x*w + w\nL = (z - 1)**2")?;
    /// let d = f.explain("w", 0.01)?;
    /// assert_eq!(d.gradient, 4.0 * 14.0);
    /// assert!(d.verified());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn explain(&self, param: &str, lr: f64) -> Result<PathDerivation> {
        let p = self
            .quantities
            .iter()
            .position(|q| q.name == param && matches!(q.role, Role::Param(_)))
            .ok_or_else(|| Error::InvalidValue {
                field: "param".into(),
                message: format!(
                    "{param:?} is not a parameter (the parameters: {})",
                    self.params()
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        let tape = Tape::new();
        let vars = self.record(&tape);
        let loss_var = vars[self.loss_name()];
        let grads = loss_var.backward_retain_all()?;
        let env: BTreeMap<String, f64> = vars
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.item()?)))
            .collect::<Result<_>>()?;
        let adjoint = |q: usize| {
            grads
                .wrt(vars[&self.quantities[q].name])
                .map_or(0.0, |g| g.item().unwrap_or(f64::NAN))
        };

        let mut routes = Vec::new();
        let complete = self.paths(p, &mut vec![p], &mut routes);
        let by_consumer = !complete;
        if by_consumer {
            routes = self.uses[p].iter().map(|&c| vec![p, c]).collect();
        }
        let loss_name = self.loss_name().to_string();
        let paths: Vec<Path> = routes
            .iter()
            .map(|route| {
                let mut factors: Vec<Factor> = route
                    .windows(2)
                    .map(|w| self.factor(w[1], w[0], &env))
                    .collect();
                let last = *route.last().expect("a path");
                if by_consumer && last != self.loss {
                    let q = &self.quantities[last].name;
                    factors.push(Factor {
                        name: (
                            partial_text(&loss_name, q),
                            partial_latex(&latex_symbol(&loss_name), &latex_symbol(q)),
                        ),
                        formula: (
                            format!("backprop's ∂{loss_name}/∂{q}"),
                            r"\text{backprop}".into(),
                        ),
                        substituted: None,
                        value: adjoint(last),
                    });
                }
                let term = factors.iter().map(|f| f.value).product();
                Path {
                    via: route
                        .iter()
                        .map(|&q| self.quantities[q].name.clone())
                        .collect(),
                    factors,
                    term,
                }
            })
            .collect();
        let gradient = paths.iter().map(|p| p.term).sum();
        let old = env[param];
        let autodiff = adjoint(p);
        Ok(PathDerivation {
            param: param.to_string(),
            loss: loss_name,
            paths,
            by_consumer,
            gradient,
            autodiff,
            update: (lr, old, old - lr * autodiff),
        })
    }

    /// Collects every path from `route`'s end to the loss; false once there are more
    /// than [`MAX_PATHS`].
    fn paths(&self, from: usize, route: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) -> bool {
        if from == self.loss {
            out.push(route.clone());
            return out.len() <= MAX_PATHS;
        }
        for &c in &self.uses[from] {
            route.push(c);
            let fits = self.paths(c, route, out);
            route.pop();
            if !fits {
                return false;
            }
        }
        true
    }
}

/// The number of nodes of a parsed statement.
fn size(node: &Node) -> usize {
    1 + match node {
        Node::Num(_) | Node::Name(_) => 0,
        Node::Neg(x) | Node::Pow(x, _) | Node::Call(_, x) => size(x),
        Node::Binary(_, l, r) => size(l) + size(r),
    }
}

/// ∂(statement)/∂`name` at the values `env`, by backprop over the statement alone,
/// every other name held at its value.
fn local_gradient(node: &Node, name: &str, env: &BTreeMap<String, f64>) -> f64 {
    let mut names = BTreeSet::new();
    names_in(node, &mut names);
    let tape = Tape::new();
    let leaves: BTreeMap<String, Var<'_, f64>> = names
        .into_iter()
        .map(|n| {
            let v = env.get(&n).copied().unwrap_or(f64::NAN);
            (n, tape.param_scalar(v))
        })
        .collect();
    let out = to_var(node, &tape, &leaves);
    out.backward()
        .ok()
        .and_then(|g| g.wrt(leaves[name]).and_then(|t| t.item().ok()))
        .unwrap_or(0.0)
}

/// The number of nodes of `e`.
fn terms(e: &Expr) -> usize {
    use Expr::*;
    1 + match e {
        Num(_) | Sym(_) => 0,
        Add(t) | Mul(t) => t.iter().map(terms).sum(),
        Pow(x, _) | Apply(_, x) => terms(x),
    }
}

/// `e` with every symbol replaced by its number, without simplifying (to show the
/// substitution).
fn substitute(e: &Expr, env: &BTreeMap<String, f64>) -> Expr {
    use Expr::*;
    let go = |x: &Expr| Box::new(substitute(x, env));
    match e {
        Num(v) => Num(*v),
        Sym(s) => env.get(s).map_or_else(|| Sym(s.clone()), |v| Num(*v)),
        Add(t) => Add(t.iter().map(|x| substitute(x, env)).collect()),
        Mul(f) => Mul(f.iter().map(|x| substitute(x, env)).collect()),
        Pow(x, p) => Pow(go(x), *p),
        Apply(f, x) => Apply(*f, go(x)),
    }
}

impl PathDerivation {
    /// Whether the paths' sum equals backprop's gradient (to 1e-12 relative).
    ///
    /// ```
    /// let f = chainrule_explain::formula::Formula::parse("param w = 2\nL = w*w")?;
    /// let d = f.explain("w", 0.1)?;
    /// assert!(d.verified());
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn verified(&self) -> bool {
        agrees(self.gradient, self.autodiff)
    }

    fn what(&self) -> &'static str {
        if self.by_consumer {
            "direct uses"
        } else {
            "paths"
        }
    }

    /// Unicode text for a terminal.
    ///
    /// ```
    /// let f = chainrule_explain::formula::Formula::parse("param w = 2\nL = w*w")?;
    /// let d = f.explain("w", 0.1)?;
    /// assert!(d.text().contains("update: w ← w − η·∂L/∂w = 2 − 0.1 · 4 = 1.6"));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn text(&self) -> String {
        let (l, s) = (&self.loss, &self.param);
        let count = self.paths.len();
        let mut out = format!(
            "{}   (parameter {s}; {count} {} to {l})\n",
            partial_text(l, s),
            if count == 1 {
                self.what().trim_end_matches('s')
            } else {
                self.what()
            }
        );
        let lead = format!("  chain rule:  ∂{l}/∂{s} = ");
        let pad = " ".repeat(lead.chars().count() - 2);
        for (i, path) in self.paths.iter().enumerate() {
            let names: Vec<&str> = path.factors.iter().map(|f| f.name.0.as_str()).collect();
            if i == 0 {
                out += &format!("{lead}{}\n", names.join(" · "));
            } else {
                out += &format!("{pad}+ {}\n", names.join(" · "));
            }
        }
        for (i, path) in self.paths.iter().enumerate() {
            let indent = if count > 1 {
                out += &format!("  path {} ({}):\n", i + 1, path.via.join(" → "));
                "    "
            } else {
                "  "
            };
            for f in &path.factors {
                let sub = f
                    .substituted
                    .as_ref()
                    .map_or(String::new(), |t| format!(" = {t}"));
                let value = number(f.value);
                if f.formula.0 == value {
                    out += &format!("{indent}{} = {value}\n", f.name.0);
                } else {
                    out += &format!("{indent}{} = {}{sub} = {value}\n", f.name.0, f.formula.0);
                }
            }
            let values: Vec<String> = path.factors.iter().map(|f| operand(f.value)).collect();
            out += &format!(
                "{indent}product: {} = {}\n",
                values.join(" · "),
                number(path.term)
            );
        }
        if count > 1 {
            let terms: Vec<String> = self.paths.iter().map(|p| operand(p.term)).collect();
            out += &format!(
                "  sum over the {count} {}: {} = {}\n",
                self.what(),
                terms.join(" + "),
                number(self.gradient)
            );
        }
        out += &closing_text(l, s, self.gradient, self.autodiff, self.update, None);
        out
    }

    /// Markdown with LaTeX (`$$ … $$` blocks).
    ///
    /// ```
    /// let f = chainrule_explain::formula::Formula::parse("param w = 2\nL = w*w")?;
    /// let d = f.explain("w", 0.1)?;
    /// assert!(d.markdown().contains(r"\frac{\partial L}{\partial w}"));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn markdown(&self) -> String {
        let (l, s) = (latex_symbol(&self.loss), latex_symbol(&self.param));
        let whole = partial_latex(&l, &s);
        let chains: Vec<String> = self
            .paths
            .iter()
            .map(|p| {
                p.factors
                    .iter()
                    .map(|f| f.name.1.as_str())
                    .collect::<Vec<_>>()
                    .join(r" \cdot ")
            })
            .collect();
        let mut out = format!(
            "### `{}`\n\n$$\n{whole} = {}\n$$\n\n",
            self.param,
            chains.join(" + ")
        );
        for (i, path) in self.paths.iter().enumerate() {
            let formulas: Vec<String> = path.factors.iter().map(Factor::latex_operand).collect();
            let values: Vec<String> = path.factors.iter().map(|f| operand(f.value)).collect();
            out += &format!(
                "Path {} ({}): $${} = {} = {}$$\n\n",
                i + 1,
                path.via.join(" → "),
                formulas.join(r" \cdot "),
                values.join(r" \cdot "),
                number(path.term)
            );
        }
        let (lr, old, new) = self.update;
        out += &format!(
            "$${whole} = {}$$ (autodiff agrees: {})\n\n$${s} \\leftarrow {} - {} \\cdot {} = {}$$\n",
            number(self.gradient),
            self.verified(),
            number(old),
            number(lr),
            operand(self.autodiff),
            number(new)
        );
        out
    }

    /// JSON: every path's factors with their names, formulas and values.
    ///
    /// ```
    /// let f = chainrule_explain::formula::Formula::parse("param w = 2\nL = w*w")?;
    /// let d = f.explain("w", 0.1)?;
    /// assert_eq!(d.json()["paths"][0]["factors"][0]["value"], 4.0); // ∂L/∂w = 2w
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn json(&self) -> serde_json::Value {
        let paths: Vec<serde_json::Value> = self
            .paths
            .iter()
            .map(|p| {
                json!({
                    "via": p.via,
                    "factors": p.factors.iter().map(|f| json!({"name": f.name.0, "latex": f.name.1, "formula": f.formula.0, "substituted": f.substituted, "value": f.value})).collect::<Vec<_>>(),
                    "term": p.term,
                })
            })
            .collect();
        let (lr, old, new) = self.update;
        json!({
            "param": self.param,
            "loss": self.loss,
            "paths": paths,
            "by_consumer": self.by_consumer,
            "gradient": self.gradient,
            "autodiff": self.autodiff,
            "verified": self.verified(),
            "update": {"lr": lr, "old": old, "new": new},
        })
    }
}
