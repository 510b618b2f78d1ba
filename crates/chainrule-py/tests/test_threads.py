"""Every call that computes runs without the GIL, so other Python threads run
meanwhile (crates/chainrule-py/src/lib.rs, `released`); fit also turns Ctrl-C into
KeyboardInterrupt (crates/chainrule-py/src/model.rs, `Listener`)."""

import _thread
import json
import sys
import threading
import time

import numpy as np
import pytest

import chainrule
from chainrule import _chainrule

# Only a regression reaches this: fit holding the GIL keeps the other thread out
# until the callback gives up.
WATCHDOG_SECONDS = 60


@pytest.mark.parametrize("every_step", [True, False], ids=["callback", "progress bar"])
def test_another_thread_runs_during_fit_and_its_ctrl_c_stops_training(every_step, rng):
    """Deterministic whatever the machine's speed: fit is given a million epochs, so it
    is still training whenever the other thread gets to run, and only that thread's
    Ctrl-C (`_thread.interrupt_main`, what a terminal's Ctrl-C and Jupyter's "Interrupt
    the kernel" do) ends it. The interpreter's switch interval is raised for the test,
    so that it never takes the GIL from a thread that holds it: the other thread can
    run only if fit lets go of the GIL itself. `every_step` is the native flag that
    `Sequential.fit` sets when a callback wants every step, and leaves off when only
    the progress bar listens."""
    x = rng.normal(size=(256, 2))
    y = np.sin(x[:, :1]) * x[:, 1:]
    model = chainrule.Sequential(
        [{"type": "linear", "in": 2, "out": 16}, {"type": "tanh"}, {"type": "linear", "in": 16, "out": 1}],
        dtype="float64",
    )
    before = model.state_dict()
    config = json.dumps({"loss": "mse", "optimizer": {"type": "sgd", "lr": 0.01}, "batch_size": 16, "epochs": 10**6})
    training = threading.Event()
    fitting = True
    epochs_seen_by_the_thread = []
    epochs = []
    started = time.monotonic()

    def other_thread():
        training.wait()
        if fitting:  # never interrupt the test itself after a failed fit
            epochs_seen_by_the_thread.append(len(epochs))
            _thread.interrupt_main()

    def on_event(kind, data):
        if kind == "epoch":
            epochs.append(data["epoch"])
            training.set()
        if time.monotonic() - started > WATCHDOG_SECONDS:
            raise AssertionError("fit held the GIL: the other thread never ran while it trained")

    thread = threading.Thread(target=other_thread)
    thread.start()
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            model._m.fit(x, y, config, None, None, on_event, every_step)
    finally:
        fitting = False
        sys.setswitchinterval(switch_interval)
        training.set()
        thread.join()
    # The thread ran after training had started, and training ended soon after the
    # interrupt: at the next check, between steps.
    assert len(epochs_seen_by_the_thread) == 1 and epochs_seen_by_the_thread[0] >= 1
    assert len(epochs) < 10**6
    # The steps taken are kept.
    assert any(not np.array_equal(v, before[k]) for k, v in model.state_dict().items())


def test_keyboard_interrupt_through_the_public_fit_keeps_the_steps_taken(rng):
    """`Sequential.fit` interrupted from its callback at the first epoch."""
    x = rng.normal(size=(64, 2))
    y = x[:, :1] - x[:, 1:]
    model = chainrule.Sequential([{"type": "linear", "in": 2, "out": 1}], dtype="float64")
    before = model.evaluate(x, y, "mse")["loss"]

    def interrupt_at_first_epoch(kind, data):
        if kind == "epoch":
            _thread.interrupt_main()

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, loss="mse", lr=0.1, epochs=10**6, batch_size=8, progress=False, callback=interrupt_at_first_epoch)
    assert model.evaluate(x, y, "mse")["loss"] < before


# How many times `ran_during` repeats a call that releases the GIL before the other
# thread has been scheduled inside one: a count of tries, not a time. A call that
# holds the GIL fails every one of them, whatever the machine's speed.
ATTEMPTS = 50


def ran_during(call, then=None):
    """What another Python thread saw of ``call()`` when it first ran: ``[True]`` if it
    ran while a call was in progress, ``[False]`` if only after the last call. When
    ``then`` is given, the thread calls it right after looking, and this returns
    ``[(what it saw, what then() returned or raised)]``.

    The thread waits without the GIL on a lock that is released just before the first
    call, and then needs only the GIL. The interpreter's switch interval is raised, so
    that it never takes the GIL from a thread that holds it, and this thread blocks on
    nothing between the calls: the other thread can get the GIL only where a call lets
    go of it, or at the final ``join``, after ``in_call`` is cleared. A call that holds
    the GIL therefore gives ``[False]`` deterministically; one that releases it gives
    ``[True]`` once the OS has scheduled the other thread during one of the calls (the
    call is repeated, at most ATTEMPTS times, until it has)."""
    in_call = [False]
    seen = []
    gate = threading.Lock()
    gate.acquire()

    def other_thread():
        with gate:
            during = in_call[0]
            if then is None:
                seen.append(during)
                return
            try:
                seen.append((during, then()))
            except Exception as e:  # reported to the test, which names it
                seen.append((during, e))

    thread = threading.Thread(target=other_thread)
    thread.start()
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        gate.release()
        for _ in range(ATTEMPTS):
            in_call[0] = True
            call()
            in_call[0] = False
            if seen:
                break
    finally:
        in_call[0] = False
        sys.setswitchinterval(switch_interval)
        thread.join()
    return seen


@pytest.fixture
def large_problem():
    """A 32-256-10 float32 model and 4096 samples: a pass takes a while."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4096, 32)).astype(np.float32)
    labels = rng.integers(0, 10, size=4096)
    model = chainrule.Sequential(
        [{"type": "linear", "in": 32, "out": 256}, {"type": "relu"}, {"type": "linear", "in": 256, "out": 10}],
        seed=0,
    )
    return model._m, x, labels


# The calls below are the native methods themselves, with every argument made
# beforehand: NumPy releases the GIL in some of its own operations (a large astype or
# copy), which would let the other thread in without chainrule's doing.


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x, labels: m.predict(x),
        lambda m, x, labels: m.evaluate(x, labels, "cross_entropy"),
        lambda m, x, labels: m.grad(x, labels, "cross_entropy", 0),
    ],
    ids=["predict", "evaluate", "grad"],
)
def test_another_thread_runs_during_predict_evaluate_and_grad(call, large_problem):
    """x is lent (C-contiguous float32, the model's dtype; test_arrays.py checks that
    it is not converted), so the call's one release is the one around its work."""
    m, x, labels = large_problem
    assert ran_during(lambda: call(m, x, labels)) == [True]


def test_two_threads_may_use_one_model_at_once(large_problem):
    """predict, evaluate and grad borrow the model shared (they run on a copy that shares
    its parameters, in evaluation mode for predict and evaluate), so another thread may
    call them, or read the model, while one of them runs: a call that borrowed it
    exclusively while releasing the GIL would make the second one raise "Already
    borrowed"."""
    m, x, labels = large_problem
    want = m.predict(x)
    mode = m.training
    for call in [
        lambda: m.predict(x),
        lambda: m.evaluate(x, labels, "cross_entropy"),
        lambda: m.grad(x, labels, "cross_entropy", 0),
    ]:
        seen = ran_during(call, then=lambda: (m.training, m.predict(x)))
        assert len(seen) == 1 and seen[0][0] is True, seen
        assert not isinstance(seen[0][1], Exception), seen[0][1]
        training, got = seen[0][1]
        assert training == mode  # the model's own mode, not the running call's
        np.testing.assert_array_equal(got, want)


def classifier(sizes, samples):
    """A float64 tanh network of layer widths `sizes`, and `samples` rows with labels."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(samples, sizes[0]))
    labels = rng.integers(0, sizes[-1], size=samples)
    layers = [{"type": "linear", "in": sizes[0], "out": sizes[1]}]
    for a, b in zip(sizes[1:], sizes[2:]):
        layers += [{"type": "tanh"}, {"type": "linear", "in": a, "out": b}]
    return chainrule.Sequential(layers, dtype="float64", seed=2)._m, x, labels


@pytest.mark.parametrize(
    "sizes, samples, call",
    [
        ((6, 12, 3), 64, lambda m, x, y: _chainrule.explain(m, x, y, "cross_entropy", None, 0.01)),
        ((6, 12, 3), 64, lambda m, x, y: _chainrule.graph(m, x, y, "cross_entropy")),
        # symbolic writes every sample's terms out: a smaller network.
        ((3, 4, 2), 4, lambda m, x, y: _chainrule.symbolic(m, x, y, "cross_entropy", False)),
        ((6, 12, 3), 64, lambda m, x, y: _chainrule.gradcheck(m, x, y, "cross_entropy", 1e-6, 1e-6)),
        ((6, 12, 3), 64, lambda m, x, y: _chainrule.trace(m, x, y, "cross_entropy")),
    ],
    ids=["explain", "graph", "symbolic", "gradcheck", "trace"],
)
def test_another_thread_runs_during_the_explanations(sizes, samples, call):
    """On a float64 model and a few dozen samples: reading them keeps the GIL (too
    small to be worth releasing it), so the call's one release is the one around its
    work."""
    m, x, y = classifier(sizes, samples)
    assert ran_during(lambda: call(m, x, y)) == [True]


def wide_formula(units=40):
    """A formula network of `units` sigmoid units between one input and one output."""
    lines = ["input x = 0.5", "input y = 1", "param b = 0.1"]
    for i in range(units):
        lines += [f"param w{i} = {0.01 * (i % 7) - 0.03}", f"param v{i} = {0.02 * (i % 5) - 0.04}"]
    for i in range(units):
        lines += [f"z{i} = x*w{i} + b", f"f{i} = sigmoid(z{i})"]
    lines.append("output o = " + " + ".join(f"f{i}*v{i}" for i in range(units)))
    lines.append("loss L = (o - y)*(o - y)")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "call",
    [
        lambda text: _chainrule.explain_formula(text, None, 0.01),
        lambda text: _chainrule.formula_gradient(text),
        lambda text: _chainrule.formula_params(text),
        lambda text: _chainrule.graph_formula(text),
        lambda text: _chainrule.symbolic_formula(text, False),
    ],
    ids=["explain_formula", "formula_gradient", "formula_params", "graph_formula", "symbolic_formula"],
)
def test_another_thread_runs_during_the_formula_networks_calls(call):
    text = wide_formula()
    assert ran_during(lambda: call(text)) == [True]


def deep_model():
    """200 linear layers of 64 × 64: 832,000 parameters in tensors too small for reading
    one to release the GIL, so that building the model from them is the work that
    `Model.from_json` does without it."""
    layers = []
    for _ in range(200):
        layers += [{"type": "linear", "in": 64, "out": 64}, {"type": "tanh"}]
    return chainrule.Sequential(layers, dtype="float32")._m


@pytest.mark.parametrize(
    "call",
    [
        lambda m, folder, state: m.save(str(folder)),
        lambda m, folder, state: _chainrule.Model.load(str(folder)),
        lambda m, folder, state: _chainrule.Model.from_json(m.to_json(), state, "float32", 0),
        lambda m, folder, state: m.astype("float64"),
        lambda m, folder, state: m.state_dict(),
    ],
    ids=["save", "load", "from_json with params (from_torch)", "astype", "state_dict"],
)
def test_another_thread_runs_during_loading_saving_and_converting_models(call, tmp_path):
    m = deep_model()
    m.save(str(tmp_path))
    state = m.state_dict()
    assert ran_during(lambda: call(m, tmp_path, state)) == [True]
