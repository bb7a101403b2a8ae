"""Pass 6b: quantized elementwise ops stay integer.

- DQ -> chain of elementwise ops of that one input (Sigmoid, HardSigmoid, HardSwish, Tanh, LeakyRelu,
  Relu, Clip, Gelu, Exp, ..., or Add/Sub/Mul/Div/Pow/Min/Max with a one-element constant) -> Q becomes
  qrt.QLut, a 256-entry table computed by running the real chain (the registered ops) on every code:
  exact, bit for bit.
- DQ(x) -> GlobalAveragePool -> Q becomes qrt.QGlobalAveragePool (exact integer sums, one rescale).
- DQ(a), DQ(b) -> Add | Mul -> Q (per-tensor, constant parameters, 8-bit) becomes qrt.QAdd / qrt.QMul:
  float32 rescale of the integer operands, one round half to even; at most 1 quantization step from
  the float path (DQ, float op, Q), which rounds twice in float32.
"""
from __future__ import annotations

import numpy as np

from qrt import ir
from qrt.kernels import ref
from qrt.passes import _util as U

UNARY = {"Relu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "Elu", "Selu", "Celu",
         "Gelu", "Erf", "Exp", "Log", "Softplus", "Softsign", "Neg", "Abs", "Sqrt", "Reciprocal",
         "Mish", "ThresholdedRelu", "Clip", "Round", "Floor", "Ceil", "Sin", "Cos", "Identity", "Sign"}
BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "PRelu"}
INT8 = (np.dtype(np.int8), np.dtype(np.uint8))


def _dq8(graph, name, prods):
    dq = prods.get(name)
    if dq is None or dq.op_type != "DequantizeLinear" or dq.domain:
        return None
    qp = U.dq_params(graph, dq)
    if not U.per_tensor(qp) or np.dtype(qp.dtype) not in INT8:
        return None
    return dq, qp


def _q8(graph, q):
    if q is None or q.op_type != "QuantizeLinear" or q.domain:
        return None
    qp = U.dq_params(graph, q)
    if not U.per_tensor(qp) or np.dtype(qp.dtype) not in INT8:
        return None
    return qp


def _chain_step(graph, node, value):
    """Is `node` elementwise in `value` alone (other inputs one-element constants)?"""
    if node.domain or U.opdef(graph, node) is None:
        return False
    if node.op_type in UNARY:
        others = [i for k, i in enumerate(node.inputs) if k > 0 and i]
    elif node.op_type in BINARY and len(node.inputs) == 2:
        others = [i for i in node.inputs if i != value]
    else:
        return False
    if node.inputs.count(value) != 1 or (node.op_type in UNARY and node.inputs[0] != value):
        return False
    for o in others:
        c = U.const(graph, o)
        if c is None or c.size != 1 or c.ndim > 1:
            return False
    return len([o for o in node.outputs if o]) == 1


def _try_lut(graph, dq, dqp, first, cons):
    chain, value = [], dq.outputs[0]
    node = first
    while True:
        if not _chain_step(graph, node, value):
            return None
        chain.append(node)
        value = node.outputs[0]
        nxt = U.single_consumer(graph, value, cons)
        if nxt is None:
            return None
        if nxt.op_type == "QuantizeLinear":
            qqp = _q8(graph, nxt)
            if qqp is None or nxt.inputs[0] != value:
                return None
            break
        node = nxt
    q = nxt
    lo, hi = ref.qrange(dqp.dtype)
    codes = np.arange(lo, hi + 1).astype(dqp.dtype)
    try:
        v = U.eval_node(graph, dq, [codes] + [U.const(graph, i) if i else None for i in dq.inputs[1:]])[0]
        cur = dq.outputs[0]
        for n in chain:
            v = U.eval_node(graph, n, [v if i == cur else (U.const(graph, i) if i else None)
                                       for i in n.inputs])[0]
            cur = n.outputs[0]
        table = U.eval_node(graph, q, [v] + [U.const(graph, i) if i else None for i in q.inputs[1:]])[0]
    except Exception:
        return None
    table = np.ascontiguousarray(np.asarray(table).reshape(-1))
    if table.shape != (hi - lo + 1,):
        return None
    U.use_qrt_domain(graph)
    kern = "qlut_" + "_".join(n.op_type.lower() for n in chain)
    new = ir.Node("QLut", [dq.inputs[0]], [q.outputs[0]], {"table": table, "in_lo": lo, "kernel": kern},
                  chain[0].name, "qrt")
    new.meta.update(covers=U.covers(*chain, q), precision="int8", kernel=kern)
    return new, chain + [q]


def _try_binary(graph, node, prods, cons):
    if node.op_type not in ("Add", "Mul") or node.domain or len(node.inputs) != 2:
        return None
    a = _dq8(graph, node.inputs[0], prods)
    b = _dq8(graph, node.inputs[1], prods)
    if a is None or b is None:
        return None
    q = U.single_consumer(graph, node.outputs[0], cons)
    qqp = _q8(graph, q)
    if qqp is None:
        return None
    U.use_qrt_domain(graph)
    op = "QAdd" if node.op_type == "Add" else "QMul"
    kern = f"{op.lower()}_{'u8' if np.dtype(qqp.dtype) == np.uint8 else 's8'}_rescale_f32"
    attrs = {"a_scale": float(np.float32(U.scalar(a[1].scale))), "a_zp": int(U.scalar(a[1].zero_point)),
             "b_scale": float(np.float32(U.scalar(b[1].scale))), "b_zp": int(U.scalar(b[1].zero_point)),
             "y_scale": float(np.float32(U.scalar(qqp.scale))), "y_zp": int(U.scalar(qqp.zero_point)),
             "out_dtype": np.dtype(qqp.dtype).name, "kernel": kern}
    new = ir.Node(op, [a[0].inputs[0], b[0].inputs[0]], [q.outputs[0]], attrs, node.name, "qrt")
    new.meta.update(covers=U.covers(node, q), precision="int8", kernel=kern,
                    note="at most 1 step from DQ -> float op -> Q")
    return new, [node, q]


def _try_global_avg(graph, node, prods, cons):
    """DQ(x) -> GlobalAveragePool -> Q, per-tensor 8-bit: the mean of the integer codes, rescaled
    once (exact int32 sums; at most 1 step from the float path, which rounds every element)."""
    if node.op_type != "GlobalAveragePool" or node.domain:
        return None
    a = _dq8(graph, node.inputs[0], prods)
    if a is None:
        return None
    q = U.single_consumer(graph, node.outputs[0], cons)
    qqp = _q8(graph, q)
    if qqp is None:
        return None
    U.use_qrt_domain(graph)
    kern = f"qglobal_avg_{'u8' if np.dtype(qqp.dtype) == np.uint8 else 's8'}_int32_sum"
    attrs = {"x_scale": float(np.float32(U.scalar(a[1].scale))),
             "x_zp": int(U.scalar(a[1].zero_point)),
             "y_scale": float(np.float32(U.scalar(qqp.scale))), "y_zp": int(U.scalar(qqp.zero_point)),
             "out_dtype": np.dtype(qqp.dtype).name, "kernel": kern}
    new = ir.Node("QGlobalAveragePool", [a[0].inputs[0]], [q.outputs[0]], attrs, node.name, "qrt")
    new.meta.update(covers=U.covers(node, q), precision="int8", kernel=kern,
                    note="at most 1 step from DQ -> GlobalAveragePool -> Q")
    return new, [node, q]


def _replace(graph, old, new):
    """`new` takes the place of old[0]; the rest of `old` leaves (by identity: Node's dataclass
    equality would compare every field)."""
    first, ids = id(old[0]), {id(n) for n in old}
    out = []
    for n in graph.nodes:
        if id(n) == first:
            out.append(new)
        elif id(n) not in ids:
            out.append(n)
    graph.nodes = out


def run(graph: ir.Graph, opts=None) -> bool:
    changed = False
    gone: set[int] = set()
    prods = cons = None  # built once, then kept up to date (a scan per node made big graphs O(n^2))
    for node in list(graph.nodes):
        if id(node) in gone or node.domain:
            continue
        if prods is None:
            prods, cons = graph.producers(), graph.consumers()
        r = _try_binary(graph, node, prods, cons) or _try_global_avg(graph, node, prods, cons)
        if r is None and (node.op_type in UNARY or node.op_type in BINARY):
            for i in node.inputs:
                d = _dq8(graph, i, prods)
                if d is not None:
                    r = _try_lut(graph, d[0], d[1], node, cons)
                    if r is not None:
                        break
        if r is not None:
            _replace(graph, r[1], r[0])
            gone.update(id(n) for n in r[1])
            U.update_maps(prods, cons, r[1], r[0])
            changed = True
    if changed:
        U.toposort(graph)
        U.remove_dead(graph)
    return changed
