//! The graph drawing's geometry (issue 15, item 4): on the notebooks' networks and a
//! spiral-sized MLP, no edge is drawn through a box, every edge ends at its own input
//! port, and every line of text fits in its box; large models are drawn one box per
//! layer; labels carry no `-0` and no float noise.

mod common;

use chainrule::Tensor;
use chainrule::autodiff::Elementwise;
use chainrule::loss::{Loss, Target};
use chainrule::nn::{Layer, Sequential};
use chainrule_explain::formula::Formula;
use chainrule_explain::graph::{Detail, Graph, Layout, Role, TEXT_MARGIN, text_width};
use std::path::Path;

/// A 2-64-64-3 ReLU MLP (what `chainrule train` trains on the spiral) on four points
/// with class targets, as `chainrule graph runs/spiral-001 --samples 0..4` draws it.
/// A ReLU MLP of the given layer sizes (a ReLU between linear layers, none after the
/// last), seeded with `seed`.
fn relu_mlp(sizes: &[usize], seed: u64) -> Sequential<f64> {
    let mut layers = Vec::new();
    for (i, pair) in sizes.windows(2).enumerate() {
        if i > 0 {
            layers.push(Layer::Activation(Elementwise::Relu));
        }
        layers.push(Layer::Linear {
            inputs: pair[0],
            outputs: pair[1],
            bias: true,
        });
    }
    Sequential::<f64>::new(layers, seed).unwrap()
}

fn spiral_sized() -> Graph {
    let model = relu_mlp(&[2, 64, 64, 3], 1);
    let x = Tensor::from_vec(vec![0.1, -0.3, 0.5, 0.2, -0.7, 0.9, 0.0, -0.05], &[4, 2]).unwrap();
    let y = Target::Classes(vec![0, 1, 2, 1]);
    Graph::of_model(&model, &x, &y, Loss::CrossEntropy, Detail::Auto)
        .unwrap()
        .graph
}

fn notebook_graph(name: &str) -> Graph {
    let nb = common::notebook(name);
    Graph::of_model(&nb.model, &nb.x, &nb.y, nb.loss, Detail::Auto)
        .unwrap()
        .graph
}

fn notebook_003() -> Graph {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/notebooks/003/network.formula"),
    )
    .unwrap();
    Graph::of_formula(&Formula::parse(&text).unwrap(), Detail::Auto).unwrap()
}

/// The drawings the tests look at, by name.
fn drawings() -> Vec<(String, Graph)> {
    let mut all: Vec<(String, Graph)> = common::NOTEBOOKS
        .iter()
        .map(|name| (format!("notebook {name}"), notebook_graph(name)))
        .collect();
    all.push(("notebook 003 (formula)".into(), notebook_003()));
    all.push(("spiral-sized MLP".into(), spiral_sized()));
    all
}

/// Whether the rectangle spanned by segment `a`–`b` reaches into the inside of `bx`
/// (touching its border, as an edge does at its ports, is allowed). A curve in the
/// drawing has its control points in that rectangle, so it stays inside it too.
fn enters(a: (f64, f64), b: (f64, f64), bx: &chainrule_explain::graph::NodeBox) -> bool {
    const TOUCH: f64 = 0.5;
    let (left, right) = (a.0.min(b.0), a.0.max(b.0));
    let (top, bottom) = (a.1.min(b.1), a.1.max(b.1));
    left < bx.x + bx.width - TOUCH
        && right > bx.x + TOUCH
        && top < bx.y + bx.height - TOUCH
        && bottom > bx.y + TOUCH
}

fn check_geometry(name: &str, graph: &Graph, layout: &Layout) {
    assert_eq!(layout.boxes.len(), graph.nodes.len());
    assert_eq!(layout.routes.len(), graph.edges.len());
    for (edge, route) in graph.edges.iter().zip(&layout.routes) {
        for segment in route.points.windows(2) {
            for bx in &layout.boxes {
                assert!(
                    !enters(segment[0], segment[1], bx),
                    "{name}: the edge {} → {} passes through the box of node {} ({:?}) at {:?}",
                    edge.from,
                    edge.to,
                    bx.id,
                    bx.lines[0],
                    segment
                );
            }
        }
        // A shape label sits in a gap, clear of every box.
        if let Some(label) = &edge.label {
            let (x, y) = route.label_at;
            let corner = (x + text_width(label), y - 12.0);
            for bx in &layout.boxes {
                assert!(
                    !enters((x, y + 3.0), corner, bx),
                    "{name}: label {label} on {:?}",
                    bx.lines[0]
                );
            }
        }
        let to = layout.boxes.iter().find(|b| b.id == edge.to).unwrap();
        let from = layout.boxes.iter().find(|b| b.id == edge.from).unwrap();
        assert_eq!(route.points[0], from.output, "{name}: starts at the output");
        assert_eq!(
            *route.points.last().unwrap(),
            to.ports[edge.port],
            "{name}: the edge {} → {} ends at its port {}",
            edge.from,
            edge.to,
            edge.port
        );
    }
    for bx in &layout.boxes {
        let node = graph.nodes.iter().find(|n| n.id == bx.id).unwrap();
        // One port per operand, each used by exactly one edge, top to bottom in
        // operand order, on the box's left edge.
        let mut ports: Vec<usize> = graph
            .edges
            .iter()
            .filter(|e| e.to == bx.id)
            .map(|e| e.port)
            .collect();
        ports.sort();
        assert_eq!(
            ports,
            (0..bx.ports.len()).collect::<Vec<_>>(),
            "{name}: {}",
            node.label
        );
        for pair in bx.ports.windows(2) {
            assert!(
                pair[0].1 < pair[1].1,
                "{name}: ports of {} in order",
                node.label
            );
        }
        for &(x, y) in &bx.ports {
            assert!(x == bx.x && y > bx.y && y < bx.y + bx.height, "{name}");
        }
        // The text fits: the widest line plus its margins, and every line's height.
        for line in &bx.lines {
            assert!(
                text_width(line) + 2.0 * TEXT_MARGIN <= bx.width + 1e-9,
                "{name}: {line:?} is wider than its box ({})",
                bx.width
            );
        }
        assert!(
            bx.lines.len() as f64 * 16.0 < bx.height,
            "{name}: {:?}",
            bx.lines
        );
        // No two boxes overlap.
        for other in layout.boxes.iter().filter(|o| o.id != bx.id) {
            assert!(
                !enters(
                    (other.x, other.y),
                    (other.x + other.width, other.y + other.height),
                    bx
                ),
                "{name}: boxes {:?} and {:?} overlap",
                bx.lines[0],
                other.lines[0]
            );
        }
    }
}

#[test]
fn no_edge_crosses_a_box_and_every_edge_ends_at_its_own_port() {
    for (name, graph) in drawings() {
        check_geometry(&name, &graph, &graph.layout());
    }
}

#[test]
fn a_drawing_per_layer_keeps_edges_out_of_boxes_too() {
    let per_layer = {
        let model = relu_mlp(&[2, 64, 3], 1);
        let x = Tensor::from_vec(vec![0.1, -0.3], &[1, 2]).unwrap();
        Graph::of_model(
            &model,
            &x,
            &Target::Classes(vec![2]),
            Loss::CrossEntropy,
            Detail::Layers,
        )
        .unwrap()
        .graph
    };
    check_geometry("2-64-3 per layer", &per_layer, &per_layer.layout());
}

#[test]
fn an_mnist_sized_model_is_drawn_one_box_per_layer_with_shapes() {
    let model = relu_mlp(&[784, 128, 10], 0);
    let x = Tensor::from_vec(vec![0.5; 2 * 784], &[2, 784]).unwrap();
    let y = Target::Classes(vec![3, 7]);
    let graph = Graph::of_model(&model, &x, &y, Loss::CrossEntropy, Detail::Auto)
        .unwrap()
        .graph;
    assert!(graph.per_layer);
    let labels: Vec<&str> = graph.nodes.iter().map(|n| n.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "x",
            "linear 784→128",
            "relu",
            "linear 128→10",
            "y (class)",
            "cross_entropy"
        ]
    );
    let first = &graph.nodes[1];
    assert!(
        first.folded[0].starts_with("0.weight [128, 784] ‖grad‖ "),
        "{:?}",
        first.folded
    );
    assert!(
        first.folded[1].starts_with("0.bias [128] ‖grad‖ "),
        "{:?}",
        first.folded
    );
    let shapes: Vec<&str> = graph
        .edges
        .iter()
        .filter_map(|e| e.label.as_deref())
        .collect();
    assert_eq!(
        shapes,
        ["[2, 784]", "[2, 128]", "[2, 128]", "[2, 10]", "[2]"]
    );
    check_geometry("MNIST-sized", &graph, &graph.layout());

    // A deep narrow model has few parameters but more than 40 nodes.
    let mut layers = Vec::new();
    for _ in 0..20 {
        layers.push(Layer::Linear {
            inputs: 3,
            outputs: 3,
            bias: true,
        });
        layers.push(Layer::Activation(Elementwise::Tanh));
    }
    let deep = Sequential::<f64>::new(layers, 0).unwrap();
    let x = Tensor::from_vec(vec![0.1, 0.2, 0.3], &[1, 3]).unwrap();
    let y = Target::Values(Tensor::from_vec(vec![0.0, 1.0, 0.0], &[1, 3]).unwrap());
    let graph = Graph::of_model(&deep, &x, &y, Loss::Mse, Detail::Auto)
        .unwrap()
        .graph;
    assert!(graph.per_layer);
    let layer_boxes = graph
        .nodes
        .iter()
        .filter(|n| n.label.starts_with("linear 3→3"))
        .count();
    assert_eq!(layer_boxes, 20);
    check_geometry("deep", &graph, &graph.layout());
    // The spiral's model stays drawn with every operation.
    assert!(!spiral_sized().per_layer);
}

#[test]
fn targets_are_labelled_as_targets() {
    let g = notebook_graph("000");
    let targets: Vec<String> = g
        .nodes
        .iter()
        .filter(|n| n.role == Role::Target)
        .map(|n| n.lines()[0].clone())
        .collect();
    assert_eq!(targets, ["target y [1, 1]"]);
    let g = notebook_003();
    let targets: Vec<String> = g
        .nodes
        .iter()
        .filter(|n| n.role == Role::Target)
        .map(|n| n.lines()[0].clone())
        .collect();
    assert_eq!(targets, ["target y_true"]);
    let g = spiral_sized();
    let target = g.nodes.iter().find(|n| n.role == Role::Target).unwrap();
    assert_eq!(
        target.lines()[..2],
        ["target y (class) [4]", "value [0, 1, 2, 1]"]
    );
    // Parameters keep their PyTorch names.
    assert!(
        g.nodes
            .iter()
            .any(|n| n.role == Role::Parameter && n.label == "4.bias")
    );
}

/// Whether `line` writes a negative zero (`-0`, `-0.0`, but not `-0.5`).
fn negative_zero(line: &str) -> bool {
    line.match_indices("-0").any(|(at, _)| {
        let rest = &line[at + 2..];
        let digits = rest.trim_start_matches(['.', '0']);
        !digits.starts_with(|c: char| c.is_ascii_digit())
            && !rest.starts_with(|c: char| c.is_ascii_digit())
    })
}

#[test]
fn labels_have_no_negative_zero_and_no_float_noise() {
    assert!(negative_zero("grad [-0, 1]") && negative_zero("value -0.0"));
    assert!(!negative_zero("value -0.5") && !negative_zero("[0.1, -0.05]"));
    // A pass whose numbers are a negative zero and 0.1 + 0.2.
    let tape = chainrule::Tape::<f64>::new();
    let w = tape.param(Tensor::from_vec(vec![0.1, -0.0], &[2]).unwrap());
    let shifted = w
        .add(tape.constant(Tensor::from_vec(vec![0.2, -0.0], &[2]).unwrap()))
        .unwrap();
    let loss = shifted
        .mul(tape.constant(Tensor::from_vec(vec![1.0, -0.0], &[2]).unwrap()))
        .unwrap()
        .sum(&[], false)
        .unwrap();
    let grads = loss.backward_retain_all().unwrap();
    let g = Graph::from_tape(&tape, loss.id(), &grads, &Default::default());
    let add = g.nodes.iter().find(|n| n.label == "add").unwrap();
    assert_eq!(add.value, "[0.3, 0]");
    let mut all = drawings();
    all.push(("noise".into(), g));
    for (name, graph) in all {
        for line in graph.nodes.iter().flat_map(|n| n.lines()) {
            assert!(!negative_zero(&line), "{name}: {line}");
            // Four significant digits at most after a point (0.30000000000000004
            // has 17).
            let noisy = line
                .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .filter_map(|number| number.split_once('.'))
                .any(|(whole, decimals)| {
                    let digits = format!("{whole}{decimals}");
                    digits.trim_start_matches('0').len() > 4.max(whole.len())
                });
            assert!(!noisy, "{name}: {line}");
        }
    }
}
