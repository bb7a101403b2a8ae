"""Invalid quantization parameters and conv weights are refused with or without the passes.

The passes fold Q/DQ and QOperator ops into fused integer ops that read parameters as numbers; the
unoptimised graph raises in the reference ops. Both must refuse the same models (pass
check_params at load, the fused conv per input shape when the shape is only known at run), naming
the node, and never return numbers."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper

import qrt
from qrt.errors import QrtError
from tests.passes._common import model

N = helper.make_node


def _refused(m, feeds, match):
    """Both sessions raise a qrt error matching `match` at load or at the first run."""
    for optimize in (True, False):
        with pytest.raises(QrtError, match=match):
            qrt.InferenceSession(m, threads=1, optimize=optimize).run(None, feeds)


def _qdq_conv(xshape=(1, 3, 8, 8), wshape=(4, 3, 3, 3), attrs=None, sx=0.05, zx=np.uint8(128),
              ws=None, wz=None, symbolic=False, dq_zx=None):
    rng = np.random.default_rng(0)
    ws = np.full(wshape[0], 0.01, np.float32) if ws is None else ws
    wz = np.zeros(np.shape(ws), np.int8) if wz is None else wz
    inits = [("sx", np.float32(sx)), ("zx", zx), ("dzx", zx if dq_zx is None else dq_zx), ("w", rng.integers(-127, 128, wshape).astype(np.int8)),
             ("ws", ws), ("wz", wz), ("sy", np.float32(0.1)), ("zy", np.uint8(128))]
    nodes = [N("QuantizeLinear", ["x", "sx", "zx"], ["xq"], name="qx"),
             N("DequantizeLinear", ["xq", "sx", "dzx"], ["xd"], name="dqx"),
             N("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="dqw", axis=0),
             N("Conv", ["xd", "wd"], ["c"], name="conv", **(attrs or {})),
             N("QuantizeLinear", ["c", "sy", "zy"], ["y"], name="qy")]
    shape = ["n", "c", "h", "w"] if symbolic else list(xshape)
    m = model(nodes, [("x", T.FLOAT, shape)], [("y", T.UINT8, None)], inits)
    return m, {"x": np.random.default_rng(1).normal(size=xshape).astype(np.float32)}


@pytest.mark.parametrize("symbolic", [False, True], ids=["shapes_known", "shapes_symbolic"])
@pytest.mark.parametrize("wshape,attrs,match", [
    ((4, 5, 3, 3), {}, "3 channels"),
    ((4, 1, 3, 3), {"group": 3}, "group=3"),
    ((4, 3, 3, 3), {"kernel_shape": [2, 2]}, "kernel_shape"),
    ((4, 3, 9, 9), {}, "(does not fit|empty)"),
    ((4, 3, 3, 3), {"dilations": [0, 1]}, "dilations"),
    ((4, 3, 3, 3), {"pads": [-1, 0, 0, 0]}, "pads"),
], ids=["channels", "group", "kernel_shape", "kernel_too_big", "dilation_0", "negative_pad"])
def test_conv_weight_that_does_not_fit(wshape, attrs, match, symbolic):
    m, feeds = _qdq_conv(wshape=wshape, attrs=attrs, symbolic=symbolic)
    _refused(m, feeds, match)


@pytest.mark.parametrize("what,kw,match", [
    ("weight scale NaN", {"ws": np.full(4, np.nan, np.float32)}, "NaN"),
    ("weight scale inf", {"ws": np.full(4, np.inf, np.float32)}, "infinite"),
    ("activation scale 0", {"sx": 0.0}, "zero"),
    ("activation scale negative", {"sx": -0.05}, "negative"),
    ("activation zero point of another type", {"dq_zx": np.int8(0)}, "same type"),
    ("weight zero point int32", {"wz": np.full(4, 100000, np.int32)}, "same type"),
    ("per-channel scale of the wrong length", {"ws": np.full(3, 0.01, np.float32),
                                               "wz": np.zeros(3, np.int8)}, "3 elements"),
])
def test_invalid_qdq_params(what, kw, match):
    m, feeds = _qdq_conv(**kw)
    _refused(m, feeds, match)


def _qlinear_conv(**over):
    rng = np.random.default_rng(2)
    p = {"xs": np.float32(0.05), "xz": np.uint8(128), "w": rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8),
         "wsc": np.float32(0.01), "wz": np.int8(0), "ys": np.float32(0.1), "yz": np.uint8(128),
         "b": np.zeros(4, np.int32)}
    p.update(over)
    node = N("QLinearConv", ["x", "xs", "xz", "w", "wsc", "wz", "ys", "yz", "b"], ["y"], name="qlc")
    m = model([node], [("x", T.UINT8, [1, 3, 6, 6])], [("y", T.UINT8, None)], list(p.items()))
    return m, {"x": rng.integers(0, 256, (1, 3, 6, 6)).astype(np.uint8)}


@pytest.mark.parametrize("over,match", [
    ({"xs": np.float32(0)}, "x_scale"), ({"ys": np.float32(-0.1)}, "y_scale"),
    ({"wsc": np.float32(np.nan)}, "w_scale"), ({"xz": np.int8(0)}, "x_zero_point"),
    ({"yz": np.int32(0)}, "y_zero_point"), ({"yz": np.float32(0)}, "y_zero_point"),
    ({"b": np.zeros(4, np.float32)}, "bias"),
    ({"w": np.zeros((4, 5, 3, 3), np.int8)}, "3 channels"),
    ({"wsc": np.full(3, 0.01, np.float32)}, "w_scale"),
], ids=["x_scale_0", "y_scale_negative", "w_scale_nan", "x_zp_type", "y_zp_int32", "y_zp_float",
        "bias_float", "w_channels", "w_scale_length"])
def test_invalid_qlinear_conv(over, match):
    m, feeds = _qlinear_conv(**over)
    _refused(m, feeds, match)


@pytest.mark.parametrize("over,match", [
    ({"as": np.float32(0)}, "a_scale"), ({"ys": np.float32(np.nan)}, "y_scale"),
    ({"az": np.int8(0)}, "a_zero_point"),
])
def test_invalid_qlinear_matmul(over, match):
    rng = np.random.default_rng(3)
    p = {"as": np.float32(0.05), "az": np.uint8(128), "b": rng.integers(-127, 128, (8, 5)).astype(np.int8),
         "bs": np.float32(0.01), "bz": np.int8(0), "ys": np.float32(0.1), "yz": np.uint8(128)}
    p.update(over)
    node = N("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"], name="qlm")
    m = model([node], [("a", T.UINT8, [2, 8])], [("y", T.UINT8, None)], list(p.items()))
    _refused(m, {"a": rng.integers(0, 256, (2, 8)).astype(np.uint8)}, match)


@pytest.mark.parametrize("op", ["MatMulInteger", "ConvInteger"])
def test_integer_op_zero_point_of_another_type(op):
    rng = np.random.default_rng(4)
    if op == "MatMulInteger":
        w, xshape = rng.integers(-127, 128, (8, 5)).astype(np.int8), [2, 8]
    else:
        w, xshape = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8), [1, 3, 5, 5]
    node = N(op, ["x", "w", "xz", "wz"], ["y"], name="int_op")
    m = model([node], [("x", T.UINT8, xshape)], [("y", T.INT32, None)],
              [("w", w), ("xz", np.int8(3)), ("wz", np.int8(0))])
    _refused(m, {"x": rng.integers(0, 256, xshape).astype(np.uint8)}, "zero_point")


def test_valid_model_still_fuses():
    """The checks refuse nothing valid: the reference model of this file runs int8."""
    m, feeds = _qdq_conv()
    sess = qrt.InferenceSession(m, threads=1)
    y = sess.run(None, feeds)[0]
    ref = qrt.InferenceSession(m, threads=1, optimize=False).run(None, feeds)[0]
    assert np.abs(y.astype(int) - ref.astype(int)).max() <= 1
    assert {e["name"]: e for e in sess.lowering_report()}["conv"]["precision"] == "int8"


def test_a_pass_failing_on_a_graph_is_a_load_error_naming_it(monkeypatch):
    """A pass that trips over a malformed graph (any exception of its own) is reported as a
    ModelLoadError naming the pass and pointing at optimize=False, not as a raw traceback."""
    import qrt.passes.fold_batchnorm as fb

    def broken(graph, opts=None):
        raise IndexError("tuple index out of range")

    monkeypatch.setattr(fb, "run", broken)
    m, feeds = _qdq_conv()
    with pytest.raises(qrt.errors.ModelLoadError, match="fold_batchnorm.*IndexError.*optimize=False"):
        qrt.InferenceSession(m, threads=1)
    y = qrt.InferenceSession(m, threads=1, optimize=False).run(None, feeds)[0]
    assert y.shape == (1, 4, 6, 6)


@pytest.mark.parametrize("stale", [[1, 3, 2, 2], [0, 3, 0, 0]])
def test_stale_value_info_does_not_refuse_a_valid_model(stale):
    """Load-time checks trust only constants and graph inputs: a value_info left wrong by graph
    surgery (or 0 for unknown) must not make a valid model fail to load."""
    rng = np.random.default_rng(8)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    m = model([N("Relu", ["x"], ["r"]), N("Conv", ["r", "W"], ["y"])],
              [("x", T.FLOAT, ["N", 3, "H", "W"])], [("y", T.FLOAT, None)], [("W", w)])
    m.graph.value_info.append(helper.make_tensor_value_info("r", T.FLOAT, stale))
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    got = qrt.InferenceSession(m, threads=1).run(None, {"x": x})[0]
    want = qrt.InferenceSession(m, threads=1, optimize=False).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)
