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


def add_device_fields(entries: list[dict], graph: ir.Graph,
                      node_info: dict[int, dict]) -> list[dict]:
    """For device="cuda" sessions (qrt.cuda_plan): copies of `entries`, each with four fields added
    (CPU sessions' entries do not have them):
    - `device`: "cuda" or "cpu", where the node that runs this source node runs; None when the
      node was removed at load (folded; it runs nowhere);
    - `device_reason`: why it runs on the CPU ("" on cuda);
    - `device_kernel`: the CUDA kernel ("" on cpu);
    - `transfers`: the copies between host and device made for the node that runs it, per call
      (value, direction, before: the reader they are made for, shape, dtype, bytes: None when the
      graph does not fix the shape; `inside` names the node for copies a GPU op makes itself,
      such as DynamicQuantizeLinear's scale and zero point; a graph output's copy back, made at
      the end with `before` None, is listed with the node that made it). Listed once per running
      node, on the entry of the same name (else the first entry it covers).
    `node_info`: id(running node) -> {"device", "reason", "kernel", "transfers"}."""
    runs_in: dict[str, ir.Node] = {}
    for n in graph.nodes:
        for src in n.meta.get("covers", [n.name]):
            runs_in[src] = n
    names = {e["name"] for e in entries}
    shown: set[int] = set()
    out = []
    for e in entries:
        e = dict(e)
        n = runs_in.get(e["name"])
        info = node_info.get(id(n)) if n is not None else None
        if info is None:
            e.update(device=None, device_reason="", device_kernel="", transfers=[])
            out.append(e)
            continue
        owner = n.name in names and e["name"] == n.name or n.name not in names
        e.update(device=info["device"], device_reason=info["reason"] if info["device"] == "cpu"
                 else "", device_kernel=info["kernel"], transfers=[])
        if owner and id(n) not in shown:
            e["transfers"] = [dict(t) for t in info["transfers"]]
            shown.add(id(n))
        out.append(e)
    return out


class LoweringReport:
    """Per source node: precision, kernel, reason (and, for device="cuda" sessions, the device
    fields of `add_device_fields`; `transfers` then lists every host<->device copy of a call)."""

    def __init__(self, entries: list[dict], transfers: list[dict] | None = None):
        self.nodes = entries
        self.transfers = transfers

    def to_dict(self) -> dict:
        if self.transfers is not None:
            return {"nodes": [dict(e) for e in self.nodes],
                    "transfers": [dict(t) for t in self.transfers]}
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
        text = (", ".join(parts) + " run int8") if parts else "no Conv/MatMul/Gemm nodes"
        if self.transfers is not None:
            on = [e.get("device") for e in self.nodes]
            known = [t["bytes"] for t in self.transfers]
            size = (f", {sum(known)} bytes" if all(b is not None for b in known) else "")
            text += (f"; device cuda: {on.count('cuda')} nodes on cuda, {on.count('cpu')} on cpu, "
                     f"{len(self.transfers)} host<->device copies per call{size}")
        return text

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self):
        return len(self.nodes)

    def __str__(self) -> str:
        lines = [self.summary()]
        for e in self.nodes:
            why = f"  ({e['reason']})" if e.get("reason") else ""
            dev = ""
            if self.transfers is not None:
                dev = f"{e.get('device') or '-':<5} "
                if e.get("device_reason"):
                    why += f"  [cpu: {e['device_reason']}]"
            lines.append(f"{e['name']:<40} {e['op_type']:<22} {e['precision']:<6} {dev}"
                         f"{e['kernel']}{why}")
        if self.transfers:
            lines.append("host<->device copies per call:")
            for t in self.transfers:
                when = f"before {t['before']}" if t.get("before") else (
                    f"inside {t['inside']}" if t.get("inside") else "graph output")
                size = "? bytes" if t["bytes"] is None else f"{t['bytes']} bytes"
                lines.append(f"  {t['direction']:<15} {t['value']:<30} {size:<14} ({when})")
        return "\n".join(lines)
