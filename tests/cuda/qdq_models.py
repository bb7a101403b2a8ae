"""Tiny QDQ models for the device="cuda" session tests (built with onnx.helper; no GPU needed).

Every model is small on purpose: under the CUDA simulator each kernel launch costs 0.1-0.7 s.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


class _Builder:
    def __init__(self, rng, act_dtype):
        self.rng = rng
        self.act = np.dtype(act_dtype)
        self.nodes, self.inits = [], []
        self.n = 0

    def _name(self, base):
        self.n += 1
        return f"{base}{self.n}"

    def const(self, base, arr):
        name = self._name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def qdq(self, x, scale):
        """QuantizeLinear -> DequantizeLinear of an activation (per-tensor, self.act)."""
        zp = 0 if self.act == np.int8 else 128
        s = self.const("s", np.float32(scale))
        z = self.const("z", np.array(zp, self.act))
        q = self._name("q")
        dq = self._name("dq")
        self.nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [q], name=self._name("Q")))
        self.nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [dq],
                                           name=self._name("DQ")))
        return dq

    def weight(self, shape, axis, scale=(0.002, 0.02)):
        """A per-channel s8 weight behind a DequantizeLinear (axis = output-channel axis)."""
        w = self.rng.integers(-127, 128, shape).astype(np.int8)
        scale = self.rng.uniform(*scale, shape[axis]).astype(np.float32)
        wq = self.const("w", w)
        ws = self.const("ws", scale)
        wz = self.const("wz", np.zeros(shape[axis], np.int8))
        out = self._name("wdq")
        self.nodes.append(helper.make_node("DequantizeLinear", [wq, ws, wz], [out], axis=axis,
                                           name=self._name("WDQ")))
        return out

    def op(self, op_type, inputs, name, **attrs):
        out = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out


def conv_net(act_dtype="uint8", seed=0):
    """x (1, 3, 6, 6) float -> Q/DQ -> Conv 3x3 + Relu -> depthwise 3x3 (stride 2) -> 1x1 Conv ->
    Softmax over channels (float: no CUDA kernel, so a CPU fallback with transfers around it) ->
    Flatten (on int8 data) -> MatMul (per-channel weights) -> Gemm (bias) -> Softmax. Every
    integer op sits between QDQ pairs. Outputs: the Softmax probabilities (float) and the 8-bit
    output of the 1x1 conv's Q (an integer graph output made on the device)."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng, act_dtype)
    x = b.qdq("x", 0.05)
    w1 = b.weight((4, 3, 3, 3), 0)
    c1 = b.op("Conv", [x, w1, b.const("b", rng.normal(0, 0.1, 4).astype(np.float32))], "conv3x3",
              kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    r1 = b.op("Relu", [c1], "relu1")
    d1 = b.qdq(r1, 0.04)
    w2 = b.weight((4, 1, 3, 3), 0)
    c2 = b.op("Conv", [d1, w2], "dwconv", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=4,
              strides=[2, 2])
    d2 = b.qdq(c2, 0.03)
    w3 = b.weight((5, 4, 1, 1), 0)
    c3 = b.op("Conv", [d2, w3, b.const("b", rng.normal(0, 0.1, 5).astype(np.float32))], "conv1x1",
              kernel_shape=[1, 1])
    # the 1x1 conv's quantized output is also a graph output (an integer output that crosses)
    zp = 0 if b.act == np.int8 else 128
    s3, z3 = b.const("s", np.float32(0.03)), b.const("z", np.array(zp, b.act))
    b.nodes.append(helper.make_node("QuantizeLinear", [c3, s3, z3], ["q_conv1x1"], name="Q_out"))
    d3 = b.op("DequantizeLinear", ["q_conv1x1", s3, z3], "DQ_out")
    sm = b.qdq(b.op("Softmax", [d3], "softmax_mid", axis=1), 1 / 256)
    f = b.qdq(b.op("Flatten", [sm], "flatten"), 1 / 256)  # int8 through Flatten (a device view)
    w4 = b.weight((45, 6), 1, scale=(0.05, 0.2))
    m = b.op("MatMul", [f, w4], "matmul")
    dm = b.qdq(m, 0.02)
    w5 = b.weight((4, 6), 0)
    ge = b.op("Gemm", [dm, w5, b.const("b", rng.normal(0, 0.1, 4).astype(np.float32))], "gemm",
              transB=1)
    dge = b.qdq(ge, 0.05)
    b.nodes.append(helper.make_node("Softmax", [dge], ["probs"], axis=-1, name="softmax"))
    elem = TensorProto.UINT8 if b.act == np.uint8 else TensorProto.INT8
    graph = helper.make_graph(
        b.nodes, "conv_net", [helper.make_tensor_value_info("x", FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("probs", FLOAT, [1, 4]),
         helper.make_tensor_value_info("q_conv1x1", elem, [1, 5, 3, 3])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _model(nodes, inputs, outputs, inits, opset=13):
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info(*o) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def mlp(act_dtype="uint8", seed=1):
    """x (batch, 8) float -> Q/DQ -> MatMul (per-channel) + Relu -> Q/DQ -> Gemm -> Q/DQ -> y."""
    b = _Builder(np.random.default_rng(seed), act_dtype)
    x = b.qdq("x", 0.04)
    h = b.op("Relu", [b.op("MatMul", [x, b.weight((8, 6), 1)], "mm")], "relu")
    h = b.qdq(h, 0.03)
    y = b.op("Gemm", [h, b.weight((3, 6), 0), b.const("b", np.float32([0.1, -0.2, 0.05]))],
             "gemm", transB=1)
    b.nodes.append(helper.make_node("Identity", [b.qdq(y, 0.05)], ["y"], name="out"))
    return _model(b.nodes, [("x", FLOAT, ["batch", 8])], [("y", FLOAT, ["batch", 3])], b.inits)


def float_net(seed=2):
    """An FP32 model for dynamic quantization: Conv 3x3 (+bias) -> Relu -> Flatten -> Gemm
    (+bias). With dynamic_quantization=True each of Conv and Gemm becomes DynamicQuantizeLinear +
    an integer op with a float epilogue."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (3, 2, 3, 3)).astype(np.float32), "wc"),
             numpy_helper.from_array(rng.normal(0, 0.1, 3).astype(np.float32), "bc"),
             numpy_helper.from_array(rng.normal(0, 0.2, (4, 27)).astype(np.float32), "wg"),
             numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "bg")]
    nodes = [helper.make_node("Conv", ["x", "wc", "bc"], ["c"], name="conv", kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], name="gemm", transB=1)]
    return _model(nodes, [("x", FLOAT, [1, 2, 5, 5])], [("y", FLOAT, [1, 4])], inits)


def quant_ops(out_dtype="int8"):
    """Standalone QuantizeLinear (per-axis, along axis 1 of 3 channels) -> DequantizeLinear, both
    outputs, and a DynamicQuantizeLinear of the same input with its three outputs."""
    elem = TensorProto.INT8 if out_dtype == "int8" else TensorProto.UINT8
    zp = np.array([-3, 0, 5], np.int8) if out_dtype == "int8" else np.array([120, 128, 3], np.uint8)
    inits = [numpy_helper.from_array(np.float32([0.5, 0.25, 1.5]), "s"),
             numpy_helper.from_array(zp, "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="Q", axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="DQ", axis=1),
             helper.make_node("DynamicQuantizeLinear", ["x"], ["dy", "ds", "dz"], name="DynQ")]
    return _model(nodes, [("x", FLOAT, [2, 3, "w"])],
                  [("q", elem, [2, 3, "w"]), ("dq", FLOAT, [2, 3, "w"]),
                   ("dy", TensorProto.UINT8, [2, 3, "w"]), ("ds", FLOAT, []),
                   ("dz", TensorProto.UINT8, [])], inits)


def lut_net():
    """u8 input -> DequantizeLinear -> Sigmoid -> QuantizeLinear: one qrt.QLut (256 entries)."""
    inits = [numpy_helper.from_array(np.float32(0.05), "s"),
             numpy_helper.from_array(np.uint8(128), "z"),
             numpy_helper.from_array(np.float32(1 / 256), "so"),
             numpy_helper.from_array(np.uint8(0), "zo")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["d"], name="DQ"),
             helper.make_node("Sigmoid", ["d"], ["g"], name="sigmoid"),
             helper.make_node("QuantizeLinear", ["g", "so", "zo"], ["y"], name="Q")]
    return _model(nodes, [("x", TensorProto.UINT8, [2, 5])], [("y", TensorProto.UINT8, [2, 5])],
                  inits)


def fallback_net(k):
    """Nodes the CUDA kernels cannot take: a QGemm whose K (`k`) is beyond the int32-exact range,
    and a 3-D QConv; plus a QuantizeLinear of an int32 input (the GPU op hands that call to the
    CPU op at run time)."""
    rng = np.random.default_rng(3)
    b = _Builder(rng, "uint8")
    xg = b.qdq("xg", 0.01)
    g = b.op("MatMul", [xg, b.weight((k, 2), 1)], "matmul_bigk")
    b.nodes.append(helper.make_node("Identity", [b.qdq(g, 0.5)], ["yg"], name="out_g"))
    xc = b.qdq("xc", 0.05)
    c = b.op("Conv", [xc, b.weight((2, 1, 2, 2, 2), 0)], "conv3d", kernel_shape=[2, 2, 2])
    b.nodes.append(helper.make_node("Identity", [b.qdq(c, 0.05)], ["yc"], name="out_c"))
    b.nodes.append(helper.make_node("QuantizeLinear", ["xi", b.const("s", np.float32(3.0)),
                                                       b.const("z", np.uint8(7))], ["yi"],
                                    name="Q_int32"))
    return _model(b.nodes, [("xg", FLOAT, [1, k]), ("xc", FLOAT, [1, 1, 3, 3, 3]),
                            ("xi", TensorProto.INT32, [4])],
                  [("yg", FLOAT, [1, 2]), ("yc", FLOAT, [1, 2, 2, 2, 2]),
                   ("yi", TensorProto.UINT8, [4])], b.inits)


def table_net(act_dtype="uint8", seed=4):
    """Lookup tables folded into the integer ops (passes/lut_regions): Conv -> Q -> DQ ->
    BatchNormalization -> Q becomes a QConv with a per-channel (C, 256) output table; Gemm -> Q ->
    DQ -> Sigmoid -> Q a QGemm with one (256,) table."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng, act_dtype)
    c = b.op("Conv", [b.qdq("x", 0.05), b.weight((3, 2, 3, 3), 0)], "conv", kernel_shape=[3, 3],
             pads=[1, 1, 1, 1])
    bn = b.op("BatchNormalization",
              [b.qdq(c, 0.05)] + [b.const(n, v.astype(np.float32)) for n, v in (
                  ("g", rng.uniform(0.5, 2, 3)), ("b", rng.uniform(-1, 1, 3)),
                  ("mu", rng.uniform(-0.5, 0.5, 3)), ("var", rng.uniform(0.5, 2, 3)))], "bn")
    f = b.qdq(b.op("Flatten", [b.qdq(bn, 0.04)], "flatten"), 0.04)
    g = b.op("Gemm", [f, b.weight((8, 48), 0, scale=(2e-4, 2e-3))], "gemm", transB=1)
    s = b.op("Sigmoid", [b.qdq(g, 0.1)], "sigmoid")
    so, zo = b.const("s", np.float32(1 / 256)), b.const("z", np.array(0, np.uint8))
    b.nodes.append(helper.make_node("QuantizeLinear", [s, so, zo], ["y"], name="Q_out"))
    return _model(b.nodes, [("x", FLOAT, [1, 2, 4, 4])], [("y", TensorProto.UINT8, [1, 8])],
                  b.inits)


def pool_net(dtype="uint8"):
    """MaxPool on 8-bit inputs, several geometries read from one input (ceil mode with a window
    dropped, dilation, SAME_UPPER, asymmetric pads), a 1-D one, and a float MaxPool (no CUDA
    kernel for float data: CPU)."""
    elem = TensorProto.UINT8 if dtype == "uint8" else TensorProto.INT8
    pools = [dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
             dict(kernel_shape=[2, 2], dilations=[2, 2], strides=[1, 2]),
             dict(kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_UPPER"),
             dict(kernel_shape=[2, 3], pads=[0, 2, 1, 0])]
    nodes = [helper.make_node("MaxPool", ["x"], [f"p{i}"], name=f"pool{i}", **a)
             for i, a in enumerate(pools)]
    nodes.append(helper.make_node("MaxPool", ["x1"], ["p1d"], name="pool1d", kernel_shape=[3],
                                  strides=[2], ceil_mode=1))
    nodes.append(helper.make_node("MaxPool", ["xf"], ["pf"], name="pool_float",
                                  kernel_shape=[2, 2]))
    outs = [(f"p{i}", elem, None) for i in range(len(pools))] + [("p1d", elem, None),
                                                                  ("pf", FLOAT, None)]
    return _model(nodes, [("x", elem, [1, 2, 7, 6]), ("x1", elem, [2, 1, 8]),
                          ("xf", FLOAT, [1, 1, 4, 4])], outs, [])


def scalar_qdq():
    """QuantizeLinear -> DequantizeLinear of a 0-d input (0-d values on the device)."""
    inits = [numpy_helper.from_array(np.float32(0.5), "s"),
             numpy_helper.from_array(np.int8(3), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="Q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], name="DQ")]
    return _model(nodes, [("x", FLOAT, [])], [("q", TensorProto.INT8, []), ("d", FLOAT, [])], inits)


def gap_net(act_dtype="uint8"):
    """DequantizeLinear -> GlobalAveragePool -> QuantizeLinear of an 8-bit input (one integer op,
    qrt.QGlobalAveragePool, where the passes fuse it) and a float GlobalAveragePool (CPU)."""
    elem = TensorProto.UINT8 if act_dtype == "uint8" else TensorProto.INT8
    zp = np.array(100 if act_dtype == "uint8" else -7, act_dtype)
    inits = [numpy_helper.from_array(np.float32(0.07), "s"), numpy_helper.from_array(zp, "z"),
             numpy_helper.from_array(np.float32(0.05), "so"), numpy_helper.from_array(zp, "zo")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["d"], name="DQ"),
             helper.make_node("GlobalAveragePool", ["d"], ["g"], name="gap"),
             helper.make_node("QuantizeLinear", ["g", "so", "zo"], ["y"], name="Q"),
             helper.make_node("GlobalAveragePool", ["xf"], ["yf"], name="gap_float")]
    return _model(nodes, [("x", elem, [2, 3, 4, 5]), ("xf", FLOAT, [1, 2, 3, 3])],
                  [("y", elem, [2, 3, 1, 1]), ("yf", FLOAT, [1, 2, 1, 1])], inits)
