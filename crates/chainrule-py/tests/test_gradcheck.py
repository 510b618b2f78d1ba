"""gradcheck: PyTorch autograd, chainrule and central differences agree on a correct
module, and a broken one is named."""

import numpy as np
import torch
from torch import nn

import chainrule


class WrongTanhBackward(torch.autograd.Function):
    """tanh with a wrong derivative: 1 − tanh instead of 1 − tanh²."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y)


class BrokenTanh(nn.Tanh):
    def forward(self, x):
        return WrongTanhBackward.apply(x)


class NotQuiteReLU(nn.ReLU):
    """Claims to be a ReLU, lets a tenth of the negatives through."""

    def forward(self, x):
        return torch.where(x > 0, x, 0.1 * x)


def problem(rng):
    return rng.normal(size=(6, 3)), rng.integers(0, 2, size=6)


def test_a_correct_model_passes(rng, capsys):
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.SiLU(), nn.Linear(4, 2))
    report = chainrule.gradcheck(net, *problem(rng), "cross_entropy")
    assert report.passed and report.culprit is None
    assert "agree" in str(report)
    assert next(net.parameters()).dtype == torch.float32  # the module is not changed


def test_a_wrong_backward_names_the_layer_and_operation(rng, capsys):
    net = nn.Sequential(nn.Linear(3, 4), BrokenTanh(), nn.Linear(4, 2))
    report = chainrule.gradcheck(net, *problem(rng), "cross_entropy")
    assert not report.passed
    assert report.culprit["layer"] == 1
    assert report.culprit["module"] == "BrokenTanh"
    assert report.culprit["op"] == "tanh"
    assert report.culprit["side"] == "pytorch backward"
    row = {r["name"]: r for r in report.rows}
    assert row["0.weight"]["torch_vs_numeric"] > 1e-3
    assert row["0.weight"]["chainrule_vs_numeric"] < 1e-6
    assert row["2.weight"]["worst_error"] < 1e-6  # above the broken layer all agree
    printed = capsys.readouterr().out
    assert "layer 1 (BrokenTanh)" in printed
    assert report.worst.startswith("0.") and report.worst in printed  # the derivation
    assert "chain rule" in printed


def test_a_wrong_forward_is_named_too(rng, capsys):
    net = nn.Sequential(nn.Linear(3, 4), NotQuiteReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].bias.fill_(-0.5)  # some negative pre-activations
    report = chainrule.gradcheck(net, *problem(rng), "cross_entropy", verbose=False)
    assert not report.passed
    assert report.culprit == {"layer": 1, "module": "NotQuiteReLU", "op": "relu", "side": "forward"}
    assert capsys.readouterr().out == ""
