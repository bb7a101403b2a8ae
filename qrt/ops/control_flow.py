"""Control flow: If, Loop, Scan and SequenceMap, whose subgraphs run as nested plans.

The importer turns each graph attribute into an `ir.Graph` and appends the outer values the
subgraphs read (their implicit inputs) to the node's inputs, listing the names the subgraphs use in
the attribute `ir.IMPLICIT_INPUTS`. Those values arrive here last among the positional inputs.

Each subgraph gets one `qrt.plan.Plan`, built when the plan binds the step (`bind_step`) and reused
for every call and every iteration; it is fed by name: the subgraph's formal inputs, then the
implicit inputs it reads. The passes do not rewrite inside subgraphs: their nodes run as written.

Errors name the node (and the iteration, for a failure inside a body).
"""
from __future__ import annotations

import numpy as np

from qrt import ir
from qrt.errors import NodeExecutionError, QrtError
from qrt.ops.registry import REQUIRED, register

IMPLICIT = ir.IMPLICIT_INPUTS


def _label(ctx) -> str:
    return f"{ctx.op_type} node '{ctx.name}'" if ctx is not None and ctx.name else (
        f"{ctx.op_type} node (unnamed)" if ctx is not None else "node")


def _free_names(g: ir.Graph) -> list[str]:
    """The values `g` reads from enclosing scopes, in first-use order."""
    defined = {t.name for t in g.inputs} | set(g.initializers) | {
        o for n in g.nodes for o in n.outputs if o}
    free: list[str] = []
    for name in [i for n in g.nodes for i in n.inputs if i] + [t.name for t in g.outputs]:
        if name not in defined and name not in free:
            free.append(name)
    return free


def _describe(x) -> str:
    if x is None:
        return "None"
    if isinstance(x, np.ndarray):
        return f"{x.dtype}{list(x.shape)}"
    if isinstance(x, list):
        return f"sequence of {len(x)}"
    return type(x).__name__


class Body:
    """One subgraph, planned once: `run(formal_values, implicit_values_by_name) -> outputs`."""

    def __init__(self, graph: ir.Graph, threads: int, where: str):
        from qrt.plan import Plan

        self.where = where
        self.formal = [t.name for t in graph.inputs]
        self.free = _free_names(graph)
        view = ir.Graph(graph.nodes, list(graph.inputs) + [ir.TensorInfo(n) for n in self.free],
                        graph.outputs, graph.initializers, graph.value_info, graph.opsets,
                        graph.name, graph.source)
        self.plan = Plan(view, threads)
        self.outputs = [t.name for t in graph.outputs]
        self.out_info = list(graph.outputs)
        self._consts = {id(a) for a in graph.initializers.values()}

    def run(self, formal, implicit: dict):
        feeds = dict(zip(self.formal, formal))
        for n in self.free:
            feeds[n] = implicit[n]
        try:
            res = self.plan._run(feeds, self.outputs, None, None)  # the outer plan set BLAS up
        except QrtError as e:
            raise NodeExecutionError(f"{self.where}: {e}") from e
        # never hand a subgraph's constant to a caller that may write into it; numpy scalars
        # (0-d arithmetic) become arrays
        return [self._own(r) for r in res]

    def _own(self, r):
        if isinstance(r, np.ndarray):
            return r.view() if id(r) in self._consts else r
        if isinstance(r, np.generic):
            return np.asarray(r)
        if isinstance(r, list):
            return [self._own(v) for v in r]
        return r


def _implicit(args, names):
    k = len(names)
    if not k:
        return args, {}
    return args[:-k], dict(zip(names, args[-k:]))


def _bool(x, what, label):
    """A condition must be a bool tensor (a float NaN would otherwise count as true)."""
    if isinstance(x, (np.ndarray, np.generic)) and np.asarray(x).dtype != np.bool_:
        raise NodeExecutionError(f"{label}: {what} must be bool, got {_describe(x)}")
    return x


def _scalar(x, what, label, dtype=None):
    if not isinstance(x, np.ndarray) and not isinstance(x, np.generic):
        raise NodeExecutionError(f"{label}: {what} must be a tensor, got {_describe(x)}")
    x = np.asarray(x)
    if x.size != 1:
        raise NodeExecutionError(
            f"{label}: {what} must be a scalar (one element), got shape {list(x.shape)}")
    return x.reshape(()) if dtype is None else x.reshape(()).astype(dtype)


def _with_binder(bind):
    """The op function: `bind(**attrs)` builds the nested plans once (`Plan._bind` calls it through
    `bind_step`); a direct call (constant folding, the CUDA plan) binds on the spot."""
    def op(*args, **kw):
        return bind(**kw)(*args)
    op.bind_step = bind
    op.__name__ = bind.__name__.replace("_bind", "")
    return op


def _empty_scan(info: ir.TensorInfo):
    """A scan output of zero iterations: (0, *shape) when the body declares the shape."""
    dtype = info.dtype if info.dtype is not None else np.float32
    shape = info.shape if info.shape is not None and all(
        isinstance(d, int) for d in info.shape) else ()
    return np.zeros((0,) + tuple(shape), dtype=dtype)


def _stack(parts, axis, label, what):
    try:
        return np.stack(parts, axis=axis)
    except ValueError as e:
        shapes = sorted({tuple(np.shape(p)) for p in parts})
        raise NodeExecutionError(
            f"{label}: {what} changes shape across iterations ({shapes}): {e}") from e


# ------------------------------------------------------------------------------------------ If


def _bind_if(*, then_branch, else_branch, ctx=None, **kw):
    label = _label(ctx)
    threads = ctx.threads if ctx is not None else 1
    names = kw.get(IMPLICIT) or ()
    then_b = Body(then_branch, threads, f"{label}, then_branch")
    else_b = Body(else_branch, threads, f"{label}, else_branch")

    def if_step(cond, *rest):
        _, implicit = _implicit((cond,) + rest, names)
        c = bool(_scalar(_bool(cond, "the condition", label), "the condition", label))
        return tuple((then_b if c else else_b).run((), implicit))
    return if_step


if_op = _with_binder(_bind_if)
register("If", since=1, attrs={"then_branch": REQUIRED, "else_branch": REQUIRED, IMPLICIT: ()},
         ctx=True)(if_op)


# ---------------------------------------------------------------------------------------- Loop


def _bind_loop(*, body, ctx=None, **kw):
    label = _label(ctx)
    threads = ctx.threads if ctx is not None else 1
    names = kw.get(IMPLICIT) or ()
    b = Body(body, threads, f"{label}, body")
    n_out = ctx.n_outputs if ctx is not None else len(body.outputs) - 1
    scan_info = body.outputs[1 + len(body.inputs) - 2:]  # after cond and the carried values

    def loop_step(*args):
        args, implicit = _implicit(args, names)
        m, cond, carried = args[0], args[1], list(args[2:])
        n = len(carried)
        k = n_out - n
        if m is not None and np.asarray(m).dtype != np.int64:
            raise NodeExecutionError(f"{label}: the trip count M must be int64, got "
                                     f"{_describe(m)}")
        trip = None if m is None else int(_scalar(m, "the trip count M", label))
        go = True if cond is None else bool(_scalar(_bool(cond, "the condition", label),
                                                    "the condition", label))
        scans = [[] for _ in range(k)]
        i = 0
        # The body's condition output is honoured even when the cond input is omitted (as
        # onnxruntime does): with neither M nor cond, a false condition is the only way out.
        while go and (trip is None or i < trip):
            try:
                outs = b.run([np.array(i, dtype=np.int64), np.array(go)] + carried, implicit)
            except NodeExecutionError as e:
                raise NodeExecutionError(f"{label}, iteration {i}: {e}") from e
            what = f"the body's condition output (iteration {i})"
            go = bool(_scalar(_bool(outs[0], what, label), what, label))
            carried = list(outs[1:1 + n])
            for j in range(k):
                scans[j].append(outs[1 + n + j])
            i += 1
        result = carried
        for j in range(k):
            if scans[j]:
                result.append(_stack(scans[j], 0, label, f"scan output {j}"))
            else:
                result.append(_empty_scan(scan_info[j]) if j < len(scan_info) else
                              np.zeros((0,), np.float32))
        return tuple(result)
    return loop_step


loop_op = _with_binder(_bind_loop)
register("Loop", since=1, attrs={"body": REQUIRED, IMPLICIT: ()}, ctx=True)(loop_op)


# ---------------------------------------------------------------------------------------- Scan


def _axis(a, rank, what, label):
    if not -rank <= a < rank:
        raise NodeExecutionError(f"{label}: {what} {a} is out of range for rank {rank}")
    return a + rank if a < 0 else a


def _bind_scan(*, body, num_scan_inputs, scan_input_axes=None, scan_input_directions=None,
               scan_output_axes=None, scan_output_directions=None, ctx=None, **kw):
    label = _label(ctx)
    threads = ctx.threads if ctx is not None else 1
    names = kw.get(IMPLICIT) or ()
    b = Body(body, threads, f"{label}, body")
    m = int(num_scan_inputs)
    in_axes = list(scan_input_axes or [0] * m)
    in_dirs = list(scan_input_directions or [0] * m)
    for attr, dirs in (("scan_input_directions", in_dirs),
                       ("scan_output_directions", list(scan_output_directions or []))):
        if any(d not in (0, 1) for d in dirs):
            raise NodeExecutionError(f"{label}: {attr} {dirs} must be 0 (forward) or 1 (reverse)")

    def scan_step(*args):
        args, implicit = _implicit(args, names)
        n = len(args) - m
        states, xs = list(args[:n]), args[n:]
        k = len(b.outputs) - n
        out_axes = list(scan_output_axes or [0] * k)
        out_dirs = list(scan_output_directions or [0] * k)
        length, axes = None, []
        for j, x in enumerate(xs):
            if not isinstance(x, np.ndarray):
                raise NodeExecutionError(
                    f"{label}: scan input {j} must be a tensor, got {_describe(x)}")
            ax = _axis(int(in_axes[j]), x.ndim, f"scan_input_axes[{j}]", label)
            axes.append(ax)
            if length is None:
                length = x.shape[ax]
            elif x.shape[ax] != length:
                raise NodeExecutionError(
                    f"{label}: scan inputs have different lengths along their scan axes "
                    f"({length} and {x.shape[ax]} for input {j})")
        scans = [[] for _ in range(k)]
        for t in range(length or 0):
            slices = []
            for x, ax, d in zip(xs, axes, in_dirs):
                idx = length - 1 - t if d else t
                slices.append(x[(slice(None),) * ax + (idx,)])
            try:
                outs = b.run(states + slices, implicit)
            except NodeExecutionError as e:
                raise NodeExecutionError(f"{label}, iteration {t}: {e}") from e
            states = list(outs[:n])
            for j in range(k):
                scans[j].append(outs[n + j])
        result = states
        for j in range(k):
            parts = scans[j]
            if not parts:
                result.append(_empty_scan(b.out_info[n + j]))
                continue
            if out_dirs[j]:
                parts = parts[::-1]
            rank = np.ndim(parts[0]) + 1
            ax = _axis(int(out_axes[j]), rank, f"scan_output_axes[{j}]", label)
            result.append(_stack(parts, ax, label, f"scan output {j}"))
        return tuple(result)
    return scan_step


scan_op = _with_binder(_bind_scan)
register("Scan", since=9, attrs={
    "body": REQUIRED, "num_scan_inputs": REQUIRED, "scan_input_axes": None,
    "scan_input_directions": None, "scan_output_axes": None, "scan_output_directions": None,
    IMPLICIT: ()}, ctx=True)(scan_op)


# ---------------------------------------------------------------------------------- SequenceMap


def _bind_sequence_map(*, body, ctx=None, **kw):
    label = _label(ctx)
    threads = ctx.threads if ctx is not None else 1
    names = kw.get(IMPLICIT) or ()
    b = Body(body, threads, f"{label}, body")

    def sequence_map_step(*args):
        args, implicit = _implicit(args, names)
        if not isinstance(args[0], list):
            raise NodeExecutionError(
                f"{label}: input 0 must be a sequence, got {_describe(args[0])}")
        length = len(args[0])
        for j, a in enumerate(args[1:], 1):
            if isinstance(a, list) and len(a) != length:
                raise NodeExecutionError(f"{label}: input {j} is a sequence of {len(a)}, "
                                         f"input 0 of {length}")
        outs = [[] for _ in b.outputs]
        for t in range(length):
            try:
                res = b.run([a[t] if isinstance(a, list) else a for a in args], implicit)
            except NodeExecutionError as e:
                raise NodeExecutionError(f"{label}, element {t}: {e}") from e
            for j, r in enumerate(res):
                outs[j].append(r)
        return tuple(outs)
    return sequence_map_step


sequence_map_op = _with_binder(_bind_sequence_map)
register("SequenceMap", since=17, attrs={"body": REQUIRED, IMPLICIT: ()},
         ctx=True)(sequence_map_op)
