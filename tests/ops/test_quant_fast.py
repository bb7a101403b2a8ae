"""The one-pass Numba QuantizeLinear/DequantizeLinear (per-tensor float32 <-> 8-bit) against the
ONNX reference evaluator, bit for bit, including ties, NaN, +-inf and saturation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto as TP
from onnx import helper
from onnx.reference import ReferenceEvaluator

from qrt.ops import quant


def _ref(op, x, s, z):
    ins = ["x", "s"] + (["z"] if z is not None else [])
    node = helper.make_node(op, ins, ["y"])
    feeds = {"x": x, "s": s}
    if z is not None:
        feeds["z"] = z
    return ReferenceEvaluator(node).run(None, feeds)[0]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 31), dtype=st.sampled_from([np.uint8, np.int8]),
       scale=st.integers(10, 10 ** 6).map(lambda v: v / 1e5), with_zp=st.booleans(), n=st.integers(16, 300))
def test_quantize_fast_matches_onnx_reference(seed, dtype, scale, with_zp, n):
    rng = np.random.default_rng(seed)
    s = np.array(scale, np.float32)
    x = (rng.normal(0, 200, n) * s).astype(np.float32)
    x[: n // 4] = np.round(x[: n // 4] / s) * s + s / 2  # exact ties
    x[0], x[1], x[2] = np.nan, np.inf, -np.inf
    if not with_zp:
        dtype = np.uint8  # the spec's default output type
    lo, hi = (0, 255) if dtype == np.uint8 else (-128, 127)
    z = np.array(rng.integers(lo, hi + 1), dtype) if with_zp else None
    got = quant._quantize_8bit_fast(x, s, z, 0)
    assert got is not None and got.dtype == dtype
    want = _ref("QuantizeLinear", x[3:], s, z)
    np.testing.assert_array_equal(got[3:], want)
    assert got[0] == lo and got[1] == hi and got[2] == lo  # NaN -> qmin, as onnxruntime does


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 31), dtype=st.sampled_from([np.uint8, np.int8]),
       scale=st.integers(10, 10 ** 6).map(lambda v: v / 1e5), n=st.integers(16, 300))
def test_dequantize_fast_matches_onnx_reference(seed, dtype, scale, n):
    rng = np.random.default_rng(seed)
    lo, hi = (0, 255) if dtype == np.uint8 else (-128, 127)
    x = rng.integers(lo, hi + 1, n).astype(dtype)
    z = np.array(rng.integers(lo, hi + 1), dtype)
    s = np.array(scale, np.float32)
    got = quant._dequantize_8bit_fast(x, s, z, 0)
    np.testing.assert_array_equal(got, _ref("DequantizeLinear", x, s, z))


@pytest.mark.parametrize("scale", [0.0, -1.0, np.nan, np.inf])
def test_bad_scales_still_refused(scale):
    x = np.ones(64, np.float32)
    with pytest.raises(quant.InvalidQuantParamsError, match="positive and finite"):
        quant._quantize_linear(x, np.array(scale, np.float32), np.array(0, np.uint8))
    with pytest.raises(quant.InvalidQuantParamsError, match="positive and finite"):
        quant._dequantize_linear(np.ones(64, np.uint8), np.array(scale, np.float32),
                                 np.array(0, np.uint8))


def test_zero_point_of_another_type_still_refused():
    with pytest.raises(quant.InvalidQuantParamsError, match="same type"):
        quant._dequantize_linear(np.ones(64, np.uint8), np.array(0.5, np.float32),
                                 np.array(0, np.int8))
