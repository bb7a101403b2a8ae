"""CUDA quantize / dequantize / dynamic quantization, bit-exact against the numpy reference twins."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.cuda.util import FEW, C, ref


def _params(rng, shape, axis, dtype):
    lo, hi = ref.qrange(dtype)
    if axis is None:
        return np.float32(rng.choice([0.5, 0.25, 0.037, 1.7])), int(rng.integers(lo, hi + 1) // 2), None
    c = shape[axis]
    scale = rng.choice([0.5, 0.25, 0.037, 1.7], size=c).astype(np.float32)
    zp = (rng.integers(lo, hi + 1, size=c) // 2).astype(dtype)
    bshape = [1] * len(shape)
    bshape[axis] = c
    return scale, zp, bshape


@FEW
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), dtype=st.sampled_from(["uint8", "int8"]),
       per_channel=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_quantize_matches_ref(shape, dtype, per_channel, seed):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    axis = int(rng.integers(len(shape))) if per_channel else None
    scale, zp, bshape = _params(rng, shape, axis, dtype)
    # ties (k + 0.5) * scale are exact for power-of-two scales; plus ordinary and saturating values
    x = (rng.integers(-300, 300, size=shape) + rng.choice([0.0, 0.5, 0.25, 0.49], size=shape))
    x = (x * (np.asarray(scale).reshape(bshape) if axis is not None else scale)).astype(np.float32)
    want = ref.quantize(x, scale if axis is None else np.reshape(scale, bshape),
                        zp if axis is None else np.reshape(zp, bshape), dtype)
    got = C.quantize_cuda(x, scale, zp, dtype, axis=axis).copy_to_host()
    assert got.dtype == dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype,zp", [(np.uint8, 128), (np.int8, 0), (np.int8, -3)])
def test_quantize_ties_and_extremes(dtype, zp):
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, -3.5, 0.49999997, 1e30, -1e30,
                  np.inf, -np.inf, 126.5, -128.5, 127.5], np.float32)
    got = C.quantize_cuda(x, np.float32(1.0), zp, dtype).copy_to_host()
    np.testing.assert_array_equal(got, ref.quantize(x, np.float32(1.0), zp, dtype))


def test_check_rounding_passes():
    C.check_rounding()


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_dequantize_matches_ref(axis, dtype):
    rng = np.random.default_rng(7)
    shape = (3, 4, 5)
    q = rng.integers(*ref.qrange(dtype), size=shape, endpoint=True).astype(dtype)
    scale, zp, bshape = _params(rng, shape, axis, np.dtype(dtype))
    want = ref.dequantize(q, scale if axis is None else np.reshape(scale, bshape),
                          zp if axis is None else np.reshape(zp, bshape))
    got = C.dequantize_cuda(q, scale, zp, axis=axis).copy_to_host()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_quantize_device_roundtrip_and_out():
    x = np.linspace(-3, 3, 40, dtype=np.float32).reshape(5, 8)
    xd = C.to_device(x)
    out = C.to_device(np.zeros((5, 8), np.int8))
    q = C.quantize_cuda(xd, 0.05, 2, np.int8, out=out)
    assert q is out
    back = C.dequantize_cuda(q, 0.05, 2).copy_to_host()
    np.testing.assert_array_equal(back, ref.dequantize(ref.quantize(x, 0.05, 2, np.int8), 0.05, 2))


def test_quantize_bad_params():
    with pytest.raises(ValueError, match="axis 1 need 4"):
        C.quantize_cuda(np.zeros((2, 4), np.float32), np.ones(3, np.float32), 0, np.uint8, axis=1)
    with pytest.raises(TypeError, match="uint8 or int8"):
        C.quantize_cuda(np.zeros(4, np.float32), 1.0, 0, np.int16)


# ---- dynamic quantization (ONNX DynamicQuantizeLinear) -------------------------------------

def dynamic_quantize_ref(x):
    """ONNX DynamicQuantizeLinear (u8), as onnx.reference computes it."""
    x = np.asarray(x, np.float32)
    mx = np.float32(max(0.0, float(x.max()))) if x.size else np.float32(0)
    mn = np.float32(min(0.0, float(x.min()))) if x.size else np.float32(0)
    scale = np.float32(1.0 if mx == mn else mx - mn) / np.float32(255)
    zp = np.rint(np.clip(np.float32(0) - mn / scale, 0, 255))
    y = np.clip(np.rint(x / scale) + zp, 0, 255).astype(np.uint8)
    return y, np.float32(scale), np.uint8(zp)


CASES = {
    "normal": lambda r: r.normal(size=(3, 70)).astype(np.float32),
    "positive": lambda r: r.uniform(0.1, 5, size=(40,)).astype(np.float32),
    "negative": lambda r: r.uniform(-7, -0.5, size=(2, 3, 5)).astype(np.float32),
    "zeros": lambda r: np.zeros((4, 4), np.float32),
    "single": lambda r: np.array([[-0.75]], np.float32),
    "ties": lambda r: np.array([-2.55, 0, 2.55, 1.275, -1.275, 0.01], np.float32),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dynamic_quantize_matches_onnx_formula(case):
    x = CASES[case](np.random.default_rng(3))
    y, scale, zp = C.dynamic_quantize_cuda(x)
    wy, ws, wz = dynamic_quantize_ref(x)
    assert scale.copy_to_host()[0] == ws
    assert zp.copy_to_host()[0] == wz
    np.testing.assert_array_equal(y.copy_to_host(), wy)


def test_dynamic_quantize_ref_agrees_with_onnx_reference():
    """The twin above is checked against onnx's own reference evaluator (CPU only, no kernel)."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info(n, t, None) for n, t in
                               (("y", TensorProto.UINT8), ("s", TensorProto.FLOAT),
                                ("z", TensorProto.UINT8))])
    sess = ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    for case in sorted(CASES):
        x = CASES[case](np.random.default_rng(3))
        y, s, z = sess.run(None, {"x": x})
        wy, ws, wz = dynamic_quantize_ref(x)
        assert s == ws and z == wz, case
        np.testing.assert_array_equal(y, wy)
