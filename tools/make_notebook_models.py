#!/usr/bin/env python3
"""Write the teaching notebooks' networks as chainrule model and parameter files.

    pip install numpy safetensors && python3 tools/make_notebook_models.py

Each folder of examples/notebooks/ gets model.json, params.safetensors (float64), x.npy,
y.npy and explain.json (the loss and learning rate the notebook uses). The numbers are
the notebooks' own; the committed files are what the tests read.
"""
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent / "examples" / "notebooks"


def write(name, layers, params, x, y, loss, lr):
    folder = ROOT / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps({"layers": layers}, indent=1) + "\n")
    # Contiguous copies: safetensors.numpy writes the raw buffer of a strided view.
    save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in params.items()}, str(folder / "params.safetensors"))
    np.save(folder / "x.npy", np.asarray(x, dtype=np.float64))
    np.save(folder / "y.npy", np.asarray(y, dtype=np.float64))
    (folder / "explain.json").write_text(json.dumps({"loss": loss, "lr": lr}) + "\n")


def linear(i, o, bias=True):
    return {"type": "linear", "in": i, "out": o, "bias": bias}


# 000: node 1 = relu(x1·w1 + x2·w3 + b1), node 2 = relu(x1·w2 + x2·w4 + b2),
# node 3 = relu(n1·w5 + n2·w6 + b3); rows of a weight are the nodes it computes.
w1, w2, w3, w4, w5, w6, b1, b2, b3 = 1, 0.5, 1, -0.5, 1, 1, 0.5, 0, 0.5
write("000", [linear(2, 2), {"type": "relu"}, linear(2, 1), {"type": "relu"}],
      {"0.weight": [[w1, w3], [w2, w4]], "0.bias": [b1, b2], "2.weight": [[w5, w6]], "2.bias": [b3]},
      [[1, 0]], [[2]], "sse", 0.01)
# 001: the three examples.
write("001_single_weight", [linear(1, 1, False)], {"0.weight": [[2]]}, [[1]], [[1]], "sse", 0.1)
write("001_two_weights", [linear(1, 1, False), linear(1, 1, False)], {"0.weight": [[2]], "1.weight": [[3]]},
      [[1]], [[1]], "sse", 0.1)
write("001_sigmoid_biases", [linear(1, 1), {"type": "sigmoid"}, linear(1, 1), {"type": "sigmoid"}],
      {"0.weight": [[1]], "0.bias": [1], "2.weight": [[2]], "2.bias": [2]}, [[1]], [[2]], "sse", 0.1)
# 004: the notebook keeps each bias as column 0 of its weight matrix; here it is the
# layer's bias.
W1 = np.array([[-0.1, 0.7], [0.3, -0.2]])
W2 = np.array([[-0.2, 1.1, 0.2], [-0.1, 0.5, -0.3]])
W3 = np.array([[0.1, 0.5, 2.3]])
write("004", [linear(1, 2), {"type": "relu"}, linear(2, 2), {"type": "relu"}, linear(2, 1)],
      {"0.weight": W1[:, 1:], "0.bias": W1[:, 0], "2.weight": W2[:, 1:], "2.bias": W2[:, 0],
       "4.weight": W3[:, 1:], "4.bias": W3[:, 0]},
      [[2]], [[7]], "half_sse", 0.001)
print("wrote", sorted(p.name for p in ROOT.iterdir() if p.is_dir()))
