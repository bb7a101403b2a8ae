"""The small CUDA kernels the session's GPU plan uses: device-resident quantization parameters,
NaN in QuantizeLinear, DynamicQuantizeLinear's zero range, channel bias + clamp, lookup tables.
The truths are qrt's CPU ops (qrt.ops.quant) and plain numpy."""
import numpy as np
import pytest

from tests.cuda.util import C, ref
from qrt.ops import quant


@pytest.mark.parametrize("dtype,zp", [(np.uint8, 7), (np.int8, -3)])
def test_quantize_nan_goes_to_qmin_like_the_cpu_op(dtype, zp):
    x = np.array([np.nan, -np.nan, 1.5, np.inf, -np.inf, 0.5, -2.5], np.float32)
    got = C.quantize_cuda(x, np.float32(0.5), zp, dtype).copy_to_host()
    want = quant.quantize_linear_13(x, np.float32(0.5), np.array(zp, dtype), axis=1)
    np.testing.assert_array_equal(got, want)
    assert got[0] == ref.qrange(dtype)[0]


@pytest.mark.parametrize("case", ["normal", "zeros", "empty", "nan"])
def test_dynamic_quantize_zero_range_scale_matches_the_cpu_op(case):
    """zero_range_scale=1.0 gives qrt's (and onnxruntime's) DynamicQuantizeLinear exactly."""
    rng = np.random.default_rng(1)
    x = {"normal": rng.normal(size=(3, 11)).astype(np.float32),
         "zeros": np.zeros((2, 5), np.float32), "empty": np.zeros((0, 4), np.float32),
         "nan": np.array([0.5, np.nan, -1.25, 2.0], np.float32)}[case]
    y, s, z = C.dynamic_quantize_cuda(x, zero_range_scale=1.0)
    wy, ws, wz = quant.dynamic_quantize_linear(x)
    np.testing.assert_array_equal(y.copy_to_host(), wy)
    assert s.copy_to_host()[0] == ws and z.copy_to_host()[0] == wz


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_prepared_qparams_per_axis(axis):
    rng = np.random.default_rng(2)
    x = rng.normal(0, 3, (3, 4, 5)).astype(np.float32)
    c = x.shape[axis]
    scale = rng.uniform(0.01, 0.1, c).astype(np.float32)
    zp = rng.integers(-20, 20, c).astype(np.int8)
    qp = C.prepare_qparams(scale, zp)
    bshape = [1, 1, 1]
    bshape[axis] = c
    q = C.quantize_cuda(x, qp, None, np.int8, axis=axis)
    want = ref.quantize(x, scale.reshape(bshape), zp.reshape(bshape), np.int8)
    np.testing.assert_array_equal(q.copy_to_host(), want)
    d = C.dequantize_cuda(q, qp, None, axis=axis).copy_to_host()
    np.testing.assert_array_equal(d, ref.dequantize(q.copy_to_host(), scale.reshape(bshape),
                                                    zp.reshape(bshape)))
    with pytest.raises(ValueError, match="need"):
        C.quantize_cuda(np.zeros((6, 6, 6), np.float32), qp, None, np.int8, axis=axis)


@pytest.mark.parametrize("lo_f,hi_f", [(None, None), (0.0, None), (-0.5, 0.25)])
def test_channel_bias_matches_numpy(lo_f, hi_f):
    rng = np.random.default_rng(3)
    y = rng.normal(size=(2, 3, 4)).astype(np.float32)
    y[0, 0, 0] = np.nan
    b = rng.normal(size=3).astype(np.float32)
    want = y + b.reshape(1, 3, 1)
    if lo_f is not None or hi_f is not None:
        want = np.clip(want, lo_f, hi_f)
    yd = C.to_device(y)
    assert C.channel_bias_cuda(yd, b, 1, lo_f, hi_f) is yd
    np.testing.assert_array_equal(yd.copy_to_host(), want)


@pytest.mark.parametrize("dtype,in_lo,tdtype", [(np.uint8, 0, np.int8),
                                                (np.int8, -128, np.float32)])
def test_lut_matches_numpy(dtype, in_lo, tdtype):
    rng = np.random.default_rng(4)
    table = rng.integers(-128, 128, 256).astype(tdtype)
    x = np.arange(256).astype(np.int64) + in_lo
    x = x.astype(dtype).reshape(16, 16)
    got = C.lut_cuda(x, table, in_lo).copy_to_host()
    assert got.dtype == table.dtype
    np.testing.assert_array_equal(got, table[x.astype(np.int32) - in_lo])
    with pytest.raises(ValueError, match="does not cover"):
        C.lut_cuda(x, table[:100], in_lo)
