import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture
def repo():
    return REPO


@pytest.fixture
def rng():
    return np.random.default_rng(17)


def close(got, want, tol=1e-10):
    """|got − want| ≤ tol · max(1, |want|), elementwise."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    err = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    assert err.max(initial=0.0) <= tol, f"max relative error {err.max()}:\n{got}\nvs\n{want}"
