"""onnxruntime's quantized contrib ops (domain com.microsoft) as the standard ops they stand for.

onnxruntime's quantizer writes these in QOperator format (quant_format=QOperator) and ONNX model
zoo int8 models carry them: QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu,
QLinearGlobalAveragePool, QLinearAveragePool, QLinearConcat, QLinearSoftmax, QLinearWhere, QGemm,
DynamicQuantizeMatMul, MatMulIntegerToFloat, DynamicQuantizeLSTM, MatMulNBits (2/4/8-bit
weight-only, dequantized once at load), and com.microsoft QuantizeLinear/DequantizeLinear (16-bit
and 4-bit types before opset 21).

Each is defined as dequantize -> float op -> quantize, so at load time it becomes exactly that
subgraph of standard nodes: DequantizeLinear -> Add -> QuantizeLinear, and so on. The unoptimised
plan runs those nodes as the spec says; the passes then fuse them into the same integer ops as a
QDQ model (QAdd, QLut, QGemm...), so nothing here has its own kernel. QGemm keeps its int32 bias
exact: it becomes DequantizeLinear(C, a_scale*b_scale), which fuse_qdq takes as is, and
`alpha` scales the bias too (beta = alpha), as onnxruntime's kernel adds C to the accumulators
before scaling. QLinearSoftmax's `opset` attribute picks the Softmax semantics (before 13:
flattened at `axis`), whatever the model's own opset.
"""
from __future__ import annotations

import numpy as np

from qrt import ir
from qrt.errors import ModelLoadError

DOMAIN = "com.microsoft"


class _Builder:
    """Collects the standard nodes and new constants that replace one contrib node."""

    def __init__(self, node: ir.Node, inits: dict, opset: int, label: str):
        self.node, self.inits, self.opset, self.label = node, inits, opset, label
        self.nodes: list[ir.Node] = []
        self._k = 0

    def fail(self, why: str):
        return ModelLoadError(f"{self.label}: {self.node.label()} (domain {DOMAIN}): {why}")

    def inp(self, k: int, required: bool = True) -> str:
        ins = self.node.inputs
        name = ins[k] if k < len(ins) else ""
        if required and not name:
            raise self.fail(f"input {k} is missing")
        return name

    def value(self, hint: str) -> str:
        self._k += 1
        return f"{self.node.outputs[0] or self.node.name}__{hint}{self._k}"

    def const(self, hint: str, arr: np.ndarray) -> str:
        name = self.value(hint)
        self.inits[name] = arr
        return name

    def emit(self, op: str, inputs: list[str], outputs: list[str] | None = None, main=False,
             **attrs) -> str:
        outs = outputs if outputs is not None else [self.value(op.lower())]
        # The node that stands for the source op keeps its name, for the lowering report.
        name = self.node.name if main else f"{self.node.name}/{op}{self._k}"
        self.nodes.append(ir.Node(op, list(inputs), outs, attrs, name, ""))
        return outs[0]

    def dq(self, x: str, scale: str, zp: str, axis: int | None = None) -> str:
        ins = [x, scale] + ([zp] if zp else [])
        if axis is None:
            return self.emit("DequantizeLinear", ins)
        if self.opset < 13:  # no per-axis DequantizeLinear yet: dequantize the constant once
            v, sc = self.inits.get(x), self.inits.get(scale)
            z = self.inits.get(zp) if zp else np.zeros((), np.int32)
            if v is None or sc is None or z is None:
                raise self.fail(f"a per-axis scale on a non-constant input needs opset >= 13 "
                                f"(the model imports {self.opset})")
            shape = [1] * np.ndim(v)
            shape[axis] = -1
            f = (np.asarray(v).astype(np.float64) - np.asarray(z).reshape(shape)) * np.asarray(
                sc, np.float64).reshape(shape)
            return self.const("dq", f.astype(np.float32))
        return self.emit("DequantizeLinear", ins, axis=axis)

    def q(self, x: str, scale: str, zp: str, out: str) -> str:
        return self.emit("QuantizeLinear", [x, scale] + ([zp] if zp else []), [out])


def _size(b: _Builder, name: str) -> int | None:
    v = b.inits.get(name)
    return None if v is None else int(np.asarray(v).size)


def _binary(b: _Builder, op: str):
    a = b.dq(b.inp(0), b.inp(1), b.inp(2, False))
    c = b.dq(b.inp(3), b.inp(4), b.inp(5, False))
    y = b.emit(op, [a, c], main=True)
    b.q(y, b.inp(6), b.inp(7, False), b.node.outputs[0])


def _unary(b: _Builder, op: str, **attrs):
    x = b.dq(b.inp(0), b.inp(1), b.inp(2, False))
    y = b.emit(op, [x], main=True, **attrs)
    b.q(y, b.inp(3), b.inp(4, False), b.node.outputs[0])


def _channels_last_to_first(b: _Builder, x: str, rank: int | None):
    if rank is None:
        raise b.fail("channels_last=1 needs the input's rank, which the model does not declare")
    return b.emit("Transpose", [x], perm=[0, rank - 1] + list(range(1, rank - 1)))


def _pool(b: _Builder, op: str, rank: int | None):
    attrs = {k: v for k, v in b.node.attrs.items() if k != "channels_last"}
    last = int(b.node.attrs.get("channels_last", 0))
    x = b.dq(b.inp(0), b.inp(1), b.inp(2, False))
    if last:
        x = _channels_last_to_first(b, x, rank)
    y = b.emit(op, [x], main=True, **attrs)
    if last:
        y = b.emit("Transpose", [y], perm=[0] + list(range(2, rank)) + [1])
    b.q(y, b.inp(3), b.inp(4, False), b.node.outputs[0])


def _concat(b: _Builder):
    ins = b.node.inputs
    if len(ins) < 5 or (len(ins) - 2) % 3:
        raise b.fail(f"expects Y_scale, Y_zero_point and (X, X_scale, X_zero_point) triples; got "
                     f"{len(ins)} inputs")
    xs = [b.dq(ins[k], ins[k + 1], ins[k + 2]) for k in range(2, len(ins), 3)]
    if "axis" not in b.node.attrs:
        raise b.fail("missing required attribute 'axis'")
    y = b.emit("Concat", xs, main=True, axis=int(b.node.attrs["axis"]))
    b.q(y, b.inp(0), b.inp(1, False), b.node.outputs[0])


def _softmax(b: _Builder, rank: int | None):
    if "opset" not in b.node.attrs:
        raise b.fail("missing required attribute 'opset'")
    semantics = int(b.node.attrs["opset"])
    axis = int(b.node.attrs.get("axis", -1 if semantics >= 13 else 1))
    x = b.dq(b.inp(0), b.inp(1), b.inp(2, False))
    last = rank is not None and axis in (-1, rank - 1)
    if last or (semantics >= 13) == (b.opset >= 13):  # same meaning at the model's opset
        y = b.emit("Softmax", [x], main=True, axis=axis)
    elif semantics < 13:  # flatten at axis, softmax over the trailing block, back to x's shape
        flat = b.emit("Flatten", [x], axis=axis)
        sm = b.emit("Softmax", [flat], main=True, axis=1)
        y = b.emit("Reshape", [sm, b.emit("Shape", [x])])
    else:  # opset-13 meaning on an older model opset: move the axis last and back
        if rank is None:
            raise b.fail("softmax over a middle axis needs the input's rank")
        ax = axis % rank
        perm = [d for d in range(rank) if d != ax] + [ax]
        inv = list(np.argsort(perm))
        t = b.emit("Transpose", [x], perm=perm)
        sm = b.emit("Softmax", [t], main=True, axis=rank - 1)
        y = b.emit("Transpose", [sm], perm=[int(i) for i in inv])
    b.q(y, b.inp(3), b.inp(4, False), b.node.outputs[0])


def _where(b: _Builder):
    x = b.dq(b.inp(1), b.inp(2), b.inp(3, False))
    y = b.dq(b.inp(4), b.inp(5), b.inp(6, False))
    z = b.emit("Where", [b.inp(0), x, y], main=True)
    b.q(z, b.inp(7), b.inp(8, False), b.node.outputs[0])


def _qgemm(b: _Builder):
    alpha = float(b.node.attrs.get("alpha", 1.0))
    ta, tb = int(b.node.attrs.get("transA", 0)), int(b.node.attrs.get("transB", 0))
    a = b.dq(b.inp(0), b.inp(1), b.inp(2, False))
    nb = _size(b, b.inp(4))
    per_col = nb is not None and nb > 1
    _check_column_params(b, 3, (4, 5), ("b_scale", "b_zero_point"), col_axis=0 if tb else -1)
    zb = b.inits.get(b.inp(5, False)) if b.inp(5, False) else None
    if zb is not None and nb is not None and np.size(zb) != nb:
        raise b.fail(f"b_zero_point has {np.size(zb)} values, b_scale {nb}")
    wb = b.dq(b.inp(3), b.inp(4), b.inp(5, False), axis=(0 if tb else 1) if per_col else None)
    ins = [a, wb]
    c = b.inp(6, False)
    if c:
        sa, sb = b.inits.get(b.inp(1)), b.inits.get(b.inp(4))
        cv = b.inits.get(c)
        if sa is None or sb is None or cv is None:
            raise b.fail("the bias C needs constant a_scale, b_scale and C")
        acc_scale = (np.float32(np.asarray(sa).reshape(-1)[0])
                     * np.asarray(sb, np.float32).reshape(-1)).astype(np.float32)
        cv = np.asarray(cv)
        if acc_scale.size == 1 or (cv.ndim >= 1 and cv.shape[-1] == acc_scale.size):
            axis = None if acc_scale.size == 1 else cv.ndim - 1
            scale = acc_scale if axis is not None else acc_scale.reshape(())
            ins.append(b.dq(c, b.const("c_scale", scale),
                            b.const("c_zp", np.zeros(scale.shape, np.int32)), axis))
        else:  # a scalar or column C with per-column scales: its float value, computed once
            ins.append(b.const("c_float", (cv.astype(np.float64) * acc_scale).astype(np.float32)))
    has_y = bool(b.inp(7, False))
    out = b.node.outputs[0]
    y = b.emit("Gemm", ins, None if has_y else [out], main=True, alpha=alpha, beta=alpha,
               transA=ta, transB=tb)
    if has_y:
        b.q(y, b.inp(7), b.inp(8, False), out)


def _matmul_to_float(b: _Builder, qa: str, qb: str, za: str, zb: str, scale: str, bias: str):
    """MatMulInteger -> Cast(float) -> Mul(scale) (-> Add(bias)): the pattern onnxruntime's
    quantize_dynamic writes, which dynamic_quant fuses into one QGemm."""
    acc = b.emit("MatMulInteger", [qa, qb, za] + ([zb] if zb else []), main=True)
    f = b.emit("Cast", [acc], to=1)
    out = b.node.outputs[0]
    y = b.emit("Mul", [f, scale], None if bias else [out])
    if bias:
        b.emit("Add", [y, bias], [out])


def _check_column_params(b: _Builder, k_b: int, ks: tuple[int, ...], names: tuple[str, ...],
                         col_axis: int = -1):
    """Per-column scale/zero point lengths against a constant B (N columns along `col_axis`):
    1 or N."""
    bv = b.inits.get(b.inp(k_b))
    if bv is None or np.ndim(bv) < 2:
        return
    n = np.shape(bv)[col_axis]
    for k, name in zip(ks, names):
        v = b.inits.get(b.inp(k, False)) if b.inp(k, False) else None
        if v is not None and np.size(v) not in (1, n):
            raise b.fail(f"{name} has {np.size(v)} values; B {list(np.shape(bv))} has {n} columns")


def _dynamic_quantize_matmul(b: _Builder):
    _check_column_params(b, 1, (2, 3), ("b_scale", "b_zero_point"))
    qa, sa, za = b.value("qa"), b.value("sa"), b.value("za")
    b.emit("DynamicQuantizeLinear", [b.inp(0)], [qa, sa, za])
    scale = b.emit("Mul", [sa, b.inp(2)])
    _matmul_to_float(b, qa, b.inp(1), za, b.inp(3, False), scale, b.inp(4, False))


def _matmul_integer_to_float(b: _Builder):
    _check_column_params(b, 1, (3, 5), ("b_scale", "b_zero_point"))
    za = b.inp(4, False)
    if not za:  # MatMulInteger needs its a zero point spelled out to take b's
        za = b.const("za", np.zeros((), np.uint8))
    scale = b.emit("Mul", [b.inp(2), b.inp(3)])
    _matmul_to_float(b, b.inp(0), b.inp(1), za, b.inp(5, False), scale, b.inp(6, False))


def _dequantized_recurrent_weight(b: _Builder, k_w: int, k_s: int, k_z: int, what: str):
    """DynamicQuantizeLSTM's int8 W/R ([dirs, in, 4*hidden], scales per direction or per
    direction and gate column) as the float [dirs, 4*hidden, in] that LSTM takes, computed once."""
    w, s = b.inits.get(b.inp(k_w)), b.inits.get(b.inp(k_s))
    z = b.inits.get(b.inp(k_z, False)) if b.inp(k_z, False) else None
    if w is None or s is None or (b.inp(k_z, False) and z is None):
        raise b.fail(f"{what}, its scale and zero point must be constants")
    w = np.asarray(w)
    if w.dtype not in (np.dtype(np.int8), np.dtype(np.uint8)):
        raise b.fail(f"{what} has dtype {w.dtype.name}; DynamicQuantizeLSTM takes int8 or uint8")
    if z is not None and np.asarray(z).dtype != w.dtype:
        raise b.fail(f"{what}'s zero point has dtype {np.asarray(z).dtype.name}, {what} "
                     f"{w.dtype.name}; they must have the same type")
    if w.ndim != 3:
        raise b.fail(f"{what} has shape {list(w.shape)}; expected [directions, input, 4*hidden]")
    s = np.asarray(s, np.float32)
    z = np.zeros(s.shape, np.int32) if z is None else np.asarray(z).astype(np.int32)
    dirs, cols = w.shape[0], w.shape[2]
    if s.shape not in ((dirs,), (dirs, cols)) or z.shape != s.shape:
        raise b.fail(f"{what} scale {list(s.shape)} / zero point {list(z.shape)} must be "
                     f"[{dirs}] or [{dirs}, {cols}]")
    from qrt.ops.quant import check_scale
    check_scale(s, f"{b.label}: {b.node.label()}", f"{what}_scale")
    s3 = s.reshape(dirs, 1, -1)
    z3 = z.reshape(dirs, 1, -1)
    wf = ((w.astype(np.int32) - z3).astype(np.float32) * s3).transpose(0, 2, 1)
    return b.const(what.lower(), np.ascontiguousarray(wf, np.float32))


def _dynamic_quantize_lstm(b: _Builder):
    """The LSTM of its dequantized weights. onnxruntime's kernel also quantizes X and H to uint8 on
    each step; qrt keeps them float, so it sits between onnxruntime and the FP32 model."""
    wf = _dequantized_recurrent_weight(b, 1, 8, 9, "W")
    rf = _dequantized_recurrent_weight(b, 2, 10, 11, "R")
    ins = [b.inp(0), wf, rf] + [b.inp(k, False) for k in range(3, 8)]
    while ins and not ins[-1]:
        ins.pop()
    unknown = sorted(set(b.node.attrs) - _LSTM_ATTRS)
    if unknown:
        raise b.fail(f"unknown attribute(s) {unknown}; DynamicQuantizeLSTM takes "
                     f"{sorted(_LSTM_ATTRS)}")
    b.emit("LSTM", ins, list(b.node.outputs), main=True, **b.node.attrs)


_LSTM_ATTRS = {"activation_alpha", "activation_beta", "activations", "clip", "direction",
               "hidden_size", "input_forget"}


def _unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Rows of `bits`-wide unsigned codes packed little end first into bytes, `count` per row."""
    per = 8 // bits
    rows = packed.reshape(packed.shape[0], -1).astype(np.uint8)
    shifts = (np.arange(per, dtype=np.uint8) * bits)
    codes = (rows[:, :, None] >> shifts) & np.uint8((1 << bits) - 1)
    return codes.reshape(rows.shape[0], -1)[:, :count]


def _matmul_nbits(b: _Builder):
    """MatMulNBits (onnxruntime's 2/4/8-bit weight-only MatMul): Y = A . dequant(B)^T (+ bias),
    with B [N, blocks, blob] holding `bits`-wide codes (low bits first), a scale per (column,
    block) and a zero point per (column, block) (packed codes, or floats; 2^(bits-1) when absent),
    blocks along K or chosen by g_idx. The weight is dequantized once at load to a float32 [K, N]
    constant, as qrt runs other blocked weight-only models."""
    a = b.node.attrs
    for req in ("K", "N", "block_size"):
        if req not in a:
            raise b.fail(f"missing required attribute '{req}'")
    k, n, bs, bits = int(a["K"]), int(a["N"]), int(a["block_size"]), int(a.get("bits", 4))
    if bits not in (2, 4, 8) or bs < 1 or k < 1 or n < 1:
        raise b.fail(f"bits={bits} (2, 4 or 8), block_size={bs}, K={k}, N={n} are not valid")
    nblk = -(-k // bs)
    q = b.inits.get(b.inp(1))
    sc = b.inits.get(b.inp(2))
    zname, gname, bias = b.inp(3, False), b.inp(4, False), b.inp(5, False)
    zp = b.inits.get(zname) if zname else None
    gi = b.inits.get(gname) if gname else None
    if q is None or sc is None or (zname and zp is None) or (gname and gi is None):
        raise b.fail("B, scales, zero_points and g_idx must be constants")
    q = np.asarray(q)
    if q.dtype != np.uint8 or q.size != n * nblk * (bs * bits // 8):
        raise b.fail(f"B is {q.dtype.name}{list(q.shape)}; expected uint8 [{n}, {nblk}, "
                     f"{bs * bits // 8}] for K={k}, N={n}, block_size={bs}, bits={bits}")
    sc = np.asarray(sc, np.float32).reshape(-1)
    if sc.size != n * nblk:
        raise b.fail(f"scales has {sc.size} values; expected N * blocks = {n * nblk}")
    from qrt.ops.quant import check_scale
    check_scale(sc, f"{b.label}: {b.node.label()}", "scales")
    codes = _unpack_bits(q.reshape(n, -1), bits, nblk * bs).reshape(n, nblk * bs)[:, :k]
    if zp is None:
        z = np.full((n, nblk), float(1 << (bits - 1)), np.float32)
    elif np.asarray(zp).dtype == np.uint8:
        z = _unpack_bits(np.asarray(zp).reshape(n, -1), bits, nblk).astype(np.float32)
    else:
        z = np.asarray(zp, np.float32).reshape(-1)
        if z.size != n * nblk:
            raise b.fail(f"zero_points has {z.size} values; expected {n * nblk}")
        z = z.reshape(n, nblk)
    if gi is not None and zp is not None and np.asarray(zp).dtype == np.uint8:
        # onnxruntime's kernel ignores packed zero points when g_idx is given (it takes 2^(bits-1))
        # while its documentation indexes them by g_idx: no meaning to follow with confidence
        raise b.fail("g_idx together with packed uint8 zero_points is not supported (give the "
                     "zero points as floats)")
    if gi is not None:
        blk = np.asarray(gi).reshape(-1).astype(np.int64)
        if blk.size != k or blk.min(initial=0) < 0 or blk.max(initial=0) >= nblk:
            raise b.fail(f"g_idx must hold {k} block indices in [0, {nblk})")
    else:
        blk = np.arange(k) // bs
    w = (codes.astype(np.float32) - z[:, blk]) * sc.reshape(n, nblk)[:, blk]  # [N, K]
    wt = b.const("w", np.ascontiguousarray(w.T.astype(np.float32)))
    out = b.node.outputs[0]
    y = b.emit("MatMul", [b.inp(0), wt], None if bias else [out], main=True)
    if bias:
        b.emit("Add", [y, bias], [out])


def _qdq(b: _Builder, op: str):
    node = b.node
    b.nodes.append(ir.Node(op, list(node.inputs), list(node.outputs), dict(node.attrs), node.name, ""))


EXPANSIONS = {
    "QLinearAdd": lambda b, r: _binary(b, "Add"),
    "QLinearMul": lambda b, r: _binary(b, "Mul"),
    "QLinearSigmoid": lambda b, r: _unary(b, "Sigmoid"),
    "QLinearLeakyRelu": lambda b, r: _unary(b, "LeakyRelu",
                                            alpha=float(b.node.attrs.get("alpha", 0.01))),
    "QLinearGlobalAveragePool": lambda b, r: _pool(b, "GlobalAveragePool", r),
    "QLinearAveragePool": lambda b, r: _pool(b, "AveragePool", r),
    "QLinearConcat": lambda b, r: _concat(b),
    "QLinearSoftmax": _softmax,
    "QLinearWhere": lambda b, r: _where(b),
    "QGemm": lambda b, r: _qgemm(b),
    "DynamicQuantizeMatMul": lambda b, r: _dynamic_quantize_matmul(b),
    "MatMulIntegerToFloat": lambda b, r: _matmul_integer_to_float(b),
    "DynamicQuantizeLSTM": lambda b, r: _dynamic_quantize_lstm(b),
    "MatMulNBits": lambda b, r: _matmul_nbits(b),
    "QuantizeLinear": lambda b, r: _qdq(b, "QuantizeLinear"),
    "DequantizeLinear": lambda b, r: _qdq(b, "DequantizeLinear"),
}


def expandable(node: ir.Node) -> bool:
    return node.domain == DOMAIN and node.op_type in EXPANSIONS


def expand(node: ir.Node, inits: dict, opset: int, rank: int | None, label: str) -> list[ir.Node]:
    """The standard nodes for contrib `node` (new constants go into `inits`). `rank`: the rank of
    its first input when the model declares it (channels_last pools and Softmax need it)."""
    if not node.outputs or not node.outputs[0]:
        raise ModelLoadError(f"{label}: {node.label()} (domain {DOMAIN}) has no output")
    b = _Builder(node, inits, opset, label)
    EXPANSIONS[node.op_type](b, rank)
    return b.nodes
