"""The library's typed errors arrive as Python exceptions with its one-line message."""

import numpy as np
import pytest

import chainrule

LINEAR = [{"type": "linear", "in": 2, "out": 1}]


def test_a_missing_run_folder_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        chainrule.load(tmp_path / "nope")
    assert isinstance(e.value, chainrule.Error)
    assert str(e.value).startswith(f"{tmp_path / 'nope'}: ")


def test_a_bad_model_file_names_the_file_and_field(tmp_path):
    (tmp_path / "model.json").write_text('{"layers": [{"type": "relu", "slope": 0.1}]}')
    (tmp_path / "params.safetensors").write_bytes(b"")
    with pytest.raises(chainrule.Error, match=r"params.safetensors"):
        chainrule.load(tmp_path)
    with pytest.raises(chainrule.InvalidValueError, match=r"layers\[0\].slope: unknown field"):
        chainrule.Sequential([{"type": "relu", "slope": 0.1}])


def test_shapes_that_do_not_fit_are_value_errors():
    m = chainrule.Sequential(LINEAR)
    with pytest.raises(ValueError, match=r"x: model input: expected \[N, 2\] with N ≥ 1 \(got shape \[3, 5\]\)"):
        m.predict(np.zeros((3, 5), np.float32))
    with pytest.raises(chainrule.Error, match="^y: "):
        m.grad(np.zeros((3, 2)), np.zeros((4, 1)), "mse")


def test_unknown_names_and_values_are_rejected_with_the_field():
    m = chainrule.Sequential(LINEAR)
    x, y = np.zeros((3, 2)), np.zeros((3, 1))
    with pytest.raises(chainrule.InvalidValueError, match=r'^loss: unknown loss "l2"'):
        m.grad(x, y, "l2")
    with pytest.raises(ValueError, match="^optimizer.lr: "):
        m.fit(x, y, loss="mse", optimizer="sgd", lr=-1, progress=False)
    with pytest.raises(ValueError, match="^optimizer.momentun: unknown field"):
        m.fit(x, y, loss="mse", optimizer="sgd", momentun=0.9, progress=False)
    with pytest.raises(ValueError, match="x: holds a non-finite number"):
        m.predict(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="dtype"):
        chainrule.Sequential(LINEAR, dtype="float16")
    with pytest.raises(ValueError, match=r"^validation x: model input"):
        m.fit(x, y, loss="mse", validation=(np.zeros((2, 3)), np.zeros((2, 1))), progress=False)


def test_a_rust_panic_becomes_a_chainrule_error():
    # A hidden hook that panics inside the bindings' guard, as a bug would.
    with pytest.raises(chainrule.InternalError, match="a bug in chainrule.*boom"):
        chainrule._chainrule._panic_for_tests("boom")
    # The interpreter goes on.
    assert chainrule.Sequential(LINEAR).predict(np.zeros((1, 2))).shape == (1, 1)
