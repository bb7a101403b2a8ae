"""Small float models (built with onnx.helper) that the pass tests quantize with onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper, numpy_helper


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv+BN+Relu, depthwise Conv+Relu, 1x1 Conv, residual Add, MaxPool, Flatten, Gemm."""
    rng = np.random.default_rng(seed)
    f = np.float32
    inits = [
        _init("w1", rng.normal(0, 0.3, (8, 3, 3, 3)).astype(f)), _init("b1", rng.normal(0, .1, 8).astype(f)),
        _init("bn_s", rng.uniform(0.5, 1.5, 8).astype(f)), _init("bn_b", rng.normal(0, .1, 8).astype(f)),
        _init("bn_m", rng.normal(0, .1, 8).astype(f)), _init("bn_v", rng.uniform(0.5, 1.5, 8).astype(f)),
        _init("wd", rng.normal(0, 0.3, (8, 1, 3, 3)).astype(f)), _init("bd", rng.normal(0, .1, 8).astype(f)),
        _init("w2", rng.normal(0, 0.3, (8, 8, 1, 1)).astype(f)), _init("b2", rng.normal(0, .1, 8).astype(f)),
        _init("wg", rng.normal(0, 0.05, (10, 8 * 8 * 8)).astype(f)), _init("bg", rng.normal(0, .1, 10).astype(f)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "wd", "bd"], ["cd"], name="dwconv", pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["cd"], ["rd"], name="relu_dw"),
        helper.make_node("Conv", ["rd", "w2", "b2"], ["c2"], name="conv_pw"),
        helper.make_node("Add", ["c2", "r1"], ["res"], name="residual"),
        helper.make_node("MaxPool", ["res"], ["mp"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["mp"], ["fl"], name="flatten"),
        helper.make_node("Gemm", ["fl", "wg", "bg"], ["y"], name="fc", transB=1),
    ]
    g = helper.make_graph(nodes, "small_cnn", [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", T.FLOAT, [1, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def small_transformer(seed: int = 0, s: int = 8, d: int = 16, heads: int = 2) -> onnx.ModelProto:
    """Pre-LN attention block (MatMul on [1, S, D], Reshape/Transpose to heads, Softmax) + MLP."""
    rng = np.random.default_rng(seed)
    f = np.float32
    dh = d // heads
    inits = [_init("ln_g", rng.uniform(0.8, 1.2, d).astype(f)), _init("ln_b", rng.normal(0, .1, d).astype(f)),
             _init("ln2_g", rng.uniform(0.8, 1.2, d).astype(f)), _init("ln2_b", rng.normal(0, .1, d).astype(f)),
             _init("shape_h", np.array([1, s, heads, dh], np.int64)),
             _init("shape_m", np.array([1, s, d], np.int64)),
             _init("inv_sqrt", np.array(1.0 / np.sqrt(dh), f))]
    for nm, shp in [("wq", (d, d)), ("wk", (d, d)), ("wv", (d, d)), ("wo", (d, d)), ("w1", (d, 2 * d)),
                    ("w2", (2 * d, d))]:
        inits.append(_init(nm, rng.normal(0, 1 / np.sqrt(shp[0]), shp).astype(f)))
        inits.append(_init("b" + nm[1:], rng.normal(0, .05, shp[1]).astype(f)))
    N = helper.make_node
    nodes = [N("LayerNormalization", ["x", "ln_g", "ln_b"], ["h"], name="ln1", axis=-1)]
    for p in "qkv":
        nodes += [N("MatMul", ["h", f"w{p}"], [f"{p}0"], name=f"mm_{p}"),
                  N("Add", [f"{p}0", f"b{p}"], [f"{p}1"], name=f"add_{p}"),
                  N("Reshape", [f"{p}1", "shape_h"], [f"{p}2"], name=f"reshape_{p}"),
                  N("Transpose", [f"{p}2"], [f"{p}3"], name=f"tr_{p}",
                    perm=[0, 2, 3, 1] if p == "k" else [0, 2, 1, 3])]
    nodes += [N("MatMul", ["q3", "k3"], ["sc0"], name="mm_qk"),
              N("Mul", ["sc0", "inv_sqrt"], ["sc1"], name="scale"),
              N("Softmax", ["sc1"], ["pr"], name="softmax", axis=-1),
              N("MatMul", ["pr", "v3"], ["ctx0"], name="mm_pv"),
              N("Transpose", ["ctx0"], ["ctx1"], name="tr_ctx", perm=[0, 2, 1, 3]),
              N("Reshape", ["ctx1", "shape_m"], ["ctx2"], name="reshape_ctx"),
              N("MatMul", ["ctx2", "wo"], ["o0"], name="mm_o"),
              N("Add", ["o0", "bo"], ["o1"], name="add_o"),
              N("Add", ["o1", "x"], ["r1"], name="res1"),
              N("LayerNormalization", ["r1", "ln2_g", "ln2_b"], ["h2"], name="ln2", axis=-1),
              N("MatMul", ["h2", "w1"], ["f0"], name="mm_f1"),
              N("Add", ["f0", "b1"], ["f1"], name="add_f1"),
              N("Relu", ["f1"], ["f2"], name="relu_f"),
              N("MatMul", ["f2", "w2"], ["f3"], name="mm_f2"),
              N("Add", ["f3", "b2"], ["f4"], name="add_f2"),
              N("Add", ["f4", "r1"], ["y"], name="res2")]
    g = helper.make_graph(nodes, "small_transformer", [helper.make_tensor_value_info("x", T.FLOAT, [1, s, d])],
                          [helper.make_tensor_value_info("y", T.FLOAT, [1, s, d])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


class Reader:
    """onnxruntime CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds):
        self._it = iter(list(feeds))

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - newer ORT versions may call it
        pass
