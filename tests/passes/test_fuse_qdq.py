"""Pass fuse_qdq (with fold_weight_qdq): DQ -> Conv/ConvTranspose/MatMul/Gemm (-> Relu/Clip) (-> Q)."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper

from tests.passes._common import assert_within_one_step, model, precision, run_three

ET = {np.uint8: T.UINT8, np.int8: T.INT8}


def _qdq_model(kind, xdt, per_channel, tail, out_q, rng):
    """x (float) -> Q -> DQ -> kind(DQ(w int8), bias) -> tail -> [Q -> int output | float output]."""
    zx = 128 if xdt == np.uint8 else 3
    sx = np.float32(0.05)
    N = helper.make_node
    attrs = {}
    if kind == "Conv":
        xshape, w = [1, 4, 7, 7], rng.integers(-127, 128, (6, 4, 3, 3))
        attrs = dict(pads=[1, 1, 1, 1], strides=[2, 1])
        n_out = 6
    elif kind == "DWConv":
        xshape, w = [1, 6, 7, 7], rng.integers(-127, 128, (6, 1, 3, 3))
        attrs = dict(pads=[1, 1, 1, 1], group=6)
        n_out = 6
    elif kind == "ConvTranspose":
        xshape, w = [1, 4, 5, 5], rng.integers(-127, 128, (4, 3, 3, 3))
        attrs = dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])
        n_out = 3
    elif kind == "MatMul":
        xshape, w = [2, 5, 24], rng.integers(-127, 128, (24, 10))
        n_out = 10
    else:  # Gemm, transB
        xshape, w = [5, 24], rng.integers(-127, 128, (10, 24))
        attrs = dict(transB=1)
        n_out = 10
    op = "Conv" if kind == "DWConv" else kind
    ch_axis = 1 if kind in ("MatMul", "ConvTranspose") else 0
    ws = (rng.uniform(0.002, 0.02, n_out) if per_channel else np.array(0.01)).astype(np.float32)
    inits = [("sx", sx), ("zx", np.array(zx, xdt)), ("w", w.astype(np.int8)), ("ws", ws),
             ("wz", np.zeros(ws.shape, np.int8)), ("sy", np.float32(0.08)),
             ("zy", np.array(100 if xdt == np.uint8 else -5, xdt))]
    nodes = [N("QuantizeLinear", ["x", "sx", "zx"], ["xq"], name="qx"),
             N("DequantizeLinear", ["xq", "sx", "zx"], ["xd"], name="dqx"),
             N("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="dqw", axis=ch_axis)]
    ins = ["xd", "wd"]
    if kind != "ConvTranspose":
        inits.append(("b", rng.normal(0, 0.3, n_out).astype(np.float32)))
        ins.append("b")
    nodes.append(N(op, ins, ["y0"] if kind != "MatMul" else ["y0m"], name="lin", **attrs))
    if kind == "MatMul":  # MatMul has no bias input: keep the graph as ORT writes it
        nodes[-1] = N("MatMul", ["xd", "wd"], ["y0"], name="lin")
    last = "y0"
    if tail == "relu":
        nodes.append(N("Relu", [last], ["y1"], name="act"))
        last = "y1"
    elif tail == "clip":
        inits += [("cmin", np.float32(-0.5)), ("cmax", np.float32(1.5))]
        nodes.append(N("Clip", [last, "cmin", "cmax"], ["y1"], name="act"))
        last = "y1"
    if out_q:
        nodes.append(N("QuantizeLinear", [last, "sy", "zy"], ["y"], name="qy"))
        out_t = ET[xdt]
    else:
        nodes.append(N("Identity", [last], ["y"], name="out"))
        out_t = T.FLOAT
    m = model(nodes, [("x", T.FLOAT, xshape)], [("y", out_t, None)], inits)
    return m, {"x": rng.normal(0, 2, xshape).astype(np.float32)}


@pytest.mark.parametrize("kind", ["Conv", "DWConv", "ConvTranspose", "MatMul", "Gemm"])
@pytest.mark.parametrize("xdt", [np.uint8, np.int8], ids=["u8", "s8"])
@pytest.mark.parametrize("per_channel", [True, False], ids=["pc", "pt"])
@pytest.mark.parametrize("tail,out_q", [("none", True), ("relu", True), ("clip", True),
                                        ("none", False), ("relu", False)])
def test_fused_matches_unfused_and_ort(kind, xdt, per_channel, tail, out_q):
    # a stable seed per case: hash() of strings changes from process to process, which made
    # the drawn data (and so how many elements land off by one) differ run to run
    rng = np.random.default_rng(zlib.crc32(repr((kind, xdt.__name__, tail, out_q,
                                                 per_channel)).encode()))
    m, feeds = _qdq_model(kind, xdt, per_channel, tail, out_q, rng)
    opt, noopt, ref, sess = run_three(m, feeds)
    prec, kernel, reason = precision(sess, "lin")
    assert prec == "int8", reason
    assert kernel.startswith("qlinear_")
    assert ("per_channel" in kernel) == per_channel
    if out_q:
        assert_within_one_step(opt[0], noopt[0], what=f"{kind} vs unfused")
        if ref is not None:
            assert_within_one_step(opt[0], ref[0], what=f"{kind} vs onnxruntime")
    else:
        assert opt[0].dtype == np.float32
        step = 0.05 * 0.02 * 4  # a few accumulator units of sx * max(sw)
        np.testing.assert_allclose(opt[0], noopt[0], rtol=1e-5, atol=step)
        if ref is not None:
            np.testing.assert_allclose(opt[0], ref[0], rtol=1e-4, atol=step)
    # the fused node replaced the whole chain
    names = {e["name"]: e for e in sess.lowering_report()}
    if tail != "none":
        assert names["act"]["precision"] == "int8"


def test_float_weight_stays_float_with_reason():
    N = helper.make_node
    rng = np.random.default_rng(0)
    m = model([N("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
               N("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
               N("MatMul", ["xd", "w"], ["y"], name="mm"),
               N("MatMul", ["xd", "x2"], ["y2"], name="mm_act")],
              [("x", T.FLOAT, [3, 4]), ("x2", T.FLOAT, [4, 2])], [("y", T.FLOAT, None), ("y2", T.FLOAT, None)],
              [("sx", np.float32(0.1)), ("zx", np.uint8(128)), ("w", rng.normal(size=(4, 2)).astype(np.float32))])
    feeds = {"x": rng.normal(size=(3, 4)).astype(np.float32), "x2": rng.normal(size=(4, 2)).astype(np.float32)}
    opt, noopt, ref, sess = run_three(m, feeds)
    assert precision(sess, "mm")[0] == "float"
    assert "weight is float" in precision(sess, "mm")[2]
    assert "not quantized" in precision(sess, "mm_act")[2]
    np.testing.assert_allclose(opt[0], noopt[0], rtol=1e-6)


def test_activation_matmul_both_quantized():
    N = helper.make_node
    rng = np.random.default_rng(1)
    m = model([N("QuantizeLinear", ["a", "sa", "za"], ["aq"]), N("DequantizeLinear", ["aq", "sa", "za"], ["ad"]),
               N("QuantizeLinear", ["b", "sb", "zb"], ["bq"]), N("DequantizeLinear", ["bq", "sb", "zb"], ["bd"]),
               N("MatMul", ["ad", "bd"], ["y0"], name="mm"), N("QuantizeLinear", ["y0", "sy", "zy"], ["y"])],
              [("a", T.FLOAT, [2, 3, 5, 8]), ("b", T.FLOAT, [2, 3, 8, 4])], [("y", T.UINT8, None)],
              [("sa", np.float32(0.03)), ("za", np.uint8(120)), ("sb", np.float32(0.02)), ("zb", np.uint8(130)),
               ("sy", np.float32(0.05)), ("zy", np.uint8(128))])
    feeds = {"a": rng.normal(size=(2, 3, 5, 8)).astype(np.float32),
             "b": rng.normal(size=(2, 3, 8, 4)).astype(np.float32)}
    opt, noopt, ref, sess = run_three(m, feeds)
    assert precision(sess, "mm")[0] == "int8"
    assert_within_one_step(opt[0], noopt[0], what="act matmul vs unfused")
    assert_within_one_step(opt[0], ref[0], what="act matmul vs onnxruntime")


def test_blocked_int4_weights_dequantized_offline_with_reason():
    N = helper.make_node
    rng = np.random.default_rng(2)
    import ml_dtypes
    w = rng.integers(-8, 8, (32, 6)).astype(ml_dtypes.int4)
    ws = rng.uniform(0.01, 0.05, (2, 6)).astype(np.float32)  # blocks of 16 along K (axis 0)
    m = model([N("QuantizeLinear", ["x", "sx", "zx"], ["xq"]), N("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
               N("DequantizeLinear", ["w", "ws"], ["wd"], axis=0, block_size=16),
               N("MatMul", ["xd", "wd"], ["y"], name="mm")],
              [("x", T.FLOAT, [3, 32])], [("y", T.FLOAT, None)],
              [("sx", np.float32(0.1)), ("zx", np.uint8(128)), ("w", w), ("ws", ws)])
    feeds = {"x": rng.normal(size=(3, 32)).astype(np.float32)}
    opt, noopt, ref, sess = run_three(m, feeds)
    p, k, reason = precision(sess, "mm")
    assert p == "float" and "per-group" in reason
    np.testing.assert_allclose(opt[0], noopt[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("alpha,beta,int_bias", [(0.5, 2.0, False), (0.25, 0.25, True),
                                                 (0.5, 1.0, True), (1.0, 3.0, True)])
def test_gemm_alpha_beta_scale_product_and_bias(alpha, beta, int_bias):
    """Y = alpha*A.B + beta*C with the bias a float constant or DQ(int32 at sx*sw), as QGemm's
    expansion writes it (beta = alpha); alpha is in the accumulator scale, so the bias is not
    divided by it again."""
    N = helper.make_node
    rng = np.random.default_rng(7)
    sx, sw = np.float32(0.05), rng.uniform(0.002, 0.02, 10).astype(np.float32)
    w = rng.integers(-127, 128, (10, 24)).astype(np.int8)
    inits = [("sx", sx), ("zx", np.uint8(128)), ("w", w), ("ws", sw), ("wz", np.zeros(10, np.int8)),
             ("sy", np.float32(0.08)), ("zy", np.uint8(100))]
    nodes = [N("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             N("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             N("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0)]
    if int_bias:
        inits += [("bq", rng.integers(-2000, 2000, 10).astype(np.int32)),
                  ("bs", (sx * sw).astype(np.float32)), ("bz", np.zeros(10, np.int32))]
        nodes.append(N("DequantizeLinear", ["bq", "bs", "bz"], ["b"], axis=0))
    else:
        inits.append(("b", rng.normal(0, 0.3, 10).astype(np.float32)))
    nodes += [N("Gemm", ["xd", "wd", "b"], ["y0"], name="lin", transB=1, alpha=alpha, beta=beta),
              N("QuantizeLinear", ["y0", "sy", "zy"], ["y"])]
    m = model(nodes, [("x", T.FLOAT, [5, 24])], [("y", T.UINT8, None)], inits)
    feeds = {"x": rng.normal(0, 2, (5, 24)).astype(np.float32)}
    opt, noopt, ref, sess = run_three(m, feeds)
    assert precision(sess, "lin")[0] == "int8"
    assert_within_one_step(opt[0], noopt[0], what="alpha/beta Gemm vs unfused")
