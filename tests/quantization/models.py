"""Small float models built with onnx.helper for the quantization tests (no files needed)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, np.float32), name)


def cnn(seed: int = 0, outlier: float | None = None, opset: int = 13) -> onnx.ModelProto:
    """x[N,3,12,12] -> conv1(+BN)->relu -> maxpool -> conv2->relu ->+ conv3 (residual Add) -> relu
    -> concat(with conv4 branch) -> flatten -> gemm(10). `outlier` plants a huge weight in conv2
    (per-tensor quantization then wipes out its other weights)."""
    rng = np.random.default_rng(seed)
    g = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    w2 = g(8, 8, 3, 3) * 0.2
    if outlier is not None:
        w2[0, 0, 0, 0] = outlier
    inits = [
        _init("w1", g(8, 3, 3, 3) * 0.3), _init("b1", g(8) * 0.1),
        _init("bn_s", 1 + 0.1 * g(8)), _init("bn_b", 0.1 * g(8)), _init("bn_m", 0.1 * g(8)),
        _init("bn_v", 1 + 0.1 * np.abs(g(8))),
        _init("w2", w2), _init("b2", g(8) * 0.1),
        _init("w3", g(8, 8, 3, 3) * 0.2), _init("b3", g(8) * 0.1),
        _init("w4", g(4, 8, 1, 1) * 0.3), _init("b4", g(4) * 0.1),
        _init("wf", g(10, 12 * 6 * 6) * 0.05), _init("bf", g(10) * 0.1),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn1"],
                         name="bn1"),
        helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c3", "p1"], ["a3"], name="add3"),
        helper.make_node("Relu", ["a3"], ["r3"], name="relu3"),
        helper.make_node("Conv", ["r3", "w4", "b4"], ["c4"], name="conv4"),
        helper.make_node("Concat", ["r3", "c4"], ["cat"], name="concat", axis=1),
        helper.make_node("Flatten", ["cat"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def mlp(seed: int = 0, opset: int = 13) -> onnx.ModelProto:
    """x[N,16] -> MatMul+Add -> Relu -> MatMul+Add -> Relu -> Gemm -> y[N,4]."""
    rng = np.random.default_rng(seed)
    g = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    inits = [_init("m1", g(16, 32) * 0.3), _init("a1", g(32) * 0.1),
             _init("m2", g(32, 32) * 0.2), _init("a2", g(32) * 0.1),
             _init("m3", g(32, 4) * 0.2), _init("a3", g(4) * 0.1)]
    nodes = [
        helper.make_node("MatMul", ["x", "m1"], ["h1"], name="mm1"),
        helper.make_node("Add", ["h1", "a1"], ["h1b"], name="add1"),
        helper.make_node("Relu", ["h1b"], ["r1"], name="relu1"),
        helper.make_node("MatMul", ["r1", "m2"], ["h2"], name="mm2"),
        helper.make_node("Add", ["h2", "a2"], ["h2b"], name="add2"),
        helper.make_node("Relu", ["h2b"], ["r2"], name="relu2"),
        helper.make_node("Gemm", ["r2", "m3", "a3"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def feeds(model: onnx.ModelProto, n: int = 8, batch: int = 4, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    vi = model.graph.input[0]
    shape = [batch] + [d.dim_value for d in vi.type.tensor_type.shape.dim[1:]]
    return [{vi.name: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]
