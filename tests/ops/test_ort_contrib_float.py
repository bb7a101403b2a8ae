"""onnxruntime's float contrib ops (qrt/ops/ort_contrib.py) against onnxruntime's CPU kernels.

FLOAT_TOL: both compute in float32 with their own erf/tanh/exp and reduction orders; a few ulp of
the values involved."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import qrt

ort = pytest.importorskip("onnxruntime")

MS = "com.microsoft"
FLOAT_TOL = 2e-5


def _model(node, inputs, n_out=1, inits=None, opset=13):
    ins = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inputs.items()]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in node.output[:n_out]]
    g = helper.make_graph([node], "g", ins, outs,
                          [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)])
    m.ir_version = 8
    return m.SerializeToString()


def _check(node, feeds, inits=None, n_out=1, opset=13):
    m = _model(node, feeds, n_out, inits, opset)
    want = ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, feeds)
    for optimize in (True, False):
        got = qrt.InferenceSession(m, threads=1, optimize=optimize).run(None, feeds)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=FLOAT_TOL, atol=FLOAT_TOL * max(1.0, np.abs(w).max()))


rng = np.random.default_rng(0)
X = rng.normal(0, 2, (2, 5, 16)).astype(np.float32)
BIAS = rng.normal(0, 1, 16).astype(np.float32)


@pytest.mark.parametrize("op,extra,attrs", [
    ("Gelu", [], {}), ("FastGelu", [], {}), ("FastGelu", ["bias"], {}), ("BiasGelu", ["bias"], {}),
    ("QuickGelu", [], {}), ("QuickGelu", [], {"alpha": 1.2}),
])
def test_gelu_family(op, extra, attrs):
    node = helper.make_node(op, ["x"] + extra, ["y"], domain=MS, **attrs)
    _check(node, {"x": X}, {"bias": BIAS} if extra else None)


@pytest.mark.parametrize("trans_a,trans_b,alpha", [(0, 0, 1.0), (1, 0, 0.5), (0, 1, 2.0), (1, 1, 1.0)])
def test_fused_matmul(trans_a, trans_b, alpha):
    a = rng.normal(size=(3, 4, 6) if not trans_a else (3, 6, 4)).astype(np.float32)
    b = rng.normal(size=(3, 6, 5) if not trans_b else (3, 5, 6)).astype(np.float32)
    node = helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain=MS, alpha=alpha,
                            transA=trans_a, transB=trans_b)
    _check(node, {"a": a, "b": b})


@pytest.mark.parametrize("with_beta,with_bias,n_out", [(True, True, 1), (False, False, 1),
                                                      (True, True, 4), (True, False, 4)])
def test_skip_layer_normalization(with_beta, with_bias, n_out):
    skip = rng.normal(0, 1, X.shape).astype(np.float32)
    inits = {"gamma": rng.normal(1, 0.1, 16).astype(np.float32)}
    ins = ["x", "skip", "gamma"]
    if with_beta or with_bias:
        ins.append("beta" if with_beta else "")
        if with_beta:
            inits["beta"] = rng.normal(0, 0.1, 16).astype(np.float32)
    if with_bias:
        ins.append("bias")
        inits["bias"] = BIAS
    outs = ["y", "mean", "inv_std", "sum"][:n_out]
    node = helper.make_node("SkipLayerNormalization", ins, outs, domain=MS, epsilon=1e-5)
    m = _model(node, {"x": X, "skip": skip}, n_out, inits)
    feeds = {"x": X, "skip": skip}
    want = ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = qrt.InferenceSession(m, threads=1).run(None, feeds)
    np.testing.assert_allclose(got[0], want[0], rtol=FLOAT_TOL, atol=FLOAT_TOL * 10)
    if n_out == 4:  # onnxruntime's mean/inv_std outputs are optional stubs; the sum is defined
        np.testing.assert_allclose(got[3], want[3], rtol=FLOAT_TOL, atol=FLOAT_TOL)


def test_skip_simplified_layer_normalization():
    skip = rng.normal(0, 1, X.shape).astype(np.float32)
    node = helper.make_node("SkipSimplifiedLayerNormalization", ["x", "skip", "gamma"], ["y"],
                            domain=MS, epsilon=1e-6)
    _check(node, {"x": X, "skip": skip}, {"gamma": rng.normal(1, 0.1, 16).astype(np.float32)})


@pytest.mark.parametrize("op", ["LayerNormalization", "SimplifiedLayerNormalization"])
def test_default_domain_norms_below_opset_17(op):
    inits = {"gamma": rng.normal(1, 0.1, 16).astype(np.float32)}
    ins = ["x", "gamma"]
    if op == "LayerNormalization":
        inits["beta"] = rng.normal(0, 0.1, 16).astype(np.float32)
        ins.append("beta")
    node = helper.make_node(op, ins, ["y"], axis=-1, epsilon=1e-5)
    _check(node, {"x": X}, inits, opset=13)


def test_bias_of_wrong_length_named():
    node = helper.make_node("FastGelu", ["x", "bias"], ["y"], domain=MS, name="fg")
    m = _model(node, {"x": X}, 1, {"bias": np.ones(7, np.float32)})
    with pytest.raises(qrt.errors.QrtError, match="fg.*bias"):
        qrt.InferenceSession(m, threads=1).run(None, {"x": X})


def test_simplified_layer_normalizations_in_float16():
    """float16 statistics are taken in float32, as onnxruntime does."""
    x16 = X.astype(np.float16)
    skip = rng.normal(0, 1, X.shape).astype(np.float16)
    gamma = rng.normal(1, 0.1, 16).astype(np.float16)
    for node, feeds in (
            (helper.make_node("SkipSimplifiedLayerNormalization", ["x", "skip", "gamma"], ["y"],
                              domain=MS, epsilon=1e-6), {"x": x16, "skip": skip}),
            (helper.make_node("SimplifiedLayerNormalization", ["x", "gamma"], ["y"], axis=-1,
                              epsilon=1e-5), {"x": x16})):
        ins = [helper.make_tensor_value_info(k, TensorProto.FLOAT16, list(v.shape))
               for k, v in feeds.items()]
        g = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)],
                              [numpy_helper.from_array(gamma, "gamma")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(MS, 1)])
        m.ir_version = 8
        want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        got = qrt.InferenceSession(m.SerializeToString(), threads=1).run(None, feeds)[0]
        assert got.dtype == np.float16
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3)
