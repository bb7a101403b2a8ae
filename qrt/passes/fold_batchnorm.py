"""Pass 3: BatchNormalization (inference mode) after a Conv or Gemm with constant float weights is
folded into that node's weights and bias: W' = W * g/sqrt(v+eps) per output channel,
b' = (b - mean) * g/sqrt(v+eps) + beta. Only when the Conv/Gemm output has no other reader."""
from __future__ import annotations

import numpy as np

from qrt import ir
from qrt.passes import _util as U


def _bn_consts(graph, bn):
    if len(bn.inputs) < 5 or bn.attrs.get("training_mode", 0) or len([o for o in bn.outputs if o]) != 1:
        return None
    if graph.opset("") < 9 and bn.attrs.get("spatial", 1) != 1:
        return None  # BatchNormalization-7 spatial=0: per-activation statistics, not per channel
    vals = [U.const(graph, i) for i in bn.inputs[1:5]]
    if any(v is None for v in vals):
        return None
    g, b, m, v = (np.asarray(x, np.float64).reshape(-1) for x in vals)
    eps = float(bn.attrs.get("epsilon", 1e-5))
    s = g / np.sqrt(v + eps)
    return s, b - m * s


def run(graph: ir.Graph, opts=None) -> bool:
    changed = False
    cons = graph.consumers()
    for node in list(graph.nodes):
        if node.op_type not in ("Conv", "Gemm") or node.domain:
            continue
        bn = U.single_consumer(graph, node.outputs[0], cons)
        if bn is None or bn.op_type != "BatchNormalization" or bn.inputs[0] != node.outputs[0]:
            continue
        w = U.const(graph, node.inputs[1])
        if w is None or w.dtype.kind != "f":
            continue
        if node.op_type == "Gemm" and (node.attrs.get("transA", 0) or w.ndim != 2):
            continue
        bnc = _bn_consts(graph, bn)
        if bnc is None:
            continue
        s, t = bnc
        m = w.shape[0] if node.op_type == "Conv" else (w.shape[0] if node.attrs.get("transB", 0)
                                                          else w.shape[1])
        if s.size not in (1, m):
            continue
        s = np.broadcast_to(s, (m,))
        t = np.broadcast_to(t, (m,))
        bias_name = node.inputs[2] if len(node.inputs) > 2 else ""
        if node.op_type == "Gemm":
            alpha = float(node.attrs.get("alpha", 1.0))
            beta = float(node.attrs.get("beta", 1.0))
            bias = U.const(graph, bias_name) if bias_name else np.zeros((m,), w.dtype)
            if bias is None or bias.size not in (1, m):
                continue
            bias = np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), (m,)) * beta
            if node.attrs.get("transB", 0):
                w2 = w.astype(np.float64) * (alpha * s)[:, None]
            else:
                w2 = w.astype(np.float64) * (alpha * s)[None, :]
            node.attrs["alpha"], node.attrs["beta"] = 1.0, 1.0
        else:
            bias = U.const(graph, bias_name) if bias_name else np.zeros((m,), w.dtype)
            if bias is None:
                continue
            bias = np.asarray(bias, np.float64).reshape(-1)
            w2 = w.astype(np.float64) * s.reshape((m,) + (1,) * (w.ndim - 1))
        b2 = bias * s + t
        new_w = U.add_const(graph, node.inputs[1] + "_bnfolded", w2.astype(w.dtype))
        new_b = U.add_const(graph, (bias_name or node.name + "_bias") + "_bnfolded", b2.astype(w.dtype))
        node.inputs = [node.inputs[0], new_w, new_b]
        node.outputs = [bn.outputs[0]]
        U.record_folded(graph, bn, f"folded into {node.name}",
                        "BatchNormalization folded into the weights and bias")
        graph.nodes.remove(bn)
        cons = graph.consumers()
        changed = True
    if changed:
        U.remove_dead(graph)
    return changed
