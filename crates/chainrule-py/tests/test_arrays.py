"""NumPy arrays in and out: the dtype kept, inputs read in place when C-contiguous of
the model's dtype and converted once otherwise, results handed to NumPy without a copy
(crates/chainrule-py/src/convert.rs)."""

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


def other_layouts_and_dtypes(x):
    """x as arrays that cannot be read in place, each with the values NumPy shows."""
    wide = np.zeros((x.shape[0], 2 * x.shape[1]), x.dtype)
    wide[:, ::2] = x
    other = np.float32 if x.dtype == np.float64 else np.float64
    return {
        "Fortran order": np.asfortranarray(x),
        "strided slice": wide[:, ::2],
        "other float": x.astype(other),
        "integers": np.round(x * 10).astype(np.int32),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_of_the_models_dtype_in_c_order_are_read_in_place_and_others_converted_once(dtype, rng):
    """`_converted_inputs_for_tests` counts the inputs that the native module converted
    into a tensor of its own; a C-contiguous array of the model's dtype is lent to the
    library instead, and read in place, batch by batch. The results are the same
    either way (the converted array holds the same numbers, in the model's dtype)."""
    n = 40  # more rows than a batch, so that fit reads the array in several batches
    x = rng.normal(size=(n, 3)).astype(dtype)
    y = rng.normal(size=(n, 2)).astype(dtype)
    labels = rng.integers(0, 2, size=n)
    model = chainrule.Sequential(LAYERS, dtype=np.dtype(dtype).name, seed=1)
    calls = {
        "fit": lambda a: model.astype(model.dtype).fit(
            a, y, loss="mse", epochs=2, batch_size=8, shuffle=True, progress=False, validation=(a, y)
        ),
        "predict": lambda a: model.predict(a),
        "evaluate": lambda a: model.evaluate(a, labels, "cross_entropy"),
        "grad": lambda a: model.grad(a, y, "mse"),
    }
    for name, call in calls.items():
        before = _chainrule._converted_inputs_for_tests()
        lent = call(x)
        # fit reads x and validation x: both lent.
        assert _chainrule._converted_inputs_for_tests() == before, name
        for layout, a in other_layouts_and_dtypes(x).items():
            before = _chainrule._converted_inputs_for_tests()
            converted = call(a)
            assert _chainrule._converted_inputs_for_tests() == before + (2 if name == "fit" else 1), (name, layout)
            if layout in ("Fortran order", "strided slice"):
                # The same numbers, read in place or not (fit's history: its losses).
                if name == "fit":
                    converted, lent_ = converted["loss"] + converted["val_loss"], lent["loss"] + lent["val_loss"]
                else:
                    lent_ = lent
                np.testing.assert_equal(converted, lent_)


def test_a_lent_array_is_left_as_it_was_and_read_only_arrays_are_lent_too(rng):
    model = chainrule.Sequential(LAYERS, dtype="float64", seed=1)
    x, y = problem(rng, np.float64)
    want = model.predict(x.copy())
    kept = x.copy()
    x.flags.writeable = False
    before = _chainrule._converted_inputs_for_tests()
    close(model.predict(x), want, 0)
    model.fit(x, y, loss="mse", epochs=1, batch_size=2, progress=False)
    assert _chainrule._converted_inputs_for_tests() == before
    np.testing.assert_array_equal(x, kept)


def test_lent_arrays_are_checked_for_nan_and_infinities_like_converted_ones(rng):
    model = chainrule.Sequential(LAYERS, dtype="float64", seed=1)
    x, y = problem(rng, np.float64)
    x[2, 1] = np.nan
    for a in [x, np.asfortranarray(x)]:
        with pytest.raises(chainrule.InvalidValueError, match=r"^x: holds a non-finite number$"):
            model.predict(a)
        with pytest.raises(chainrule.InvalidValueError, match=r"^x: holds a non-finite number$"):
            model.grad(a, y, "mse")
        with pytest.raises(chainrule.InvalidValueError, match=r"^validation x: holds a non-finite number$"):
            model.fit(np.zeros_like(x), y, loss="mse", progress=False, validation=(a, y))


def test_an_array_not_aligned_for_its_dtype_is_read_as_numpy_shows_it(rng):
    """A float64 view of a byte buffer at an odd offset: not aligned, so the Python half
    copies it before the native module reads it as a slice."""
    model = chainrule.Sequential(LAYERS, dtype="float64", seed=1)
    x, _ = problem(rng, np.float64)
    raw = np.zeros(x.nbytes + 1, np.uint8)
    unaligned = np.frombuffer(raw.data, dtype=np.float64, count=x.size, offset=1).reshape(x.shape)
    unaligned[...] = x
    assert not unaligned.flags.aligned and unaligned.flags.c_contiguous
    close(model.predict(unaligned), model.predict(x), 0)
