"""qrt.QGlobalAveragePool: the op and its bound plan step against the documented formula (exact
int sums, one float64 rescale, round half to even, saturate), 8-bit in and out, any rank >= 3."""
from __future__ import annotations

import numpy as np
import pytest

from qrt.kernels import ref
from qrt.ops.fused import qglobal_average_pool


@pytest.mark.parametrize("shape", [(1, 8, 12, 96), (2, 5, 3), (3, 4, 2, 3, 5), (1, 200, 1, 1)])
@pytest.mark.parametrize("xdt,odt", [(np.uint8, "uint8"), (np.int8, "int8"), (np.uint8, "int8")])
def test_qgap_op_and_bound_step_match_formula(shape, xdt, odt):
    rng = np.random.default_rng(sum(shape))
    lo_x, hi_x = ref.qrange(xdt)
    x = rng.integers(lo_x, hi_x, shape, endpoint=True).astype(xdt)
    kw = dict(x_scale=0.037, x_zp=int(rng.integers(lo_x, hi_x)), y_scale=0.011,
              y_zp=int(rng.integers(*ref.qrange(odt))), out_dtype=odt, kernel="")
    n, c = shape[:2]
    hw = int(np.prod(shape[2:]))
    sums = (x.reshape(n, c, hw).astype(np.int64) - kw["x_zp"]).sum(-1)
    y = np.rint(sums.astype(np.float64) * (0.037 / (0.011 * hw))) + kw["y_zp"]
    want = np.clip(y, *ref.qrange(odt)).astype(odt).reshape((n, c) + (1,) * (len(shape) - 2))
    step = qglobal_average_pool.bind_step(**kw)
    for got in (qglobal_average_pool(x, **kw), step(x), step(x)):  # step: prepare, then reuse
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
