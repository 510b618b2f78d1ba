"""fit, evaluate, predict and save against PyTorch doing the same steps."""

import numpy as np
import pytest
import torch
from torch import nn

import chainrule
from conftest import close


def data(rng, n=24):
    x = rng.normal(size=(n, 2))
    y = (np.sin(x[:, :1]) + 0.5 * x[:, 1:] ** 2)
    return x, y


def torch_fit(net, x, y, opt, epochs, batch_size, loss_fn):
    for _ in range(epochs):
        for start in range(0, len(x), batch_size):
            opt.zero_grad()
            xb = torch.from_numpy(x[start:start + batch_size])
            yb = torch.from_numpy(y[start:start + batch_size])
            loss_fn(net(xb), yb).backward()
            opt.step()


@pytest.mark.parametrize(
    "name, options, make",
    [
        ("sgd", {"lr": 0.05, "momentum": 0.9}, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
        ("adam", {"lr": 0.01}, lambda p: torch.optim.Adam(p, lr=0.01)),
        ("rmsprop", {"lr": 0.01, "centered": True}, lambda p: torch.optim.RMSprop(p, lr=0.01, centered=True)),
    ],
)
def test_fit_takes_pytorchs_steps(name, options, make, rng):
    x, y = data(rng)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    model = chainrule.Sequential.from_torch(net)
    history = model.fit(x, y, loss="mse", optimizer=name, epochs=3, batch_size=5, progress=False, **options)
    torch_fit(net, x, y, make(net.parameters()), 3, 5, nn.MSELoss())
    for k, v in net.state_dict().items():
        close(model.state_dict()[k], v.numpy())
    assert len(history) == 3 and [h["epoch"] for h in history] == [0, 1, 2]


def test_fit_learns_and_reports_validation(rng, capsys):
    x, y = data(rng, 64)
    model = chainrule.Sequential(
        [{"type": "linear", "in": 2, "out": 16}, {"type": "tanh"}, {"type": "linear", "in": 16, "out": 1}],
        dtype="float64",
        seed=3,
    )
    before = model.evaluate(x, y, "mse")["loss"]
    history = model.fit(
        x[:48], y[:48], loss="mse", optimizer={"type": "adam", "lr": 0.02}, epochs=40,
        batch_size=8, shuffle=True, validation=(x[48:], y[48:]),
    )
    out = capsys.readouterr().out
    assert "epoch 40/40" in out and "val_loss" in out
    assert history["loss"][-1] < 0.25 * history["loss"][0]
    assert history["val_loss"][-1] is not None
    after = model.evaluate(x, y, "mse")["loss"]
    assert after < 0.25 * before
    # evaluate's loss is the loss of predict's outputs
    close(after, float(np.mean((model.predict(x) - y) ** 2)))


def test_classification_reports_accuracy(rng):
    x = rng.normal(size=(40, 2))
    labels = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    model = chainrule.Sequential(
        [{"type": "linear", "in": 2, "out": 16}, {"type": "relu"}, {"type": "linear", "in": 16, "out": 2}],
        seed=1,
    )
    history = model.fit(x, labels, loss="cross_entropy", optimizer="adam", lr=0.05, epochs=60, batch_size=10, progress=False)
    assert history["accuracy"][-1] > 0.85
    assert model.evaluate(x, labels, "cross_entropy")["accuracy"] > 0.85


def test_callback_sees_every_step_and_epoch(rng):
    x, y = data(rng, 10)
    model = chainrule.Sequential([{"type": "linear", "in": 2, "out": 1}])
    seen = []
    model.fit(x, y, loss="mse", epochs=2, batch_size=4, progress=False, callback=lambda k, d: seen.append(k))
    assert seen == ["step"] * 3 + ["epoch"] + ["step"] * 3 + ["epoch"]


def test_an_exception_in_the_callback_stops_training_after_that_step(rng):
    x, y = data(rng, 10)
    model = chainrule.Sequential([{"type": "linear", "in": 2, "out": 1}], dtype="float64")
    steps = []

    def stop(kind, d):
        steps.append(kind)
        if len(steps) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, loss="mse", optimizer="sgd", lr=0.1, epochs=5, batch_size=2, progress=False, callback=stop)
    assert len(steps) == 2


def test_save_and_load_round_trip(tmp_path, rng):
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 1)).double()
    model = chainrule.Sequential.from_torch(net)
    model.fit(*data(rng), loss="mse", epochs=1, batch_size=8, progress=False)
    model.save(tmp_path / "run")
    back = chainrule.load(tmp_path / "run")
    assert back.dtype == "float64"
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v)
    back2 = chainrule.load(tmp_path / "run" / "model.json", tmp_path / "run" / "params.safetensors")
    assert back2.layers == model.layers
    # A reader independent of chainrule reads what it wrote.
    from safetensors_reader import read_safetensors

    for k, v in read_safetensors(tmp_path / "run" / "params.safetensors").items():
        np.testing.assert_array_equal(v, model.state_dict()[k].astype(v.dtype))
