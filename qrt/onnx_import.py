"""ONNX ModelProto -> qrt.ir.Graph. The only runtime module that imports onnx.

Validates everything that can be validated before running: file readable and complete, IR version
and opsets in range, external data inside the model's folder, every op supported (all unsupported
ops reported at once), every input defined, no cycles, required attributes present.
"""
from __future__ import annotations

import os
from collections import defaultdict, deque

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qrt import contrib, ir
from qrt.errors import ModelLoadError, UnsupportedOpError
from qrt.ops import REQUIRED, resolve
from qrt.ops.registry import canonical_domain

MIN_OPSET = 7
MAX_OPSET = onnx.defs.onnx_opset_version()
MAX_IR_VERSION = onnx.IR_VERSION

# Element types qrt does not run (the model still loads if they only appear in unused value_info).
_UNSUPPORTED_ELEM_TYPES = {
    onnx.TensorProto.STRING, onnx.TensorProto.BFLOAT16, onnx.TensorProto.COMPLEX64,
    onnx.TensorProto.COMPLEX128,
}

_KNOWN_ELEM_TYPES = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}


def np_dtype(elem_type: int):
    """numpy dtype of an ONNX element type (ml_dtypes types for int4/uint4/float8)."""
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        return None


def elem_type_name(elem_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"<unknown element type {elem_type}>"


def read_model(model, source: str | None = None) -> tuple[onnx.ModelProto, str, str | None]:
    """Returns (proto, source label for messages, base directory for external data)."""
    if isinstance(model, onnx.ModelProto):
        return model, source or "<ModelProto>", None
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        label, base = source or "<bytes>", None
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        label, base = path, os.path.dirname(os.path.abspath(path))
        if not os.path.exists(path):
            raise ModelLoadError(f"{path}: no such file")
        if os.path.isdir(path):
            raise ModelLoadError(f"{path}: is a directory, not an ONNX model file")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ModelLoadError(f"{path}: cannot read: {e}") from e
    else:
        raise TypeError(
            f"model must be a path, bytes or onnx.ModelProto, not {type(model).__name__}")
    if not data:
        raise ModelLoadError(f"{label}: empty file, not an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ModelLoadError(
            f"{label}: not a valid ONNX model (truncated or corrupt protobuf: {e})") from e
    if not proto.HasField("graph"):
        raise ModelLoadError(f"{label}: not a valid ONNX model (no graph in the file; truncated?)")
    return proto, label, base


def _check_versions(proto: onnx.ModelProto, label: str) -> dict[str, int]:
    if proto.ir_version > MAX_IR_VERSION:
        raise ModelLoadError(
            f"{label}: IR version {proto.ir_version} is newer than the newest supported "
            f"({MAX_IR_VERSION})")
    if proto.ir_version < 3:
        raise ModelLoadError(f"{label}: IR version {proto.ir_version} is too old (need >= 3)")
    opsets: dict[str, int] = {}
    for imp in proto.opset_import:
        opsets[canonical_domain(imp.domain)] = int(imp.version)
    if "" not in opsets:
        raise ModelLoadError(f"{label}: the model imports no version of the default ONNX opset")
    v = opsets[""]
    if not MIN_OPSET <= v <= MAX_OPSET:
        raise ModelLoadError(
            f"{label}: opset {v} is outside the supported range {MIN_OPSET}..{MAX_OPSET}")
    return opsets


def _external_tensor(t: onnx.TensorProto, base: str | None, label: str) -> np.ndarray:
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location")
    if not loc:
        raise ModelLoadError(f"{label}: tensor '{t.name}' has external data without a location")
    if base is None:
        raise ModelLoadError(
            f"{label}: tensor '{t.name}' keeps its data in external file '{loc}', which can only "
            "be found when the model is loaded from a path")
    if os.path.isabs(loc):
        raise ModelLoadError(
            f"{label}: tensor '{t.name}': external data location '{loc}' is absolute; it must be "
            "relative to the model's folder")
    root = os.path.realpath(base)
    path = os.path.realpath(os.path.join(root, loc))
    if os.path.commonpath([root, path]) != root:
        raise ModelLoadError(
            f"{label}: tensor '{t.name}': external data location '{loc}' escapes the model's folder")
    if not os.path.isfile(path):
        raise ModelLoadError(f"{label}: tensor '{t.name}': external data file '{loc}' not found")
    try:
        offset = int(info.get("offset", 0) or 0)
        length = info.get("length")
        length = None if length is None else int(length)
    except ValueError:
        raise ModelLoadError(
            f"{label}: tensor '{t.name}': external data offset/length "
            f"({info.get('offset')!r}, {info.get('length')!r}) are not integers") from None
    size = os.path.getsize(path)
    n = size - offset if length is None else length
    if offset < 0 or n < 0 or offset + n > size:
        raise ModelLoadError(
            f"{label}: tensor '{t.name}': external data range offset={offset} length={n} is "
            f"outside file '{loc}' ({size} bytes)")
    with open(path, "rb") as f:
        f.seek(offset)
        raw = f.read(n)
    copy = onnx.TensorProto()
    copy.CopyFrom(t)
    del copy.external_data[:]
    copy.data_location = onnx.TensorProto.DEFAULT
    copy.raw_data = raw
    return _to_array(copy, label)


def _to_array(t: onnx.TensorProto, label: str) -> np.ndarray:
    if any(d < 0 for d in t.dims):
        raise ModelLoadError(f"{label}: tensor '{t.name}' has a negative dimension: dims "
                             f"{list(t.dims)}")
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:
        raise ModelLoadError(
            f"{label}: tensor '{t.name}' ({elem_type_name(t.data_type)}, dims {list(t.dims)}) "
            f"cannot be decoded: {e}") from e
    return arr


def tensor_to_array(t: onnx.TensorProto, base: str | None, label: str) -> np.ndarray:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return _external_tensor(t, base, label)
    return _to_array(t, label)


def _value_info(vi: onnx.ValueInfoProto) -> ir.TensorInfo:
    tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    if tt is None:
        which = vi.type.WhichOneof("value")
        kind = {"sequence_type": "sequence", "optional_type": "optional"}.get(which, which)
        elem = None  # the element tensor type of a sequence/optional, when declared
        if which in ("sequence_type", "optional_type"):
            et = getattr(vi.type, which).elem_type
            if et.HasField("sequence_type"):  # optional(sequence(tensor))
                et = et.sequence_type.elem_type
            if et.HasField("tensor_type") and et.tensor_type.elem_type:
                try:
                    elem = np_dtype(et.tensor_type.elem_type)
                except Exception:
                    elem = None
        return ir.TensorInfo(vi.name, elem, kind=kind or "unknown")
    dtype = np_dtype(tt.elem_type) if tt.elem_type else None
    shape = None
    if tt.HasField("shape"):
        dims = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value >= 0:  # exporters write -1 for "any"
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(None)
        shape = tuple(dims)
    return ir.TensorInfo(vi.name, dtype, shape)


def _attr_value(a: onnx.AttributeProto, base, label):
    T = onnx.AttributeProto
    if a.type == T.TENSOR:
        return tensor_to_array(a.t, base, label)
    if a.type == T.TENSORS:
        return [tensor_to_array(t, base, label) for t in a.tensors]
    if a.type == T.STRING:
        return a.s.decode("utf-8", errors="replace")
    if a.type == T.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if a.type == T.INTS:
        return [int(i) for i in a.ints]
    if a.type == T.FLOATS:
        return [float(f) for f in a.floats]
    if a.type == T.INT:
        return int(a.i)
    if a.type == T.FLOAT:
        return float(a.f)
    if a.type == T.GRAPHS:
        return helper.get_attribute_value(a)  # kept as protos; no op in scope takes a list
    if a.type in (T.SPARSE_TENSOR, T.SPARSE_TENSORS, T.TYPE_PROTO, T.TYPE_PROTOS):
        return helper.get_attribute_value(a)
    raise ModelLoadError(f"{label}: attribute '{a.name}' has unknown type {a.type}")


def _infer_shapes(proto: onnx.ModelProto) -> dict[str, ir.TensorInfo]:
    """Best-effort static shapes for `inspect` and the passes; never required to run."""
    try:
        # Strip initializer data so inference on big models costs nothing.
        light = onnx.ModelProto()
        light.CopyFrom(proto)
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False)
    except Exception:
        return {}
    return {vi.name: _value_info(vi) for vi in list(inferred.graph.value_info)
            + list(inferred.graph.output) + list(inferred.graph.input)}


def _convert_nodes(g, opsets, base, label, scope, unsupported, prefix) -> list[ir.Node]:
    """The nodes of GraphProto `g` as IR nodes, subgraph attributes converted recursively (see
    `_subgraph`). `scope`: every name visible to `g`'s nodes (its own and enclosing graphs');
    unsupported ops, here and in subgraphs, are collected into `unsupported`."""
    nodes: list[ir.Node] = []
    for i, n in enumerate(g.node):
        dom = canonical_domain(n.domain)
        name = n.name or f"{n.op_type}_{i}"
        node = ir.Node(n.op_type, list(n.input), list(n.output), {}, name, dom)
        try:
            attrs = {a.name: _attr_value(a, base, label) for a in n.attribute
                     if a.type != onnx.AttributeProto.GRAPH}
        except ModelLoadError:
            raise
        except Exception as e:
            raise ModelLoadError(f"{label}: {n.op_type} node '{name}': bad attribute: {e}") from e
        implicit: list[str] = []
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                where = f"{label}: {node.label()}, attribute '{a.name}'"
                sub, free = _subgraph(a.g, opsets, base, where, scope, unsupported,
                                      f"{prefix}{name}/")
                attrs[a.name] = sub
                implicit.extend(f for f in free if f not in implicit)
        node.attrs = attrs
        if dom == contrib.DOMAIN and dom not in opsets:
            opsets[dom] = 1  # onnxruntime's optimizer can omit the import; it assumes version 1
        if dom not in opsets or dom == "qrt":  # qrt's own domain is for the passes' fused ops
            unsupported[(n.op_type, dom)].append(prefix + name)
        elif contrib.expandable(node):
            pass  # becomes standard nodes below
        else:
            opdef = resolve(n.op_type, dom, opsets[dom])
            if opdef is None:
                unsupported[(n.op_type, dom)].append(prefix + name)
            else:
                _check_arity(node, n, opsets[dom], label)
        if node.subgraphs() or (not dom and n.op_type in _SUBGRAPH_OPS):
            if (n.op_type, dom) not in unsupported:  # e.g. Scan-8 has another contract
                _check_contract(node, label)
            node.inputs = node.inputs + implicit  # outer values the subgraphs read: see ir.py
            node.attrs[ir.IMPLICIT_INPUTS] = list(implicit)
        nodes.append(node)
    return nodes


def _initializers(g: onnx.GraphProto, base, label) -> dict[str, np.ndarray]:
    """A graph's initializers by name: each named once, decoded (external data from `base`)."""
    inits: dict[str, np.ndarray] = {}
    for t in g.initializer:
        if not t.name:
            raise ModelLoadError(f"{label}: an initializer has no name")
        if t.name in inits:
            raise ModelLoadError(f"{label}: two initializers are named '{t.name}'")
        inits[t.name] = tensor_to_array(t, base, label)
    return inits


def _subgraph(gp: onnx.GraphProto, opsets, base, where, outer_scope, unsupported, prefix):
    """A GraphProto attribute (If's branches, Loop's and Scan's body, SequenceMap's body) as an IR
    graph with its own inputs, outputs, initializers and nodes (Constant nodes become its
    initializers), validated like the main graph. Returns (graph, free): `free` lists, in first-use
    order, the values it reads from enclosing scopes (those of nested subgraphs included), which
    the caller adds to the node's inputs. Errors name the node and the attribute (`where`)."""
    if len(gp.sparse_initializer):
        raise ModelLoadError(f"{where}: sparse initializers are not supported")
    inits = _initializers(gp, base, where)
    inputs = [_value_info(vi) for vi in gp.input]
    for vi in gp.input:
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is not None and tt.elem_type in _UNSUPPORTED_ELEM_TYPES:
            raise ModelLoadError(f"{where}: input '{vi.name}' has element type "
                                 f"{elem_type_name(tt.elem_type)}, which qrt does not run")
    outputs = [_value_info(vi) for vi in gp.output]
    own = {vi.name for vi in gp.input} | set(inits) | {o for n in gp.node for o in n.output if o}
    nodes = _convert_nodes(gp, opsets, base, where, outer_scope | own, unsupported, prefix)
    if not unsupported:
        nodes = _constants_to_initializers(nodes, inits, outputs, opsets[""], where, {})
        if any(contrib.expandable(n) for n in nodes):
            nodes = _expand_contrib(nodes, inits, opsets[""], {}, where)
    defined = {t.name for t in inputs} | set(inits) | {o for n in nodes for o in n.outputs if o}
    free: list[str] = []
    for name in [i for n in nodes for i in n.inputs if i] + [o.name for o in outputs]:
        if name not in defined and name not in free:
            if name not in outer_scope:
                readers = [n.label() for n in nodes if name in n.inputs]
                raise ModelLoadError(
                    f"{where}: " + (f"{readers[0]} reads" if readers else "graph output is")
                    + f" '{name}', which neither the subgraph nor an enclosing graph defines")
            free.append(name)
    sub = ir.Graph(nodes, inputs, outputs, inits, {}, dict(opsets), gp.name, where)
    if not unsupported:
        check_graph(sub, outer=set(free))
        _check_required(sub, where)
    for ti in inputs + outputs:
        sub.value_info.setdefault(ti.name, ti)
    return sub, free


_SUBGRAPH_OPS = ("If", "Loop", "Scan", "SequenceMap")


def _check_arity(node: ir.Node, n: onnx.NodeProto, opset: int, label: str) -> None:
    """Input and output counts within the ONNX schema of a default-domain op: an extra output
    would otherwise be filled with whatever the op returns in its place, a missing input read as
    another."""
    if node.domain:
        return
    try:
        schema = onnx.defs.get_schema(n.op_type, opset, "")
    except Exception:  # an op qrt registers beyond the schemas onnx knows (onnxruntime's)
        return
    ins = list(n.input)
    outs = list(n.output)
    while ins and not ins[-1]:
        ins.pop()
    while outs and not outs[-1]:
        outs.pop()
    if not schema.min_input <= len(ins) <= schema.max_input:
        raise ModelLoadError(
            f"{label}: {node.label()} has {len(ins)} input(s); {n.op_type}-{schema.since_version} "
            f"takes {schema.min_input}" + ("" if schema.max_input == schema.min_input else
                                           f" to {schema.max_input}"))
    if not schema.min_output <= len(outs) <= schema.max_output:
        raise ModelLoadError(
            f"{label}: {node.label()} has {len(outs)} output(s); {n.op_type}-"
            f"{schema.since_version} produces {schema.min_output}"
            + ("" if schema.max_output == schema.min_output else f" to {schema.max_output}"))
    single = onnx.defs.OpSchema.FormalParameterOption.Single
    for kind, names, params in (("input", ins, schema.inputs), ("output", outs, schema.outputs)):
        for k, name in enumerate(names):
            if name or not params:
                continue
            p = params[min(k, len(params) - 1)]
            if p.option == single:  # '' marks an omitted optional value only
                raise ModelLoadError(
                    f"{label}: {node.label()}: {kind} {k} ('{p.name}') of {n.op_type}-"
                    f"{schema.since_version} is required but given as ''")


def _check_contract(node: ir.Node, label: str) -> None:
    op, n_in, n_out = node.op_type, len(node.inputs), len(node.outputs)

    def graph(attr):
        g = node.attrs.get(attr)
        if g is None:
            raise ModelLoadError(f"{label}: {node.label()} is missing required attribute '{attr}'")
        if not isinstance(g, ir.Graph):
            raise ModelLoadError(f"{label}: {node.label()}, attribute '{attr}' must be a graph, "
                                 f"not {type(g).__name__}")
        return g

    def fail(attr, msg):
        raise ModelLoadError(f"{label}: {node.label()}, attribute '{attr}': {msg}")

    if node.domain:
        return
    if op == "If":
        then_g, else_g = graph("then_branch"), graph("else_branch")
        for attr, g in (("then_branch", then_g), ("else_branch", else_g)):
            if g.inputs:
                fail(attr, f"an If branch takes no inputs, this one declares {len(g.inputs)}")
        if len(then_g.outputs) != len(else_g.outputs):
            raise ModelLoadError(
                f"{label}: {node.label()}: the branches have different output counts "
                f"(then_branch {len(then_g.outputs)}, else_branch {len(else_g.outputs)})")
        if len(then_g.outputs) != n_out:
            fail("then_branch", f"the branches have {len(then_g.outputs)} output(s), the node "
                                f"{n_out}")
    elif op == "Loop":
        body = graph("body")
        if n_in < 2:
            raise ModelLoadError(f"{label}: {node.label()} needs at least 2 inputs (M, cond; "
                                 f"either may be ''), has {n_in}")
        n = n_in - 2
        if len(body.inputs) != 2 + n:
            fail("body", f"the body must take 2 + {n} inputs (iteration number, condition, "
                         f"{n} loop-carried value(s)), it declares {len(body.inputs)}")
        k = n_out - n
        if k < 0 or len(body.outputs) != 1 + n + k:
            fail("body", f"the body must return 1 + {n} + K outputs (condition, {n} loop-carried "
                         f"value(s), K scan outputs) with K = {n_out} node outputs - {n}; it "
                         f"returns {len(body.outputs)}")
    elif op == "Scan":
        body = graph("body")
        m = node.attrs.get("num_scan_inputs")
        if not isinstance(m, int) or m < 1 or m > n_in:
            raise ModelLoadError(f"{label}: {node.label()}: num_scan_inputs must be between 1 "
                                 f"and the number of inputs ({n_in}), got {m!r}")
        n = n_in - m
        if len(body.inputs) != n + m:
            fail("body", f"the body must take {n} state + {m} scan input(s), it declares "
                         f"{len(body.inputs)}")
        k = n_out - n
        if k < 0 or len(body.outputs) != n + k:
            fail("body", f"the body must return {n} state + {max(k, 0)} scan output(s) "
                         f"(the node has {n_out} outputs), it returns {len(body.outputs)}")
        for attr, want in (("scan_input_axes", m), ("scan_input_directions", m),
                           ("scan_output_axes", k), ("scan_output_directions", k)):
            v = node.attrs.get(attr)
            if v is not None and len(v) != want:
                raise ModelLoadError(f"{label}: {node.label()}: attribute '{attr}' has "
                                     f"{len(v)} entries, expected {want}")
    elif op == "SequenceMap":
        body = graph("body")
        if len(body.inputs) != n_in:
            fail("body", f"the body must take one input per node input ({n_in}), it declares "
                         f"{len(body.inputs)}")
        if len(body.outputs) != n_out:
            fail("body", f"the body must return one output per node output ({n_out}), it "
                         f"returns {len(body.outputs)}")


def _check_required(graph: ir.Graph, label: str) -> None:
    for node in graph.nodes:
        opdef = resolve(node.op_type, node.domain, graph.opsets[node.domain])
        for aname, default in opdef.attrs.items():
            if default is REQUIRED and aname not in node.attrs:
                raise ModelLoadError(
                    f"{label}: {node.label()} is missing required attribute '{aname}'")


def to_graph(proto: onnx.ModelProto, label: str = "<model>", base: str | None = None) -> ir.Graph:
    opsets = _check_versions(proto, label)
    if len(proto.functions):
        try:
            proto = onnx.inliner.inline_local_functions(proto)
        except Exception as e:
            raise ModelLoadError(f"{label}: cannot inline the model's local functions: {e}") from e
    g = proto.graph
    if len(g.sparse_initializer):
        raise ModelLoadError(
            f"{label}: sparse initializers are not supported "
            f"({', '.join(s.values.name for s in g.sparse_initializer)})")

    inits = _initializers(g, base, label)
    seen_inputs: set[str] = set()
    for vi in g.input:
        if vi.name in seen_inputs:
            raise ModelLoadError(f"{label}: two graph inputs are named '{vi.name}'")
        seen_inputs.add(vi.name)

    inputs = [_value_info(vi) for vi in g.input if vi.name not in inits]
    for ti, vi in zip(inputs, [v for v in g.input if v.name not in inits]):
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None:
            if ti.kind not in ("sequence", "optional"):
                raise ModelLoadError(f"{label}: input '{vi.name}' has type {ti.kind}; only "
                                     "tensor, sequence and optional inputs are supported")
            continue
        if tt.elem_type not in _KNOWN_ELEM_TYPES:
            raise ModelLoadError(
                f"{label}: input '{vi.name}' has element type {tt.elem_type}, which is "
                + ("undefined" if tt.elem_type == 0 else "not an ONNX element type"))
        if tt.elem_type in _UNSUPPORTED_ELEM_TYPES:
            raise ModelLoadError(
                f"{label}: input '{vi.name}' has element type {elem_type_name(tt.elem_type)}, "
                "which qrt does not run")
    outputs = [_value_info(vi) for vi in g.output]

    scope = {vi.name for vi in g.input} | set(inits) | {o for n in g.node for o in n.output if o}
    unsupported: dict[tuple[str, str], list[str]] = defaultdict(list)
    nodes = _convert_nodes(g, opsets, base, label, scope, unsupported, "")

    if unsupported:
        parts = []
        for (op, dom), names in sorted(unsupported.items()):
            shown = ", ".join(f"'{x}'" for x in names[:5]) + (
                f" and {len(names) - 5} more" if len(names) > 5 else "")
            where = f"domain '{dom}'" if dom else f"opset {opsets['']}"
            parts.append(f"{op} ({where}; nodes {shown})")
        raise UnsupportedOpError(
            f"{label}: {len(unsupported)} unsupported op type(s): " + "; ".join(parts),
            [(op, dom, names) for (op, dom), names in sorted(unsupported.items())])

    folded: dict[str, dict] = {}
    order = [(n.name, n.op_type) for n in nodes]
    nodes = _constants_to_initializers(nodes, inits, outputs, opsets[""], label, folded)
    small = proto.ByteSize() < (1 << 31)
    value_info = _infer_shapes(proto) if small else {}
    if any(contrib.expandable(n) for n in nodes):
        known = set(inits)
        expansions: dict[str, list[ir.Node]] = {}
        nodes = _expand_contrib(nodes, inits, opsets[""], value_info, label, expansions)
        if small:  # shapes past the contrib ops, which onnx's inference does not know
            value_info = _infer_shapes(_with_expansions(proto, expansions, {
                k: v for k, v in inits.items() if k not in known})) or value_info
    graph = ir.Graph(nodes, inputs, outputs, inits, {}, opsets, g.name, label)
    graph.folded = folded
    graph.source_nodes = order
    graph.metadata = {p.key: p.value for p in proto.metadata_props}
    graph.external_data = any(t.data_location == onnx.TensorProto.EXTERNAL for t in g.initializer)
    check_graph(graph)
    _check_required(graph, label)
    graph.value_info = value_info
    for ti in inputs + outputs:
        graph.value_info.setdefault(ti.name, ti)
    return graph


def _with_expansions(proto, expansions, new_inits) -> onnx.ModelProto:
    """A copy of `proto` with each expanded contrib node replaced by its standard nodes (and their
    new constants), for shape inference only."""
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    del m.graph.node[:]
    for n in proto.graph.node:
        new = expansions.get(n.output[0]) if n.output else None
        if new is None:
            m.graph.node.append(n)
            continue
        for e in new:
            m.graph.node.append(helper.make_node(e.op_type, e.inputs, e.outputs, e.name, **{
                k: v for k, v in e.attrs.items() if not isinstance(v, np.ndarray)}))
    for k, v in new_inits.items():
        m.graph.initializer.append(numpy_helper.from_array(np.asarray(v), k))
    return m


def _expand_contrib(nodes, inits, opset, value_info, label, expansions=None):
    """onnxruntime's quantized com.microsoft ops as standard DQ -> op -> Q nodes (qrt/contrib.py).
    `expansions`, when given, receives {first output of the contrib node: its new nodes}."""
    out = []
    for node in nodes:
        if not contrib.expandable(node):
            out.append(node)
            continue
        first = node.inputs[0] if node.inputs else ""
        info = value_info.get(first)
        rank = len(info.shape) if info is not None and info.shape is not None else (
            inits[first].ndim if first in inits else None)
        new = contrib.expand(node, inits, opset, rank, label)
        for e in new:  # opsets 7-9 lack QuantizeLinear/DequantizeLinear (and other targets)
            if canonical_domain(e.domain) == "" and resolve(e.op_type, "", opset) is None:
                raise UnsupportedOpError(
                    f"{label}: {node.label()} ({node.domain}) is run as {e.op_type}, which opset "
                    f"{opset} (the model's default-domain opset) does not have")
        if expansions is not None and node.outputs:
            expansions[node.outputs[0]] = new
        out.extend(new)
    return out


def _constants_to_initializers(nodes, inits, outputs, opset, label, folded):
    """Constant nodes become initializers at load time, so every pass sees their values as the
    constants they are (exporters such as paddle2onnx write weights as Constant nodes). A Constant
    that is itself a graph output stays a node (its value must be copied out per run anyway)."""
    out_names = {o.name for o in outputs}
    kept = []
    for node in nodes:
        if node.op_type != "Constant" or node.domain != "" or node.outputs[0] in inits:
            kept.append(node)
            continue
        opdef = resolve("Constant", "", opset)
        kwargs = {a: node.attrs.get(a, d) for a, d in opdef.attrs.items()}
        if any(v is REQUIRED for v in kwargs.values()):
            kept.append(node)  # reported as a missing attribute below
            continue
        try:
            value = opdef.fn(**kwargs)
        except Exception as e:
            raise ModelLoadError(f"{label}: {node.label()}: bad value: {e}") from e
        if node.outputs[0] in out_names:  # checked, but kept: copied out on each run
            kept.append(node)
            continue
        inits[node.outputs[0]] = value
        folded[node.name] = {"precision": "float", "kernel": "folded at load",
                             "reason": "Constant node: its value is stored as an initializer"}
    return kept


def check_graph(graph: ir.Graph, outer: set | None = None) -> None:
    """Every value defined once, every input defined, acyclic; sorts nodes topologically.
    `outer`: the enclosing scopes' values a subgraph reads."""
    label = graph.source
    defined = {t.name for t in graph.inputs} | set(graph.initializers)
    local = set(defined)
    defined |= outer or set()
    producer: dict[str, ir.Node] = {}
    for n in graph.nodes:
        for o in n.outputs:
            if not o:
                continue
            if o in producer or o in local:
                raise ModelLoadError(f"{label}: value '{o}' is produced more than once "
                                     f"(again by {n.label()})")
            producer[o] = n
    for n in graph.nodes:
        for i in n.inputs:
            if i and i not in defined and i not in producer:
                raise ModelLoadError(f"{label}: {n.label()} reads '{i}', which no node, input or "
                                     "initializer defines")
    for o in graph.outputs:
        if o.name not in defined and o.name not in producer:
            raise ModelLoadError(f"{label}: graph output '{o.name}' is never computed")
    # Kahn's algorithm; what is left over sits on a cycle.
    pending = {id(n): sum(1 for i in set(n.inputs) if i in producer) for n in graph.nodes}
    users: dict[str, list[ir.Node]] = defaultdict(list)
    for n in graph.nodes:
        for i in set(n.inputs):
            if i in producer:
                users[i].append(n)
    ready = deque(n for n in graph.nodes if pending[id(n)] == 0)
    order: list[ir.Node] = []
    while ready:
        n = ready.popleft()
        order.append(n)
        for o in n.outputs:
            for u in users.get(o, ()):
                pending[id(u)] -= 1
                if pending[id(u)] == 0:
                    ready.append(u)
    if len(order) != len(graph.nodes):
        stuck = [n.label() for n in graph.nodes if pending[id(n)] > 0]
        raise ModelLoadError(f"{label}: the graph has a cycle through: " + ", ".join(stuck[:10]))
    graph.nodes[:] = order


def load_graph(model, source: str | None = None) -> ir.Graph:
    proto, label, base = read_model(model, source)
    return to_graph(proto, label, base)
