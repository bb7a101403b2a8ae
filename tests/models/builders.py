"""Model builders for end-to-end tests: CNNs and transformer blocks as people ship them, written for a
chosen opset (the op forms change between opsets: Clip/Squeeze/Split/ReduceMean/Resize/Pad)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Builder:
    def __init__(self, opset: int, seed: int = 0):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.n = 0

    # -- plumbing ---------------------------------------------------------------------------
    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, arr, prefix="c") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(self, op_type, inputs, n_out=1, prefix=None, **attrs):
        base = self.name(prefix or op_type.lower())
        outs = [base] if n_out == 1 else [f"{base}_o{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=base, **attrs))
        return outs[0] if n_out == 1 else outs

    def weight(self, *shape, scale=None):
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        s = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        return self.const((self.rng.standard_normal(shape) * s).astype(np.float32), "w")

    def model(self, inputs, outputs) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, "g", inputs, outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)])
        m.ir_version = min(m.ir_version, 10 if self.opset >= 21 else 8)
        onnx.checker.check_model(m)
        return m

    # -- opset-aware layers -----------------------------------------------------------------
    def conv(self, x, cin, cout, k=3, stride=1, group=1, pad=None, dilation=1, bias=True):
        pad = (k // 2) * dilation if pad is None else pad
        ins = [x, self.weight(cout, cin // group, k, k)]
        if bias:
            ins.append(self.const((self.rng.standard_normal(cout) * 0.1).astype(np.float32), "b"))
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[stride, stride],
                       pads=[pad] * 4, group=group, dilations=[dilation, dilation])

    def bn(self, x, c):
        r = self.rng
        scale = self.const((1 + 0.1 * r.standard_normal(c)).astype(np.float32), "bn_s")
        bias = self.const((0.1 * r.standard_normal(c)).astype(np.float32), "bn_b")
        mean = self.const((0.1 * r.standard_normal(c)).astype(np.float32), "bn_m")
        var = self.const((1 + 0.2 * r.random(c)).astype(np.float32), "bn_v")
        return self.op("BatchNormalization", [x, scale, bias, mean, var], epsilon=1e-5)

    def clip(self, x, lo, hi):
        if self.opset < 11:
            return self.op("Clip", [x], min=float(lo), max=float(hi))
        return self.op("Clip", [x, self.const(np.float32(lo)), self.const(np.float32(hi))])

    def hardswish(self, x):
        if self.opset >= 14:
            return self.op("HardSwish", [x])
        return self.op("Mul", [x, self.op("HardSigmoid", [x], alpha=1 / 6, beta=0.5)])

    def gelu(self, x):
        if self.opset >= 20:
            return self.op("Gelu", [x])
        inner = self.op("Erf", [self.op("Div", [x, self.const(np.float32(np.sqrt(2)))])])
        one_plus = self.op("Add", [inner, self.const(np.float32(1))])
        return self.op("Mul", [self.op("Mul", [x, one_plus]), self.const(np.float32(0.5))])

    def reduce_mean(self, x, axes):
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.const(np.array(axes, np.int64))], keepdims=1)
        return self.op("ReduceMean", [x], axes=axes, keepdims=1)

    def unsqueeze(self, x, axes):
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.const(np.array(axes, np.int64))])
        return self.op("Unsqueeze", [x], axes=axes)

    def squeeze(self, x, axes):
        if self.opset >= 13:
            return self.op("Squeeze", [x, self.const(np.array(axes, np.int64))])
        return self.op("Squeeze", [x], axes=axes)

    def split(self, x, sizes, axis):
        if self.opset >= 13:
            return self.op("Split", [x, self.const(np.array(sizes, np.int64))], n_out=len(sizes),
                           axis=axis)
        return self.op("Split", [x], n_out=len(sizes), axis=axis, split=sizes)

    def layer_norm(self, x, d):
        gamma = self.const((1 + 0.1 * self.rng.standard_normal(d)).astype(np.float32), "ln_g")
        beta = self.const((0.1 * self.rng.standard_normal(d)).astype(np.float32), "ln_b")
        if self.opset >= 17:
            return self.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-5)
        mean = self.reduce_mean(x, [-1])
        xc = self.op("Sub", [x, mean])
        var = self.reduce_mean(self.op("Pow", [xc, self.const(np.float32(2))]), [-1])
        std = self.op("Sqrt", [self.op("Add", [var, self.const(np.float32(1e-5))])])
        return self.op("Add", [self.op("Mul", [self.op("Div", [xc, std]), gamma]), beta])

    def resize(self, x, scale, mode):
        kw = {"mode": mode}
        if mode == "nearest":
            kw["nearest_mode"] = "floor"
            kw["coordinate_transformation_mode"] = "asymmetric"
        else:
            kw["coordinate_transformation_mode"] = "half_pixel"
        scales = self.const(np.array([1, 1, scale, scale], np.float32))
        if self.opset < 11:
            return self.op("Resize", [x, scales], mode=mode)
        roi = self.const(np.array([], np.float32)) if self.opset < 13 else ""
        return self.op("Resize", [x, roi, scales], **kw)


def mobilenet_like(opset: int, seed: int = 0) -> onnx.ModelProto:
    """Depthwise-separable blocks with BatchNorm left unfolded, ReLU6 (Clip), HardSwish,
    squeeze-excite with HardSigmoid, a residual Add, pooling, Gemm and Softmax."""
    b = Builder(opset, seed)
    x = b.conv("input", 3, 16, k=3, stride=2)
    x = b.clip(b.bn(x, 16), 0, 6)
    # depthwise separable block with residual
    dw = b.clip(b.bn(b.conv(x, 16, 16, k=3, group=16, bias=False), 16), 0, 6)
    pw = b.bn(b.conv(dw, 16, 16, k=1, bias=False), 16)
    x = b.op("Add", [x, pw])
    # expand + depthwise stride 2 + squeeze-excite
    e = b.hardswish(b.bn(b.conv(x, 16, 48, k=1), 48))
    d = b.hardswish(b.bn(b.conv(e, 48, 48, k=5, stride=2, group=48), 48))
    se = b.op("GlobalAveragePool", [d])
    se = b.op("Relu", [b.conv(se, 48, 12, k=1, pad=0)])
    se = b.op("HardSigmoid", [b.conv(se, 12, 48, k=1, pad=0)], alpha=1 / 6, beta=0.5)
    d = b.op("Mul", [d, se])
    p = b.bn(b.conv(d, 48, 24, k=1), 24)
    p = b.op("MaxPool", [p], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    p = b.op("AveragePool", [p], kernel_shape=[2, 2], strides=[2, 2])
    p = b.conv(p, 24, 32, k=3, dilation=2)
    g = b.op("GlobalAveragePool", [b.op("LeakyRelu", [p], alpha=0.1)])
    f = b.op("Flatten", [g], axis=1)
    logits = b.op("Gemm", [f, b.weight(10, 32), b.const(np.zeros(10, np.float32))], transB=1)
    b.nodes[-1].output[0] = "logits"
    probs = b.op("Softmax", ["logits"], axis=1)
    b.nodes[-1].output[0] = "probs"
    del probs
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])]
    return b.model([inp], outs)


def unet_like(opset: int, seed: int = 0) -> onnx.ModelProto:
    """Encoder-decoder: strided convs down, ConvTranspose and Resize up, skip Concat, Pad,
    Sigmoid head — the shape of small segmentation and detection models."""
    b = Builder(opset, seed)
    e1 = b.op("Relu", [b.bn(b.conv("input", 3, 8), 8)])
    e2 = b.op("Relu", [b.conv(e1, 8, 16, stride=2)])
    e3 = b.op("Relu", [b.conv(e2, 16, 32, stride=2)])
    u2 = b.op("ConvTranspose", [e3, b.weight(32, 16, 2, 2), b.const(np.zeros(16, np.float32))],
              kernel_shape=[2, 2], strides=[2, 2])
    c2 = b.op("Concat", [u2, e2], axis=1)
    d2 = b.op("Relu", [b.conv(c2, 32, 16)])
    u1 = b.resize(d2, 2.0, "linear")
    u1n = b.resize(d2, 2.0, "nearest")
    c1 = b.op("Concat", [u1, u1n, e1], axis=1)
    if opset >= 11:
        padded = b.op("Pad", [c1, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))],
                      mode="reflect")
    else:
        padded = b.op("Pad", [c1], mode="reflect", pads=[0, 0, 1, 1, 0, 0, 1, 1])
    d1 = b.op("Relu", [b.conv(padded, 40, 8, pad=0)])
    head = b.op("Sigmoid", [b.conv(d1, 8, 2, k=1, pad=0)])
    b.nodes[-1].output[0] = "mask"
    del head
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])
    out = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 2, 32, 32])
    return b.model([inp], [out])


def transformer_block(opset: int, seed: int = 0, d=32, heads=4, vocab=50,
                      max_seq=16) -> onnx.ModelProto:
    """Token embedding (Gather), a pre-LN encoder block with masked multi-head attention
    (Split, Reshape from Shape/Gather/Concat, Transpose, MatMul, Softmax, Where/Equal), GELU MLP.
    Sequences up to `max_seq` tokens (the position table's length)."""
    b = Builder(opset, seed)
    dh = d // heads
    emb = b.op("Gather", [b.weight(vocab, d, scale=0.5), "tokens"], axis=0)
    pos = b.const((b.rng.standard_normal((1, max_seq, d)) * 0.1).astype(np.float32), "pos")
    seq = b.op("Gather", [b.op("Shape", ["tokens"]), b.const(np.array(1, np.int64))], axis=0)
    pos = b.op("Slice", [pos, b.const(np.array([0], np.int64)), b.unsqueeze(seq, [0]),
                         b.const(np.array([1], np.int64))])
    x = b.op("Add", [emb, pos])
    h = b.layer_norm(x, d)
    qkv = b.op("Add", [b.op("MatMul", [h, b.weight(d, 3 * d)]),
                       b.const((b.rng.standard_normal(3 * d) * 0.05).astype(np.float32))])
    q, k, v = b.split(qkv, [d, d, d], axis=2)
    batch = b.op("Gather", [b.op("Shape", [x]), b.const(np.array(0, np.int64))], axis=0)
    shape4 = b.op("Concat", [b.unsqueeze(batch, [0]), b.unsqueeze(seq, [0]),
                             b.const(np.array([heads, dh], np.int64))], axis=0)

    def heads_first(t):
        return b.op("Transpose", [b.op("Reshape", [t, shape4])], perm=[0, 2, 1, 3])

    qh, kh, vh = heads_first(q), heads_first(k), heads_first(v)
    kt = b.op("Transpose", [kh], perm=[0, 1, 3, 2])
    scores = b.op("Div", [b.op("MatMul", [qh, kt]), b.const(np.float32(np.sqrt(dh)))])
    # padding mask: token id 0 is padding
    pad = b.op("Equal", ["tokens", b.const(np.array(0, np.int64))])
    pad = b.unsqueeze(pad, [1, 2])
    scores = b.op("Where", [pad, b.const(np.float32(-1e4)), scores])
    attn = b.op("Softmax", [scores], axis=-1)
    ctx = b.op("Transpose", [b.op("MatMul", [attn, vh])], perm=[0, 2, 1, 3])
    shape3 = b.op("Concat", [b.unsqueeze(batch, [0]), b.unsqueeze(seq, [0]),
                             b.const(np.array([d], np.int64))], axis=0)
    ctx = b.op("Reshape", [ctx, shape3])
    x = b.op("Add", [x, b.op("MatMul", [ctx, b.weight(d, d)])])
    h = b.layer_norm(x, d)
    m = b.gelu(b.op("Add", [b.op("MatMul", [h, b.weight(d, 4 * d)]),
                            b.const(np.zeros(4 * d, np.float32))]))
    x = b.op("Add", [x, b.op("MatMul", [m, b.weight(4 * d, d)])])
    pooled = b.squeeze(b.reduce_mean(x, [1]), [1])
    b.op("Gemm", [pooled, b.weight(d, 5), b.const(np.zeros(5, np.float32))])
    b.nodes[-1].output[0] = "out"
    tok = helper.make_tensor_value_info("tokens", TensorProto.INT64, ["B", "S"])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", 5])
    return b.model([tok], [out])


def random_tokens(rng, batch, seq, vocab=50):
    t = rng.integers(1, vocab, size=(batch, seq)).astype(np.int64)
    t[:, -2:] = 0  # padding at the end
    return t
