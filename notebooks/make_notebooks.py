"""Writes notebooks/000.ipynb … 004.ipynb (without outputs): the seed notebooks
(shared/notebooks) redone with chainrule in Python. Run it after editing a cell here;
crates/chainrule-py/tests/test_notebooks.py executes the notebooks and asserts the
numbers the seed notebooks print."""

import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = pathlib.Path(__file__).resolve().parent


def notebook(name, cells):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [new_markdown_cell(c[3:]) if c.startswith("md:") else new_code_cell(c.strip("\n")) for c in cells]
    nbformat.write(nb, HERE / f"{name}.ipynb")


notebook("000", [
    """md:# Notebook 000 with chainrule: one step of a 2-2-1 ReLU network

The seed notebook computes every derivative by hand. Here the network is a PyTorch
`nn.Sequential` with the notebook's weights, and chainrule computes, explains and
checks every number.

node 1 = relu(x1·w1 + x2·w3 + b1), node 2 = relu(x1·w2 + x2·w4 + b2),
node 3 = relu(n1·w5 + n2·w6 + b3); loss C = (node 3 − true value)², learning rate 0.01.""",
    """
import numpy as np
import torch
from torch import nn
import chainrule

w1, w2, w3, w4, w5, w6 = 1, 0.5, 1, -0.5, 1, 1
bias1, bias2, bias3 = 0.5, 0, 0.5
input1, input2, true_value = 1, 0, 2
LR = 0.01

net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1), nn.ReLU()).double()
with torch.no_grad():
    net[0].weight.copy_(torch.tensor([[w1, w3], [w2, w4]]))
    net[0].bias.copy_(torch.tensor([bias1, bias2]))
    net[2].weight.copy_(torch.tensor([[w5, w6]]))
    net[2].bias.copy_(torch.tensor([bias3]))
model = chainrule.Sequential.from_torch(net)
x = np.array([[input1, input2]], dtype=np.float64)
y = np.array([[true_value]], dtype=np.float64)
""",
    """md:## Forward pass""",
    """
prediction = model.predict(x)[0, 0]
print(f"Predicted: {prediction} --> True value should be: {true_value}")
print("loss:", model.evaluate(x, y, "sse")["loss"])
""",
    """md:## Backpropagation: ∂C/∂w5, explained

Jupyter typesets the derivation; its factors are data.""",
    """
w5_chain = chainrule.explain(model, x, y, "sse", param="2.weight[0,0]", lr=LR)
w5_chain
""",
    """
print("factors:", [f["value"] for f in w5_chain.factors[0]])
print("deriv_L_w5:", w5_chain.gradient)
print("new_w5:", w5_chain.update["new"])
""",
    """md:## Every weight and bias: one gradient-descent step""",
    """
where = {"w1": "0.weight[0,0]", "w2": "0.weight[1,0]", "w3": "0.weight[0,1]", "w4": "0.weight[1,1]",
         "w5": "2.weight[0,0]", "w6": "2.weight[0,1]", "b1": "0.bias[0]", "b2": "0.bias[1]", "b3": "2.bias[0]"}
print("ORIGINAL WEIGHTS AND BIASES")
for name, element in where.items():
    print(f"{name}: {chainrule.explain(model, x, y, 'sse', param=element, lr=LR).update['old']}")
print("\\n#################################")
print("NEW WEIGHTS AND BIASES")
for name, element in where.items():
    print(f"{name}: {chainrule.explain(model, x, y, 'sse', param=element, lr=LR).update['new']}")
""",
    """md:The same step by training one epoch with SGD:""",
    """
model.fit(x, y, loss="sse", optimizer="sgd", lr=LR, epochs=1, batch_size=1, progress=False)
print({k: v.tolist() for k, v in model.state_dict().items()})
""",
    """md:## Three gradients agree

PyTorch's autograd, chainrule and central differences:""",
    """
chainrule.gradcheck(net, x, y, "sse")
""",
    """md:## The computation graph""",
    """
chainrule.graph(net, x, y, "sse")
""",
])

notebook("001", [
    """md:# Notebook 001 with chainrule: the chain rule on tiny networks

Each example of the seed notebook as a chainrule model: one gradient-descent step
(learning rate 0.1, loss C = (ŷ − y)²), its derivation, and the network after it.""",
    """
import numpy as np
import chainrule

LR = 0.1
def linear(bias=False):
    return {"type": "linear", "in": 1, "out": 1, "bias": bias}

def net(layers, params):
    return chainrule.Sequential(layers, params={k: np.array(v, dtype=np.float64) for k, v in params.items()}, dtype="float64")

x = np.array([[1.0]])
""",
    """md:## Super-simple example: x = 1, w = 2, y = 1""",
    """
single = net([linear()], {"0.weight": [[2.0]]})
y = np.array([[1.0]])
print("y_hat_0:", single.predict(x))
single_chain = chainrule.explain(single, x, y, "sse", param="0.weight[0,0]", lr=LR)
print(single_chain)
single.fit(x, y, loss="sse", optimizer="sgd", lr=LR, epochs=1, batch_size=1, progress=False)
print("new w:", single.state_dict()["0.weight"][0, 0])
print("y_hat_1:", single.predict(x))
""",
    """md:## Super-simple example 2: two weights in a chain, w_1 = 2, w_2 = 3""",
    """
two = net([linear(), linear()], {"0.weight": [[2.0]], "1.weight": [[3.0]]})
print("y_hat_0:", two.predict(x))
for epoch in (1, 2):
    chain_w1 = chainrule.explain(two, x, y, "sse", param="0.weight[0,0]", lr=LR)
    two.fit(x, y, loss="sse", optimizer="sgd", lr=LR, epochs=1, batch_size=1, progress=False)
    w = two.state_dict()
    a_2 = two.predict(x)[0, 0]
    print(f"epoch {epoch}")
    print("New w_2:", w["1.weight"][0, 0])
    print("New w_1:", w["0.weight"][0, 0])
    print("y_hat: ", a_2, "MSE: ", two.evaluate(x, y, "sse")["loss"])
chain_w1
""",
    """md:## Let's mix it up a bit: sigmoids and biases, x = 1, y = 2""",
    """
sig = net(
    [{"type": "linear", "in": 1, "out": 1}, {"type": "sigmoid"}, {"type": "linear", "in": 1, "out": 1}, {"type": "sigmoid"}],
    {"0.weight": [[1.0]], "0.bias": [1.0], "2.weight": [[2.0]], "2.bias": [2.0]},
)
y = np.array([[2.0]])
print("before: y_hat:", sig.predict(x)[0, 0], "MSE:", sig.evaluate(x, y, "sse")["loss"])
steps = {p: chainrule.explain(sig, x, y, "sse", param=p, lr=LR) for p in ["2.weight[0,0]", "2.bias[0]", "0.weight[0,0]", "0.bias[0]"]}
print("New w_2:", steps["2.weight[0,0]"].update["new"])
print("New b_2:", steps["2.bias[0]"].update["new"])
print("New w_1:", steps["0.weight[0,0]"].update["new"])
print("New b_1:", steps["0.bias[0]"].update["new"])
sig.fit(x, y, loss="sse", optimizer="sgd", lr=LR, epochs=1, batch_size=1, progress=False)
print("y_hat: ", sig.predict(x)[0, 0], "MSE: ", sig.evaluate(x, y, "sse")["loss"])
""",
    """
steps["0.weight[0,0]"]
""",
    """md:The same network in closed form (sympy):""",
    """
s = chainrule.symbolic(sig, x, y, "sse")
s.loss
""",
])

notebook("002", [
    """md:# Notebook 002 with chainrule: a neuron's and a layer's backward pass

The seed notebook backpropagates by hand through one ReLU neuron and then through a
dense layer of 3 neurons on a batch of 4 samples, given the gradient that arrives from
the next layer (`dvalues`). chainrule computes the same numbers.""",
    """
import numpy as np
import chainrule
""",
    """md:## One neuron: x = [1, −2, 3], w = [−3, −1, 2], b = 1, y = relu(x·w + b)""",
    """
x = np.array([[1.0, -2.0, 3.0]])
neuron = chainrule.Sequential(
    [{"type": "linear", "in": 3, "out": 1}, {"type": "relu"}],
    params={"0.weight": np.array([[-3.0, -1.0, 2.0]]), "0.bias": np.array([1.0])},
    dtype="float64",
)
print("xw0, xw1, xw2:", (x * neuron.state_dict()["0.weight"])[0].tolist())
print("y:", neuron.predict(x)[0, 0])
# ∂y/∂w0 = x0 · relu′(z): the derivation's factors (loss sse against a target one
# below the output makes the last factor 2(y − (y − 0.5)) = 1).
d = chainrule.explain(neuron, x, neuron.predict(x) - 0.5, "sse", param="0.weight[0,0]")
print("relu_dz:", d.factors[0][1]["value"])
d
""",
    """md:## A layer on a batch, with the gradient from the next layer

A loss whose gradient at the outputs is exactly `dvalues`: half the squared error
against `outputs − dvalues` (∂C/∂out = out − target = dvalues). Then chainrule's
parameter gradients are the notebook's `dweights` and `dbiases`. For `dinputs`, the
same layer with inputs and weights swapped: the inputs' gradient of x·Wᵀ is the weight
gradient of W·xᵀ.""",
    """
weights = np.array([[0.2, 0.8, -0.5, 1.0], [0.5, -0.91, 0.26, -0.5], [-0.26, -0.27, 0.17, 0.87]])
biases = np.array([2.0, 3.0, 0.5])
inputs = np.array([[1.0, 2.0, 3.0, 2.5], [2.0, 5.0, -1.0, 2.0], [-1.5, 2.7, 3.3, -0.8], [-2.4, -1.0, -0.3, -2.3]])
dvalues = np.array([[1.0] * 3, [2.0] * 3, [3.0] * 3, [4.0] * 3])

layer = chainrule.Sequential([{"type": "linear", "in": 4, "out": 3}], params={"0.weight": weights, "0.bias": biases}, dtype="float64")

def backward(model, x, upstream):
    return model.grad(x, model.predict(x) - upstream, "half_sse")

def dinputs(x, upstream):
    swapped = chainrule.Sequential([{"type": "linear", "in": 4, "out": len(x), "bias": False}], params={"0.weight": x}, dtype="float64")
    return backward(swapped, weights, upstream.T)["0.weight"]

np.set_printoptions(precision=2, suppress=True)
print("dinputs (one sample):", dinputs(inputs[:1], np.ones((1, 3))))
print("dinputs (batch):")
print(dinputs(inputs, dvalues))
g = backward(layer, inputs, dvalues)
print("dweights:")
print(g["0.weight"].T)
print("dbiases:", g["0.bias"])
""",
    """
dinputs_single = dinputs(inputs[:1], np.ones((1, 3)))[0]
dinputs_batch = dinputs(inputs, dvalues)
print("dinputs_single:", dinputs_single.tolist())
print("dinputs_batch:", dinputs_batch.reshape(-1).tolist())
print("dweights_T:", g["0.weight"].T.reshape(-1).tolist())
print("dbiases_list:", g["0.bias"].tolist())
""",
])

notebook("003", [
    """md:# Notebook 003 with chainrule: a network written as formulas

The seed notebook's 2-2-1 sigmoid network adds one bias, w0, to every weighted input,
which a layer stack cannot express; chainrule reads it as named scalar formulas
(examples/notebooks/003/network.formula). Loss: binary cross-entropy against y = 1;
learning rate 0.3.""",
    """
import pathlib
import chainrule

root = pathlib.Path.cwd()
while not (root / "examples").is_dir():
    root = root.parent
formula = chainrule.Formula.read(root / "examples" / "notebooks" / "003" / "network.formula")
print("Results of random parameters")
print("f5 =", formula.forward()["f5"])
""",
    """md:## ∂L/∂w0: w0 reaches the loss by three paths""",
    """
formula.explain("w0", lr=0.3)
""",
    """md:## Training as the notebook does: 999 iterations, one weight at a time""",
    """
LR = 0.3
f = formula
names = list(f.params())
for _ in range(999):
    for name in names:
        f = f.with_params({name: f.params()[name] - LR * f.gradient()[name]})
for name, value in f.params().items():
    print(f"New {name}: {value}")
print("f5 (one weight at a time) =", f.forward()["f5"])
""",
    """md:## …and all weights at once""",
    """
g = formula
for _ in range(999):
    grad = g.gradient()
    g = g.with_params({n: v - LR * grad[n] for n, v in g.params().items()})
print("f5 (simultaneous) =", g.forward()["f5"])
""",
    """
formula.symbolic().loss
""",
])

notebook("004", [
    """md:# Notebook 004 with chainrule: a NumPy network, one step

The seed notebook's 1-2-2-1 ReLU network (bias in column 0 of each weight matrix),
x = 2, ground truth x² + 3 = 7, loss L = ½(y − ŷ)², learning rate 0.001. chainrule
reads it as a PyTorch-style stack (examples/notebooks/004).""",
    """
import pathlib
import numpy as np
import chainrule

root = pathlib.Path.cwd()
while not (root / "examples").is_dir():
    root = root.parent
model = chainrule.load(root / "examples" / "notebooks" / "004")
x = np.array([[2.0]])
truth = x * x + 3
print("Prediction by network:", model.predict(x)[0, 0])
print("Ground truth:", truth[0, 0])
print("Loss:", model.evaluate(x, truth, "half_sse")["loss"])
""",
    """
grads = model.grad(x, truth, "half_sse")
for layer, name in enumerate(["0", "2", "4"], start=1):
    # The notebook's matrices: the bias gradient in column 0.
    matrix = np.hstack([grads[f"{name}.bias"][:, None], grads[f"{name}.weight"]])
    print(f"Gradients layer {layer}:", matrix.reshape(-1).tolist())
""",
    """
chainrule.explain(model, x, truth, "half_sse", param="4.weight[0,0]", lr=0.001)
""",
    """
model.fit(x, truth, loss="half_sse", optimizer="sgd", lr=0.001, epochs=1, batch_size=1, progress=False)
print("Updated prediciton", model.predict(x)[0, 0])
print("Loss:", model.evaluate(x, truth, "half_sse")["loss"])
""",
    """
chainrule.graph(model, x, truth, "half_sse")
""",
])
