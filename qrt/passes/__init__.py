"""Graph rewrites, run as a plain ordered list. Each pass is `run(graph, options) -> bool` (changed?)
and lives in a module of its own. A pass never calls a kernel; it only rewrites the graph."""
from __future__ import annotations

from dataclasses import dataclass

from qrt import ir


@dataclass(frozen=True)
class PassOptions:
    dynamic_quantization: bool = False
    device: str = "cpu"


# The ordered pipeline (module names under qrt.passes). Filled in as passes land.
PIPELINE: list[str] = []


def run_pipeline(graph: ir.Graph, *, optimize: bool = True, dynamic_quantization: bool = False,
                 device: str = "cpu") -> list[dict]:
    """Rewrite `graph` in place; return the lowering report (one entry per source node)."""
    import importlib

    source = [(n.name, n.op_type) for n in graph.nodes]
    opts = PassOptions(dynamic_quantization, device)
    if optimize:
        for modname in PIPELINE:
            importlib.import_module(f"qrt.passes.{modname}").run(graph, opts)
    from qrt.report import build_report
    return build_report(source, graph)
