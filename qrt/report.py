"""The lowering report: for every node of the source graph, how it runs."""
from __future__ import annotations

import json

from qrt import ir

INT_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def build_report(source: list[tuple[str, str]], graph: ir.Graph) -> list[dict]:
    """Map each source node to the node that now runs it (passes record `meta["covers"]`)."""
    runs_in: dict[str, ir.Node] = {}
    for n in graph.nodes:
        for src in n.meta.get("covers", [n.name]):
            runs_in[src] = n
    folded = graph.folded
    out = []
    for name, op_type in source:
        n = runs_in.get(name)
        if n is None:
            entry = folded.get(name, {"precision": "float", "kernel": "folded",
                                      "reason": "removed by graph optimisation"})
            out.append({"name": name, "op_type": op_type, **entry})
            continue
        precision = n.meta.get("precision") or ("int8" if n.op_type in INT_OPS else "float")
        kernel = n.meta.get("kernel") or f"{n.domain + '.' if n.domain else ''}{n.op_type}"
        reason = n.meta.get("reason") or ("" if precision == "int8" else "float op")
        entry = {"name": name, "op_type": op_type, "precision": precision, "kernel": kernel,
                 "reason": reason}
        if n.meta.get("note"):
            entry["note"] = n.meta["note"]
        out.append(entry)
    return out


class LoweringReport:
    def __init__(self, entries: list[dict]):
        self.nodes = entries

    def to_dict(self) -> dict:
        return {"nodes": [dict(e) for e in self.nodes]}

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def summary(self) -> str:
        parts = []
        for op in ("Conv", "ConvTranspose", "MatMul", "Gemm", "QLinearConv", "QLinearMatMul",
                   "ConvInteger", "MatMulInteger"):
            nodes = [e for e in self.nodes if e["op_type"] == op]
            if nodes:
                k = sum(e["precision"] == "int8" for e in nodes)
                parts.append(f"{k}/{len(nodes)} {op}")
        return (", ".join(parts) + " run int8") if parts else "no Conv/MatMul/Gemm nodes"

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self):
        return len(self.nodes)

    def __str__(self) -> str:
        lines = [self.summary()]
        for e in self.nodes:
            why = f"  ({e['reason']})" if e.get("reason") else ""
            lines.append(f"{e['name']:<40} {e['op_type']:<22} {e['precision']:<6} {e['kernel']}{why}")
        return "\n".join(lines)
