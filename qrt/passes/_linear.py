"""Building the fused integer linear ops (qrt.QGemm / QConv / QConvTranspose) from parts; shared by
fuse_qdq, lower_qoperator and dynamic_quant. Not a pass itself."""
from __future__ import annotations

import numpy as np

from qrt import ir
from qrt.kernels import ref
from qrt.passes import _util as U

FUSED_OP = {"Conv": "QConv", "ConvTranspose": "QConvTranspose", "MatMul": "QGemm", "Gemm": "QGemm"}
INT8 = (np.dtype(np.int8), np.dtype(np.uint8))
_SHORT = {np.dtype(np.int8): "s8", np.dtype(np.uint8): "u8"}


class Decline(Exception):
    """Raised with the reason a node stays in float."""


def arrange_weight(kind: str, node: ir.Node, w: np.ndarray, qp: ir.QuantParams):
    """Weight as the fused op wants it plus (N,) int32 zero points and (N,) float64 scales.
    Conv: (M, C/g, *k); ConvTranspose: (C, M/g, *k); MatMul/Gemm: (N, K)."""
    if np.dtype(w.dtype) not in INT8:
        raise Decline(f"{w.dtype} weights (only int8/uint8 have an integer kernel)")
    if qp.block_size:
        raise Decline(f"per-group (blocked, block_size={qp.block_size}) weights: no group kernel, "
                      "dequantized offline to float")
    group = int(node.attrs.get("group", 1))
    if kind == "Conv":
        ch_axis, n = 0, w.shape[0]
    elif kind == "ConvTranspose":
        ch_axis, n = 1, w.shape[1] * group
    elif kind == "MatMul":
        if w.ndim != 2:
            raise Decline(f"MatMul weight of rank {w.ndim} (only 2-D constant weights fuse)")
        ch_axis, n = 1, w.shape[1]
    else:
        if node.attrs.get("transA", 0):
            raise Decline("Gemm with transA=1")
        tb = node.attrs.get("transB", 0)
        ch_axis, n = (0 if tb else 1), (w.shape[0] if tb else w.shape[1])
    scale = np.asarray(qp.scale, np.float64).reshape(-1)
    zp = np.asarray(qp.zero_point).astype(np.int64).reshape(-1)
    if scale.size > 1:
        axis = qp.axis if qp.axis is not None else 1
        if axis < 0:
            axis += w.ndim
        if axis != ch_axis:
            raise Decline(f"weight quantized along axis {qp.axis}, not the output-channel axis")
        if kind == "ConvTranspose" and group > 1:
            raise Decline("per-channel ConvTranspose weights with group > 1")
    if np.any(scale <= 0):
        raise Decline("weight scale not positive")
    scale = np.broadcast_to(scale, (n,)).copy()
    zp = np.broadcast_to(zp, (n,)).astype(np.int32)
    if kind in ("MatMul", "Gemm") and ch_axis == 1:
        w = np.ascontiguousarray(w.T)
    return np.ascontiguousarray(w), zp, scale


def quantize_bias(bias_f: np.ndarray, acc_scale: np.ndarray) -> np.ndarray:
    """Float bias -> int32 at scale sx*sw[n], round half to even, saturated."""
    q = np.rint(np.asarray(bias_f, np.float64).reshape(-1) / acc_scale)
    return np.clip(q, -(2 ** 31), 2 ** 31 - 1).astype(np.int32)


def int_bias_from(graph, name, acc_scale, n, beta=1.0, alpha=1.0):
    """int32 bias at acc_scale (which includes Gemm's alpha) for a float bias term beta * bias:
    DQ(const int32) at acc_scale / alpha with beta == alpha (QGemm's form) or both 1 is taken as
    is; any other constant is dequantized and requantized. Returns (int32 (N,) or None)."""
    if not name:
        return None
    prod = U.producers_cached(graph).get(name)
    if prod is not None and prod.op_type == "DequantizeLinear" and U.is_const(graph, prod.inputs[0]):
        qp = U.dq_params(graph, prod)
        b = U.const(graph, prod.inputs[0])
        if qp is not None and b.dtype == np.int32 and b.size == n and beta == alpha \
                and not np.any(qp.zero_point) and np.allclose(
                    np.broadcast_to(np.asarray(qp.scale, np.float64).reshape(-1), (n,)) * alpha,
                    acc_scale, rtol=1e-6, atol=0):
            return b.reshape(-1).astype(np.int32)
        if qp is None:
            raise Decline("bias quantization parameters not constant")
        bf = U.eval_op(graph, "DequantizeLinear", [b, U.const(graph, prod.inputs[1]),
                                                   U.const(graph, prod.inputs[2]) if len(prod.inputs) > 2
                                                   and prod.inputs[2] else None],
                       {"axis": prod.attrs.get("axis", 1)})[0]
    else:
        bf = U.const(graph, name)
        if bf is None:
            raise Decline("bias is not constant")
    bf = np.asarray(bf, np.float64)
    if bf.size == 1:
        bf = np.broadcast_to(bf.reshape(-1), (n,))
    elif bf.size != n:
        raise Decline(f"bias of shape {list(bf.shape)} is not one value per output channel")
    return quantize_bias(bf.reshape(-1) * beta, acc_scale)


def activation_after(graph, value, cons):
    """A Relu or Clip (constant bounds) that alone reads `value`: (node, lo_f, hi_f) or None."""
    nxt = U.single_consumer(graph, value, cons)
    if nxt is None or nxt.domain or nxt.inputs[0] != value:
        return None
    if nxt.op_type == "Relu":
        return nxt, 0.0, None
    if nxt.op_type == "Clip":
        if len(nxt.inputs) > 1 or graph.opset("") >= 11:
            lo = U.const(graph, nxt.inputs[1]) if len(nxt.inputs) > 1 and nxt.inputs[1] else None
            hi = U.const(graph, nxt.inputs[2]) if len(nxt.inputs) > 2 and nxt.inputs[2] else None
            if (len(nxt.inputs) > 1 and nxt.inputs[1] and lo is None) or (
                    len(nxt.inputs) > 2 and nxt.inputs[2] and hi is None):
                return None
            lo = None if lo is None else float(U.scalar(lo))
            hi = None if hi is None else float(U.scalar(hi))
        else:
            lo, hi = nxt.attrs.get("min"), nxt.attrs.get("max")
        return nxt, lo, hi
    return None


def quantize_bound(v, scale, zp, dtype) -> int:
    """The code QuantizeLinear gives the float `v` (so clamping commutes with quantization)."""
    return int(ref.quantize(np.array([v], np.float32), np.float32(scale), zp, dtype)[0])


def output_q(graph, value, cons):
    """A per-tensor QuantizeLinear (constant params, 8-bit) that alone reads `value`."""
    q = U.single_consumer(graph, value, cons)
    if q is None or q.op_type != "QuantizeLinear" or q.domain or q.inputs[0] != value:
        return None
    qp = U.dq_params(graph, q)
    if not U.per_tensor(qp) or np.dtype(qp.dtype) not in INT8:
        return None
    if q.attrs.get("saturate", 1) != 1 and False:
        return None
    return q, qp


def kernel_name(kind, node, x_dtype, w_dtype, per_channel, out_dtype, dynamic=False):
    group = int(node.attrs.get("group", 1)) if node is not None else 1
    base = {"Conv": "conv", "ConvTranspose": "conv_transpose", "MatMul": "matmul",
            "Gemm": "gemm"}[kind]
    if kind == "Conv" and group > 1:
        base = "depthwise_conv" if node is not None and group == node.meta.get("_channels") else "group_conv"
    name = f"qlinear_{base}_{_SHORT.get(np.dtype(x_dtype), 'u8')}{_SHORT[np.dtype(w_dtype)]}_" \
           f"{'per_channel' if per_channel else 'per_tensor'}"
    if dynamic:
        name += "_dynamic"
    if np.dtype(out_dtype) == np.float32:
        name += "_f32out"
    return name


def make_node(graph, kind, src: ir.Node, x_name, w_arr, w_zp, w_scale, x_scale, x_zp, x_dtype,
              out_name, out_qp=None, lo_f=None, hi_f=None, bias_int=None, bias_f=None,
              dyn_inputs=None, covers=(), alpha=1.0, out_int32=False, w_dtype=None):
    """The fused node. x_scale/x_zp: per-tensor constants (static) or None with dyn_inputs =
    (scale value, zero point value) computed per call. out_qp: QuantParams of the output Q (integer
    output) or None (float32 output, or raw int32 with out_int32)."""
    U.use_qrt_domain(graph)
    n = w_zp.shape[0]
    attrs = {"x_scale": None if x_scale is None else float(x_scale),
             "x_zp": 0 if x_zp is None else int(x_zp), "w_scale": (w_scale * alpha).astype(np.float32),
             "state": {}}
    if dyn_inputs is None and x_scale is None and not out_int32:
        raise Decline("activation scale not constant")
    acc_scale = None if x_scale is None else np.float64(np.float32(x_scale)) * w_scale * alpha
    if out_int32:
        attrs["out_dtype"] = "int32"
    elif out_qp is not None:
        sy = np.float64(np.float32(U.scalar(out_qp.scale)))
        zy = int(U.scalar(out_qp.zero_point))
        attrs.update(out_dtype=np.dtype(out_qp.dtype).name, y_zp=zy,
                     multiplier=(acc_scale / sy).astype(np.float32))
        if lo_f is not None:
            attrs["lo"] = quantize_bound(lo_f, sy, zy, out_qp.dtype)
        if hi_f is not None:
            attrs["hi"] = quantize_bound(hi_f, sy, zy, out_qp.dtype)
    else:
        attrs.update(out_dtype="float32", lo_f=lo_f, hi_f=hi_f)
        if acc_scale is not None:
            attrs["scale"] = acc_scale.astype(np.float32)
    if kind in ("Conv", "ConvTranspose"):
        for a in ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad",
                  "output_padding", "output_shape"):
            if a in src.attrs:
                attrs[a] = src.attrs[a]
    if kind == "Conv" and int(src.attrs.get("group", 1)) > 1 and w_arr.shape[1] == 1:
        src.meta["_channels"] = int(src.attrs.get("group", 1))
    per_channel = bool(np.unique(w_scale).size > 1 or np.unique(w_zp).size > 1)
    kern = kernel_name(kind, src, x_dtype, w_dtype or w_arr.dtype, per_channel,
                       "int32" if out_int32 else attrs["out_dtype"], dyn_inputs is not None)
    src.meta.pop("_channels", None)
    attrs["kernel"] = kern
    # K guard: the fused op splits the accumulation beyond max_exact_k (int32 cannot overflow).
    k = int(np.prod(w_arr.shape[1:])) if kind != "ConvTranspose" else int(w_arr.shape[0])
    w_name = U.add_const(graph, (src.name or kind) + "_w_int", w_arr)
    zp_name = U.add_const(graph, (src.name or kind) + "_w_zp", w_zp.astype(np.int32))
    b_name = U.add_const(graph, (src.name or kind) + "_bias_i32", bias_int) if bias_int is not None else ""
    ins = [x_name, w_name, zp_name, b_name]
    if dyn_inputs is not None or bias_f is not None:
        ins += list(dyn_inputs) if dyn_inputs is not None else ["", ""]
        if bias_f is not None:
            ins.append(U.add_const(graph, (src.name or kind) + "_bias_f", np.asarray(bias_f, np.float32)))
    node = ir.Node(FUSED_OP[kind], ins, [out_name], attrs, src.name, "qrt")
    node.meta.update(covers=list(covers), precision="int8", kernel=kern)
    if k > ref.max_exact_k():
        node.meta["note"] = (f"K={k} > {ref.max_exact_k()}: int32 accumulation split into chunks "
                             "summed in int64")
    return node


def replace(graph, old_nodes, new_node):
    """Put `new_node` where the first of `old_nodes` was and drop the others that nothing else reads
    (dead-code removal later drops DQ/Q nodes left without readers)."""
    idx = min(graph.nodes.index(n) for n in old_nodes if n in graph.nodes)
    for n in old_nodes:
        if n in graph.nodes:
            graph.nodes.remove(n)
    graph.nodes.insert(idx, new_node)
