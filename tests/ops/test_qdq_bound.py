"""QuantizeLinear / DequantizeLinear as the plan runs them (attributes bound once, the kernel
parameters of the last scale/zero-point objects kept): identical to the op called directly, for
new scale objects, invalid parameters (same error), and inputs the one-pass kernel does not take."""
from __future__ import annotations

import numpy as np
import pytest

from qrt.errors import InvalidQuantParamsError
from qrt.ops import quant

Q = [(quant.quantize_linear_10, {}), (quant.quantize_linear_13, {"axis": 1}),
     (quant.quantize_linear_19, {"axis": 1, "saturate": 1}),
     (quant.quantize_linear_21, {"axis": 1, "block_size": 0, "output_dtype": 0, "saturate": 1})]
DQ = [(quant.dequantize_linear_10, {}), (quant.dequantize_linear_13, {"axis": 1}),
      (quant.dequantize_linear_21, {"axis": 1, "block_size": 0})]


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fn,kw", Q)
def test_bound_quantize_equals_the_op(fn, kw):
    rng = np.random.default_rng(0)
    step = fn.bind_step(**kw)
    x = (rng.standard_normal((2, 3, 5)) * 4).astype(np.float32)
    x[0, 0, :3] = [np.nan, np.inf, -np.inf]
    for s, z in [(np.array(0.05, np.float32), np.array(128, np.uint8)),
                 (np.array(0.05, np.float32), np.array(-3, np.int8)),
                 (np.array(0.02, np.float32), None),
                 (np.array([0.1, 0.2, 0.3], np.float32), np.array([1, 2, 3], np.uint8))]:
        if z is None and fn is quant.quantize_linear_10:
            continue
        for _ in range(2):  # the second call takes the kept parameters
            _same(step(x, s, z), fn(x, s, z, **kw))
        _same(step(x.astype(np.float16), s, z), fn(x.astype(np.float16), s, z, **kw))
    for bad in (np.array(0.0, np.float32), np.array(-1.0, np.float32),
                np.array(np.nan, np.float32)):
        with pytest.raises(InvalidQuantParamsError):
            step(x, bad, np.array(0, np.uint8))


@pytest.mark.parametrize("fn,kw", DQ)
def test_bound_dequantize_equals_the_op(fn, kw):
    rng = np.random.default_rng(1)
    step = fn.bind_step(**kw)
    xu = rng.integers(0, 256, (2, 3, 5)).astype(np.uint8)
    xs = rng.integers(-128, 128, (2, 3, 5)).astype(np.int8)
    s = np.array(0.05, np.float32)
    for x, z in [(xu, np.array(7, np.uint8)), (xs, np.array(-9, np.int8)), (xu, None),
                 (xs, None)]:
        for _ in range(2):
            _same(step(x, s, z), fn(x, s, z, **kw))
    with pytest.raises(InvalidQuantParamsError):  # zero point of another type than x
        step(xs, s, np.array(7, np.uint8))
    with pytest.raises(InvalidQuantParamsError):
        step(xu, np.array(0.0, np.float32), np.array(7, np.uint8))
