//! The computational graph of one forward and backward pass, drawn by chainrule (no
//! Graphviz needed) as SVG, and written as DOT with the same positions.
//!
//! The drawing reads the tape that the pass recorded. Its layout is layered, left to
//! right ([`Graph::layout`]):
//!
//! - every operation sits in the column of its depth (the longest path from a leaf);
//!   a leaf (parameter, input, target, constant) sits just left of its first
//!   consumer, so a weight is drawn next to the layer that uses it;
//! - within a column, a few barycenter sweeps order the boxes to reduce crossings;
//! - a box has one input port per operand, top to bottom in operand order, so the
//!   edge of `sub(a, y)`'s `y` ends at the second port, never on top of `a`'s;
//! - an edge that skips columns passes each column it crosses in a lane of its own
//!   between the boxes, so no edge is drawn through a box;
//! - a box is as wide as its longest line in a monospace font, plus a margin.
//!
//! A large model (more than [`MAX_DETAILED_NODES`] nodes, or more than
//! [`MAX_DETAILED_PARAMETERS`] parameter elements: MNIST's MLP) is drawn one box per
//! layer: each parameter folds into the operation that uses it (`linear 784→128`
//! with its `0.weight [128, 784]`), and edges carry the tensor shapes.

use crate::formula::Formula;
use crate::notation::significant;
use chainrule::autodiff::Op;
use chainrule::loss::{Loss, Target};
use chainrule::nn::{Module, Sequential};
use chainrule::{Gradients, Tape, Tensor};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Above this many nodes, [`Detail::Auto`] draws one box per layer.
pub const MAX_DETAILED_NODES: usize = 40;

/// Above this many parameter elements, [`Detail::Auto`] draws one box per layer (a
/// 2-64-64-3 MLP has 4,547; MNIST's 784-128-10 has 101,770).
pub const MAX_DETAILED_PARAMETERS: usize = 10_000;

/// The font size of the drawing's text, in pixels.
pub const FONT_SIZE: f64 = 12.0;

/// The advance of one character of the drawing's monospace font (DejaVu Sans Mono:
/// 0.6 em, also for `→`, `‖`, `…`), in pixels. Widths are estimated from it, which is
/// why the SVG asks for a monospace font.
pub const CHAR_WIDTH: f64 = 0.6 * FONT_SIZE;

/// The space between a box's border and its text, left and right, in pixels.
pub const TEXT_MARGIN: f64 = 10.0;

/// The distance between two lines of text, in pixels.
const LINE_HEIGHT: f64 = 16.0;
/// The space above the first line and below the last.
const TOP_MARGIN: f64 = 7.0;
/// Vertical space per input port: ports are never closer than this.
const PORT_SPACING: f64 = 14.0;
/// The horizontal gap between columns, where edges turn (wider if a shape label needs it).
const COLUMN_GAP: f64 = 72.0;
/// The vertical gap between two boxes of a column, and between a box and a lane.
const BOX_GAP: f64 = 20.0;
/// The height a passing edge reserves in a column it crosses.
const LANE_HEIGHT: f64 = 4.0;
/// The drawing's outer margin.
const MARGIN: f64 = 20.0;

/// The estimated width of `text` in the drawing's monospace font.
///
/// ```
/// use chainrule_explain::graph::{text_width, CHAR_WIDTH};
/// assert_eq!(text_width("linear 784→128"), 14.0 * CHAR_WIDTH);
/// ```
pub fn text_width(text: &str) -> f64 {
    text.chars().count() as f64 * CHAR_WIDTH
}

/// A value as the drawing writes it: four significant digits, no float noise
/// (`0.1 + 0.2` is `0.3`), never `-0`, and below 10⁻³ in scientific notation so that
/// a small gradient stays short.
///
/// ```
/// use chainrule_explain::graph::shown;
/// assert_eq!(shown(0.1 + 0.2), "0.3");
/// assert_eq!(shown(-0.0), "0");
/// assert_eq!(shown(-1e-20), "-1e-20");
/// assert_eq!(shown(0.00004727123), "4.727e-5");
/// assert_eq!(shown(0.6498644775261518), "0.6499");
/// assert_eq!(shown(1.5), "1.5");
/// ```
pub fn shown(v: f64) -> String {
    // -0.0 == 0.0: a gradient that is exactly zero from the negative side is drawn as
    // 0, which is what it is.
    if v == 0.0 {
        "0".to_string()
    } else if v.is_finite() && v.abs() < 1e-3 {
        let text = format!("{v:.3e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        format!("{mantissa}e{exponent}")
    } else {
        significant(v, 4)
    }
}

/// A short rendering of a tensor: the number itself for one element, else the first
/// few values.
fn preview(values: &[f64]) -> String {
    const SHOWN: usize = 4;
    if values.len() == 1 {
        return shown(values[0]);
    }
    let head: Vec<String> = values.iter().take(SHOWN).map(|&v| shown(v)).collect();
    let more = if values.len() > SHOWN { ", …" } else { "" };
    format!("[{}{more}]", head.join(", "))
}

/// `[128, 784]`.
fn shape_text(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// The Euclidean norm of a gradient.
fn norm(t: &Tensor<f64>) -> f64 {
    t.to_vec().iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// What a node of the drawing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A trainable parameter (a leaf with a gradient), labelled by its PyTorch name.
    Parameter,
    /// The network's input (`x`), or a formula's named inputs.
    Input,
    /// What the loss compares the prediction with (`y`), labelled `target`.
    Target,
    /// Any other number the computation uses (a formula's literal `1`).
    Constant,
    /// A recorded operation (in a drawing per layer: a layer).
    Operation,
}

/// How much of the pass to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Detail {
    /// Every recorded node, unless the model is large (see [`MAX_DETAILED_NODES`] and
    /// [`MAX_DETAILED_PARAMETERS`]); then one box per layer.
    #[default]
    Auto,
    /// Every recorded node, with its value and gradient.
    Operations,
    /// One box per layer: parameters and constants fold into the operation that uses
    /// them, and edges carry shapes.
    Layers,
}

/// One node of the drawing.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphNode {
    /// The tape id (a class-index target, which the tape keeps inside its loss
    /// operation, gets an id past the tape's end).
    pub id: usize,
    /// The operation (`matmul`, `relu`, `linear 784→128`, ...) or, for a leaf, its
    /// name (`0.weight`, `x`, `y`, `const`).
    pub label: String,
    /// What the node is.
    pub role: Role,
    /// The value's shape.
    pub shape: Vec<usize>,
    /// The value, or its first few elements.
    pub value: String,
    /// ∂C/∂node, or its first few elements (`None` where no gradient flows).
    pub grad: Option<String>,
    /// In a drawing per layer, the parameters and constants folded into this node:
    /// `0.weight [128, 784] ‖grad‖ 0.01234`.
    pub folded: Vec<String>,
    /// The node's column.
    pub depth: usize,
}

impl GraphNode {
    /// The lines written in the node's box: a title, then the folded parameters, the
    /// value and the gradient.
    ///
    /// ```
    /// use chainrule::Tape;
    /// use chainrule_explain::graph::Graph;
    /// let tape = Tape::<f64>::new();
    /// let w = tape.param_scalar(2.0);
    /// let loss = (w * 3.0).relu();
    /// let grads = loss.backward_retain_all()?;
    /// let names = [(w.id(), "w".to_string())].into_iter().collect();
    /// let g = Graph::from_tape(&tape, loss.id(), &grads, &names);
    /// assert_eq!(g.nodes[0].lines(), ["w", "value 2", "grad 3"]);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn lines(&self) -> Vec<String> {
        let shape = if self.shape.is_empty() {
            String::new()
        } else {
            format!(" {}", shape_text(&self.shape))
        };
        let title = match self.role {
            Role::Target => format!("target {}{shape}", self.label),
            _ => format!("{}{shape}", self.label),
        };
        let mut lines = vec![title];
        lines.extend(self.folded.iter().cloned());
        lines.push(format!("value {}", self.value));
        lines.push(format!("grad {}", self.grad.as_deref().unwrap_or("—")));
        lines
    }
}

/// An edge: the value of `from` is operand `port` of `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// The producing node's id.
    pub from: usize,
    /// The consuming node's id.
    pub to: usize,
    /// Which operand of `to` (0 for the first): the edge ends at this input port.
    pub port: usize,
    /// The tensor's shape, in a drawing per layer.
    pub label: Option<String>,
}

/// A drawn graph: nodes in tape order and edges input → output.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Nodes that the root depends on, in tape order.
    pub nodes: Vec<GraphNode>,
    /// Every operand of every node, in the node's operand order.
    pub edges: Vec<Edge>,
    /// Whether the drawing is one box per layer.
    pub per_layer: bool,
}

/// The pass of a [`Sequential`] model drawn by [`Graph::of_model`], with what it
/// computed.
#[derive(Debug, Clone)]
pub struct ModelPass {
    /// The drawing.
    pub graph: Graph,
    /// The model's output.
    pub prediction: Tensor<f64>,
    /// The loss.
    pub loss: f64,
}

impl Graph {
    /// The part of `tape` that `root` depends on, with the gradients of a
    /// [`chainrule::Var::backward_retain_all`] pass; `names` labels leaves (parameter
    /// names, `x`) and may name computed nodes too (`f3 = sigmoid`). No node is a
    /// target: [`Graph::from_pass`] takes them.
    ///
    /// ```
    /// use chainrule::Tape;
    /// use chainrule_explain::graph::Graph;
    /// let tape = Tape::<f64>::new();
    /// let w = tape.param_scalar(2.0);
    /// let loss = (w * 3.0).relu();
    /// let grads = loss.backward_retain_all()?;
    /// let names = [(w.id(), "w".to_string())].into_iter().collect();
    /// let g = Graph::from_tape(&tape, loss.id(), &grads, &names);
    /// assert_eq!(g.nodes.iter().map(|n| n.label.as_str()).collect::<Vec<_>>(), ["w", "const", "mul", "relu"]);
    /// assert!(g.to_dot().contains("digraph"));
    /// assert!(g.to_svg().starts_with("<svg"));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn from_tape(
        tape: &Tape<f64>,
        root: usize,
        grads: &Gradients<f64>,
        names: &BTreeMap<usize, String>,
    ) -> Graph {
        Graph::from_pass(tape, root, grads, names, &[], Detail::Auto)
    }

    /// [`Graph::from_tape`] with the ids of the targets (drawn as `target y`) and the
    /// detail to draw. A cross-entropy's class indices, which its operation holds,
    /// are drawn as a target node of their own.
    ///
    /// ```
    /// use chainrule::Tape;
    /// use chainrule_explain::graph::{Detail, Graph, Role};
    /// let tape = Tape::<f64>::new();
    /// let w = tape.param_scalar(2.0);
    /// let y = tape.constant_scalar(1.0);
    /// let loss = w.sub(y)?.powf(2.0);
    /// let grads = loss.backward_retain_all()?;
    /// let names = [(w.id(), "w".to_string())].into_iter().collect();
    /// let g = Graph::from_pass(&tape, loss.id(), &grads, &names, &[y.id()], Detail::Operations);
    /// assert_eq!(g.nodes[1].role, Role::Target);
    /// assert_eq!(g.nodes[1].lines()[0], "target y");
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn from_pass(
        tape: &Tape<f64>,
        root: usize,
        grads: &Gradients<f64>,
        names: &BTreeMap<usize, String>,
        targets: &[usize],
        detail: Detail,
    ) -> Graph {
        // Walk back from the root to keep only what it depends on.
        let mut needed = vec![false; root + 1];
        needed[root] = true;
        for id in (0..=root).rev() {
            if needed[id] {
                for input in tape.inputs(id) {
                    needed[input] = true;
                }
            }
        }
        let mut nodes = Vec::new();
        let mut edges = Vec::new();
        let mut class_targets = 0;
        for id in (0..=root).filter(|&id| needed[id]) {
            let value = tape.value(id).expect("a node on the tape");
            let op = tape.op(id);
            let role = match &op {
                Some(_) => Role::Operation,
                None if targets.contains(&id) => Role::Target,
                None if grads.by_id(id).is_some() => Role::Parameter,
                None if names.contains_key(&id) => Role::Input,
                None => Role::Constant,
            };
            let inputs = tape.inputs(id);
            edges.extend(inputs.iter().enumerate().map(|(port, &from)| Edge {
                from,
                to: id,
                port,
                label: None,
            }));
            // The class indices live inside the fused loss; drawn as its second operand.
            if let Some(Op::SoftmaxCrossEntropy { classes }) = &op {
                let target = tape.len() + class_targets;
                class_targets += 1;
                let as_numbers: Vec<f64> = classes.iter().map(|&c| c as f64).collect();
                nodes.push(GraphNode {
                    id: target,
                    label: "y (class)".into(),
                    role: Role::Target,
                    shape: vec![classes.len()],
                    value: preview(&as_numbers),
                    grad: None,
                    folded: Vec::new(),
                    depth: 0,
                });
                edges.push(Edge {
                    from: target,
                    to: id,
                    port: inputs.len(),
                    label: None,
                });
            }
            nodes.push(GraphNode {
                id,
                label: match (op.as_ref().map(Op::label), names.get(&id)) {
                    (Some(op), Some(name)) => format!("{name} = {op}"),
                    (Some(op), None) => op,
                    (None, Some(name)) => name.clone(),
                    (None, None) if role == Role::Target => "y".into(),
                    (None, None) => "const".into(),
                },
                role,
                shape: value.shape().to_vec(),
                value: preview(&value.to_vec()),
                grad: grads.by_id(id).map(|g| preview(&g.to_vec())),
                folded: Vec::new(),
                depth: 0,
            });
        }
        let parameters: usize = nodes
            .iter()
            .filter(|n| n.role == Role::Parameter)
            .map(|n| n.shape.iter().product::<usize>())
            .sum();
        let per_layer = match detail {
            Detail::Operations => false,
            Detail::Layers => true,
            Detail::Auto => {
                nodes.len() > MAX_DETAILED_NODES || parameters > MAX_DETAILED_PARAMETERS
            }
        };
        let mut graph = Graph {
            nodes,
            edges,
            per_layer,
        };
        if per_layer {
            graph.fold_into_layers(tape, grads);
        }
        graph.assign_depths();
        graph
    }

    /// The pass of `model` on `x` with `loss` against `y`: parameters by their
    /// PyTorch names, `x`, and the target `y` (the constant the loss compares the
    /// prediction with, or a cross-entropy's class indices).
    ///
    /// ```
    /// use chainrule::{loss::{Loss, Target}, nn::{Layer, Sequential}, Tensor};
    /// use chainrule_explain::graph::{Detail, Graph, Role};
    /// let model = Sequential::<f64>::new(vec![Layer::Linear { inputs: 2, outputs: 1, bias: true }], 0)?;
    /// let x = Tensor::from_vec(vec![0.5, -1.0], &[1, 2])?;
    /// let y = Target::Values(Tensor::from_vec(vec![1.0], &[1, 1])?);
    /// let pass = Graph::of_model(&model, &x, &y, Loss::Mse, Detail::Auto)?;
    /// let target = pass.graph.nodes.iter().find(|n| n.role == Role::Target).unwrap();
    /// assert_eq!(target.lines()[0], "target y [1, 1]");
    /// assert!(pass.graph.nodes.iter().any(|n| n.label == "0.weight"));
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    ///
    /// # Errors
    /// The forward pass's and the loss's errors (shapes that do not fit).
    pub fn of_model(
        model: &Sequential<f64>,
        x: &Tensor<f64>,
        y: &Target<f64>,
        loss: Loss,
        detail: Detail,
    ) -> chainrule::Result<ModelPass> {
        let tape = Tape::new();
        let params = model.bind(&tape);
        let input = tape.constant(x.clone());
        let prediction = model.forward(&params, input)?;
        let cost = loss.compute(prediction, y)?;
        let mut names: BTreeMap<usize, String> = model
            .params()
            .iter()
            .zip(&params)
            .map(|(p, v)| (v.id(), p.name.clone()))
            .collect();
        names.insert(input.id(), "x".into());
        // The loss records the target as a constant after the prediction: the one
        // holding exactly y's values.
        let targets: Vec<usize> = match y {
            Target::Values(values) => (prediction.id() + 1..=cost.id())
                .filter(|&id| tape.op(id).is_none())
                .find(|&id| tape.value(id).as_ref() == Some(values))
                .into_iter()
                .collect(),
            Target::Classes(_) => Vec::new(),
        };
        let grads = cost.backward_retain_all()?;
        Ok(ModelPass {
            graph: Graph::from_pass(&tape, cost.id(), &grads, &names, &targets, detail),
            prediction: prediction.value(),
            loss: cost.item()?,
        })
    }

    /// The pass of a formula network: every statement named (`f3 = sigmoid`), and
    /// the inputs the loss uses but the output does not (`y_true`) drawn as targets.
    ///
    /// ```
    /// use chainrule_explain::formula::Formula;
    /// use chainrule_explain::graph::{Detail, Graph, Role};
    /// let f = Formula::parse("input x = 3\ninput y = 1\nparam w = 2\noutput p = x*w\nloss L = (p - y)**2")?;
    /// let g = Graph::of_formula(&f, Detail::Auto)?;
    /// let y = g.nodes.iter().find(|n| n.label == "y").unwrap();
    /// assert_eq!(y.role, Role::Target);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    ///
    /// # Errors
    /// Errors of the backward pass.
    pub fn of_formula(formula: &Formula, detail: Detail) -> chainrule::Result<Graph> {
        let tape = Tape::new();
        let vars = formula.record(&tape);
        let names: BTreeMap<usize, String> =
            vars.iter().map(|(n, v)| (v.id(), n.clone())).collect();
        let loss = vars[formula.loss_name()];
        let targets = match formula.output_name() {
            Some(output) => {
                let reached = depends_on(&tape, vars[output].id());
                let inputs = formula.inputs();
                inputs
                    .iter()
                    .map(|(name, _)| vars[name].id())
                    .filter(|&id| reached.get(id) != Some(&true))
                    .collect()
            }
            None => Vec::new(),
        };
        let grads = loss.backward_retain_all()?;
        Ok(Graph::from_pass(
            &tape,
            loss.id(),
            &grads,
            &names,
            &targets,
            detail,
        ))
    }

    /// Folds parameters and constants used by one operation into it, names linear
    /// and convolution layers by their sizes, and labels edges with shapes.
    fn fold_into_layers(&mut self, tape: &Tape<f64>, grads: &Gradients<f64>) {
        let consumers = |id: usize, edges: &[Edge]| edges.iter().filter(|e| e.from == id).count();
        let foldable: Vec<usize> = self
            .nodes
            .iter()
            .filter(|n| matches!(n.role, Role::Parameter | Role::Constant))
            .filter(|n| consumers(n.id, &self.edges) == 1)
            .map(|n| n.id)
            .collect();
        for &leaf in &foldable {
            let node = self.nodes.iter().find(|n| n.id == leaf).expect("a node");
            let line = match grads.by_id(leaf) {
                Some(g) => format!(
                    "{} {} ‖grad‖ {}",
                    node.label,
                    shape_text(&node.shape),
                    shown(norm(g))
                ),
                None => format!("{} {}", node.label, node.value),
            };
            let to = self
                .edges
                .iter()
                .find(|e| e.from == leaf)
                .expect("a use")
                .to;
            if let Some(consumer) = self.nodes.iter_mut().find(|n| n.id == to) {
                consumer.folded.push(line);
            }
        }
        self.nodes.retain(|n| !foldable.contains(&n.id));
        self.edges.retain(|e| !foldable.contains(&e.from));
        // Renumber the remaining operands of each node, keeping their order.
        let mut next_port: BTreeMap<usize, usize> = BTreeMap::new();
        for edge in &mut self.edges {
            let port = next_port.entry(edge.to).or_insert(0);
            edge.port = *port;
            *port += 1;
        }
        for node in &mut self.nodes {
            let weight_shape = || {
                tape.inputs(node.id)
                    .get(1)
                    .and_then(|&w| tape.value(w))
                    .map(|w| w.shape().to_vec())
            };
            match (tape.op(node.id), weight_shape()) {
                (Some(Op::Linear | Op::LinearRelu), Some(w)) if w.len() == 2 => {
                    node.label = format!("{} {}→{}", node.label, w[1], w[0]);
                }
                (Some(Op::Conv2d { .. }), Some(w)) if w.len() == 4 => {
                    node.label = format!("{} {}→{}", node.label, w[1], w[0]);
                }
                _ => {}
            }
        }
        let shapes: BTreeMap<usize, Vec<usize>> =
            self.nodes.iter().map(|n| (n.id, n.shape.clone())).collect();
        for edge in &mut self.edges {
            edge.label = shapes.get(&edge.from).map(|s| shape_text(s));
        }
    }

    /// Each node's position in `nodes`, by its id.
    fn positions(&self) -> BTreeMap<usize, usize> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id, i))
            .collect()
    }

    /// Operations go to the column of their longest path from a leaf; a leaf goes
    /// just left of its first consumer (its nearest column), so that parameters sit
    /// beside their layer instead of all in the first column.
    fn assign_depths(&mut self) {
        let index = self.positions();
        let mut operands: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for e in &self.edges {
            operands[index[&e.to]].push(index[&e.from]);
        }
        let mut depth = vec![0usize; self.nodes.len()];
        // Nodes are in tape order, or (a class target) before their consumer: inputs
        // come first, so one pass in order is a topological pass.
        for i in 0..self.nodes.len() {
            depth[i] = operands[i].iter().map(|&j| depth[j] + 1).max().unwrap_or(0);
        }
        for i in 0..self.nodes.len() {
            if operands[i].is_empty() {
                let first_use = self
                    .edges
                    .iter()
                    .filter(|e| index[&e.from] == i)
                    .map(|e| depth[index[&e.to]])
                    .min();
                if let Some(d) = first_use {
                    depth[i] = d - 1;
                }
            }
        }
        for (node, d) in self.nodes.iter_mut().zip(depth) {
            node.depth = d;
        }
    }
}

/// `reached[id]`: whether `root` depends on node `id` (ids up to `root`).
fn depends_on(tape: &Tape<f64>, root: usize) -> Vec<bool> {
    let mut reached = vec![false; root + 1];
    reached[root] = true;
    for id in (0..=root).rev() {
        if reached[id] {
            for input in tape.inputs(id) {
                reached[input] = true;
            }
        }
    }
    reached
}

/// A node's box in a [`Layout`].
#[derive(Debug, Clone, PartialEq)]
pub struct NodeBox {
    /// The node's id.
    pub id: usize,
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width: the longest line plus [`TEXT_MARGIN`] on both sides.
    pub width: f64,
    /// Height.
    pub height: f64,
    /// The text, one entry per line ([`GraphNode::lines`]).
    pub lines: Vec<String>,
    /// The input ports on the left edge, in operand order (top to bottom).
    pub ports: Vec<(f64, f64)>,
    /// The output port, the middle of the right edge.
    pub output: (f64, f64),
}

/// An edge's route in a [`Layout`]: straight segments, horizontal inside a column,
/// turning only in the gaps between columns.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeRoute {
    /// From the source's output port to the target's input port.
    pub points: Vec<(f64, f64)>,
    /// Where the edge's shape label starts (its baseline's left end): just past the
    /// source's column, above the edge, in the gap that was widened for it.
    pub label_at: (f64, f64),
}

/// Where everything is drawn, in SVG pixels (y grows downward).
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The drawing's width.
    pub width: f64,
    /// The drawing's height.
    pub height: f64,
    /// One box per node, in the order of [`Graph::nodes`].
    pub boxes: Vec<NodeBox>,
    /// One route per edge, in the order of [`Graph::edges`].
    pub routes: Vec<EdgeRoute>,
}

/// Something that occupies a slot in a column: a node's box, or an edge passing.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Box,
    Lane,
}

/// A link between slots of neighbouring columns: part of an edge.
#[derive(Debug, Clone, Copy)]
struct Link {
    from: usize,
    to: usize,
    /// Where on `to` the link ends, as a fraction of its height from its middle
    /// (a port's offset; 0 for a lane).
    port: f64,
}

impl Graph {
    /// The layered layout described in the module documentation.
    ///
    /// ```
    /// use chainrule::Tape;
    /// use chainrule_explain::graph::Graph;
    /// let tape = Tape::<f64>::new();
    /// let a = tape.param_scalar(2.0);
    /// let loss = a.sub(a.exp())?;
    /// let grads = loss.backward_retain_all()?;
    /// let g = Graph::from_tape(&tape, loss.id(), &grads, &Default::default());
    /// let layout = g.layout();
    /// // sub's two operands end at its two ports, one above the other.
    /// let ends: Vec<_> = layout.routes.iter().filter(|r| r.points.len() > 1).map(|r| *r.points.last().unwrap()).collect();
    /// let sub = &layout.boxes[2];
    /// assert!(ends.contains(&sub.ports[0]) && ends.contains(&sub.ports[1]));
    /// assert!(sub.ports[0].1 < sub.ports[1].1);
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn layout(&self) -> Layout {
        let index = self.positions();
        let columns = self
            .nodes
            .iter()
            .map(|n| n.depth)
            .max()
            .map_or(0, |d| d + 1);
        let port_counts: Vec<usize> = self
            .nodes
            .iter()
            .map(|n| self.edges.iter().filter(|e| e.to == n.id).count())
            .collect();
        let lines: Vec<Vec<String>> = self.nodes.iter().map(GraphNode::lines).collect();
        let box_width = |i: usize| {
            lines[i].iter().map(|l| text_width(l)).fold(0.0, f64::max) + 2.0 * TEXT_MARGIN
        };
        let box_height = |i: usize| {
            let text = lines[i].len() as f64 * LINE_HEIGHT + 2.0 * TOP_MARGIN;
            text.max((port_counts[i] + 1) as f64 * PORT_SPACING)
        };

        // Slots: one per node, then one per column an edge passes through.
        let mut slots: Vec<Slot> = vec![Slot::Box; self.nodes.len()];
        let mut column_of: Vec<usize> = self.nodes.iter().map(|n| n.depth).collect();
        let mut height: Vec<f64> = (0..self.nodes.len()).map(box_height).collect();
        let mut chains: Vec<Vec<usize>> = Vec::new();
        let mut links: Vec<Link> = Vec::new();
        for e in &self.edges {
            let (from, to) = (index[&e.from], index[&e.to]);
            let mut chain = vec![from];
            for column in self.nodes[from].depth + 1..self.nodes[to].depth {
                slots.push(Slot::Lane);
                column_of.push(column);
                height.push(LANE_HEIGHT);
                chain.push(slots.len() - 1);
            }
            chain.push(to);
            let port = (e.port + 1) as f64 / (port_counts[to] + 1) as f64 - 0.5;
            for pair in chain.windows(2) {
                let last = pair[1] == to;
                links.push(Link {
                    from: pair[0],
                    to: pair[1],
                    port: if last { port } else { 0.0 },
                });
            }
            chains.push(chain);
        }

        let order = order_columns(columns, &column_of, &links);
        let tops = place_vertically(&order, &height, &links, &slots);

        // Columns: as wide as their widest box; gaps wide enough for shape labels.
        let mut column_width = vec![0.0f64; columns];
        for (i, n) in self.nodes.iter().enumerate() {
            column_width[n.depth] = column_width[n.depth].max(box_width(i));
        }
        let mut gap = vec![COLUMN_GAP; columns];
        for e in &self.edges {
            if let Some(label) = &e.label {
                let column = self.nodes[index[&e.from]].depth;
                gap[column] = gap[column].max(text_width(label) + 2.0 * TEXT_MARGIN);
            }
        }
        let mut column_x = vec![MARGIN; columns];
        for c in 1..columns {
            column_x[c] = column_x[c - 1] + column_width[c - 1] + gap[c - 1];
        }
        let column_right = |c: usize| column_x[c] + column_width[c];

        let boxes: Vec<NodeBox> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let (width, height) = (box_width(i), height[i]);
                let x = column_x[n.depth] + (column_width[n.depth] - width) / 2.0;
                let y = tops[i];
                let ports = (0..port_counts[i])
                    .map(|k| (x, y + height * (k + 1) as f64 / (port_counts[i] + 1) as f64))
                    .collect();
                NodeBox {
                    id: n.id,
                    x,
                    y,
                    width,
                    height,
                    lines: lines[i].clone(),
                    ports,
                    output: (x + width, y + height / 2.0),
                }
            })
            .collect();

        let routes: Vec<EdgeRoute> = self
            .edges
            .iter()
            .zip(&chains)
            .map(|(e, chain)| {
                let (from, to) = (&boxes[chain[0]], &boxes[*chain.last().expect("ends")]);
                let mut points = vec![from.output];
                let mut push = |p: (f64, f64)| {
                    if points.last() != Some(&p) {
                        points.push(p);
                    }
                };
                push((column_right(self.nodes[chain[0]].depth), from.output.1));
                for &lane in &chain[1..chain.len() - 1] {
                    let y = tops[lane] + LANE_HEIGHT / 2.0;
                    push((column_x[column_of[lane]], y));
                    push((column_right(column_of[lane]), y));
                }
                let port = to.ports[e.port];
                push((column_x[column_of[*chain.last().expect("ends")]], port.1));
                push(port);
                let label_at = (
                    column_right(self.nodes[chain[0]].depth) + 4.0,
                    from.output.1 - 5.0,
                );
                EdgeRoute { points, label_at }
            })
            .collect();

        let width = (0..columns).map(column_right).fold(0.0, f64::max) + MARGIN;
        let height = boxes
            .iter()
            .map(|b| b.y + b.height)
            .chain(tops.iter().zip(&height).map(|(t, h)| t + h))
            .fold(0.0, f64::max)
            + MARGIN;
        Layout {
            width,
            height,
            boxes,
            routes,
        }
    }
}

/// Orders each column's slots to reduce crossings: barycenter sweeps, left to right
/// (a slot goes where the slots feeding it are) and right to left (where the ports it
/// feeds are), keeping the order with the fewest crossings. Starts from tape order,
/// so the drawing is deterministic.
fn order_columns(columns: usize, column_of: &[usize], links: &[Link]) -> Vec<Vec<usize>> {
    const SWEEPS: usize = 8;
    let mut order: Vec<Vec<usize>> = vec![Vec::new(); columns];
    for (slot, &c) in column_of.iter().enumerate() {
        order[c].push(slot);
    }
    let positions = |order: &[Vec<usize>]| {
        let mut pos = vec![0.0; column_of.len()];
        for column in order {
            for (k, &slot) in column.iter().enumerate() {
                pos[slot] = k as f64;
            }
        }
        pos
    };
    let crossings = |order: &[Vec<usize>]| {
        let pos = positions(order);
        let mut count = 0;
        for (i, a) in links.iter().enumerate() {
            for b in &links[i + 1..] {
                if column_of[a.from] == column_of[b.from] {
                    let above = pos[a.from] - pos[b.from];
                    let below = (pos[a.to] + a.port) - (pos[b.to] + b.port);
                    if above * below < 0.0 {
                        count += 1;
                    }
                }
            }
        }
        count
    };
    let mut incoming: Vec<Vec<&Link>> = vec![Vec::new(); column_of.len()];
    let mut outgoing: Vec<Vec<&Link>> = vec![Vec::new(); column_of.len()];
    for l in links {
        incoming[l.to].push(l);
        outgoing[l.from].push(l);
    }
    let mut best = (crossings(&order), order.clone());
    for sweep in 0..SWEEPS {
        let left_to_right = sweep % 2 == 0;
        let sequence: Vec<usize> = if left_to_right {
            (1..columns).collect()
        } else {
            (0..columns.saturating_sub(1)).rev().collect()
        };
        for c in sequence {
            let pos = positions(&order);
            let key = |slot: usize| {
                let wanted: Vec<f64> = if left_to_right {
                    incoming[slot]
                        .iter()
                        .map(|l| pos[l.from] - l.port)
                        .collect()
                } else {
                    outgoing[slot].iter().map(|l| pos[l.to] + l.port).collect()
                };
                if wanted.is_empty() {
                    pos[slot]
                } else {
                    wanted.iter().sum::<f64>() / wanted.len() as f64
                }
            };
            let mut keyed: Vec<(f64, usize)> = order[c].iter().map(|&s| (key(s), s)).collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            order[c] = keyed.into_iter().map(|(_, s)| s).collect();
        }
        let count = crossings(&order);
        if count < best.0 {
            best = (count, order.clone());
        }
    }
    best.1
}

/// The top of every slot: each column keeps its order and its gaps, and each slot
/// moves toward the height of what it connects to (a port level with the output it
/// comes from), so that edges run straight where they can. Sweeps alternate: right
/// to left a slot follows the ports it feeds, left to right the outputs feeding it;
/// the last sweep is left to right, so a chain of single-operand layers is a
/// straight line from the input.
fn place_vertically(
    order: &[Vec<usize>],
    height: &[f64],
    links: &[Link],
    slots: &[Slot],
) -> Vec<f64> {
    const ROUNDS: usize = 9;
    let gap = |a: usize, b: usize| match (slots[a], slots[b]) {
        (Slot::Box, Slot::Box) => BOX_GAP,
        _ => BOX_GAP / 2.0,
    };
    let mut incoming: Vec<Vec<&Link>> = vec![Vec::new(); height.len()];
    let mut outgoing: Vec<Vec<&Link>> = vec![Vec::new(); height.len()];
    for l in links {
        incoming[l.to].push(l);
        outgoing[l.from].push(l);
    }
    let mut top = vec![0.0; height.len()];
    for column in order {
        let mut y = 0.0;
        for (k, &slot) in column.iter().enumerate() {
            if k > 0 {
                y += gap(column[k - 1], slot);
            }
            top[slot] = y;
            y += height[slot];
        }
    }
    for round in 0..ROUNDS {
        let left_to_right = round % 2 == 0;
        let columns: Vec<&Vec<usize>> = if left_to_right {
            order.iter().collect()
        } else {
            order.iter().rev().collect()
        };
        for column in columns {
            let middle = |s: usize, top: &[f64]| top[s] + height[s] / 2.0;
            // Where each slot's middle would like to be.
            let wanted: Vec<f64> = column
                .iter()
                .map(|&s| {
                    let targets: Vec<f64> = if left_to_right {
                        incoming[s]
                            .iter()
                            .map(|l| middle(l.from, &top) - l.port * height[s])
                            .collect()
                    } else {
                        outgoing[s]
                            .iter()
                            .map(|l| middle(l.to, &top) + l.port * height[l.to])
                            .collect()
                    };
                    if targets.is_empty() {
                        middle(s, &top)
                    } else {
                        targets.iter().sum::<f64>() / targets.len() as f64
                    }
                })
                .collect();
            let mut new_top: Vec<f64> = column
                .iter()
                .zip(&wanted)
                .map(|(&s, w)| w - height[s] / 2.0)
                .collect();
            // Keep the order and the gaps: push up from the bottom, then down from the
            // top (the second pass wins, so nothing overlaps).
            for k in (0..column.len().saturating_sub(1)).rev() {
                let limit = new_top[k + 1] - height[column[k]] - gap(column[k], column[k + 1]);
                new_top[k] = new_top[k].min(limit);
            }
            for k in 1..column.len() {
                let limit = new_top[k - 1] + height[column[k - 1]] + gap(column[k - 1], column[k]);
                new_top[k] = new_top[k].max(limit);
            }
            for (&s, t) in column.iter().zip(new_top) {
                top[s] = t;
            }
        }
    }
    let lowest = top.iter().copied().fold(f64::INFINITY, f64::min);
    let shift = if lowest.is_finite() {
        MARGIN - lowest
    } else {
        0.0
    };
    top.iter().map(|t| t + shift).collect()
}

fn escape_xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Graph {
    /// SVG, with the positions of [`Graph::layout`]: leaves and the input on the
    /// left, the loss on the right.
    pub fn to_svg(&self) -> String {
        let layout = self.layout();
        let (width, height) = (layout.width.ceil(), layout.height.ceil());
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" font-size=\"{FONT_SIZE}\">\n\
             <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#666\"/></marker></defs>\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        for route in &layout.routes {
            let _ = writeln!(
                out,
                "<path d=\"{}\" fill=\"none\" stroke=\"#888\" stroke-width=\"1.2\" marker-end=\"url(#arrow)\"/>",
                svg_path(&route.points)
            );
        }
        // A shape label once per producing node, at the start of its edges.
        let mut labelled = Vec::new();
        for (edge, route) in self.edges.iter().zip(&layout.routes) {
            if let (Some(label), false) = (&edge.label, labelled.contains(&edge.from)) {
                labelled.push(edge.from);
                let (x, y) = route.label_at;
                let _ = writeln!(
                    out,
                    "<text x=\"{x}\" y=\"{y}\" fill=\"#555\">{}</text>",
                    escape_xml(label)
                );
            }
        }
        for (node, b) in self.nodes.iter().zip(&layout.boxes) {
            let (fill, stroke) = match node.role {
                Role::Parameter => ("#e8f0fb", "#4a78b5"),
                Role::Input | Role::Constant => ("#eef0f2", "#7a8593"),
                Role::Target => ("#e6f4e6", "#3f8f46"),
                Role::Operation => ("#fdf3e3", "#c98a2b"),
            };
            let _ = writeln!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"6\" fill=\"{fill}\" stroke=\"{stroke}\"/>",
                b.x, b.y, b.width, b.height
            );
            let last = b.lines.len() - 1;
            for (k, line) in b.lines.iter().enumerate() {
                let style = if k == 0 {
                    " font-weight=\"bold\""
                } else if k == last {
                    " fill=\"#a33\""
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "<text x=\"{}\" y=\"{}\"{style}>{}</text>",
                    b.x + TEXT_MARGIN,
                    b.y + TOP_MARGIN + (k + 1) as f64 * LINE_HEIGHT - 4.0,
                    escape_xml(line)
                );
            }
            for &(x, y) in &b.ports {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\" fill=\"{stroke}\"/>"
                );
            }
        }
        out.push_str("</svg>\n");
        out
    }

    /// Graphviz DOT: the same boxes, text and ports as the SVG, with
    /// [`Graph::layout`]'s positions (`neato -n2 -Tsvg` keeps them; `dot` lays it
    /// out again).
    pub fn to_dot(&self) -> String {
        let layout = self.layout();
        let mut out = String::from(
            "digraph chainrule {\n  rankdir=LR;\n  node [shape=record, fontname=\"DejaVu Sans Mono\", fontsize=12];\n",
        );
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace(['{', '}', '|', '<', '>'], " ")
        };
        for (n, b) in self.nodes.iter().zip(&layout.boxes) {
            let text: Vec<String> = b.lines.iter().map(|l| esc(l)).collect();
            let ports: Vec<String> = (0..b.ports.len())
                .map(|k| format!("<p{k}> {}", k + 1))
                .collect();
            let label = if ports.len() > 1 {
                format!(
                    "{{ {{ {} }} | {{ {} }} }}",
                    ports.join(" | "),
                    text.join(" | ")
                )
            } else {
                format!("{{ {} }}", text.join(" | "))
            };
            // Graphviz's y grows upward, in points (1 px = 0.75 pt here).
            let (cx, cy) = (
                (b.x + b.width / 2.0) * 0.75,
                (layout.height - b.y - b.height / 2.0) * 0.75,
            );
            let fill = match n.role {
                Role::Parameter => ", style=filled, fillcolor=\"#e8f0fb\"",
                Role::Target => ", style=filled, fillcolor=\"#e6f4e6\"",
                Role::Input | Role::Constant => ", style=filled, fillcolor=\"#eef0f2\"",
                Role::Operation => "",
            };
            let _ = writeln!(
                out,
                "  n{} [label=\"{label}\", pos=\"{cx:.1},{cy:.1}!\"{fill}];",
                n.id
            );
        }
        for e in &self.edges {
            let several = self.edges.iter().filter(|o| o.to == e.to).count() > 1;
            let port = if several {
                format!(":p{}", e.port)
            } else {
                String::new()
            };
            let label = e
                .label
                .as_deref()
                .map_or(String::new(), |l| format!(" [label=\"{}\"]", esc(l)));
            let _ = writeln!(out, "  n{} -> n{}{port}{label};", e.from, e.to);
        }
        out.push_str("}\n");
        out
    }
}

/// An SVG path through `points`: straight where horizontal (inside a column), a
/// curve where it changes height (in a gap between columns). The curve's control
/// points lie in the rectangle spanned by its two ends, so it stays in the gap.
fn svg_path(points: &[(f64, f64)]) -> String {
    let mut d = format!("M{:.1},{:.1}", points[0].0, points[0].1);
    for pair in points.windows(2) {
        let ((x1, y1), (x2, y2)) = (pair[0], pair[1]);
        if y1 == y2 {
            let _ = write!(d, " L{x2:.1},{y2:.1}");
        } else {
            let mid = (x1 + x2) / 2.0;
            let _ = write!(d, " C{mid:.1},{y1:.1} {mid:.1},{y2:.1} {x2:.1},{y2:.1}");
        }
    }
    d
}
