"""Explicit op registration: `@register("Relu", since=6)` binds an ONNX op version range to a function.

An op implementation is a small pure function of numpy arrays:

    @register("LeakyRelu", since=6, attrs={"alpha": 0.01})
    def leaky_relu(x, *, alpha):
        ...

- Inputs arrive positionally, one per node input; an omitted optional input ("") arrives as None.
- Every declared attribute arrives as a keyword argument, filled with its ONNX default when the node
  does not set it. `REQUIRED` marks attributes without a default (checked at load time).
- With `ctx=True` the function also receives `ctx` (a `NodeContext`: number of outputs, node name,
  threads) for ops whose result depends on the node itself (Split's output count, for instance).
- The function returns one array or a tuple of arrays (one per node output).

The version chosen for a node is the newest registration whose `since` is <= the model's opset for the
op's domain, exactly like ONNX's own op versioning.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


class _Required:
    def __repr__(self):
        return "REQUIRED"


REQUIRED = _Required()

# Domains that ONNX treats as the default one.
DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class NodeContext:
    name: str
    op_type: str
    n_outputs: int
    threads: int = 1


@dataclass
class OpDef:
    op_type: str
    domain: str
    since: int
    fn: Callable
    attrs: dict[str, Any] = field(default_factory=dict)
    wants_ctx: bool = False


_REGISTRY: dict[tuple[str, str], list[OpDef]] = {}


def canonical_domain(domain: str) -> str:
    return "" if domain in DEFAULT_DOMAINS else domain


# Default-domain ops whose results are never computed ahead of time (constant folding, the plan's
# shape specialisation), whatever their inputs: random draws and Dropout (a new mask each run in
# training mode), control flow (a body's result is not worth keeping), and the sequence/optional
# ops (their values are lists and None, not initializers).
NEVER_PRECOMPUTED = frozenset({
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
    "Bernoulli", "Dropout", "If", "Loop", "Scan", "SequenceMap", "SequenceEmpty",
    "SequenceConstruct", "SequenceInsert", "SequenceAt", "SequenceErase", "SequenceLength",
    "SplitToSequence", "ConcatFromSequence", "Optional", "OptionalHasElement",
    "OptionalGetElement"})


def register(op_type: str, since: int = 1, *, domain: str = "", attrs: dict | None = None,
             ctx: bool = False):
    def deco(fn):
        key = (canonical_domain(domain), op_type)
        defs = _REGISTRY.setdefault(key, [])
        if any(d.since == since for d in defs):
            raise RuntimeError(f"{op_type} since={since} registered twice")
        defs.append(OpDef(op_type, key[0], since, fn, dict(attrs or {}), ctx))
        defs.sort(key=lambda d: d.since)
        return fn

    return deco


def resolve(op_type: str, domain: str, opset: int) -> OpDef | None:
    """The implementation of `op_type` for a model importing `domain` at version `opset`."""
    defs = _REGISTRY.get((canonical_domain(domain), op_type))
    if not defs:
        return None
    chosen = None
    for d in defs:
        if d.since <= opset:
            chosen = d
    return chosen


def registered_ops() -> list[tuple[str, str, list[int]]]:
    return sorted((dom, op, [d.since for d in defs]) for (dom, op), defs in _REGISTRY.items())
