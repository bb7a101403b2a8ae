"""Execution plan: graph nodes bound to op implementations, values in numbered slots, and the step
after which each intermediate dies (so memory is released as soon as nothing reads it).

`Plan.execute` keeps no state between calls: every call has its own slot list, so one plan serves
many threads at once.

Dispatch is kept cheap (models with hundreds of small nodes spend much of their time here): each
step is pre-bound once to a flat tuple (function, input slots, output slots, kwargs, frees), and
the hot loop does no attribute or dict lookups beyond the call itself. `execute(..., profile=d)`
accumulates wall seconds per node into `d` (keys: `Plan.step_names`, unique per node); use
`plan.profile_by_op(d)` to sum them per op type.

Shape specialisation: the steps whose outputs follow from constants and the feeds' *shapes* alone
(PyTorch exports compute every Reshape target as Shape -> Gather -> Unsqueeze -> Concat on each
call) run once per distinct set of feed shapes; their outputs are kept and later calls with the
same shapes skip those steps (see `shape_only_steps`).
"""
from __future__ import annotations

import operator
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from qrt import ir
from qrt.errors import NodeExecutionError, QrtError
from qrt.ops import NodeContext, resolve
from qrt.ops.registry import NEVER_PRECOMPUTED


@dataclass
class Step:
    fn: Callable
    ins: tuple[int, ...]  # slot index per input; -1 for an omitted optional input
    outs: tuple[int, ...]
    kwargs: dict[str, Any]
    node: ir.Node
    frees: tuple[int, ...] = ()  # slots no later step reads


def _describe(x) -> str:
    if x is None:
        return "None"
    if isinstance(x, np.ndarray):
        return f"{x.dtype}{list(x.shape)}"
    return type(x).__name__


def _blas_limit():
    """The BLAS thread limiter (a no-op context when numpy's BLAS is not controllable)."""
    try:
        from qrt.kernels.cpu import blas_threads
    except Exception:  # pragma: no cover - kernels always importable
        return None
    return blas_threads if blas_threads.available() else None


# Float steps whose time is numpy's BLAS, with a cheap estimate of their multiply-adds from the
# inputs. Below `BLAS_PARALLEL_MIN_MACS` a multi-threaded BLAS call loses: OpenBLAS's fork/join and,
# on shared cores, waiting for a descheduled worker cost more than the work (PP-OCR cls FP32 with
# 2 BLAS threads: 45 ms against 7 ms on one, every conv being small).
BLAS_PARALLEL_MIN_MACS = 1 << 26


def _conv_macs(args, kw):
    x, w = args[0], args[1]
    if not isinstance(x, np.ndarray) or not isinstance(w, np.ndarray) or x.ndim < 3:
        return 0
    st = 1
    for v in kw.get("strides") or ():
        st *= max(int(v), 1)
    return x.shape[0] * w.shape[0] * (x[0, 0].size // st) * (w.size // max(w.shape[0], 1))


def _convt_macs(args, kw):
    x, w = args[0], args[1]
    if not isinstance(x, np.ndarray) or not isinstance(w, np.ndarray):
        return 0
    return x.size * (w.size // max(w.shape[0], 1))


def _matmul_macs(args, kw):
    a, b = args[0], args[1]
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray) or not a.size:
        return 0
    m = a.shape[-2] if a.ndim >= 2 else 1
    n = b.shape[-1] if b.ndim >= 2 else 1
    return max(a.size * n, b.size * m)


def _gemm_macs(args, kw):
    a, b = args[0], args[1]
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray) or b.ndim != 2:
        return 0
    return a.size * (b.shape[0] if kw.get("transB") else b.shape[1])


_BLAS_STEPS = {("", "Conv"): _conv_macs, ("", "ConvTranspose"): _convt_macs,
               ("", "MatMul"): _matmul_macs, ("", "Gemm"): _gemm_macs,
               ("qrt", "QMatMulAct"): _matmul_macs}
# Every op whose implementation may call numpy's BLAS (float matmul, einsum; the integer ops'
# exact float64 routes). A plan without any runs without touching BLAS's thread count, which
# cost ~10 us a run (two OpenBLAS calls each way), a sixth of the demo model's call.
_MAY_USE_BLAS = set(_BLAS_STEPS) | {("", op) for op in (
    "Einsum", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul")} | {
    ("qrt", "QConvTranspose")} | {("", op) for op in (  # subgraphs run nested plans in its limit
    "If", "Loop", "Scan", "SequenceMap")}


_NO_KWARGS: dict = {}
_ONE, _NONE, _SPARSE = object(), object(), object()  # Plan._bind's input-gather markers


def _blas_wrap(fn, macs, blas, threads):
    """`fn` with numpy's BLAS raised to `threads` for the calls big enough to gain from it."""
    def step(*args, **kw):
        if macs(args, kw) < BLAS_PARALLEL_MIN_MACS:
            return fn(*args, **kw)
        with blas.limit(threads):
            return fn(*args, **kw)
    step.__wrapped__ = fn
    return step


# -------------------------------------------------------------------- shape specialisation
# Ops whose output shapes follow from their input shapes and attributes alone.
_SHAPE_FROM_SHAPES = {("", op) for op in (
    "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "Conv",
    "ConvInteger", "ConvTranspose", "DequantizeLinear", "Div", "DynamicQuantizeLinear", "Equal",
    "Erf", "Flatten", "Gather", "Gelu", "Gemm", "GlobalAveragePool", "HardSigmoid", "HardSwish",
    "Identity", "LayerNormalization", "LeakyRelu", "MatMul", "MatMulInteger", "MaxPool", "Mul",
    "Pow", "QLinearConv", "QLinearMatMul", "QuantizeLinear", "Relu", "Shape", "Sigmoid", "Softmax",
    "Sqrt", "Sub", "Tanh", "Transpose", "Where", "Neg", "Abs", "Exp", "Log", "Reciprocal", "Floor",
    "Ceil", "Round", "Sign", "Not", "And", "Or", "Xor", "Less", "LessOrEqual", "Greater",
    "GreaterOrEqual", "Max", "Min", "Mod", "Size", "Softplus", "Sin", "Cos", "ArgMax", "ArgMin",
    "CumSum", "GatherElements", "InstanceNormalization", "PRelu", "Selu", "Elu", "Mish",
    "LogSoftmax", "Einsum", "Trilu", "Sum", "Mean", "ThresholdedRelu", "GatherND", "ScatterND",
    "ScatterElements", "EyeLike", "DepthToSpace", "SpaceToDepth", "LRN", "GlobalMaxPool",
    "Dropout")} | {("qrt", op) for op in (
    "QAdd", "QConv", "QConvTranspose", "QGemm", "QGlobalAveragePool", "QLut", "QMatMulAct",
    "QMul")}
# Ops whose output shapes also depend on the values of these inputs (by position).
_SHAPE_FROM_VALUES = {("", "Reshape"): (1,), ("", "Expand"): (1,), ("", "Slice"): (1, 2, 3, 4),
                      ("", "Unsqueeze"): (1,), ("", "Squeeze"): (1,), ("", "Pad"): (1, 3),
                      ("", "Split"): (1,), ("", "Resize"): (1, 2, 3), ("", "ReduceMean"): (1,),
                      ("", "ReduceSum"): (1,), ("", "ReduceMax"): (1,), ("", "ReduceMin"): (1,),
                      ("", "Tile"): (1,), ("", "ConstantOfShape"): (0,), ("", "Range"): (0, 1, 2),
                      ("", "TopK"): (1,), ("", "OneHot"): (1,), ("", "ReduceProd"): (1,),
                      ("", "ReduceL1"): (1,), ("", "ReduceL2"): (1,),
                      ("", "ReduceSumSquare"): (1,), ("", "ReduceLogSum"): (1,),
                      ("", "ReduceLogSumExp"): (1,)}
# Ops whose output is a function of their input's shape alone.
_SHAPE_OF = {("", "Shape"), ("", "Size")}
# Ops never run ahead of time, whatever their inputs (qrt.ops.registry.NEVER_PRECOMPUTED).
_NEVER_SPECIALISED = {("", op) for op in NEVER_PRECOMPUTED}
SHAPE_CACHE_ENTRIES = 16  # distinct feed-shape sets remembered per plan


def shape_only_steps(steps: list[Step], const_slots, output_slots) -> list[int]:
    """Indices of the steps whose outputs depend on constants and the feeds' shapes only, never on
    the feeds' values: Shape or Size of a value whose shape is known from the feed shapes, and any
    deterministic step whose inputs are all constants or such outputs. A value's shape is known
    from the feed shapes when its op's output shape follows from its input shapes (and, for
    Reshape, Slice, Expand, ... from inputs that are themselves shape-only). Unknown ops count as
    data-dependent. Steps writing a graph output are left out (the caller owns that array)."""
    pure = set(const_slots)  # value known from constants and feed shapes
    unknown_shape: set[int] = set()  # shape may depend on feed values
    found = []
    for k, st in enumerate(steps):
        key = (st.node.domain or "", st.node.op_type)
        ins = [i for i in st.ins if i >= 0]
        shapes_known = not any(i in unknown_shape for i in ins)
        if key in _SHAPE_FROM_VALUES:
            value_ins = _SHAPE_FROM_VALUES[key]
            shapes_known = shapes_known and all(
                st.ins[j] in pure for j in value_ins if j < len(st.ins) and st.ins[j] >= 0)
        elif key not in _SHAPE_FROM_SHAPES:
            shapes_known = False
        if key in _SHAPE_OF:
            is_pure = shapes_known
        else:
            is_pure = key not in _NEVER_SPECIALISED and all(i in pure for i in ins)
        outs = [o for o in st.outs if o >= 0]
        if is_pure and not any(o in output_slots for o in outs):
            pure.update(outs)
            found.append(k)
        elif not shapes_known:
            unknown_shape.update(outs)
    return found


class Plan:
    def __init__(self, graph: ir.Graph, threads: int = 1):
        self.graph = graph
        self.threads = threads
        self.slot: dict[str, int] = {}
        for t in graph.inputs:
            self._slot(t.name)
        for name in graph.initializers:
            self._slot(name)
        self.steps: list[Step] = []
        for node in graph.nodes:
            opdef = resolve(node.op_type, node.domain, graph.opset(node.domain))
            if opdef is None:  # passes may only emit registered ops
                raise RuntimeError(f"no implementation bound for {node.label()}")
            kwargs = {}
            for aname, default in opdef.attrs.items():
                kwargs[aname] = node.attrs.get(aname, default)
            if opdef.wants_ctx:
                kwargs["ctx"] = NodeContext(node.name, node.op_type, len(node.outputs), threads)
            ins = tuple(self._slot(i) if i else -1 for i in node.inputs)
            outs = tuple(self._slot(o) if o else -1 for o in node.outputs)
            self.steps.append(Step(opdef.fn, ins, outs, kwargs, node))
        self.n_slots = len(self.slot)
        self.base = [None] * self.n_slots
        for name, arr in graph.initializers.items():
            self.base[self.slot[name]] = arr
        self.input_slots = {t.name: self.slot[t.name] for t in graph.inputs}
        self.output_slots = {t.name: self.slot[t.name] for t in graph.outputs}
        self._lifetimes()
        self.step_names = self._step_names()
        self._bind()
        self._blas = _blas_limit() if any(
            (st.node.domain or "", st.node.op_type) in _MAY_USE_BLAS for st in self.steps) else None
        self.shape_only = frozenset(shape_only_steps(
            self.steps, {self.slot[n] for n in graph.initializers},
            set(self.output_slots.values())))
        self._by_shapes: dict = {}  # feed shapes -> (base values, bound steps) without shape_only

    def _slot(self, name: str) -> int:
        if name not in self.slot:
            self.slot[name] = len(self.slot)
        return self.slot[name]

    def _lifetimes(self) -> None:
        keep = set(self.output_slots.values()) | {self.slot[n] for n in self.graph.initializers}
        last: dict[int, int] = {}
        for k, st in enumerate(self.steps):
            for s in st.ins + st.outs:
                if s >= 0:
                    last[s] = k
        frees: dict[int, list[int]] = {}
        for s, k in last.items():
            if s not in keep:
                frees.setdefault(k, []).append(s)
        for k, st in enumerate(self.steps):
            st.frees = tuple(frees.get(k, ()))

    def _step_names(self) -> list[str]:
        names, seen = [], set()
        for k, st in enumerate(self.steps):
            base = st.node.name or f"{st.node.op_type}_{k}"
            name = base
            if name in seen:
                name = f"{base}#{k}"
            seen.add(name)
            names.append(name)
        return names

    def _bind(self) -> None:
        """Flat per-step tuples for the hot loop: (fn, ins, gather, out, outs, kwargs, frees, k).
        `gather`: how the inputs are fetched, cheapest first: _ONE (one input, passed as is), an
        operator.itemgetter over the slots (several, none omitted), or _SPARSE (an omitted input
        passes None); `kwargs`: None when there are none (a call without ** unpacking); `out`:
        the single output slot, or -2 when the step has several outputs (or its only output is
        omitted). A list comprehension and `**{}` per step were most of the plan's own ~1.5 us a
        step."""
        bound = []
        blas = _blas_limit() if self.threads > 1 else None
        for k, st in enumerate(self.steps):
            if not all(i >= 0 for i in st.ins):
                gather = _SPARSE
            elif len(st.ins) == 1:
                gather = _ONE
            else:
                gather = operator.itemgetter(*st.ins) if st.ins else _NONE
            out = st.outs[0] if len(st.outs) == 1 and st.outs[0] >= 0 else -2
            fn, kwargs = st.fn, st.kwargs
            binder = getattr(fn, "bind_step", None)
            if binder is not None:  # the op binds its attributes once (ops/fused.py, ops/quant.py)
                fn, kwargs = binder(**kwargs), _NO_KWARGS
            macs = _BLAS_STEPS.get((st.node.domain, st.node.op_type)) if blas else None
            if macs is not None:
                fn = _blas_wrap(fn, macs, blas, self.threads)
            bound.append((fn, st.ins, gather, out, st.outs, kwargs or None, st.frees, k))
        self._bound = bound

    def profile_by_op(self, profile: dict) -> dict:
        """Sum a per-node profile (filled by `execute(..., profile=d)`) per op type, largest first."""
        by_name = {n: st.node.op_type for n, st in zip(self.step_names, self.steps)}
        out: dict[str, float] = {}
        for name, sec in profile.items():
            op = by_name.get(name, name)
            out[op] = out.get(op, 0.0) + sec
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def _fail(self, k: int, args, e: Exception):
        st = self.steps[k]
        if isinstance(e, QrtError):  # keep the specific type (e.g. InvalidQuantParamsError)
            try:
                return type(e)(f"{st.node.label()}: {e}")
            except Exception:
                pass
        shapes = ", ".join(_describe(a) for a in args)
        return NodeExecutionError(
            f"{st.node.label()} failed on inputs ({shapes}): {type(e).__name__}: {e}")

    def execute(self, feeds: dict[str, np.ndarray], names: list[str],
                observer: Callable[[ir.Node, list, list], None] | None = None,
                profile: dict | None = None) -> list[np.ndarray]:
        """Run every step. `observer(node, inputs, outputs)` is called after each node;
        `profile`, a dict, accumulates wall seconds per node (keys: `self.step_names`) over calls.
        numpy's BLAS (float Conv/Gemm/MatMul) runs on one thread meanwhile, except in steps big
        enough to gain from the plan's `threads` (see `_blas_wrap`); the previous BLAS thread count
        is restored afterwards. A plan with no op that may call BLAS leaves the count alone."""
        blas = self._blas
        if blas is None:
            return self._run(feeds, names, observer, profile)
        with blas.limit(1):
            return self._run(feeds, names, observer, profile)

    def _run(self, feeds, names, observer, profile):
        bound, base = self._bound, self.base
        input_slots = self.input_slots
        if observer is not None or profile is not None:
            vals = list(base)
            for name, arr in feeds.items():
                vals[input_slots[name]] = arr
            self._run_slow(vals, observer, profile)
            slot = self.slot
            return [vals[slot[n]] for n in names]
        if self.shape_only:
            try:
                key = tuple((name, arr.shape) for name, arr in feeds.items())
            except AttributeError:  # a feed without a shape (a sequence): no specialisation
                key = None
            spec = self._by_shapes.get(key) if key is not None else None
            if spec is not None:
                base, bound = spec
            elif key is not None:  # first call with these shapes: run all, keep the shape steps'
                vals = list(base)
                for name, arr in feeds.items():
                    vals[input_slots[name]] = arr
                captured: dict[int, Any] = {}
                self._run_slow(vals, None, None, captured)
                self._specialise(key, captured)
                slot = self.slot
                return [vals[slot[n]] for n in names]
        vals = list(base)
        for name, arr in feeds.items():
            vals[input_slots[name]] = arr
        for fn, ins, gather, out, outs, kwargs, frees, k in bound:
            try:
                if gather is _ONE:
                    res = fn(vals[ins[0]]) if kwargs is None else fn(vals[ins[0]], **kwargs)
                else:
                    if gather is _SPARSE:
                        args = [vals[i] if i >= 0 else None for i in ins]
                    elif gather is _NONE:
                        args = ()
                    else:
                        args = gather(vals)
                    res = fn(*args) if kwargs is None else fn(*args, **kwargs)
            except NodeExecutionError:
                raise
            except Exception as e:
                raise self._fail(k, [vals[i] if i >= 0 else None for i in ins], e) from e
            if out >= 0:
                vals[out] = res[0] if isinstance(res, tuple) else res  # a list is a sequence value
            else:
                self._store(vals, outs, res)
            for s in frees:
                vals[s] = None
        slot = self.slot
        return [vals[slot[n]] for n in names]

    def _specialise(self, key, captured: dict) -> None:
        """Keep (base values with the shape-only outputs, the other steps with their frees
        recomputed) for the feed shapes `key`."""
        base = list(self.base)
        for s, v in captured.items():
            base[s] = v
        rest = [b for b in self._bound if b[7] not in self.shape_only]
        keep = (set(self.output_slots.values()) | set(captured)
                | {self.slot[n] for n in self.graph.initializers})
        last: dict[int, int] = {}
        for j, b in enumerate(rest):
            for s in b[1] + b[4]:
                if s >= 0:
                    last[s] = j
        frees: dict[int, list[int]] = {}
        for s, j in last.items():
            if s not in keep:
                frees.setdefault(j, []).append(s)
        bound = [b[:6] + (tuple(frees.get(j, ())), b[7]) for j, b in enumerate(rest)]
        if len(self._by_shapes) >= SHAPE_CACHE_ENTRIES:
            self._by_shapes.clear()
        self._by_shapes[key] = (base, bound)

    @staticmethod
    def _store(vals, outs, res):
        if len(outs) == 1:  # the only output is omitted
            return
        for s, r in zip(outs, res):
            if s >= 0:
                vals[s] = r

    def _run_slow(self, vals, observer, profile, captured: dict | None = None):
        """Every step, with the observer, the profile, or `captured` (the outputs of the
        shape-only steps, by slot) served."""
        perf = time.perf_counter
        step_names = self.step_names
        steps = self.steps
        shape_only = self.shape_only if captured is not None else ()
        for fn, ins, _, out, outs, kwargs, frees, k in self._bound:
            args = [vals[i] if i >= 0 else None for i in ins]
            t0 = perf()
            try:
                res = fn(*args, **(kwargs or _NO_KWARGS))
            except NodeExecutionError:
                raise
            except Exception as e:
                raise self._fail(k, args, e) from e
            if profile is not None:
                key = step_names[k]
                profile[key] = profile.get(key, 0.0) + (perf() - t0)
            if out >= 0:
                vals[out] = res[0] if isinstance(res, tuple) else res  # a list is a sequence value
            else:
                self._store(vals, outs, res)
            if observer is not None:
                observer(steps[k].node, args, [vals[s] if s >= 0 else None for s in outs])
            if k in shape_only:
                for s in outs:
                    if s >= 0:
                        captured[s] = vals[s]
            for s in frees:
                vals[s] = None
