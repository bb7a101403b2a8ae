"""Last pass: dequantize offline whatever constant DequantizeLinear is left (its readers run in
float), drop dead nodes, give every Conv/MatMul/Gemm left in float a reason, and let nodes folded
into another report that node's precision."""
from __future__ import annotations

import numpy as np

from qrt import ir
from qrt.passes import _util as U

_DEFAULT_REASON = "not in a quantized pattern (no DequantizeLinear/QuantizeLinear around it)"


def run(graph: ir.Graph, opts=None) -> bool:
    changed = U.remove_dead(graph)
    outs = U.output_names(graph)
    keep = []
    for node in graph.nodes:
        if (node.op_type == "DequantizeLinear" and not node.domain and U.is_const(graph, node.inputs[0])
                and node.outputs[0] not in outs and U.dq_params(graph, node) is not None):
            try:
                val = U.eval_node(graph, node, [U.const(graph, i) if i else None for i in node.inputs])[0]
            except Exception:
                keep.append(node)
                continue
            graph.initializers[node.outputs[0]] = np.asarray(val)
            qp = U.dq_params(graph, node)
            U.record_folded(graph, node, "folded (dequantized offline)",
                            "constant DequantizeLinear read by float ops: evaluated once at load time"
                            + (f" (per-group weights, block_size={qp.block_size})" if qp.block_size else ""))
            changed = True
            continue
        keep.append(node)
    graph.nodes = keep
    if changed:
        U.remove_dead(graph)
    for node in graph.nodes:
        if not node.domain and node.op_type in U.LINEAR_OPS and not node.meta.get("reason"):
            node.meta["reason"] = _DEFAULT_REASON
    runs_in = {}
    for n in graph.nodes:
        for src in n.meta.get("covers", [n.name]):
            runs_in[src] = n
    for name, entry in U.folded(graph).items():
        k = entry.get("kernel", "")
        if k.startswith("folded into "):
            target = runs_in.get(k[len("folded into "):])
            if target is not None and target.meta.get("precision") == "int8":
                entry["precision"] = "int8"
    U.toposort(graph)
    return changed
