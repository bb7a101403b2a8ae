"""Pass 0: the checks the quantized ops make at run time, made on their constant parameters at load.

The later passes fold Q/DQ nodes and lower QOperator ops into qrt's fused integer ops, which read
the parameters as plain numbers: a zero, negative, NaN or infinite scale, a zero point of another
type than its data, a per-axis scale of the wrong length or a conv weight that does not fit its
input would otherwise run and give numbers, where the unoptimised graph raises. So every
QuantizeLinear, DequantizeLinear, QLinearConv, QLinearMatMul, ConvInteger and MatMulInteger with
constant parameters is checked here with the reference ops' own checks (qrt.ops.quant), and a Conv
with a known input shape and constant weight gets the reference conv's geometry check. The error
names the node. Parameters that are not constants are checked by the op when it runs.
"""
from __future__ import annotations

import numpy as np

from qrt import ir
from qrt.errors import InvalidQuantParamsError, ModelLoadError
from qrt.ops import quant as Q
from qrt.passes import _util as U

_INT8 = (np.dtype(np.uint8), np.dtype(np.int8))


def _inp(node, k):
    return node.inputs[k] if len(node.inputs) > k and node.inputs[k] else ""


def _known_shape(graph, name):
    """The shape of a constant or of a graph input with fixed dims, else None. Inferred or
    declared shapes of intermediate values are not trusted here: a stale value_info in the file
    (or 0 written for "unknown") must not make a valid model fail to load. Those values are
    checked by the ops when they run."""
    if not name:
        return None
    if name in graph.initializers:
        return tuple(graph.initializers[name].shape)
    for t in graph.inputs:
        if t.name == name and t.shape is not None and all(
                isinstance(d, (int, np.integer)) and d > 0 for d in t.shape):
            return tuple(int(d) for d in t.shape)
    return None


def _data_dtype(graph, name):
    """The element type of a constant, a graph input, or the output of a QuantizeLinear (its
    zero point's or output_dtype's type); None when only inference could tell (see above)."""
    if not name:
        return None
    if name in graph.initializers:
        return graph.initializers[name].dtype
    for t in graph.inputs:
        if t.name == name:
            return None if t.dtype is None else np.dtype(t.dtype)
    prod = U.producers_cached(graph).get(name)
    if prod is not None and prod.op_type == "QuantizeLinear" and not prod.domain:
        out_dt = int(prod.attrs.get("output_dtype", 0) or 0)
        if out_dt:
            try:
                return Q._dtype_of_onnx(out_dt, "QuantizeLinear", "output_dtype")
            except Exception:
                return None
        z = U.const(graph, _inp(prod, 2)) if _inp(prod, 2) else None
        return np.asarray(z).dtype if z is not None else np.dtype(np.uint8)
    return None


def _qdq(graph, node, label):
    x, s, z = _inp(node, 0), _inp(node, 1), _inp(node, 2)
    scale = U.const(graph, s) if s else None
    zp = U.const(graph, z) if z else None
    if scale is None:
        return
    if node.op_type == "DequantizeLinear":
        dtype = _data_dtype(graph, x)
    else:
        out_dt = int(node.attrs.get("output_dtype", 0) or 0)
        dtype = Q._dtype_of_onnx(out_dt, label, "output_dtype") if out_dt else None
    if dtype is None and zp is not None:
        dtype = np.asarray(zp).dtype
    if dtype is None:
        Q.check_scale(scale, label)
        return
    Q.check_quant_params(label, scale, zp, dtype, _known_shape(graph, x),
                         int(node.attrs.get("axis", 1)), int(node.attrs.get("block_size", 0) or 0))


def _pair(graph, node, label, ks, kz, data, what, per=None):
    """Scale input ks (or none) and zero point kz of tensor `data` ('x', 'w', ...): scale positive
    and finite, zero point of data's type; `per`: the allowed lengths of a per-axis pair."""
    s = U.const(graph, _inp(node, ks)) if ks is not None and _inp(node, ks) else None
    z = U.const(graph, _inp(node, kz)) if _inp(node, kz) else None
    if s is not None:
        Q.check_scale(s, label, f"{what}_scale")
    dt = _data_dtype(graph, data) if data else None
    if z is not None and dt is not None:
        Q.check_zero_point(z, dt, label, f"{what}_zero_point")
    for name, v in ((f"{what}_scale", s), (f"{what}_zero_point", z)):
        if v is not None and per is not None and np.asarray(v).size not in per:
            raise InvalidQuantParamsError(
                f"{label}: {name} has {np.asarray(v).size} values; expected one of {sorted(per)}")


def _qlinear(graph, node, label):
    op = node.op_type
    w = U.const(graph, _inp(node, 3))
    m = None if w is None else (w.shape[0] if op == "QLinearConv" else w.shape[-1])
    per = None if m is None else {1, m}
    _pair(graph, node, label, 1, 2, _inp(node, 0), "x" if op == "QLinearConv" else "a", {1})
    _pair(graph, node, label, 4, 5, _inp(node, 3), "w" if op == "QLinearConv" else "b", per)
    _pair(graph, node, label, 6, 7, "", "y", {1})
    z = U.const(graph, _inp(node, 7)) if _inp(node, 7) else None
    if z is not None and np.asarray(z).dtype not in _INT8:
        raise InvalidQuantParamsError(
            f"{label}: y_zero_point has dtype {np.asarray(z).dtype.name}; it must be uint8 or int8")
    b = U.const(graph, _inp(node, 8)) if op == "QLinearConv" and _inp(node, 8) else None
    if b is not None and np.asarray(b).dtype != np.int32:
        raise InvalidQuantParamsError(
            f"{label}: bias B has dtype {np.asarray(b).dtype.name}; it must be int32")
    if op == "QLinearConv":
        _conv(graph, node, label, _inp(node, 0), w)


def _integer(graph, node, label):
    w = U.const(graph, _inp(node, 1))
    m = None if w is None else (w.shape[0] if node.op_type == "ConvInteger" else w.shape[-1])
    _pair(graph, node, label, None, 2, _inp(node, 0), "x" if node.op_type == "ConvInteger" else "a")
    _pair(graph, node, label, None, 3, _inp(node, 1),
          "w" if node.op_type == "ConvInteger" else "b", None if m is None else {1, m})
    if node.op_type == "ConvInteger":
        _conv(graph, node, label, _inp(node, 0), w)


def _weight_of(graph, name):
    """A conv weight's constant value, also behind a DequantizeLinear of a constant."""
    w = U.const(graph, name)
    if w is not None:
        return w
    prod = U.producers_cached(graph).get(name)
    if prod is not None and prod.op_type == "DequantizeLinear" and not prod.domain:
        return U.const(graph, prod.inputs[0])
    return None


def _conv(graph, node, label, x, w):
    if w is None:
        return
    a = node.attrs
    xs = _known_shape(graph, x)
    try:
        if xs is not None:
            Q._conv_geometry(xs, w.shape, a.get("auto_pad", "NOTSET"), a.get("dilations"),
                             a.get("group", 1), a.get("kernel_shape"), a.get("pads"),
                             a.get("strides"), node.op_type)
            return
        Q._check_conv_attrs(a.get("strides"), a.get("dilations"), a.get("pads"), node.op_type)
    except InvalidQuantParamsError as e:
        raise ModelLoadError(f"{label}: {e}") from None
    if w.ndim < 3:
        raise ModelLoadError(f"{label}: weight has shape {list(w.shape)}; a conv weight has "
                             "rank >= 3 (M, C/group, kernel...)")


def run(graph: ir.Graph, opts=None) -> bool:
    for node in graph.nodes:
        if node.domain:
            continue
        label = f"{graph.source}: {node.label()}"
        op = node.op_type
        if op in ("QuantizeLinear", "DequantizeLinear"):
            _qdq(graph, node, label)
        elif op in ("QLinearConv", "QLinearMatMul"):
            _qlinear(graph, node, label)
        elif op in ("ConvInteger", "MatMulInteger"):
            _integer(graph, node, label)
        elif op == "Conv" and len(node.inputs) > 1:
            _conv(graph, node, label, _inp(node, 0), _weight_of(graph, _inp(node, 1)))
    return False
