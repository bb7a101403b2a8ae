"""Execution plan: graph nodes bound to op implementations, values in numbered slots, and the step
after which each intermediate dies (so memory is released as soon as nothing reads it).

`Plan.execute` keeps no state between calls: every call has its own slot list, so one plan serves
many threads at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from qrt import ir
from qrt.errors import NodeExecutionError, QrtError
from qrt.ops import NodeContext, resolve


@dataclass
class Step:
    fn: Callable
    ins: tuple[int, ...]  # slot index per input; -1 for an omitted optional input
    outs: tuple[int, ...]
    kwargs: dict[str, Any]
    node: ir.Node
    frees: tuple[int, ...] = ()  # slots no later step reads


def _with_node(e: Exception, node: ir.Node) -> Exception:
    msg = f"{node.label()}: {e}"
    try:
        return type(e)(msg)
    except Exception:
        return NodeExecutionError(msg)


def _describe(x) -> str:
    if x is None:
        return "None"
    if isinstance(x, np.ndarray):
        return f"{x.dtype}{list(x.shape)}"
    return type(x).__name__


class Plan:
    def __init__(self, graph: ir.Graph, threads: int = 1):
        self.graph = graph
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

    def execute(self, feeds: dict[str, np.ndarray], names: list[str],
                observer: Callable[[ir.Node, list, list], None] | None = None) -> list[np.ndarray]:
        vals = list(self.base)
        for name, arr in feeds.items():
            vals[self.input_slots[name]] = arr
        for st in self.steps:
            args = [vals[i] if i >= 0 else None for i in st.ins]
            try:
                res = st.fn(*args, **st.kwargs)
            except NodeExecutionError:
                raise
            except QrtError as e:  # keep the specific type (e.g. InvalidQuantParamsError)
                raise _with_node(e, st.node) from e
            except Exception as e:
                shapes = ", ".join(_describe(a) for a in args)
                raise NodeExecutionError(
                    f"{st.node.label()} failed on inputs ({shapes}): {type(e).__name__}: {e}"
                ) from e
            if len(st.outs) == 1:
                vals[st.outs[0]] = res[0] if isinstance(res, tuple) else res  # a list is a sequence value
            else:
                for s, r in zip(st.outs, res):
                    if s >= 0:
                        vals[s] = r
            if observer is not None:
                observer(st.node, args, [vals[s] if s >= 0 else None for s in st.outs])
            for s in st.frees:
                vals[s] = None
        return [vals[self.slot[n]] for n in names]
