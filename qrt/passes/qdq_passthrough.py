"""Pass 6a: keep tensors integer through data-movement ops and drop redundant Q/DQ pairs.

- DQ(s, z) -> op -> Q(s, z) with identical parameters, for ops that only move, select or take the max
  of values (Reshape, Transpose, Flatten, Squeeze, Unsqueeze, MaxPool, Identity, Slice, Gather, Split,
  DepthToSpace, SpaceToDepth, Concat with all inputs equally quantized) becomes the op on the integer
  tensor. Exact: these ops commute with the monotone map DequantizeLinear.
- DQ(s, z) -> Q(s, z) (and therefore Q -> DQ -> Q chains with equal parameters) is the identity on
  the integer tensor: readers of the Q read the DQ's input.
"""
from __future__ import annotations

from qrt import ir
from qrt.passes import _util as U

MOVE_OPS = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "MaxPool", "Identity", "Slice",
            "Gather", "DepthToSpace", "SpaceToDepth", "Split", "Concat", "Expand", "Tile"}


def _dq_of(graph, name, prods):
    dq = prods.get(name)
    if dq is None or dq.op_type != "DequantizeLinear" or dq.domain:
        return None
    qp = U.dq_params(graph, dq)
    return (dq, qp) if U.per_tensor(qp) else None


def _data_inputs(node):
    if node.op_type == "Concat":
        return list(range(len(node.inputs)))
    return [0]


def _passthrough(graph, node, prods, cons) -> bool:
    if node.op_type == "MaxPool" and len([o for o in node.outputs if o]) > 1:
        return False
    data = _data_inputs(node)
    dqs = []
    for k in data:
        r = _dq_of(graph, node.inputs[k], prods)
        if r is None:
            return False
        dqs.append(r)
    qp0 = dqs[0][1]
    if not all(U.same_params(qp0, qp) for _, qp in dqs):
        return node.op_type == "Concat" and _requantized_concat(graph, node, dqs, cons)
    qs = []
    for o in node.outputs:
        if not o:
            continue
        q = U.single_consumer(graph, o, cons)
        if q is None or q.op_type != "QuantizeLinear" or q.domain or not U.same_params(
                qp0, U.dq_params(graph, q)):
            return False
        qs.append(q)
    for k, (dq, _) in zip(data, dqs):
        node.inputs[k] = dq.inputs[0]
    node.outputs = [q.outputs[0] if o else o for o, q in zip(node.outputs, qs)] if len(qs) == len(
        [o for o in node.outputs if o]) else node.outputs
    node.meta["covers"] = U.covers(node, *qs)
    node.meta["precision"] = "int8"
    node.meta.setdefault("kernel", f"{node.op_type} (on int8 data)")
    for q in qs:
        graph.nodes.remove(q)
    return True


def _requantized_concat(graph, node, dqs, cons) -> bool:
    """DQ(x_i, s_i, z_i) -> Concat -> Q(s, z) with differing input parameters: Q is elementwise,
    so Q(Concat(DQ(x_i))) = Concat(Q(DQ(x_i))) exactly. Each input gets its own Q(s, z) (dropped
    where its parameters already are (s, z), a 256-entry table after lut_regions elsewhere) and
    the Concat runs on the 8-bit tensors (onnxruntime's QLinearConcat, YOLO-style necks)."""
    q = U.single_consumer(graph, node.outputs[0], cons)
    if q is None or q.op_type != "QuantizeLinear" or q.domain or q.inputs[0] != node.outputs[0]:
        return False
    qo = U.dq_params(graph, q)
    if qo is None or not U.per_tensor(qo):
        return False
    ins, made = [], {}
    for k, (dq, qp) in enumerate(dqs):
        if U.same_params(qp, qo):
            ins.append(dq.inputs[0])
            continue
        if dq.outputs[0] in made:  # the same input twice: one requantization
            ins.append(made[dq.outputs[0]])
            continue
        name = made[dq.outputs[0]] = U.fresh(graph, f"{node.outputs[0]}_in{k}_requant")
        rq = ir.Node("QuantizeLinear", [dq.outputs[0]] + list(q.inputs[1:]), [name],
                     dict(q.attrs), f"{node.name or 'Concat'}/requant{k}", "")
        rq.meta.update(covers=U.covers(node), precision="int8")
        graph.nodes.insert(graph.nodes.index(node), rq)
        ins.append(name)
    node.inputs = ins
    node.outputs = [q.outputs[0]]
    node.meta["covers"] = U.covers(node, q)
    node.meta["precision"] = "int8"
    node.meta["kernel"] = "Concat (on int8 data, inputs requantized)"
    graph.nodes.remove(q)
    return True


def _identity_pairs(graph) -> bool:
    """Q whose input is a DQ with the same parameters: its readers read the DQ's input."""
    changed = False
    prods = graph.producers()
    outs = U.output_names(graph)
    for q in list(graph.nodes):
        if q.op_type != "QuantizeLinear" or q.domain:
            continue
        dq = prods.get(q.inputs[0])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.domain:
            continue
        qp_q, qp_dq = U.dq_params(graph, q), U.dq_params(graph, dq)
        if not U.same_params(qp_q, qp_dq):
            continue
        if q.outputs[0] in outs:
            q.op_type, q.inputs, q.attrs, q.domain = "Identity", [dq.inputs[0]], {}, ""
            q.meta.update(precision="int8", kernel="Identity (redundant DQ -> Q dropped)")
        else:
            U.rename_input(graph, q.outputs[0], dq.inputs[0])
            U.record_folded(graph, q, f"folded into {dq.inputs[0]}",
                            "DequantizeLinear -> QuantizeLinear with equal parameters is the identity",
                            "int8")
            graph.nodes.remove(q)
        changed = True
    return changed


def run(graph: ir.Graph, opts=None) -> bool:
    changed = _identity_pairs(graph)
    progress = True
    while progress:
        progress = False
        prods = cons = None  # recomputed only after a rewrite
        live = {id(n) for n in graph.nodes}
        for node in list(graph.nodes):
            if node.domain or node.op_type not in MOVE_OPS or id(node) not in live:
                continue
            if prods is None:
                prods, cons = graph.producers(), graph.consumers()
            if _passthrough(graph, node, prods, cons):
                progress = changed = True
                prods = cons = None
                live = {id(n) for n in graph.nodes}
        if _identity_pairs(graph):
            progress = changed = True
    if changed:
        U.remove_dead(graph)
    return changed
