"""Pass 6c: a region of elementwise work that reads one 8-bit tensor becomes one table lookup.

Quantized models spend many nodes on functions of a single int8 tensor: DQ -> BatchNormalization
-> Q left unfused by a quantizer, HardSwish written as x * (x + 3) (QAdd, QMul, QLut), a separate
bias Add after a Conv, DQ -> Q re-quantizations. Whatever the region computes, its 8-bit output is
a function of the 8-bit input code alone, and of the channel where a constant is per channel. So
the pass evaluates the region once, with the same registered ops the plan would run, on a probe
tensor that holds every code of every channel, and replaces it by `qrt.QLut` with a (256,) table
or a (C, 256) table along axis 1. The result is bit-identical to running the region (the probe
goes through the very same op implementations, elementwise).

Region: walking back from an 8-bit output through nodes that are elementwise in their tensor
inputs (listed below) whose other inputs are constants broadcasting at most along axis 1; it stops
at a value read outside the region. It qualifies when it then reads exactly one non-constant
value, of type uint8/int8, whose rank (and channel count, for per-channel constants) is known.
"""
from __future__ import annotations

import numpy as np

from qrt import ir
from qrt.kernels import ref
from qrt.passes import _util as U
from qrt.passes.qdq_elementwise import BINARY, UNARY

INT8 = (np.dtype(np.int8), np.dtype(np.uint8))
_VARIADIC = {"Sum", "Mean", "Max", "Min"}


def _attrs_ok(node: ir.Node, opset: int = 99) -> bool:
    if node.op_type == "BatchNormalization":
        if opset < 9 and node.attrs.get("spatial", 1) != 1:
            return False  # BatchNormalization-7 spatial=0: per-activation, not per channel
        return not node.attrs.get("training_mode", 0) and len(node.outputs) == 1
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        return not node.attrs.get("block_size", 0)
    return True


def _elementwise(graph: ir.Graph, node: ir.Node) -> bool:
    """Elementwise in its tensor inputs, one output, a registered implementation."""
    if len([o for o in node.outputs if o]) != 1 or node.outputs[0] == "":
        return False
    if node.domain == "qrt":
        return node.op_type in ("QLut", "QAdd", "QMul")
    if node.domain or U.opdef(graph, node) is None or not _attrs_ok(node, graph.opset("")):
        return False
    return (node.op_type in UNARY or node.op_type in BINARY or node.op_type in _VARIADIC
            or node.op_type in ("BatchNormalization", "QuantizeLinear", "DequantizeLinear"))


def _out_dtype(graph: ir.Graph, node: ir.Node):
    if node.domain == "qrt":
        if node.op_type == "QLut":
            return np.asarray(node.attrs["table"]).dtype
        return np.dtype(node.attrs.get("out_dtype", "uint8"))
    if node.op_type == "QuantizeLinear":
        qp = U.dq_params(graph, node)
        return None if qp is None else np.dtype(qp.dtype)
    return None


def _value_dtype(graph: ir.Graph, name: str, prods):
    p = prods.get(name)
    if p is not None:
        if p.domain == "qrt" and "out_dtype" in p.attrs and p.op_type not in ("QLut",):
            try:
                return np.dtype(p.attrs["out_dtype"])
            except TypeError:
                return None
        d = _out_dtype(graph, p)
        if d is not None:
            return d
    return U.dtype_of(graph, name)


def _reachable(graph, out_node, cut, prods, outs) -> list[ir.Node]:
    """Elementwise nodes reachable backwards from `out_node` without reading through `cut`."""
    seen: set[int] = set()
    region: list[ir.Node] = []
    stack = [out_node]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        region.append(n)
        for i in n.inputs:
            if not i or i in cut or i in outs or U.is_const(graph, i):
                continue
            p = prods.get(i)
            if p is not None and _elementwise(graph, p):
                stack.append(p)
    return region


def _region(graph, out_node, prods, cons, outs):
    """Nodes of the region ending at `out_node` (topological order) and its non-constant inputs.
    A value that something outside the region reads must stay computed: the region is cut there."""
    cut: set[str] = set()
    while True:
        region = _reachable(graph, out_node, cut, prods, outs)
        ids = {id(n) for n in region}
        escaping = next((n.outputs[0] for n in region if n is not out_node and (
            n.outputs[0] in outs or any(id(c) not in ids for c in cons.get(n.outputs[0], [])))),
            None)
        if escaping is None:
            break
        cut.add(escaping)
    produced = {n.outputs[0] for n in region}
    leaves: list[str] = []
    for n in region:
        for i in n.inputs:
            if i and i not in produced and not U.is_const(graph, i) and i not in leaves:
                leaves.append(i)
    order = {id(n): k for k, n in enumerate(graph.nodes)}
    region.sort(key=lambda m: order[id(m)])
    return region, leaves


def _constant_part(graph, region):
    """Evaluate the region's nodes that read only constants (e.g. a DequantizeLinear of a quantized
    BatchNorm scale): -> ({value: array}, the remaining nodes)."""
    consts: dict[str, np.ndarray] = {}
    rest = []
    for n in region:  # topological order
        if all(not i or U.is_const(graph, i) or i in consts for i in n.inputs):
            ins = [consts[i] if i in consts else (U.const(graph, i) if i else None)
                   for i in n.inputs]
            consts[n.outputs[0]] = np.asarray(U.eval_node(graph, n, ins)[0])
        else:
            rest.append(n)
    return consts, rest


def _channel_layout(graph, region, rank: int, consts):
    """The channel count of the per-channel constants the region reads (1 if none), or None when
    a constant broadcasts along any other axis or would raise the input's rank."""
    def cval(name):
        return consts[name] if name in consts else U.const(graph, name)

    def is_c(name):
        return bool(name) and (name in consts or U.is_const(graph, name))

    per_channel_sizes = set()
    for n in region:
        if n.op_type == "BatchNormalization":
            if rank < 2:
                return None
            per_channel_sizes.update(cval(i).size for i in n.inputs[1:5] if is_c(i))
            continue
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            qp = U.dq_params(graph, n)
            if qp is None or n.inputs[0] in consts:
                return None
            if qp.scale.size > 1 or qp.zero_point.size > 1:
                axis = n.attrs.get("axis", 1)
                if rank < 2 or (axis if axis >= 0 else axis + rank) != 1:
                    return None
                per_channel_sizes.add(max(qp.scale.size, qp.zero_point.size))
            continue
        for k, i in enumerate(n.inputs):
            if not is_c(i):
                continue
            c = cval(i)
            if c.ndim > rank:
                return None
            if c.size == 1:
                continue
            if n.op_type in ("Clip",) or (n.op_type == "PRelu" and k == 1 and c.ndim == 1 and rank > 1):
                return None  # Clip takes scalars; PRelu's 1-D slope broadcasts on the last axis
            shape = (1,) * (rank - c.ndim) + c.shape
            if rank < 2 or any(d != 1 for ax, d in enumerate(shape) if ax != 1):
                return None
            per_channel_sizes.add(shape[1])
    if len(per_channel_sizes) > 1:
        return None
    return per_channel_sizes.pop() if per_channel_sizes else 1


def _evaluate(graph, region, leaf, leaf_dtype, rank, channels, consts):
    lo, hi = ref.qrange(leaf_dtype)
    codes = np.arange(lo, hi + 1).astype(leaf_dtype)
    if rank >= 3:
        shape = [1] * rank
        shape[1], shape[2] = channels, hi - lo + 1
        probe = np.ascontiguousarray(np.broadcast_to(codes.reshape(1, 1, -1), shape[:3]).reshape(shape))
    elif rank == 2:
        probe = np.ascontiguousarray(np.broadcast_to(codes.reshape(-1, 1), (hi - lo + 1, channels)))
    else:
        probe = codes
    vals = dict(consts)
    vals[leaf] = probe
    for n in region:
        ins = [vals[i] if i in vals else (U.const(graph, i) if i else None) for i in n.inputs]
        vals[n.outputs[0]] = U.eval_node(graph, n, ins)[0]
    out = np.asarray(vals[region[-1].outputs[0]])
    if out.shape != probe.shape or out.dtype not in INT8:
        return None
    if rank >= 3:
        table = out.reshape(channels, hi - lo + 1)
    elif rank == 2:
        table = out.T
    else:
        table = out.reshape(1, -1)
    if channels == 1:
        table = table.reshape(-1)
    return np.ascontiguousarray(table), lo


def _try(graph, out_node, prods, cons, outs):
    if not _elementwise(graph, out_node):
        return None
    if _out_dtype(graph, out_node) not in INT8:
        return None
    region, leaves = _region(graph, out_node, prods, cons, outs)
    if len(leaves) != 1 or out_node not in region:
        return None
    if len(region) == 1 and out_node.op_type == "QLut" and np.asarray(
            out_node.attrs["table"]).ndim == 1:
        return None  # already a table
    if len(region) == 1 and out_node.op_type in ("QuantizeLinear",):
        return None  # a plain Q of a float value: nothing to gain
    leaf = leaves[0]
    leaf_dtype = _value_dtype(graph, leaf, prods)
    if leaf_dtype is None or np.dtype(leaf_dtype) not in INT8:
        return None
    shape = U.shape_of(graph, leaf)
    if shape is None:
        return None
    rank = len(shape)
    full = region
    consts, region = _constant_part(graph, full)
    if not region or region[-1] is not out_node:
        return None
    channels = _channel_layout(graph, region, rank, consts)
    if channels is None:
        return None
    if channels > 1 and (rank < 2 or shape[1] != channels):
        return None  # per-channel constants must match a known channel count
    try:
        res = _evaluate(graph, region, leaf, np.dtype(leaf_dtype), rank, channels, consts)
    except Exception:
        return None
    if res is None:
        return None
    table, lo = res
    U.use_qrt_domain(graph)
    kern = "qlut_channels" if table.ndim == 2 else "qlut"
    new = ir.Node("QLut", [leaf], [out_node.outputs[0]], {"table": table, "in_lo": int(lo),
                                                           "kernel": kern},
                  out_node.name, "qrt")
    new.meta.update(covers=U.covers(*full), precision="int8", kernel=kern,
                    note=f"{len(region)} elementwise node(s) of one 8-bit tensor as one table")
    return new, full


def run(graph: ir.Graph, opts=None) -> bool:
    changed = False
    outs = U.output_names(graph)
    prods, cons = graph.producers(), graph.consumers()
    dead: set[int] = set()
    # From the graph's end backwards, so each table takes the largest region ending there.
    for out_node in reversed(list(graph.nodes)):
        if id(out_node) in dead:
            continue
        r = _try(graph, out_node, prods, cons, outs)
        if r is None:
            continue
        new, region = r
        graph.nodes[graph.nodes.index(out_node)] = new
        # Only the region reads its intermediates (see _region): they all die with it.
        dead.update(id(m) for m in region)
        prods[new.outputs[0]] = new
        cons.setdefault(new.inputs[0], []).append(new)
        changed = True
    if changed:
        graph.nodes = [n for n in graph.nodes if id(n) not in dead]
        U.toposort(graph)
        U.remove_dead(graph)
    return _fold_into_producers(graph) or changed


_TABLE_HOSTS = {"QConv": 1, "QConvTranspose": 1, "QGemm": -1}  # op -> its channel axis


def _fold_into_producers(graph: ir.Graph) -> bool:
    """A table right after a fused integer op's 8-bit output (its only reader) becomes that op's
    `post_table`: one step instead of two, and the conv kernel applies it in the same call."""
    prods, cons = graph.producers(), graph.consumers()
    outs = U.output_names(graph)
    changed = False
    for lut in list(graph.nodes):
        if lut.domain != "qrt" or lut.op_type != "QLut":
            continue
        p = prods.get(lut.inputs[0])
        if p is None or p.domain != "qrt" or p.op_type not in _TABLE_HOSTS:
            continue
        if p.attrs.get("post_table") is not None or len(cons.get(p.outputs[0], [])) != 1 \
                or p.outputs[0] in outs:
            continue
        dt = str(p.attrs.get("out_dtype", "uint8"))
        if dt not in ("uint8", "int8") or p.inputs[4:5] not in ([], [""]):
            continue  # float/int32 outputs, or dynamic quantization
        table = np.asarray(lut.attrs["table"])
        if table.ndim == 2 and _TABLE_HOSTS[p.op_type] == -1:
            continue  # QGemm channels are its last axis, tables here are along axis 1
        p.attrs["post_table"] = table
        p.attrs["post_lo"] = int(lut.attrs.get("in_lo", 0))
        p.outputs = [lut.outputs[0]]
        p.meta["covers"] = U.covers(p, lut)
        p.meta["kernel"] = (p.meta.get("kernel") or p.op_type) + "+table"
        graph.nodes.remove(lut)
        changed = True
    return changed
