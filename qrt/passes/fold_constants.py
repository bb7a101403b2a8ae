"""Pass 1: evaluate nodes whose inputs are all constants (initializers) once, at load time, with the
registered op functions themselves (so folding cannot change a result).

Not folded: Quantize/DequantizeLinear (weight quantization is kept as integers by
`fold_weight_qdq`), random ops, and nodes whose result would be much larger than their inputs
(Expand, Tile, ConstantOfShape ... of a big shape): those stay in the graph and materialise per run.
"""
from __future__ import annotations

import numpy as np

from qrt import ir
from qrt.ops.registry import NEVER_PRECOMPUTED
from qrt.passes import _util as U

NEVER = U.QDQ_OPS | NEVER_PRECOMPUTED
# A folded output may be at most this many times the bytes of the inputs (or MIN_BYTES).
GROWTH = 4
MIN_BYTES = 1 << 16


def _predicted_elems(node: ir.Node, ins: list) -> int | None:
    try:
        if node.op_type == "ConstantOfShape":
            return int(np.prod(ins[0], dtype=np.int64))
        if node.op_type == "Expand":
            return int(np.prod(np.broadcast_shapes(ins[0].shape, tuple(int(d) for d in ins[1])),
                               dtype=np.int64))
        if node.op_type == "Tile":
            return int(ins[0].size * np.prod(ins[1], dtype=np.int64))
        if node.op_type == "Range":
            return int(abs(np.ceil((float(ins[1]) - float(ins[0])) / float(ins[2]))))
    except Exception:
        return None
    return None


def run(graph: ir.Graph, opts=None) -> bool:
    changed = False
    outs = U.output_names(graph)
    keep = []
    for node in graph.nodes:
        ins_named = [i for i in node.inputs if i]
        if (node.op_type in NEVER or node.domain not in ("",)
                or not all(U.is_const(graph, i) for i in ins_named)
                or any(o in outs for o in node.outputs)):
            keep.append(node)
            continue
        if U.opdef(graph, node) is None:
            keep.append(node)
            continue
        ins = [U.const(graph, i) if i else None for i in node.inputs]
        in_bytes = sum(a.nbytes for a in ins if a is not None)
        limit = max(GROWTH * in_bytes, MIN_BYTES)
        pred = _predicted_elems(node, ins)
        if pred is not None and pred * 8 > limit:
            node.meta.setdefault("note", "constant, not folded: result much larger than inputs")
            keep.append(node)
            continue
        try:
            res = U.eval_node(graph, node, ins)
        except Exception:
            keep.append(node)
            continue
        if any(not isinstance(r, np.ndarray) and not np.isscalar(r) for r in res if r is not None) \
                or sum(np.asarray(r).nbytes for r in res if r is not None) > limit:
            keep.append(node)
            continue
        for name, r in zip(node.outputs, res):
            if name:
                graph.initializers[name] = np.asarray(r)
        U.record_folded(graph, node, "folded (constant)",
                        "all inputs constant: evaluated once at load time")
        changed = True
    graph.nodes = keep
    if changed:
        U.remove_dead(graph)
    return changed
