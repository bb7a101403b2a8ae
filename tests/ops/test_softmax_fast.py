"""The vectorised float32 softmax (kernels/cpu/float_ops.softmax_rows, taken by Softmax along the
last axis on AVX2 CPUs) against NumPy's formula: within a few float32 ulp (SOFTMAX_RTOL: the exp is
Cephes' polynomial, not libm's, and the row sum is accumulated in float64 in another order), with
NaN/inf handled as NumPy does and masked (-inf or very negative) entries exactly 0."""
from __future__ import annotations

import numpy as np
import pytest

from qrt.kernels.cpu import features
from qrt.ops.activations import softmax_13

pytestmark = pytest.mark.skipif(not features.can_run("avx2"), reason="AVX2 kernel")
SOFTMAX_RTOL = 4e-6  # ~32 float32 ulp of relative error, a few ulp seen in practice
SOFTMAX_ATOL = 1e-30  # results NumPy gives as subnormals (< 1.2e-38) come out as 0


def _numpy_softmax(x):
    m = np.max(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(x - m)
    return e / np.sum(e, axis=-1, keepdims=True)


@pytest.mark.parametrize("n", [8, 9, 15, 16, 37, 6625])
@pytest.mark.parametrize("spread", [0.1, 3.0, 40.0])
def test_matches_numpy(n, spread):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((3, 5, n)) * spread).astype(np.float32)
    got = softmax_13(x, axis=-1)
    want = _numpy_softmax(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=SOFTMAX_RTOL, atol=SOFTMAX_ATOL)
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)


def test_special_values():
    x = np.zeros((6, 11), np.float32)
    x[0, 3] = -np.inf          # a masked entry: exactly 0
    x[1, :] = -1e9             # all masked alike: uniform
    x[1, 0] = 0.0
    x[2, 5] = np.nan           # NaN row
    x[3, 2] = np.inf           # +inf: NumPy gives NaN for the row
    x[4, :] = -np.inf          # all -inf: NaN
    x[5, :] = np.arange(11) * 30.0  # exp underflow far below the max
    got = softmax_13(x, axis=-1)
    want = _numpy_softmax(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert got[0, 3] == 0.0 and got[1, 1] == 0.0
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=SOFTMAX_RTOL, atol=SOFTMAX_ATOL)


def test_other_axes_and_short_rows_take_numpy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 5)).astype(np.float32)
    np.testing.assert_allclose(softmax_13(x, axis=1), _numpy_softmax(x.swapaxes(1, 2)).swapaxes(1, 2),
                               rtol=1e-6)
    np.testing.assert_array_equal(softmax_13(x, axis=-1), _numpy_softmax(x))  # 5 < 8: NumPy
