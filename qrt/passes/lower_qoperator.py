"""Pass 5: QOperator-format ops with constant weights run on the same fused integer ops.

QLinearConv -> qrt.QConv, QLinearMatMul -> qrt.QGemm (or qrt.QMatMulAct when B is an activation),
ConvInteger -> qrt.QConv with int32 output, MatMulInteger -> qrt.QGemm with int32 output (the
DynamicQuantizeLinear + MatMulInteger/ConvInteger + Cast + Mul pattern is caught before, by
dynamic_quant)."""
from __future__ import annotations

import numpy as np

from qrt import ir
from qrt.passes import _linear as L
from qrt.passes import _util as U


def _c(graph, node, k):
    return U.const(graph, node.inputs[k]) if len(node.inputs) > k and node.inputs[k] else None


def _need(graph, node, k, what):
    if len(node.inputs) <= k or not node.inputs[k]:
        return None
    v = U.const(graph, node.inputs[k])
    if v is None:
        raise L.Decline(f"{what} not constant")
    return v


def _lower(graph, node):
    op = node.op_type
    if op in ("QLinearConv", "QLinearMatMul"):
        xs, xz = _need(graph, node, 1, "activation scale"), _need(graph, node, 2, "activation zero point")
        w = _c(graph, node, 3)
        ws, wz = _need(graph, node, 4, "weight scale"), _need(graph, node, 5, "weight zero point")
        ys, yz = _need(graph, node, 6, "output scale"), _need(graph, node, 7, "output zero point")
        if xs.size != 1 or ys.size != 1:
            raise L.Decline("activation quantized per axis")
        out_qp = ir.QuantParams(ys, yz, None, None, yz.dtype)
        if w is None:
            if op == "QLinearConv":
                raise L.Decline("weight is not constant")
            if ws.size != 1:
                raise L.Decline("B quantized per column and not constant")
            U.use_qrt_domain(graph)
            sa, sb, sy = (np.float64(np.float32(U.scalar(v))) for v in (xs, ws, ys))
            kern = "qlinear_matmul_activations"
            attrs = {"a_scale": float(sa), "a_zp": int(U.scalar(xz)), "b_scale": float(sb),
                     "b_zp": int(U.scalar(wz)), "out_dtype": np.dtype(yz.dtype).name,
                     "y_zp": int(U.scalar(yz)), "multiplier": np.array([sa * sb / sy], np.float32),
                     "kernel": kern}
            new = ir.Node("QMatMulAct", [node.inputs[0], node.inputs[3]], list(node.outputs), attrs,
                          node.name, "qrt")
            new.meta.update(covers=U.covers(node), precision="int8", kernel=kern)
            return new
        kind = "Conv" if op == "QLinearConv" else "MatMul"
        wqp = ir.QuantParams(ws, wz, (0 if kind == "Conv" else 1) if ws.size > 1 else None, None, w.dtype)
        w_arr, w_zp, w_scale = L.arrange_weight(kind, node, w, wqp)
        b = _c(graph, node, 8)
        if len(node.inputs) > 8 and node.inputs[8] and b is None:
            raise L.Decline("bias is not constant")
        return L.make_node(graph, kind, node, node.inputs[0], w_arr, w_zp, w_scale,
                           float(np.float32(U.scalar(xs))), int(U.scalar(xz)), xz.dtype,
                           node.outputs[0], out_qp, bias_int=None if b is None else b.astype(np.int32),
                           covers=U.covers(node))
    # ConvInteger / MatMulInteger: raw int32 accumulators
    w = _c(graph, node, 1)
    if w is None:
        raise L.Decline("weight is not constant")
    xz = _need(graph, node, 2, "activation zero point")
    wz = _need(graph, node, 3, "weight zero point")
    if xz is not None and xz.size != 1:
        raise L.Decline("activation zero point per axis")
    if wz is None:
        wz = np.zeros((), w.dtype)
    kind = "Conv" if op == "ConvInteger" else "MatMul"
    wqp = ir.QuantParams(np.ones(wz.shape, np.float32), wz, (0 if kind == "Conv" else 1)
                         if wz.size > 1 else None, None, w.dtype)
    w_arr, w_zp, w_scale = L.arrange_weight(kind, node, w, wqp)
    xdt = xz.dtype if xz is not None else U.dtype_of(graph, node.inputs[0]) or np.dtype(np.uint8)
    return L.make_node(graph, kind, node, node.inputs[0], w_arr, w_zp, w_scale, None,
                       0 if xz is None else int(U.scalar(xz)), xdt, node.outputs[0],
                       out_int32=True, covers=U.covers(node))


def run(graph: ir.Graph, opts=None) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node.domain or node.op_type not in ("QLinearConv", "QLinearMatMul", "ConvInteger",
                                               "MatMulInteger"):
            continue
        try:
            new = _lower(graph, node)
        except L.Decline as e:
            node.meta["reason"] = str(e)
            node.meta["precision"] = "int8"
            continue
        L.replace(graph, [node], new)
        changed = True
    if changed:
        U.remove_dead(graph)
    return changed
