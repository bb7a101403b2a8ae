"""Where Q/DQ pairs go (`place`) and writing the standard QDQ model (`write`).

Placement rules
- Conv / ConvTranspose / MatMul / Gemm (not excluded): float activation inputs get Q/DQ; constant
  weights become int8/int4 initializers + DequantizeLinear (per-channel: axis 0 for Conv, 1 for
  ConvTranspose, the N axis for MatMul [K,N] and Gemm (axis 1, or 0 with transB=1)); a constant 1-D
  bias becomes int32 at scale sx*sw with zero point 0.
- Fused groups: a compute op followed by its only consumer Relu/Clip has no Q/DQ in between; the
  group's output (the Relu's) is quantized. Residual Add (two activation inputs) is a group head too.
- Concat: inputs and output share one set of parameters (the output's range, which covers them).
- Pass-through ops (MaxPool, Reshape, Transpose, Flatten, Squeeze, Unsqueeze, Identity) share their
  input's parameters, so the engine keeps int8 through them.
- Graph outputs stay float (the last layer dequantizes), so the model's results are not clipped.
- A tensor gets Q/DQ only where a quantized op reads it (a compute op, or a residual Add / Concat /
  pass-through op whose own output is quantized): outputs read by float ops alone (activation
  functions such as hard-swish, Softmax, ...) stay float, so they are rounded once, at the next
  quantized input, not twice.
- Saturation safety (`write(saturation_safe=True)`): an int8 weight whose u8 x s8 products, summed
  in pairs in int16 as x86 kernels without VNNI do, could saturate is stored as uint8 (+128, zero
  point +128; the same numbers), which runtimes run with u8 x u8 kernels instead.

Naming (what `compare` relies on): tensor T quantizes to `T_QuantizeLinear_Output` and dequantizes
to `T_DequantizeLinear_Output` (onnxruntime's convention too); T keeps its float producer. Weight W
is stored as `W_quantized` with `W_scale` / `W_zero_point`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qrt.quantization.params import (np_dtype, onnx_elem_type, pairs_overflow_int16,
                                     quantize_weight)

COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm")
FUSABLE_ACT = ("Relu", "Clip")
PASS_THROUGH = ("MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity")
Q_SUFFIX = "_QuantizeLinear_Output"
DQ_SUFFIX = "_DequantizeLinear_Output"


@dataclass
class WeightSpec:
    node: str
    index: int  # input slot
    name: str  # initializer
    axis: int | None  # per-channel axis (None: per-tensor)
    block_axis: int | None = None
    out_axis: int | None = None  # output-channel axis when int16 pair sums matter (see write)


@dataclass
class Placement:
    activations: list[str] = field(default_factory=list)  # tensors that get Q/DQ, in order
    parent: dict[str, str] = field(default_factory=dict)  # union-find: shared parameters
    layer_of: dict[str, str] = field(default_factory=dict)  # quantized tensor -> layer (node name)
    weights: list[WeightSpec] = field(default_factory=list)
    biases: list[tuple[str, int, str, str, str]] = field(default_factory=list)
    # (node, input slot, bias initializer, activation tensor, weight initializer)
    quantized_nodes: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)  # node -> why it stays float

    def root(self, t: str) -> str:
        while self.parent.get(t, t) != t:
            t = self.parent[t]
        return t

    def union(self, a: str, b: str) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self.parent[rb] = ra

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for t in self.activations:
            out.setdefault(self.root(t), []).append(t)
        return out


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    t = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type:
            t[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        t[init.name] = init.data_type
    return t


def place(model: onnx.ModelProto, *, exclude: dict[str, str], static: bool = True,
          per_channel: bool = True, block_size: int | None = None) -> Placement:
    """Decide Q/DQ placement on a pre-processed float model. `exclude`: node name -> reason."""
    g = model.graph
    p = Placement(excluded=dict(exclude))
    inits = {t.name: t for t in g.initializer}
    types = _elem_types(model)
    graph_outputs = {o.name for o in g.output}
    cons: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            if i:
                cons.setdefault(i, []).append(n)
    q: dict[str, None] = {}
    compute_reads: set = set()  # (compute node, activation input) pairs read through Q/DQ
    group_out: dict[str, str] = {}  # residual Add -> its group's (quantized) output

    def is_act(t):
        return bool(t) and t not in inits and types.get(t, onnx.TensorProto.FLOAT) == \
            onnx.TensorProto.FLOAT

    def is_float_init(t):
        return t in inits and inits[t].data_type == onnx.TensorProto.FLOAT

    def add(t, layer=None):
        q.setdefault(t, None)
        if layer:
            p.layer_of.setdefault(t, layer)

    def sole(out, ops):
        c = cons.get(out, [])
        if len(c) == 1 and c[0].op_type in ops and c[0].name not in exclude \
                and out not in graph_outputs:
            return c[0]
        return None

    def group_output(node):
        """Output of the fused group headed by `node`: [Add(constant bias)] [Relu|Clip]."""
        out = node.output[0]
        if node.op_type == "MatMul":
            b = sole(out, ("Add",))
            if b is not None and any(i in inits for i in b.input):
                out = b.output[0]
        a = sole(out, FUSABLE_ACT)
        return a.output[0] if a is not None else out

    for node in g.node:
        if node.name in exclude:
            continue
        op = node.op_type
        if op in COMPUTE:
            ins = list(node.input)
            w_slot = 1
            if op in ("MatMul", "Gemm") and is_float_init(ins[0]) and is_act(ins[1]):
                w_slot = 0
            act_slots = [k for k in ((0, 1) if op in ("MatMul", "Gemm") else (0,))
                         if k < len(ins) and is_act(ins[k])]
            has_w = w_slot < len(ins) and is_float_init(ins[w_slot])
            if not act_slots and not has_w:
                continue
            if not static and not has_w:
                continue
            p.quantized_nodes.append(node.name)
            if has_w:
                w = numpy_helper.to_array(inits[ins[w_slot]])
                axis = block_axis = None
                if op == "Conv":
                    axis, block_axis = 0, 1
                elif op == "ConvTranspose":
                    axis = 1 if _attr(node, "group", 1) == 1 else None
                    block_axis = 0
                elif op == "MatMul":
                    if w_slot == 1:
                        axis, block_axis = w.ndim - 1, max(w.ndim - 2, 0)
                    else:
                        block_axis = w.ndim - 1
                elif op == "Gemm":
                    if w_slot == 1:
                        axis, block_axis = (0, 1) if _attr(node, "transB", 0) else (1, 0)
                    else:
                        block_axis = 0 if _attr(node, "transA", 0) else 1
                # output-channel axis when the op is an integer GEMM whose kernels may sum pairs of
                # u8 x s8 products in int16: all but depthwise Conv (onnxruntime's depthwise
                # kernel accumulates in int32) and weights on the left of a MatMul/Gemm
                out_axis = axis
                if op == "Conv" and w.ndim >= 2 and w.shape[1] == 1 and _attr(node, "group", 1) > 1:
                    out_axis = None
                if not per_channel:
                    axis = None
                if w.ndim < 2:
                    axis = block_axis = out_axis = None
                p.weights.append(WeightSpec(node.name, w_slot, ins[w_slot], axis,
                                            block_axis if block_size else None, out_axis))
            if not static:
                continue
            for k in act_slots:
                add(ins[k], None)
                compute_reads.add((node.name, ins[k]))
            # int32 bias at sx*sw
            if has_w and w_slot == 1 and len(ins) > 2 and ins[2] and is_float_init(ins[2]) \
                    and 0 in act_slots and not block_size:
                b = numpy_helper.to_array(inits[ins[2]])
                ok = b.ndim == 1
                if op == "Gemm":
                    ok = ok and _attr(node, "alpha", 1.0) == 1.0 and _attr(node, "beta", 1.0) == 1.0
                if ok:
                    p.biases.append((node.name, 2, ins[2], ins[0], ins[1]))
            out = group_output(node)
            if out not in graph_outputs and is_act(out):
                add(out, node.name)
        elif op == "Add" and static:
            ins = list(node.input)
            if len(ins) == 2 and is_act(ins[0]) and is_act(ins[1]):
                p.quantized_nodes.append(node.name)
                add(ins[0])
                add(ins[1])
                out = group_output(node)
                if out not in graph_outputs:
                    add(out, node.name)
                    group_out[node.name] = out
        elif op == "Concat" and static:
            ins = [i for i in node.input if i]
            if ins and all(is_act(i) for i in ins) and node.output[0] not in graph_outputs:
                p.quantized_nodes.append(node.name)
                add(node.output[0], node.name)
                for i in ins:
                    add(i)
                    p.union(node.output[0], i)
    if static:
        changed = True
        while changed:
            changed = False
            for node in g.node:
                if node.op_type not in PASS_THROUGH or node.name in exclude:
                    continue
                i, o = node.input[0], node.output[0]
                if not (is_act(i) and is_act(o)) or o in graph_outputs:
                    continue
                if i in q or o in q:
                    if not (i in q and o in q and p.root(i) == p.root(o)):
                        changed = True
                    add(i)
                    add(o, p.layer_of.get(i, node.name))
                    p.union(i, o)
                    if node.name not in p.quantized_nodes:
                        p.quantized_nodes.append(node.name)
    if static:
        # A Q/DQ pays only where a quantized op reads the tensor: a compute op, or an Add /
        # Concat / pass-through op whose own output stays quantized. Outputs read by float ops
        # alone (activation functions, Softmax, ...) stay float, so they are rounded once (at the
        # next quantized input) instead of twice; the op before them dequantizes in its epilogue.
        conditional = {n.name: n for n in g.node if n.name in p.quantized_nodes
                       and n.op_type not in COMPUTE}
        changed = True
        while changed:
            changed = False
            for t in list(q):
                if any((c.name, t) in compute_reads or (c.name in conditional and
                       group_out.get(c.name, c.output[0]) in q) for c in cons.get(t, [])):
                    continue
                del q[t]
                changed = True
        for name, n in conditional.items():
            if group_out.get(name, n.output[0]) not in q:
                p.quantized_nodes.remove(name)
    # Q/DQ in topological order of the producers (graph inputs first).
    order = {o.name: -1 for o in g.input}
    for k, n in enumerate(g.node):
        for o in n.output:
            order[o] = k
    p.activations = sorted(q, key=lambda t: order.get(t, -1))
    for t in p.activations:
        p.parent.setdefault(t, t)
    return p


class _Names:
    def __init__(self, model):
        g = model.graph
        self.used = {t.name for t in g.initializer} | {i.name for i in g.input} | \
            {n.name for n in g.node} | {o for n in g.node for o in n.output}

    def __call__(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name


def write(model: onnx.ModelProto, p: Placement, act_params: dict, *, activation_type: str,
          weight_type: str, symmetric_weights: bool, block_size: int | None,
          metadata: dict | None = None, saturation_safe: bool = False
          ) -> tuple[onnx.ModelProto, dict]:
    """Rewrite `model` (a copy) with Q/DQ. `act_params`: tensor -> (scale, zero_point) for every
    tensor of `p.activations`. `saturation_safe`: an int8 weight of an integer GEMM whose u8 x s8
    pair sums could overflow int16 (`params.pairs_overflow_int16`) is stored as uint8 with its
    values and zero point shifted by +128: the same numbers, but runtimes then pick u8 x u8
    kernels, which do not sum pairs in int16. Returns (model, weight facts)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    names = _Names(m)
    inits = {t.name: t for t in g.initializer}
    act_dt = onnx_elem_type(activation_type)
    a_np = np_dtype(activation_type)
    new_inits: list[onnx.TensorProto] = []
    qdq_out: dict[str, str] = {}
    qdq_nodes: dict[str, list] = {}

    for t in p.activations:
        if t not in act_params:
            continue
        s, z = act_params[t]
        sname, zname = names(f"{t}_scale"), names(f"{t}_zero_point")
        new_inits.append(numpy_helper.from_array(np.asarray(s, np.float32).reshape(()), sname))
        new_inits.append(numpy_helper.from_array(np.asarray(z).astype(a_np).reshape(()), zname))
        qo, dqo = names(t + Q_SUFFIX), names(t + DQ_SUFFIX)
        qdq_nodes[t] = [
            helper.make_node("QuantizeLinear", [t, sname, zname], [qo], name=names(f"{t}_QuantizeLinear")),
            helper.make_node("DequantizeLinear", [qo, sname, zname], [dqo],
                             name=names(f"{t}_DequantizeLinear")),
        ]
        qdq_out[t] = dqo

    # weights
    wfacts: dict[str, dict] = {}
    wq_out: dict[str, str] = {}
    w_scales: dict[str, np.ndarray] = {}
    w_nodes: list = []
    w_by_node = {(w.node, w.index): w for w in p.weights}
    for w in p.weights:
        if w.name in wq_out:
            continue
        arr = numpy_helper.to_array(inits[w.name]).astype(np.float32)
        if w.block_axis is not None and block_size:
            qv, s, z = quantize_weight(arr, weight_type, symmetric_weights, w.block_axis, block_size)
            axis, bs = w.block_axis, block_size
        else:
            qv, s, z = quantize_weight(arr, weight_type, symmetric_weights, w.axis)
            axis, bs = (w.axis if np.ndim(s) else None), None
        wtype = weight_type
        if saturation_safe and weight_type == "int8" and w.out_axis is not None \
                and pairs_overflow_int16(qv, w.out_axis):
            qv, z, wtype = qv + 128, np.asarray(z) + 128, "uint8"
        wd = np_dtype(wtype)
        qname, sname, zname = names(f"{w.name}_quantized"), names(f"{w.name}_scale"), \
            names(f"{w.name}_zero_point")
        new_inits += [numpy_helper.from_array(qv.astype(wd), qname),
                      numpy_helper.from_array(np.asarray(s, np.float32), sname),
                      numpy_helper.from_array(np.asarray(z).astype(wd), zname)]
        attrs = {}
        if axis is not None:
            attrs["axis"] = int(axis)
        if bs:
            attrs["block_size"] = int(bs)
        out = names(w.name + DQ_SUFFIX)
        w_nodes.append(helper.make_node("DequantizeLinear", [qname, sname, zname], [out],
                                        name=names(f"{w.name}_DequantizeLinear"), **attrs))
        wq_out[w.name] = out
        w_scales[w.name] = np.asarray(s, np.float32)
        err = arr - _dq(qv, s, z, axis, bs, arr.shape)
        wfacts[w.name] = {"axis": axis, "block_size": bs, "type": wtype,
                          "sqnr_db": _sqnr(arr, err), "max_abs_error": float(np.abs(err).max(initial=0))}

    # biases (int32 at sx * sw)
    b_out: dict[tuple[str, int], str] = {}
    for node_name, slot, bname, xname, wname in p.biases:
        if xname not in act_params or wname not in w_scales:
            continue
        sx = np.float32(np.asarray(act_params[xname][0]).reshape(()))
        sw = w_scales[wname]
        b = numpy_helper.to_array(inits[bname]).astype(np.float64)
        if sw.ndim == 1 and sw.shape[0] != b.shape[0]:
            continue
        sb = (sx * sw).astype(np.float32)
        qb = np.clip(np.rint(b / sb.astype(np.float64)), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
        base = bname if not any(k[2] == bname and k[0] != node_name for k in p.biases) \
            else f"{bname}_{node_name}"
        qname, sname, zname = names(f"{base}_quantized"), names(f"{base}_scale"), \
            names(f"{base}_zero_point")
        new_inits += [numpy_helper.from_array(qb, qname),
                      numpy_helper.from_array(sb.reshape(sb.shape if sb.ndim else ()), sname),
                      numpy_helper.from_array(np.zeros(sb.shape, np.int32), zname)]
        attrs = {"axis": 0} if sb.ndim == 1 else {}
        out = names(base + DQ_SUFFIX)
        w_nodes.append(helper.make_node("DequantizeLinear", [qname, sname, zname], [out],
                                        name=names(f"{base}_DequantizeLinear"), **attrs))
        b_out[(node_name, slot)] = out

    # rebuild the node list
    new_nodes = list(w_nodes)
    for t in p.activations:  # graph inputs
        if t in qdq_nodes and t in {i.name for i in g.input}:
            new_nodes += qdq_nodes[t]
    for node in g.node:
        if node.name not in p.excluded:
            for k, i in enumerate(node.input):
                if (node.name, k) in b_out:
                    node.input[k] = b_out[(node.name, k)]
                elif (node.name, k) in w_by_node and i in wq_out:
                    node.input[k] = wq_out[i]
                elif i in qdq_out:
                    node.input[k] = qdq_out[i]
        new_nodes.append(node)
        for o in node.output:
            if o in qdq_nodes:
                new_nodes += qdq_nodes[o]
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    ginit = {t.name for t in g.initializer}
    keep_inputs = [i for i in g.input if i.name not in ginit or i.name in used]
    del g.input[:]
    g.input.extend(keep_inputs)
    del g.value_info[:]
    if metadata:
        for k, v in metadata.items():
            entry = m.metadata_props.add()
            entry.key, entry.value = k, v
    try:
        m = onnx.shape_inference.infer_shapes(m)
    except Exception:
        pass
    return m, wfacts


def _dq(qv, s, z, axis, bs, shape):
    from qrt.quantization.params import dequantize_weight
    return dequantize_weight(qv, s, z, axis, bs)


def _sqnr(ref: np.ndarray, err: np.ndarray) -> float:
    sig = float(np.sum(np.square(ref, dtype=np.float64)))
    noise = float(np.sum(np.square(err, dtype=np.float64)))
    if noise == 0:
        return float("inf")
    if sig == 0:
        return float("-inf")
    return 10.0 * np.log10(sig / noise)


def fresh_name(model: onnx.ModelProto, base: str) -> str:
    """A name no initializer, input, node or value of `model` uses yet."""
    return _Names(model)(base)
