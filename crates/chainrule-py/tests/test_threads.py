"""fit trains without the GIL: other Python threads run meanwhile, and Ctrl-C stops
it with KeyboardInterrupt (crates/chainrule-py/src/model.rs, `Listener`)."""

import _thread
import json
import sys
import threading
import time

import numpy as np
import pytest

import chainrule

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
