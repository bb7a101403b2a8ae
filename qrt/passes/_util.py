"""Helpers shared by the passes (not a pass itself): constants, node evaluation, rewiring, cleanup."""
from __future__ import annotations

import itertools

import numpy as np

from qrt import ir
from qrt.ops import NodeContext, resolve

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
LINEAR_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")

_counter = itertools.count()


def folded(graph: ir.Graph) -> dict:
    """The graph's record of removed source nodes (read by the lowering report)."""
    d = graph.__dict__.get("folded")
    if d is None:
        d = {}
        graph.folded = d
    return d


def record_folded(graph: ir.Graph, node: ir.Node, kernel: str, reason: str, precision="float"):
    for src in node.meta.get("covers", [node.name]):
        folded(graph)[src] = {"precision": precision, "kernel": kernel, "reason": reason}


def use_qrt_domain(graph: ir.Graph) -> None:
    graph.opsets.setdefault("qrt", 1)


def fresh(graph: ir.Graph, base: str) -> str:
    """A value/initializer name not used anywhere in the graph."""
    used = set(graph.initializers) | {t.name for t in graph.inputs} | {
        o for n in graph.nodes for o in n.outputs}
    while True:
        name = f"{base}__qrt{next(_counter)}"
        if name not in used:
            return name


def add_const(graph: ir.Graph, base: str, arr) -> str:
    name = fresh(graph, base)
    graph.initializers[name] = np.ascontiguousarray(arr)
    return name


def const(graph: ir.Graph, name: str):
    """The constant array behind `name`, or None (an omitted input "" is not a constant)."""
    if not name:
        return None
    return graph.initializers.get(name)


def is_const(graph: ir.Graph, name: str) -> bool:
    return bool(name) and name in graph.initializers


def output_names(graph: ir.Graph) -> set[str]:
    return {t.name for t in graph.outputs}


def opdef(graph: ir.Graph, node: ir.Node):
    return resolve(node.op_type, node.domain, graph.opset(node.domain))


def eval_node(graph: ir.Graph, node: ir.Node, inputs: list):
    """Run a registered op on arrays exactly as the plan would; returns a list of outputs."""
    od = opdef(graph, node)
    if od is None:
        raise KeyError(f"no implementation for {node.label()}")
    kwargs = {a: node.attrs.get(a, d) for a, d in od.attrs.items()}
    if od.wants_ctx:
        kwargs["ctx"] = NodeContext(node.name, node.op_type, len(node.outputs), 1)
    res = od.fn(*inputs, **kwargs)
    if isinstance(res, (tuple, list)):
        return list(res)
    return [res]


def eval_op(graph: ir.Graph, op_type: str, inputs: list, attrs: dict | None = None, n_out=1,
            domain=""):
    return eval_node(graph, ir.Node(op_type, [f"i{k}" for k in range(len(inputs))],
                                    [f"o{k}" for k in range(n_out)], dict(attrs or {}),
                                    f"qrt_eval_{op_type}", domain), inputs)


def rename_input(graph: ir.Graph, old: str, new: str) -> None:
    """Every reader of `old` reads `new` instead (graph outputs are left alone)."""
    for n in graph.nodes:
        n.inputs = [new if i == old else i for i in n.inputs]


def single_consumer(graph: ir.Graph, value: str, consumers=None):
    """The only node reading `value`, if exactly one does and it is not a graph output."""
    if value in output_names(graph):
        return None
    cons = (consumers or graph.consumers()).get(value, [])
    if len(cons) != 1:
        return None
    node = cons[0]
    if sum(1 for i in node.inputs if i == value) != 1:
        return None
    return node


def remove_dead(graph: ir.Graph) -> bool:
    """Drop nodes none of whose outputs is read, and initializers nobody reads."""
    changed = False
    outs = output_names(graph)
    while True:
        used = {i for n in graph.nodes for i in n.inputs if i} | outs
        keep = [n for n in graph.nodes if any(o and o in used for o in n.outputs)]
        if len(keep) == len(graph.nodes):
            break
        kept = {id(n) for n in keep}
        for n in graph.nodes:
            if id(n) not in kept:
                for src in n.meta.get("covers", [n.name]):
                    folded(graph).setdefault(src, {
                        "precision": "int8" if n.op_type in QDQ_OPS else "float",
                        "kernel": "removed", "reason": "nothing reads it after the rewrites"})
        graph.nodes = keep
        changed = True
    used = {i for n in graph.nodes for i in n.inputs if i} | outs
    for name in [k for k in graph.initializers if k not in used]:
        del graph.initializers[name]
        changed = True
    return changed


def update_maps(prods: dict, cons: dict, old: list, new: ir.Node) -> None:
    """Keep producer/consumer maps of a graph right after `old` nodes were replaced by `new`
    (cheaper than rescanning the graph after every rewrite)."""
    gone = {id(n) for n in old}
    for n in old:
        for o in n.outputs:
            if o and prods.get(o) is n:
                del prods[o]
        for i in n.inputs:
            if i and i in cons:
                cons[i] = [c for c in cons[i] if id(c) not in gone]
    for o in new.outputs:
        if o:
            prods[o] = new
    for i in new.inputs:
        if i:
            lst = cons.setdefault(i, [])
            if all(c is not new for c in lst):
                lst.append(new)


def covers(*nodes: ir.Node) -> list[str]:
    out = []
    for n in nodes:
        for c in n.meta.get("covers", [n.name]):
            if c not in out:
                out.append(c)
    return out


def toposort(graph: ir.Graph) -> None:
    """Order nodes so every input is produced before it is read (rewrites may append nodes)."""
    produced = {t.name for t in graph.inputs} | set(graph.initializers) | {""}
    pending = list(graph.nodes)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(i in produced for i in n.inputs):
                ordered.append(n)
                produced.update(n.outputs)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # a cycle or an undefined input: keep the remaining order
            ordered.extend(rest)
            break
        pending = rest
    graph.nodes = ordered


def dtype_of(graph: ir.Graph, name: str):
    """Element type of a value when known (initializer or inferred value_info), else None."""
    if name in graph.initializers:
        return graph.initializers[name].dtype
    vi = graph.value_info.get(name)
    return np.dtype(vi.dtype) if vi is not None and vi.dtype is not None else None


def shape_of(graph: ir.Graph, name: str):
    if name in graph.initializers:
        return graph.initializers[name].shape
    vi = graph.value_info.get(name)
    return vi.shape if vi is not None else None


# ---------------------------------------------------------------------------------------------
# Quantization parameters


def dq_params(graph: ir.Graph, node: ir.Node):
    """QuantParams of a DequantizeLinear / QuantizeLinear whose scale and zero point are constant,
    else None. The zero point defaults to 0 of the quantized type (uint8 for QuantizeLinear)."""
    scale = const(graph, node.inputs[1]) if len(node.inputs) > 1 else None
    if scale is None:
        return None
    zp_name = node.inputs[2] if len(node.inputs) > 2 else ""
    zp = const(graph, zp_name)
    if zp_name and zp is None:
        return None
    if node.op_type == "DequantizeLinear":
        dt = zp.dtype if zp is not None else dtype_of(graph, node.inputs[0])
    else:
        dt = zp.dtype if zp is not None else np.dtype(np.uint8)
        od = node.attrs.get("output_dtype", 0)
        if zp is None and od:
            from qrt.onnx_import import np_dtype
            dt = np_dtype(od)
    if dt is None:
        return None
    if zp is None:
        zp = np.zeros(scale.shape, dtype=dt)
    axis = node.attrs.get("axis", 1)
    block = node.attrs.get("block_size", 0) or None
    return ir.QuantParams(np.asarray(scale), np.asarray(zp), axis if scale.size > 1 or block else None,
                          block, np.dtype(dt))


def per_tensor(qp) -> bool:
    return qp is not None and qp.block_size is None and qp.scale.size == 1 and qp.zero_point.size == 1


def same_params(a, b) -> bool:
    if a is None or b is None:
        return False
    if np.dtype(a.dtype) != np.dtype(b.dtype) or a.block_size != b.block_size:
        return False
    if a.scale.shape != b.scale.shape or a.zero_point.shape != b.zero_point.shape:
        return False
    if a.scale.size > 1 and a.axis != b.axis:
        return False
    return bool(np.array_equal(a.scale.astype(np.float32), b.scale.astype(np.float32))
                and np.array_equal(a.zero_point.astype(np.int64), b.zero_point.astype(np.int64)))


def scalar(a):
    return np.asarray(a).reshape(-1)[0]


def producers_cached(graph: ir.Graph) -> dict:
    return graph.producers()


def only_reader_is(graph: ir.Graph, value: str, node: ir.Node, consumers=None) -> bool:
    cons = (consumers or graph.consumers()).get(value, [])
    return value not in output_names(graph) and all(c is node for c in cons)
