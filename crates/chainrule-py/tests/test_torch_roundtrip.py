"""from_torch → grad equals PyTorch autograd (float64, 1e-10) for every supported
layer and loss; to_torch gives the same module back."""

import numpy as np
import pytest
import torch
from torch import nn

import chainrule
from conftest import close

torch.manual_seed(0)


def torch_grads(module, x, y, loss):
    module.zero_grad(set_to_none=True)
    prediction = module(torch.from_numpy(x))
    if loss == "cross_entropy" and y.dtype.kind == "i":
        target = torch.from_numpy(y)
    else:
        target = torch.from_numpy(y)
    fns = {
        "mse": nn.MSELoss(),
        "sse": nn.MSELoss(reduction="sum"),
        "half_sse": lambda p, t: 0.5 * nn.MSELoss(reduction="sum")(p, t),
        "mae": nn.L1Loss(),
        "huber": nn.HuberLoss(),
        "bce": nn.BCELoss(),
        "bce_logits": nn.BCEWithLogitsLoss(),
        "cross_entropy": nn.CrossEntropyLoss(),
    }
    value = fns[loss](prediction, target)
    value.backward()
    return value.item(), {k: p.grad.numpy() for k, p in module.named_parameters()}


def assert_same_gradients(module, x, y, loss, input=None):
    module = module.double()
    model = chainrule.Sequential.from_torch(module, input=input)
    assert model.dtype == "float64"
    value, ours = model.value_and_grad(x, y, loss)
    want_value, theirs = torch_grads(module, x, y, loss)
    close(value, want_value)
    assert sorted(ours) == sorted(theirs)
    for k in theirs:
        close(ours[k], theirs[k])


ACTIVATIONS = [
    nn.ReLU(),
    nn.LeakyReLU(0.2),
    nn.Sigmoid(),
    nn.Tanh(),
    nn.Softmax(dim=-1),
    nn.Identity(),
    nn.GELU(),
    nn.GELU(approximate="tanh"),
    nn.SiLU(),
    nn.ELU(alpha=0.7),
    nn.Softplus(beta=2.0, threshold=1.5),
]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda m: repr(m))
def test_every_activation_has_autograds_gradient(activation, rng):
    net = nn.Sequential(nn.Linear(3, 5), activation, nn.Linear(5, 2))
    x = rng.normal(size=(6, 3))
    y = rng.normal(size=(6, 2))
    assert_same_gradients(net, x, y, "mse")


LOSSES = {
    "mse": (nn.Identity(), lambda r: r.normal(size=(7, 2))),
    "sse": (nn.Identity(), lambda r: r.normal(size=(7, 2))),
    "half_sse": (nn.Identity(), lambda r: r.normal(size=(7, 2))),
    "mae": (nn.Identity(), lambda r: r.normal(size=(7, 2))),
    "huber": (nn.Identity(), lambda r: 3 * r.normal(size=(7, 2))),
    "bce": (nn.Sigmoid(), lambda r: r.uniform(size=(7, 2))),
    "bce_logits": (nn.Identity(), lambda r: (r.uniform(size=(7, 2)) > 0.5).astype(np.float64)),
    "cross_entropy": (nn.Identity(), lambda r: r.integers(0, 2, size=7)),
}


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_has_autograds_gradient(loss, rng):
    last, target = LOSSES[loss]
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), last)
    assert_same_gradients(net, rng.normal(size=(7, 3)), target(rng), loss)


def test_cross_entropy_with_class_probabilities(rng):
    net = nn.Sequential(nn.Linear(3, 3))
    p = rng.uniform(size=(5, 3))
    assert_same_gradients(net, rng.normal(size=(5, 3)), p / p.sum(1, keepdims=True), "cross_entropy")


def test_convolution_pooling_and_flatten(rng):
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 2, (2, 3), stride=(1, 2), padding=(1, 1), dilation=1),
        nn.AvgPool2d(2, stride=1),
        nn.Flatten(),
        nn.Linear(2 * 3 * 1, 3),
    )
    x = rng.normal(size=(4, 2, 6, 6))
    with torch.no_grad():
        out = net.double()(torch.from_numpy(x))
    assert out.shape == (4, 3)
    assert_same_gradients(net, x, rng.integers(0, 3, size=4), "cross_entropy", input=(2, 6, 6))


def test_batch_norm_in_training_mode_and_its_running_statistics(rng):
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)).double()
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 1))
    assert_same_gradients(net, x, y, "mse")
    net2 = nn.Sequential(nn.Conv2d(1, 2, 2), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 3 * 3, 1))
    assert_same_gradients(net2, rng.normal(size=(3, 1, 4, 4)), rng.normal(size=(3, 1)), "mse", input=(1, 4, 4))


def test_evaluation_mode_uses_running_statistics_and_no_dropout(rng):
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Tanh(), nn.Linear(4, 1)).double()
    with torch.no_grad():  # give the running statistics values of their own
        for _ in range(3):
            net(torch.from_numpy(rng.normal(size=(8, 3))))
    net.eval()
    model = chainrule.Sequential.from_torch(net)
    assert not model.training
    assert_same_gradients(net, rng.normal(size=(5, 3)), rng.normal(size=(5, 1)), "mse")


def test_layer_norm(rng):
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    assert_same_gradients(net, rng.normal(size=(5, 3)), rng.normal(size=(5, 2)), "mse")


def test_float32_models_compute_in_float32(rng):
    net = nn.Sequential(nn.Linear(3, 2))
    model = chainrule.Sequential.from_torch(net)
    assert model.dtype == "float32"
    x = rng.normal(size=(4, 3)).astype(np.float32)
    grads = model.grad(x, np.zeros((4, 2), np.float32), "mse")
    assert grads["0.weight"].dtype == np.float32
    assert model.predict(x).dtype == np.float32
    _, theirs = torch_grads(net, x, np.zeros((4, 2), np.float32), "mse")
    np.testing.assert_allclose(grads["0.weight"], theirs["0.weight"], rtol=1e-5, atol=1e-6)


def test_to_torch_gives_the_same_module_back(rng):
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ELU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(2 * 2 * 2, 3), nn.LeakyReLU(0.3), nn.Linear(3, 2), nn.Softmax(dim=-1),
    ).double().eval()
    model = chainrule.Sequential.from_torch(net, input=(1, 6, 6))
    back = model.to_torch()
    assert [type(m) for m in back] == [type(m) for m in net]
    assert not back.training
    for k, v in net.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    x = rng.normal(size=(2, 1, 6, 6))
    with torch.no_grad():
        close(back(torch.from_numpy(x)).numpy(), net(torch.from_numpy(x)).numpy())
    close(model.predict(x), net(torch.from_numpy(x)).detach().numpy())


def test_unsupported_modules_are_named():
    with pytest.raises(chainrule.UnsupportedLayerError, match=r"layer 1 \(LSTM\)"):
        chainrule.Sequential.from_torch(nn.Sequential(nn.Linear(2, 2), nn.LSTM(2, 2)))
    with pytest.raises(ValueError, match=r"layer 0 \(Softmax\): dim=0"):
        chainrule.Sequential.from_torch(nn.Sequential(nn.Softmax(dim=0)))
    with pytest.raises(chainrule.Error, match="expected a torch.nn.Sequential"):
        chainrule.Sequential.from_torch(nn.Linear(2, 2))
