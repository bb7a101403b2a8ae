"""Float Conv/ConvTranspose/Gemm/MatMul, pooling, normalization, Pad and Resize against onnxruntime
on random data, one single-node model per case, across the opset versions qrt registers.

Tolerances are named per op family; they cover float32 summation-order differences only."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import qrt

ort = pytest.importorskip("onnxruntime")

CONV_RTOL, CONV_ATOL = 1e-4, 1e-4  # K up to a few hundred float32 products, different order
GEMM_RTOL, GEMM_ATOL = 1e-5, 1e-5
NORM_RTOL, NORM_ATOL = 1e-5, 1e-5
RESIZE_RTOL, RESIZE_ATOL = 1e-5, 1e-5
POOL_RTOL, POOL_ATOL = 1e-6, 1e-6

_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
         np.dtype(np.float16): TensorProto.FLOAT16, np.dtype(np.int64): TensorProto.INT64,
         np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
         np.dtype(np.int32): TensorProto.INT32}


def _model(op, inputs, n_out, opset, **attrs):
    """inputs: list of (name, array or None, as_initializer)."""
    names, vis, inits = [], [], []
    for name, arr, const in inputs:
        if arr is None:
            names.append("")
            continue
        names.append(name)
        if const:
            inits.append(helper.make_tensor(name, _ELEM[arr.dtype], arr.shape,
                                            arr.reshape(-1).tolist()))
        else:
            vis.append(helper.make_tensor_value_info(name, _ELEM[arr.dtype], arr.shape))
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph([node], "g", vis, [onnx.ValueInfoProto(name=o) for o in outs],
                              inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _compare(op, inputs, opset, rtol, atol, n_out=1, **attrs):
    m = _model(op, inputs, n_out, opset, **attrs)
    feeds = {name: arr for name, arr, const in inputs if arr is not None and not const}
    copies = {k: v.copy() for k, v in feeds.items()}
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    want = ort.InferenceSession(m.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, feeds)
    got = qrt.InferenceSession(m, optimize=False, threads=1).run(None, feeds)
    for k in feeds:  # ops must never modify their inputs
        np.testing.assert_array_equal(feeds[k], copies[k])
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype, (g.dtype, w.dtype)
        assert g.shape == w.shape, (g.shape, w.shape)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(g, w)
    return got


def _r(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------------------------- Conv

CONV_CASES = {
    # name: (x shape, w shape, attrs)
    "depthwise_s2_pad": ((2, 8, 13, 11), (8, 1, 3, 3), dict(group=8, strides=[2, 2],
                                                             pads=[1, 1, 1, 1])),
    "depthwise_mult2_dil": ((1, 4, 12, 12), (8, 1, 3, 3), dict(group=4, dilations=[2, 2],
                                                                pads=[2, 1, 2, 1])),
    "grouped_dilated_strided": ((2, 6, 15, 14), (9, 2, 3, 2),
                                dict(group=3, dilations=[2, 3], strides=[2, 1],
                                     pads=[1, 0, 2, 1])),
    "grouped_same_upper": ((1, 8, 10, 9), (4, 4, 3, 3), dict(group=2, strides=[2, 2],
                                                             auto_pad="SAME_UPPER")),
    "plain_same_lower": ((1, 3, 9, 10), (5, 3, 4, 4), dict(strides=[2, 3],
                                                          auto_pad="SAME_LOWER")),
    "plain_valid": ((1, 3, 9, 10), (5, 3, 3, 3), dict(auto_pad="VALID", strides=[2, 2])),
    "pointwise": ((2, 16, 7, 7), (8, 16, 1, 1), {}),
    "pointwise_strided": ((1, 16, 7, 7), (8, 16, 1, 1), dict(strides=[2, 2])),
    "conv1d": ((2, 4, 20), (6, 2, 5), dict(group=2, strides=[3], dilations=[2], pads=[2, 1])),
    "conv3d": ((1, 2, 6, 7, 5), (4, 2, 3, 2, 3), dict(strides=[1, 2, 1], pads=[1, 0, 1, 0, 1, 1])),
    "depthwise3d": ((1, 3, 5, 6, 4), (6, 1, 2, 3, 2), dict(group=3, strides=[1, 2, 1],
                                                            dilations=[2, 1, 1])),
    "depthwise1d_strided": ((2, 4, 17), (4, 1, 3), dict(group=4, strides=[2], pads=[1, 1])),
}


@pytest.mark.parametrize("opset", [10, 11, 22])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("name", sorted(CONV_CASES))
def test_conv_vs_ort(name, bias, opset):
    xs, ws, attrs = CONV_CASES[name]
    x, w = _r(*xs), _r(*ws, seed=1)
    b = _r(ws[0], seed=2) if bias else None
    _compare("Conv", [("x", x, False), ("w", w, True), ("b", b, True)], opset, CONV_RTOL,
             CONV_ATOL, **attrs)


CONVT_CASES = {
    "strided_pads": ((1, 3, 5, 6), (3, 4, 3, 3), dict(strides=[2, 2], pads=[1, 0, 1, 1])),
    "group_dil_outpad": ((2, 4, 5, 4), (4, 3, 3, 2), dict(group=2, strides=[3, 2],
                                                          dilations=[2, 1],
                                                          output_padding=[1, 1])),
    "depthwise": ((1, 6, 7, 7), (6, 1, 4, 4), dict(group=6, strides=[2, 2], pads=[1, 1, 1, 1])),
    "output_shape": ((1, 2, 4, 4), (2, 3, 3, 3), dict(strides=[2, 2], output_shape=[9, 10])),
    "conv1d": ((2, 3, 7), (3, 2, 3), dict(strides=[2], pads=[1, 0])),
    "conv3d": ((1, 2, 3, 4, 3), (2, 2, 2, 3, 2), dict(strides=[2, 1, 2])),
}


@pytest.mark.parametrize("opset", [10, 11, 22])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("name", sorted(CONVT_CASES))
def test_conv_transpose_vs_ort(name, bias, opset):
    xs, ws, attrs = CONVT_CASES[name]
    x, w = _r(*xs), _r(*ws, seed=1)
    b = _r(ws[1] * attrs.get("group", 1), seed=2) if bias else None
    _compare("ConvTranspose", [("x", x, False), ("w", w, True), ("b", b, True)], opset,
             CONV_RTOL, CONV_ATOL, **attrs)


def test_conv_float16_and_float64_keep_dtype():
    from qrt.ops.conv import conv_nd
    x, w = _r(1, 4, 6, 6), _r(4, 2, 3, 3, seed=1)
    want = conv_nd(x, w, group=2)
    for dt in (np.float16, np.float64):
        got = conv_nd(x.astype(dt), w.astype(dt), group=2)
        assert got.dtype == dt
        np.testing.assert_allclose(got.astype(np.float32), want, rtol=1e-2, atol=2e-2)


# ------------------------------------------------------------------------------- Gemm, MatMul

@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("cshape", [None, (), (1,), (7,), (5, 1), (5, 7)])
def test_gemm_vs_ort(ta, tb, cshape):
    a = _r(*((6, 5) if ta else (5, 6)))
    b = _r(*((7, 6) if tb else (6, 7)), seed=1)
    c = None if cshape is None else np.asarray(_r(*cshape, seed=2) if cshape else np.float32(.5))
    _compare("Gemm", [("a", a, False), ("b", b, False), ("c", c, False)], 13, GEMM_RTOL,
             GEMM_ATOL, alpha=0.7, beta=1.3, transA=ta, transB=tb)


@pytest.mark.parametrize("sa,sb", [((3,), (3,)), ((3,), (2, 3, 4)), ((2, 3, 4), (4,)),
                                   ((2, 1, 3, 4), (5, 4, 2)), ((6, 4), (4, 3))])
def test_matmul_vs_ort(sa, sb):
    _compare("MatMul", [("a", _r(*sa), False), ("b", _r(*sb, seed=1), False)], 13, GEMM_RTOL,
             GEMM_ATOL)


# ------------------------------------------------------------------------------------ pooling

POOL_CASES = {
    "k3s2_pads": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "k3s2_ceil": dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    "k2s2_ceil_pads": dict(kernel_shape=[2, 3], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1),
    "same_upper": dict(kernel_shape=[3, 2], strides=[2, 3], auto_pad="SAME_UPPER"),
    "same_lower": dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER"),
    "valid": dict(kernel_shape=[2, 2], auto_pad="VALID"),
}


@pytest.mark.parametrize("opset", [10, 12, 22])
@pytest.mark.parametrize("name", sorted(POOL_CASES))
def test_maxpool_vs_ort(name, opset):
    x = _r(2, 3, 9, 8)
    _compare("MaxPool", [("x", x, False)], opset, POOL_RTOL, POOL_ATOL, n_out=2,
             **POOL_CASES[name])


@pytest.mark.parametrize("storage_order", [0, 1])
def test_maxpool_dilated_indices_vs_ort(storage_order):
    x = _r(1, 2, 10, 7)
    _compare("MaxPool", [("x", x, False)], 12, POOL_RTOL, POOL_ATOL, n_out=2,
             kernel_shape=[2, 3], dilations=[2, 2], strides=[1, 2], pads=[1, 1, 0, 1],
             storage_order=storage_order)


def test_maxpool_int8_vs_ort():
    x = np.random.default_rng(3).integers(-128, 128, (1, 2, 7, 7)).astype(np.int8)
    _compare("MaxPool", [("x", x, False)], 12, 0, 0, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
             strides=[2, 2])


@pytest.mark.parametrize("opset", [10, 11, 19, 22])
@pytest.mark.parametrize("cip", [0, 1])
@pytest.mark.parametrize("name", sorted(POOL_CASES))
def test_avgpool_vs_ort(name, cip, opset):
    x = _r(2, 3, 9, 8)
    _compare("AveragePool", [("x", x, False)], opset, POOL_RTOL, POOL_ATOL,
             count_include_pad=cip, **POOL_CASES[name])


@pytest.mark.parametrize("cip", [0, 1])
def test_avgpool_dilated_3d_vs_ort(cip):
    x = _r(1, 2, 7, 6, 8)
    _compare("AveragePool", [("x", x, False)], 19, POOL_RTOL, POOL_ATOL, count_include_pad=cip,
             kernel_shape=[2, 2, 3], dilations=[2, 1, 2], pads=[1, 0, 1, 1, 1, 0], ceil_mode=1,
             strides=[2, 2, 1])


def test_global_average_pool_vs_ort():
    _compare("GlobalAveragePool", [("x", _r(2, 5, 6, 7), False)], 22, POOL_RTOL, POOL_ATOL)


# ------------------------------------------------------------------------ BN, LayerNorm, Pad

@pytest.mark.parametrize("opset", [10, 14, 15])
def test_batchnorm_inference_vs_ort(opset):
    x = _r(2, 4, 5, 3)
    s, b, m = _r(4, seed=1), _r(4, seed=2), _r(4, seed=3)
    v = np.abs(_r(4, seed=4)) + 0.1
    _compare("BatchNormalization", [("x", x, False), ("s", s, True), ("b", b, True),
                                    ("m", m, True), ("v", v, True)], opset, NORM_RTOL,
             NORM_ATOL, epsilon=1e-3)


@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_layernorm_vs_ort(axis):
    x = _r(2, 3, 4, 5)
    shape = x.shape[axis:]
    _compare("LayerNormalization", [("x", x, False), ("s", _r(*shape, seed=1), True),
                                    ("b", _r(*shape, seed=2), True)], 17, NORM_RTOL, NORM_ATOL,
             n_out=3, axis=axis)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("opset", [11, 13, 18])
def test_pad_vs_ort(mode, opset):
    x = _r(2, 3, 5, 6)
    pads = np.array([0, 1, 2, -1, 0, 2, 1, 3], dtype=np.int64)
    cv = np.array(1.5, dtype=np.float32)
    _compare("Pad", [("x", x, False), ("p", pads, True), ("c", cv, True)], opset, 0, 0,
             mode=mode)


def test_pad_axes_wrap_vs_ort():
    x = _r(2, 3, 5, 6)
    pads = np.array([1, 2, 3, 1], dtype=np.int64)
    axes = np.array([-1, 1], dtype=np.int64)
    _compare("Pad", [("x", x, False), ("p", pads, True), ("c", None, True), ("a", axes, True)],
             19, 0, 0, mode="wrap")


def test_pad_2_attrs_vs_ort():
    x = _r(3, 4)
    _compare("Pad", [("x", x, False)], 10, 0, 0, pads=[1, 0, 2, 3], value=-2.0)


# ---------------------------------------------------------------------------------- Resize

def _resize(opset, x, scales=None, sizes=None, roi=None, **attrs):
    f = np.float32
    inputs = [("x", x, False)]
    if opset == 10:
        inputs.append(("s", np.asarray(scales, f), True))
    else:
        inputs += [("r", None if roi is None else np.asarray(roi, f), True),
                   ("s", None if scales is None else np.asarray(scales, f), True),
                   ("z", None if sizes is None else np.asarray(sizes, np.int64), True)]
        if opset == 11 and roi is None:
            inputs[1] = ("r", np.zeros(0, f), True)
        if opset == 11 and scales is None:
            inputs[2] = ("s", np.zeros(0, f), True)
    return _compare("Resize", inputs, opset, RESIZE_RTOL, RESIZE_ATOL, **attrs)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [[1, 1, 2, 3], [1, 1, 0.5, 0.6], [1, 1, 1.5, 0.75]])
def test_resize_10_vs_ort(mode, scales):
    _resize(10, _r(1, 2, 6, 5), scales=scales, mode=mode)


@pytest.mark.parametrize("opset", [11, 13, 19])
@pytest.mark.parametrize("coord", ["half_pixel", "pytorch_half_pixel", "align_corners",
                                   "asymmetric"])
@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor",
                                          "ceil"])
def test_resize_nearest_vs_ort(opset, coord, nearest_mode):
    # Scales are binary fractions: onnxruntime computes coordinates in float32 and qrt (like the
    # ONNX reference) in float64, so a scale like 1.6 can put a float32 tie on either side.
    # align_corners with scales is not compared: onnxruntime divides by the integer output
    # length, the ONNX reference (and its conformance data, and qrt) by scale * input length.
    x = _r(1, 2, 7, 6)
    _resize(opset, x, sizes=[1, 2, 11, 4], mode="nearest", coordinate_transformation_mode=coord,
            nearest_mode=nearest_mode)
    if coord == "align_corners":
        return
    _resize(opset, x, scales=[1, 1, 1.5, 0.5], mode="nearest",
            coordinate_transformation_mode=coord, nearest_mode=nearest_mode)


@pytest.mark.parametrize("opset", [11, 13, 19])
@pytest.mark.parametrize("coord", ["half_pixel", "pytorch_half_pixel", "align_corners",
                                   "asymmetric"])
def test_resize_linear_vs_ort(opset, coord):
    x = _r(2, 2, 7, 6)
    _resize(opset, x, sizes=[2, 2, 11, 4], mode="linear", coordinate_transformation_mode=coord)
    x3 = _r(1, 2, 4, 5, 3)
    _resize(opset, x3, sizes=[1, 2, 6, 3, 7], mode="linear",
            coordinate_transformation_mode=coord)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_pytorch_half_pixel_to_one_vs_ort(mode):
    _resize(13, _r(1, 1, 5, 6), sizes=[1, 1, 1, 4], mode=mode,
            coordinate_transformation_mode="pytorch_half_pixel")


def test_resize_tf_half_pixel_for_nn_vs_ort():
    _resize(11, _r(1, 1, 5, 6), sizes=[1, 1, 8, 4], mode="nearest",
            coordinate_transformation_mode="tf_half_pixel_for_nn")


def test_resize_tf_crop_and_resize_vs_ort():
    x = _r(1, 1, 6, 7)
    _resize(13, x, sizes=[1, 1, 5, 9], roi=[0, 0, 0.2, -0.1, 1, 1, 0.9, 1.2], mode="linear",
            coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=7.0)


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
def test_resize_keep_aspect_axes_vs_ort(policy):
    x = _r(1, 3, 6, 8)
    _resize(19, x, sizes=[9, 10], axes=[2, 3], mode="linear", keep_aspect_ratio_policy=policy)


def test_resize_uint8_nearest_vs_ort():
    x = np.random.default_rng(0).integers(0, 256, (1, 3, 5, 4)).astype(np.uint8)
    _resize(19, x, scales=[1, 1, 2.5, 1.5], mode="nearest")


def test_resize_cubic_vs_ort():
    x = _r(1, 2, 6, 7)
    _resize(19, x, scales=[1, 1, 1.6, 0.8], mode="cubic", exclude_outside=1,
            cubic_coeff_a=-0.5)
