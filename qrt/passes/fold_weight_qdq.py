"""Pass 2: weight quantization stays integer.

- QuantizeLinear of a constant float tensor with constant parameters is evaluated offline (with the
  registered QuantizeLinear itself) into an integer initializer.
- DequantizeLinear of a constant integer tensor keeps the integer data; int4/uint4 data is unpacked
  to int8/uint8 (same values, same parameters). The node records its `QuantParams` in
  `meta["weight_qparams"]` (per-tensor, per-channel or per-group) for the fusion passes. Whatever is
  left unfused at the end is dequantized offline by `cleanup`.
"""
from __future__ import annotations

import numpy as np

from qrt import ir
from qrt.passes import _util as U


def _unpack4(graph, name):
    arr = graph.initializers[name]
    if arr.dtype.name in ("int4", "uint4"):
        wide = np.int8 if arr.dtype.name == "int4" else np.uint8
        return U.add_const(graph, name + "_unpacked", arr.astype(wide))
    return name


def run(graph: ir.Graph, opts=None) -> bool:
    changed = False
    outs = U.output_names(graph)
    keep = []
    for node in graph.nodes:
        if node.op_type == "QuantizeLinear" and U.is_const(graph, node.inputs[0]) \
                and node.outputs[0] not in outs and U.dq_params(graph, node) is not None \
                and U.opdef(graph, node) is not None:
            try:
                q = U.eval_node(graph, node, [U.const(graph, i) if i else None for i in node.inputs])[0]
            except Exception:
                keep.append(node)
                continue
            graph.initializers[node.outputs[0]] = np.asarray(q)
            U.record_folded(graph, node, "folded (weight quantized offline)",
                            "QuantizeLinear of a constant: evaluated once at load time", "int8")
            changed = True
            continue
        keep.append(node)
    graph.nodes = keep
    for node in graph.nodes:
        if node.op_type != "DequantizeLinear" or not U.is_const(graph, node.inputs[0]):
            continue
        qp = U.dq_params(graph, node)
        if qp is None:
            continue
        new_x = _unpack4(graph, node.inputs[0])
        if new_x != node.inputs[0]:
            node.inputs[0] = new_x
            if len(node.inputs) > 2 and node.inputs[2]:
                node.inputs[2] = _unpack4(graph, node.inputs[2])
            changed = True
            qp = U.dq_params(graph, node)
        node.meta["weight_qparams"] = qp
    if changed:
        U.remove_dead(graph)
    return changed
