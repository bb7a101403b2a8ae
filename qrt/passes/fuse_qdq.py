"""Pass 4: DQ(x) -> Conv | ConvTranspose | MatMul | Gemm (-> Relu | Clip) (-> Q) becomes one integer op.

- x: a per-tensor DequantizeLinear with constant scale/zero point of uint8/int8 data;
- weight: DequantizeLinear of a constant int8/uint8 tensor, per-tensor or per output channel;
- bias: int32 at sx*sw (taken as is when its DQ scale matches, else requantized, round half even);
- Relu/Clip fold into the output clamp (quantized domain when a Q follows, float otherwise);
- with a per-tensor QuantizeLinear after it the op writes uint8/int8, else float32.
MatMul of two quantized activations (attention) becomes qrt.QMatMulAct.
Conv/MatMul/Gemm that stay float get `meta["reason"]`.
"""
from __future__ import annotations

import numpy as np

from qrt import ir
from qrt.passes import _linear as L
from qrt.passes import _util as U


def _act_dq(graph, name, prods):
    """(DQ node, QuantParams) when `name` is a per-tensor constant-param DQ of 8-bit data."""
    dq = prods.get(name)
    if dq is None or dq.op_type != "DequantizeLinear" or dq.domain:
        raise L.Decline("input is not quantized (no DequantizeLinear before it)")
    qp = U.dq_params(graph, dq)
    if qp is None:
        raise L.Decline("activation scale not constant")
    if not U.per_tensor(qp):
        raise L.Decline("activation quantized per axis")
    if np.dtype(qp.dtype) not in L.INT8:
        raise L.Decline(f"{np.dtype(qp.dtype).name} activations (only uint8/int8 fuse)")
    return dq, qp


def _tail(graph, value, cons):
    """Optional Relu/Clip then optional Q after the float output `value`.
    Returns (nodes consumed, output name, out QuantParams or None, lo_f, hi_f)."""
    nodes, lo_f, hi_f, out = [], None, None, value
    act = L.activation_after(graph, value, cons)
    if act is not None:
        nodes.append(act[0])
        lo_f, hi_f, out = act[1], act[2], act[0].outputs[0]
    q = L.output_q(graph, out, cons)
    if q is not None:
        nodes.append(q[0])
        return nodes, q[0].outputs[0], q[1], lo_f, hi_f
    return nodes, out, None, lo_f, hi_f


def _fuse_linear(graph, node, prods, cons):
    kind = node.op_type
    if kind == "MatMul" and not (U.is_const(graph, node.inputs[1]) or (
            prods.get(node.inputs[1]) is not None
            and "weight_qparams" in prods[node.inputs[1]].meta)):
        return _fuse_matmul_act(graph, node, prods, cons)
    dqx, xqp = _act_dq(graph, node.inputs[0], prods)
    wname = node.inputs[1]
    dqw = prods.get(wname)
    if dqw is None or dqw.op_type != "DequantizeLinear":
        if U.is_const(graph, wname):
            raise L.Decline("weight is float (not quantized); use dynamic_quantization=True")
        raise L.Decline("weight is not constant")
    wqp = dqw.meta.get("weight_qparams")
    if wqp is None:
        raise L.Decline("weight is not constant" if not U.is_const(graph, dqw.inputs[0])
                        else "weight scale not constant")
    if kind == "MatMul":
        xs = U.shape_of(graph, dqx.inputs[0]) or U.shape_of(graph, node.inputs[0])
        if xs is not None and len(xs) < 2:
            raise L.Decline("MatMul with a 1-D activation")
    w_arr, w_zp, w_scale = L.arrange_weight(kind, node, U.const(graph, dqw.inputs[0]), wqp)
    sx = float(np.float32(U.scalar(xqp.scale)))
    zx = int(U.scalar(xqp.zero_point))
    alpha = float(node.attrs.get("alpha", 1.0)) if kind == "Gemm" else 1.0
    beta = float(node.attrs.get("beta", 1.0)) if kind == "Gemm" else 1.0
    acc_scale = np.float64(np.float32(sx)) * w_scale * alpha
    bname = node.inputs[2] if len(node.inputs) > 2 else ""
    bias = L.int_bias_from(graph, bname, acc_scale, w_zp.shape[0], beta, alpha)
    tail, out, oqp, lo_f, hi_f = _tail(graph, node.outputs[0], cons)
    covers = []
    for d in (dqx, dqw, prods.get(bname) if bname else None):
        if d is not None and d.op_type == "DequantizeLinear" and U.only_reader_is(graph, d.outputs[0], node, cons):
            covers.append(d)
    new = L.make_node(graph, kind, node, dqx.inputs[0], w_arr, w_zp, w_scale, sx, zx, xqp.dtype, out,
                      oqp, lo_f, hi_f, bias, covers=U.covers(*covers, node, *tail), alpha=alpha)
    L.replace(graph, [node] + tail, new)
    return new


def _fuse_matmul_act(graph, node, prods, cons):
    dqa, aqp = _act_dq(graph, node.inputs[0], prods)
    try:
        dqb, bqp = _act_dq(graph, node.inputs[1], prods)
    except L.Decline as e:
        raise L.Decline(f"second input: {e}") from None
    tail, out, oqp, lo_f, hi_f = _tail(graph, node.outputs[0], cons)
    sa = np.float64(np.float32(U.scalar(aqp.scale)))
    sb = np.float64(np.float32(U.scalar(bqp.scale)))
    U.use_qrt_domain(graph)
    attrs = {"a_scale": float(sa), "a_zp": int(U.scalar(aqp.zero_point)), "b_scale": float(sb),
             "b_zp": int(U.scalar(bqp.zero_point))}
    if oqp is not None:
        sy = np.float64(np.float32(U.scalar(oqp.scale)))
        zy = int(U.scalar(oqp.zero_point))
        attrs.update(out_dtype=np.dtype(oqp.dtype).name, y_zp=zy,
                     multiplier=np.array([sa * sb / sy], np.float32))
        if lo_f is not None:
            attrs["lo"] = L.quantize_bound(lo_f, sy, zy, oqp.dtype)
        if hi_f is not None:
            attrs["hi"] = L.quantize_bound(hi_f, sy, zy, oqp.dtype)
    else:
        attrs.update(out_dtype="float32", scale=np.array([sa * sb], np.float32), lo_f=lo_f, hi_f=hi_f)
    sh = {np.dtype(np.int8): "s8", np.dtype(np.uint8): "u8"}
    kern = f"qlinear_matmul_{sh[np.dtype(aqp.dtype)]}{sh[np.dtype(bqp.dtype)]}_activations" + (
        "_f32out" if oqp is None else "")
    attrs["kernel"] = kern
    covers = [d for d in (dqa, dqb) if U.only_reader_is(graph, d.outputs[0], node, cons)]
    new = ir.Node("QMatMulAct", [dqa.inputs[0], dqb.inputs[0]], [out], attrs, node.name, "qrt")
    new.meta.update(covers=U.covers(*covers, node, *tail), precision="int8", kernel=kern)
    L.replace(graph, [node] + tail, new)
    return new


def run(graph: ir.Graph, opts=None) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node not in graph.nodes or node.domain or node.op_type not in U.LINEAR_OPS:
            continue
        prods, cons = graph.producers(), graph.consumers()
        try:
            _fuse_linear(graph, node, prods, cons)
            changed = True
        except L.Decline as e:
            node.meta["reason"] = str(e)
    if changed:
        U.toposort(graph)
        U.remove_dead(graph)
    return changed
