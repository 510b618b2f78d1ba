"""explain, symbolic and graph on notebook 000's network, against the numbers the
notebook prints (shared/notebooks/000: w5 → 0.985, …)."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import chainrule
from conftest import close

# Notebook 000: node 1 = relu(x1·w1 + x2·w3 + b1), node 2 = relu(x1·w2 + x2·w4 + b2),
# node 3 = relu(n1·w5 + n2·w6 + b3); C = (node 3 − 2)²; learning rate 0.01.
W = dict(w1=1, w2=0.5, w3=1, w4=-0.5, w5=1, w6=1, b1=0.5, b2=0, b3=0.5)
X = np.array([[1.0, 0.0]])
Y = np.array([[2.0]])
# The notebook's printed new weights and biases.
NEW = dict(w1=0.99, w2=0.49, w3=1.0, w4=-0.5, w5=0.985, w6=0.995, b1=0.49, b2=-0.01, b3=0.49)
# Where each of the notebook's names sits in PyTorch's state_dict.
ELEMENT = {
    "w1": "0.weight[0,0]", "w3": "0.weight[0,1]", "w2": "0.weight[1,0]", "w4": "0.weight[1,1]",
    "w5": "2.weight[0,0]", "w6": "2.weight[0,1]", "b1": "0.bias[0]", "b2": "0.bias[1]", "b3": "2.bias[0]",
}


def notebook_000():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1), nn.ReLU()).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[W["w1"], W["w3"]], [W["w2"], W["w4"]]]))
        net[0].bias.copy_(torch.tensor([W["b1"], W["b2"]]))
        net[2].weight.copy_(torch.tensor([[W["w5"], W["w6"]]]))
        net[2].bias.copy_(torch.tensor([W["b3"]]))
    return net


def test_explain_has_the_notebooks_numbers():
    net = notebook_000()
    w5 = chainrule.explain(net, X, Y, "sse", param="2.weight[0,0]", lr=0.01)
    # ∂C/∂w5 = node1 · relu′ · 2(node3 − y) = 1.5 · 1 · 2(2.5 − 2): the notebook's 1.5
    assert [f["value"] for f in w5.factors[0]] == [1.5, 1.0, 1.0]
    assert w5.gradient == 1.5 and w5.autodiff == 1.5
    close(w5.update["new"], 0.985)
    for name, element in ELEMENT.items():
        d = chainrule.explain(net, X, Y, "sse", param=element, lr=0.01)
        assert d.verified
        close(d.update["new"], NEW[name])
    close(chainrule.explain(net, X, Y, "sse", param="2.weight[0,1]").gradient, 0.5)  # deriv_L_w6
    close(chainrule.explain(net, X, Y, "sse", param="2.bias[0]").gradient, 1.0)  # deriv_L_b3


def test_explain_renders_text_markdown_and_latex():
    d = chainrule.explain(notebook_000(), X, Y, "sse", param="2.weight[0,0]", lr=0.01)
    assert "1.5 · 1 · 1 = 1.5" in str(d) and "0.985" in str(d)
    md = d._repr_markdown_()
    assert r"\frac{\partial C}{\partial w^{(2)}_{1,1}}" in md and "0.985" in md
    assert d._repr_latex_().startswith("$$")
    every = chainrule.explain(notebook_000(), X, Y, "sse", lr=0.01)
    assert len(every) == 9 and every.verified
    assert {e["param"] for e in every.derivations} == set(ELEMENT.values())


def test_explain_reads_the_notebooks_run_folder(repo):
    folder = repo / "examples" / "notebooks" / "000"
    model = chainrule.load(folder)
    x, y = np.load(folder / "x.npy"), np.load(folder / "y.npy")
    d = chainrule.explain(model, x, y, "sse", param="0.weight[1,0]", lr=0.01)
    close(d.update["new"], NEW["w2"])


def test_symbolic_is_sympy_and_its_derivatives_are_the_gradients():
    net = notebook_000()
    s = chainrule.symbolic(net, X, Y, "sse")
    subs = s.subs()
    close(float(s.loss.evalf(subs=subs)), 0.25)  # the notebook's loss
    grads = chainrule.Sequential.from_torch(net).grad(X, Y, "sse")
    for symbol, d in s.derivatives.items():
        name, index = s.params[symbol].split("[")
        index = tuple(int(i) for i in index.rstrip("]").split(","))
        close(float(d.evalf(subs=subs)), grads[name][index])


def test_graph_is_an_svg_with_the_parameters():
    g = chainrule.graph(notebook_000(), X, Y, "sse")
    assert g._repr_svg_().startswith("<svg")
    assert "0.weight" in g.dot and "digraph" in g.dot


def test_formula_network_of_notebook_003(repo):
    f = chainrule.Formula.read(repo / "examples" / "notebooks" / "003" / "network.formula")
    close(f.forward()["f5"], 0.649864477526152, 1e-15)  # as the notebook prints it
    d = f.explain("w13", lr=0.3)
    assert d.verified
    f3 = 1 / (1 + np.exp(-0.81))
    close([x["value"] for x in d.factors[0]][:3], [0.35, f3 * (1 - f3), 0.1], 1e-12)
    s = f.symbolic()
    close(float(s.loss.evalf(subs=s.subs())), -np.log(0.649864477526152), 1e-12)
