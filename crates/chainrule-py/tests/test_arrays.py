"""NumPy arrays in and out: the dtype kept, inputs copied once into the library's
tensors, results handed to NumPy without a copy (crates/chainrule-py/src/convert.rs)."""

import gc

import numpy as np
import pytest

import chainrule
from chainrule import _chainrule
from conftest import close

LAYERS = [{"type": "linear", "in": 3, "out": 4}, {"type": "tanh"}, {"type": "linear", "in": 4, "out": 2}]


def problem(rng, dtype):
    x = rng.normal(size=(5, 3)).astype(dtype)
    y = rng.normal(size=(5, 2)).astype(dtype)
    return x, y


def handed_over(a):
    """Whether `a`'s buffer is the library's: NumPy did not allocate it (owndata is
    False) and its base is the Rust allocation itself (the numpy crate's
    PySliceContainer), not another array that a reshape or a copy would leave."""
    return not a.flags.owndata and type(a.base).__name__ == "PySliceContainer"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_in_float32_out_and_float64_in_float64_out(dtype, rng):
    model = chainrule.Sequential(LAYERS, dtype=np.dtype(dtype).name, seed=1)
    x, y = problem(rng, dtype)
    assert model.predict(x).dtype == dtype
    value, grads = model.value_and_grad(x, y, "mse")
    assert {g.dtype for g in grads.values()} == {np.dtype(dtype)}
    assert {v.dtype for v in model.state_dict().values()} == {np.dtype(dtype)}
    history = model.fit(x, y, loss="mse", epochs=1, batch_size=5, progress=False)
    assert model.predict(x).dtype == dtype and len(history) == 1


def test_results_are_the_librarys_buffers_handed_over_without_a_copy(rng):
    model = chainrule.Sequential(LAYERS, dtype="float64", seed=1)
    x, y = problem(rng, np.float64)
    copied = _chainrule._copied_outputs_for_tests()
    out = model.predict(x)
    grads = model.grad(x, y, "mse")
    values, upstream, _, _ = _chainrule.trace(model._m, x, y, "mse")
    # No output tensor was copied on the Rust side either: each moved its storage.
    assert _chainrule._copied_outputs_for_tests() == copied
    for a in [out, *grads.values(), *values, *upstream]:
        assert handed_over(a), (a.flags, type(a.base))
        assert a.flags.c_contiguous and a.flags.writeable
    # The buffer lives as long as the array, not as long as the model.
    want = out.copy()
    del model
    gc.collect()
    np.testing.assert_array_equal(out, want)


def test_state_dict_arrays_are_copies_so_writing_them_leaves_the_model_alone(rng):
    model = chainrule.Sequential(LAYERS, dtype="float64", seed=1)
    x, _ = problem(rng, np.float64)
    before = model.predict(x)
    copied = _chainrule._copied_outputs_for_tests()
    state = model.state_dict()
    # One copy per tensor: the model still holds its parameters' storage.
    assert _chainrule._copied_outputs_for_tests() == copied + len(state)
    assert all(handed_over(v) for v in state.values())
    for v in state.values():
        v[...] = 0.0
    np.testing.assert_array_equal(model.predict(x), before)


def test_layouts_and_dtypes_that_need_converting_read_as_numpy_shows_them(rng):
    model = chainrule.Sequential(LAYERS, dtype="float64", seed=1)
    x, y = problem(rng, np.float64)
    want = model.predict(x)
    # Fortran order, a strided slice, the other float dtype: one converting pass each.
    close(model.predict(np.asfortranarray(x)), want, 0)
    wide = np.zeros((5, 6))
    wide[:, ::2] = x
    close(model.predict(wide[:, ::2]), want, 0)
    close(model.predict(x.astype(np.float32)), model.predict(x.astype(np.float32).astype(np.float64)), 0)
    # Integers (pixels, say) are read without a float copy made first in Python.
    pixels = rng.integers(0, 256, size=(5, 3), dtype=np.uint8)
    close(model.predict(pixels), model.predict(pixels.astype(np.float64)), 0)
    close(model.grad(pixels, y, "mse")["0.weight"], model.grad(pixels.astype(np.float64), y, "mse")["0.weight"], 0)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.int16])
def test_class_indices_of_any_integer_dtype_are_read_once(dtype, rng):
    model = chainrule.Sequential(LAYERS, dtype="float32", seed=1)
    x, _ = problem(rng, np.float32)
    labels = np.array([0, 1, 1, 0, 1])
    want = model.grad(x, labels.astype(np.int64), "cross_entropy")
    got = model.grad(x, labels.astype(dtype), "cross_entropy")
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_wrong_dtypes_and_class_indices_name_the_argument(rng):
    model = chainrule.Sequential(LAYERS, seed=1)
    x, y = problem(rng, np.float32)
    with pytest.raises(chainrule.InvalidValueError, match=r"^x: dtype complex128 is not allowed"):
        model.predict(x.astype(np.complex128))
    with pytest.raises(chainrule.InvalidValueError, match=r"^y: targets: dtype uint8 is not allowed for mse"):
        model.grad(x, np.zeros((5, 2), np.uint8), "mse")
    with pytest.raises(chainrule.InvalidValueError, match=r"^y: targets: class index 2 is outside \[0, 2\)"):
        model.grad(x, np.array([0, 1, 2, 0, 1], np.uint16), "cross_entropy")
