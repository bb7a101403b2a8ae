"""Pass 7: dynamic quantization.

(a) onnxruntime quantize_dynamic graphs: DynamicQuantizeLinear(x) -> (xq, sx, zx);
    MatMulInteger/ConvInteger(xq, Wq, zx, zw) -> Cast(float) -> Mul(., Mul(sx, sw)) (-> Add(bias))
    becomes one qrt.QGemm/QConv that reads xq, sx, zx (quantized once per call by the
    DynamicQuantizeLinear, shared by every reader) and dequantizes in the epilogue:
    float32(acc) * float32(sx * sw[n]) (+ bias), the same float32 operations as the source graph.
(b) with PassOptions.dynamic_quantization: float MatMul/Gemm/Conv with constant weights run with
    int8 weights (symmetric, per output channel: s = max|w| / 127) and activations quantized per call
    to uint8 by DynamicQuantizeLinear (spec formula), float32 output plus float bias.
"""
from __future__ import annotations

import numpy as np

from qrt import ir
from qrt.ops import resolve
from qrt.passes import _linear as L
from qrt.passes import _util as U


def _other(node, name):
    return [i for i in node.inputs if i != name]


def _ort_pattern(graph, node, prods, cons):
    """node: MatMulInteger/ConvInteger. Returns (new node, replaced nodes) or raises Decline."""
    dql = prods.get(node.inputs[0])
    if dql is None or dql.op_type != "DynamicQuantizeLinear":
        raise L.Decline("not a DynamicQuantizeLinear pattern")
    xq, xs, xz = dql.outputs
    if len(node.inputs) < 3 or node.inputs[2] != xz:
        raise L.Decline("zero point is not the DynamicQuantizeLinear's")
    w = U.const(graph, node.inputs[1])
    if w is None:
        raise L.Decline("weight is not constant")
    wz = U.const(graph, node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else np.zeros((), w.dtype)
    if wz is None:
        raise L.Decline("weight zero point not constant")
    cast = U.single_consumer(graph, node.outputs[0], cons)
    if cast is None or cast.op_type != "Cast" or cast.attrs.get("to") != 1:
        raise L.Decline("int32 result not cast to float")
    mul = U.single_consumer(graph, cast.outputs[0], cons)
    if mul is None or mul.op_type != "Mul":
        raise L.Decline("no scale Mul after the Cast")
    sname = _other(mul, cast.outputs[0])
    smul = prods.get(sname[0]) if len(sname) == 1 else None
    if smul is None or smul.op_type != "Mul" or xs not in smul.inputs:
        raise L.Decline("scale is not sx * sw")
    ws = U.const(graph, _other(smul, xs)[0]) if len(_other(smul, xs)) == 1 else None
    if ws is None:
        raise L.Decline("weight scale not constant")
    kind = "Conv" if node.op_type == "ConvInteger" else "MatMul"
    wqp = ir.QuantParams(np.asarray(ws, np.float32), wz, (0 if kind == "Conv" else 1)
                         if ws.size > 1 or wz.size > 1 else None, None, w.dtype)
    if ws.size > 1 and wz.size == 1:
        wqp.zero_point = np.broadcast_to(wz.reshape(-1), (ws.size,))
    w_arr, w_zp, w_scale = L.arrange_weight(kind, node, w, wqp)
    n = w_zp.shape[0]
    out, done, bias_f = mul.outputs[0], [node, cast, mul], None
    add = U.single_consumer(graph, out, cons)
    if add is not None and add.op_type == "Add" and len(_other(add, out)) == 1:
        b = U.const(graph, _other(add, out)[0])
        if b is not None and b.dtype == np.float32 and b.size == n and (
                (kind == "MatMul" and b.ndim == 1) or (kind == "Conv" and b.reshape(-1).size == n
                                                       and b.shape[-1] in (1, n) and (b.ndim == 1 or b.shape[1] == n))):
            bias_f, out = b.reshape(-1), add.outputs[0]
            done.append(add)
    covers = [smul] if U.only_reader_is(graph, smul.outputs[0], mul, cons) else []
    new = L.make_node(graph, kind, node, xq, w_arr, w_zp, w_scale, None, None, np.uint8, out,
                      dyn_inputs=(xs, xz), bias_f=bias_f, covers=U.covers(*covers, *done))
    new.attrs["w_scale"] = np.broadcast_to(np.asarray(ws, np.float32).reshape(-1), (n,)).copy()
    dql.meta.update(precision="int8", kernel="dynamic_quantize_u8")
    return new, done + covers


def _dynamic_float(graph, node, dql_for, prods, cons):
    kind = node.op_type
    w = U.const(graph, node.inputs[1])
    if w is None or w.dtype != np.float32:
        raise L.Decline(node.meta.get("reason") or "weight is not constant")
    if kind == "ConvTranspose":
        raise L.Decline("dynamic quantization of ConvTranspose not supported")
    if kind == "Gemm" and node.attrs.get("transA", 0):
        raise L.Decline("Gemm with transA=1")
    if kind == "MatMul" and w.ndim != 2:
        raise L.Decline(f"MatMul weight of rank {w.ndim}")
    ch_axis = 0 if kind == "Conv" or (kind == "Gemm" and node.attrs.get("transB", 0)) else 1
    red = tuple(a for a in range(w.ndim) if a != ch_axis)
    amax = np.max(np.abs(w), axis=red).astype(np.float64)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    shp = [1] * w.ndim
    shp[ch_axis] = -1
    wq = np.clip(np.rint(w / scale.reshape(shp)), -127, 127).astype(np.int8)
    qp = ir.QuantParams(scale, np.zeros(scale.shape, np.int8), ch_axis, None, np.int8)
    w_arr, w_zp, w_scale = L.arrange_weight(kind, node, wq, qp)
    n = w_zp.shape[0]
    alpha = float(node.attrs.get("alpha", 1.0)) if kind == "Gemm" else 1.0
    beta = float(node.attrs.get("beta", 1.0)) if kind == "Gemm" else 1.0
    bias_f = None
    if len(node.inputs) > 2 and node.inputs[2]:
        b = U.const(graph, node.inputs[2])
        if b is None or b.size not in (1, n):
            raise L.Decline("bias is not constant" if b is None else "bias is not per output channel")
        bias_f = (np.broadcast_to(b.reshape(-1), (n,)) * beta).astype(np.float32)
    x = node.inputs[0]
    if x not in dql_for:
        names = [U.fresh(graph, x + "_dynq"), U.fresh(graph, x + "_dyns"), U.fresh(graph, x + "_dynz")]
        dq = ir.Node("DynamicQuantizeLinear", [x], names, {}, U.fresh(graph, x + "_DynamicQuantize"))
        dq.meta.update(precision="int8", kernel="dynamic_quantize_u8")
        graph.nodes.insert(graph.nodes.index(node), dq)
        dql_for[x] = names
    xq, xs, xz = dql_for[x]
    new = L.make_node(graph, kind, node, xq, w_arr, w_zp, w_scale, None, None, np.uint8,
                      node.outputs[0], dyn_inputs=(xs, xz), bias_f=bias_f, covers=U.covers(node),
                      alpha=alpha)
    return new, [node]


def run(graph: ir.Graph, opts=None) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node not in graph.nodes or node.domain or node.op_type not in ("MatMulInteger", "ConvInteger"):
            continue
        try:
            new, old = _ort_pattern(graph, node, graph.producers(), graph.consumers())
        except L.Decline:
            continue
        L.replace(graph, old, new)
        changed = True
    if opts is not None and getattr(opts, "dynamic_quantization", False) and \
            resolve("DynamicQuantizeLinear", "", graph.opset("")) is not None:
        dql_for: dict[str, list[str]] = {}
        for node in list(graph.nodes):
            if node.domain or node.op_type not in U.LINEAR_OPS or node not in graph.nodes:
                continue
            try:
                new, old = _dynamic_float(graph, node, dql_for, graph.producers(), graph.consumers())
            except L.Decline as e:
                node.meta["reason"] = str(e)
                continue
            L.replace(graph, old, new)
            changed = True
    if changed:
        U.toposort(graph)
        U.remove_dead(graph)
    return changed
