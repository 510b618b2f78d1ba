//! The computational graph of one forward and backward pass, as DOT and as SVG laid
//! out here (no Graphviz needed): every node with its operation, value and gradient.

use crate::notation::number;
use chainrule::{Gradients, Tape, Tensor};
use std::collections::BTreeMap;
use std::fmt::Write;

/// One node of the drawing.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphNode {
    /// The tape id.
    pub id: usize,
    /// The operation (`matmul`, `relu`, ...) or, for a leaf, its name.
    pub label: String,
    /// Whether the node is a leaf (a parameter, input or constant).
    pub leaf: bool,
    /// The value's shape.
    pub shape: Vec<usize>,
    /// The value, or its first few elements.
    pub value: String,
    /// ∂C/∂node, or its first few elements (`None` where no gradient flows).
    pub grad: Option<String>,
    /// The column in the drawing: the longest path from a leaf.
    pub depth: usize,
}

/// A drawn graph: nodes in tape order and edges input → output.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Nodes that the root depends on, in tape order.
    pub nodes: Vec<GraphNode>,
    /// (from, to) tape ids.
    pub edges: Vec<(usize, usize)>,
}

/// A short rendering of a tensor: the number itself for one element, else the shape
/// and the first few values.
fn preview(t: &Tensor<f64>) -> String {
    const SHOWN: usize = 4;
    let values = t.to_vec();
    if values.len() == 1 {
        return number(values[0]);
    }
    let head: Vec<String> = values
        .iter()
        .take(SHOWN)
        .map(|v| {
            format!("{v:.4}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        })
        .collect();
    let more = if values.len() > SHOWN { ", …" } else { "" };
    format!("[{}{more}]", head.join(", "))
}

impl Graph {
    /// The part of `tape` that `root` depends on, with the gradients of a
    /// [`chainrule::Var::backward_retain_all`] pass; `names` labels leaves (parameter
    /// names, `x`) and may name computed nodes too (`f3 = sigmoid`).
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
        let mut depth = vec![0usize; root + 1];
        let mut nodes = Vec::new();
        let mut edges = Vec::new();
        for id in (0..=root).filter(|&id| needed[id]) {
            let inputs = tape.inputs(id);
            depth[id] = inputs.iter().map(|&i| depth[i] + 1).max().unwrap_or(0);
            edges.extend(inputs.iter().map(|&i| (i, id)));
            let value = tape.value(id).expect("a node on the tape");
            let op = tape.label(id);
            nodes.push(GraphNode {
                id,
                leaf: op.is_none(),
                label: match (op, names.get(&id)) {
                    (Some(op), Some(name)) => format!("{name} = {op}"),
                    (Some(op), None) => op,
                    (None, name) => name.cloned().unwrap_or_else(|| "const".into()),
                },
                shape: value.shape().to_vec(),
                value: preview(&value),
                grad: grads.by_id(id).map(preview),
                depth: depth[id],
            });
        }
        Graph { nodes, edges }
    }

    /// Graphviz DOT, left to right, like micrograd's `draw_dot`.
    pub fn to_dot(&self) -> String {
        let mut out = String::from(
            "digraph chainrule {\n  rankdir=LR;\n  node [shape=record, fontname=\"DejaVu Sans\"];\n",
        );
        for n in &self.nodes {
            let esc = |s: &str| {
                s.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace(['{', '}', '|', '<', '>'], " ")
            };
            let grad = n
                .grad
                .as_deref()
                .map_or(String::new(), |g| format!(" | grad {}", esc(g)));
            let _ = writeln!(
                out,
                "  n{} [label=\"{{ {} {:?} | value {}{grad} }}\"{}];",
                n.id,
                esc(&n.label),
                n.shape,
                esc(&n.value),
                if n.leaf {
                    ", style=filled, fillcolor=\"#e8f0fb\""
                } else {
                    ""
                }
            );
        }
        for (a, b) in &self.edges {
            let _ = writeln!(out, "  n{a} -> n{b};");
        }
        out.push_str("}\n");
        out
    }

    /// SVG, laid out in columns by depth (leaves on the left, the loss on the right).
    pub fn to_svg(&self) -> String {
        // Box size, gaps between columns and rows, margin.
        const W: f64 = 230.0;
        const H: f64 = 62.0;
        const GAP_X: f64 = 70.0;
        const GAP_Y: f64 = 24.0;
        const PAD: f64 = 20.0;
        let columns = self.nodes.iter().map(|n| n.depth).max().unwrap_or(0) + 1;
        let mut rows = vec![0usize; columns];
        let mut position = BTreeMap::new();
        for n in &self.nodes {
            let row = rows[n.depth];
            rows[n.depth] += 1;
            position.insert(
                n.id,
                (
                    PAD + n.depth as f64 * (W + GAP_X),
                    PAD + row as f64 * (H + GAP_Y),
                ),
            );
        }
        let width = PAD * 2.0 + columns as f64 * (W + GAP_X) - GAP_X;
        let height =
            PAD * 2.0 + rows.iter().max().copied().unwrap_or(1) as f64 * (H + GAP_Y) - GAP_Y;
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"DejaVu Sans, Verdana, sans-serif\" font-size=\"12\">\n\
             <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#666\"/></marker></defs>\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        for (a, b) in &self.edges {
            let ((ax, ay), (bx, by)) = (position[a], position[b]);
            let (x1, y1, x2, y2) = (ax + W, ay + H / 2.0, bx, by + H / 2.0);
            let mid = (x1 + x2) / 2.0;
            let _ = writeln!(
                out,
                "<path d=\"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}\" fill=\"none\" stroke=\"#888\" stroke-width=\"1.2\" marker-end=\"url(#arrow)\"/>"
            );
        }
        for n in &self.nodes {
            let (x, y) = position[&n.id];
            let (fill, stroke) = if n.leaf {
                ("#e8f0fb", "#4a78b5")
            } else {
                ("#fdf3e3", "#c98a2b")
            };
            let shape = if n.shape.is_empty() {
                String::new()
            } else {
                format!(" {:?}", n.shape)
            };
            let _ = writeln!(
                out,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{W}\" height=\"{H}\" rx=\"6\" fill=\"{fill}\" stroke=\"{stroke}\"/>"
            );
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" font-weight=\"bold\">{}{}</text>",
                x + 8.0,
                y + 17.0,
                esc(&n.label),
                esc(&shape)
            );
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\">value {}</text>",
                x + 8.0,
                y + 35.0,
                esc(&n.value)
            );
            let grad = n.grad.as_deref().unwrap_or("—");
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" fill=\"#a33\">grad {}</text>",
                x + 8.0,
                y + 53.0,
                esc(grad)
            );
        }
        out.push_str("</svg>\n");
        out
    }
}
