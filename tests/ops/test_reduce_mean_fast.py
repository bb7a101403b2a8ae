"""ReduceMean's float32/float64 path (add.reduce, then a division by the count in x's type) gives
exactly np.mean's result, for any axes and keepdims."""
from __future__ import annotations

import numpy as np
import pytest

from qrt.ops.reduce import reduce_mean


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axes", [((1, 16, 32), [2]), ((2, 3, 4, 5), [1, 3]), ((7,), None),
                                        ((3, 4), [0, 1]), ((1, 480, 1, 20), [-2, -1]),
                                        ((1000,), [0])])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_equals_numpy_mean(dt, shape, axes, keepdims):
    x = (np.random.default_rng(len(shape)).standard_normal(shape) * 10).astype(dt)
    got = reduce_mean(x, axes, keepdims)
    ax = None if axes is None else tuple(a % x.ndim for a in axes)
    want = np.asarray(np.mean(x, axis=ax, keepdims=bool(keepdims)))
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
