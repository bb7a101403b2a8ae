"""The in-memory graph qrt runs: plain Python objects over numpy arrays, no onnx import here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class QuantParams:
    """Quantization parameters of one tensor (per-tensor, per-axis or blocked)."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None
    block_size: int | None = None
    dtype: Any = np.uint8


@dataclass
class TensorInfo:
    """Declared type of a graph value. `shape` entries are int, str (symbolic) or None (unknown)."""

    name: str
    dtype: Any = None  # numpy dtype (ml_dtypes for int4/uint4) or None when unknown
    shape: tuple | None = None  # None when the rank is unknown
    kind: str = "tensor"  # "tensor", "sequence" (list of arrays) or "optional" (array or None)


# Node attribute listing, in order, the outer-scope values a node's subgraphs read (If, Loop, Scan,
# SequenceMap): the importer appends them to the node's `inputs`, so every pass and the plan's
# lifetimes see them as ordinary reads. They arrive last among the node's inputs, positionally; a
# pass may rename the outer value, the name inside the subgraph stays the one listed here.
IMPLICIT_INPUTS = "__implicit_inputs__"


@dataclass(eq=False)  # a node is itself: identity equality keeps `in`/`index` on node lists O(1)
class Node:
    op_type: str
    inputs: list[str]  # "" marks an omitted optional input
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""
    # Filled by passes/plan: free-form facts shown in the lowering report.
    meta: dict[str, Any] = field(default_factory=dict)

    def subgraphs(self) -> list[tuple[str, "Graph"]]:
        """(attribute name, subgraph) of every graph-valued attribute."""
        return [(k, v) for k, v in self.attrs.items() if isinstance(v, Graph)]

    def label(self) -> str:
        return f"{self.op_type} node '{self.name}'" if self.name else f"{self.op_type} node (unnamed)"


@dataclass
class Graph:
    nodes: list[Node]
    inputs: list[TensorInfo]  # graph inputs that are not initializers
    outputs: list[TensorInfo]
    initializers: dict[str, np.ndarray]
    value_info: dict[str, TensorInfo] = field(default_factory=dict)
    opsets: dict[str, int] = field(default_factory=dict)  # domain -> version ("" is ai.onnx)
    name: str = ""
    source: str = "<model>"  # file path or "<bytes>" for messages
    # Source nodes removed by passes: name -> {"precision", "kernel", "reason"} for the report.
    folded: dict[str, dict] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)  # the model's metadata_props
    # (name, op_type) of every node as the file wrote it, for the lowering report.
    source_nodes: list[tuple[str, str]] = field(default_factory=list)
    # Some initializer came from an external data file (the model's bytes alone do not pin it).
    external_data: bool = False

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    out.setdefault(i, []).append(n)
        return out

    def opset(self, domain: str = "") -> int:
        return self.opsets.get(domain, 1)
