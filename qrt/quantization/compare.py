"""Per-layer error report of an INT8 (QDQ) model against its FP32 original.

Matching: every QuantizeLinear in the QDQ model reads a float tensor T that keeps its FP32 name (its
producer is unchanged) and its DequantizeLinear gives `T_DequantizeLinear_Output`, so the row for T
compares FP32 T with the QDQ model's dequantized T (onnxruntime's QDQ models name things the same
way, so they can be compared too). Graph outputs are compared by name.

Two errors per layer:
- cumulative: the INT8 model as it runs, errors of every earlier layer included;
- local: the layer alone, fed the FP32 model's own inputs through its Q/DQ (a copy of each quantized
  node is grafted onto the FP32 graph), so a bad layer stands out even when later layers inherit
  its error. Layers are ranked by local SQNR. When the quantized graph writes a tensor with another
  op than the FP32 graph (onnxruntime's quantizer drops the Relu/Clip after a Conv/Add and lets the
  output QuantizeLinear clip; pre-processing fuses MatMul + Add into Gemm), comparing the node's raw
  output would compare different things (a pre-ReLU value with a post-ReLU one); the graft then
  includes the node's output Q/DQ, where both graphs hold the same values, and the row says so
  (`local_note`, marked * in the text and HTML reports). A node whose tensor cannot be matched that
  way gets no local number rather than a wrong one.

Saturation: the number of values the Q node clipped at qmin/qmax.
Both models run in qrt (observer hooks); onnxruntime is used only when qrt cannot load a model.
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from qrt.quantization.calibrate import Executor, iter_feeds
from qrt.quantization.preprocess import load, opset, upgrade_opset
from qrt.quantization.qdq import COMPUTE, FUSABLE_ACT

LOCAL = "__local__/"
LOCAL_NOTE = ("local SQNR measured after the layer's output Q/DQ: the quantized graph writes this "
              "tensor with another op than the FP32 graph (an activation such as Relu/Clip dropped "
              "into the QuantizeLinear's range, a bias or MatMul fused into Gemm), so the layer is "
              "compared where both graphs hold the same values")


@dataclass
class LayerError:
    layer: str  # FP32 node the tensor belongs to (the group head for Conv->Relu)
    op_type: str
    tensor: str  # FP32 tensor name
    sqnr_db: float | None = None
    cosine: float | None = None
    max_abs_error: float | None = None
    local_sqnr_db: float | None = None
    local_cosine: float | None = None
    local_note: str = ""  # how the local number was measured, when it differs from the usual
    saturated: int = 0
    count: int = 0
    worst: bool = False

    @property
    def saturation_rate(self) -> float:
        return self.saturated / self.count if self.count else 0.0


@dataclass
class CompareReport:
    fp32: str
    int8: str
    batches: int
    layers: list = field(default_factory=list)  # LayerError per quantized tensor, graph order
    outputs: list = field(default_factory=list)  # LayerError per graph output
    backend: str = "qrt"

    def worst(self, n: int = 1) -> list:
        key = [r for r in self.layers if r.local_sqnr_db is not None or r.sqnr_db is not None]
        key.sort(key=lambda r: (r.local_sqnr_db if r.local_sqnr_db is not None else math.inf,
                                r.sqnr_db if r.sqnr_db is not None else math.inf))
        return key[:n]

    def to_dict(self) -> dict:
        def clean(d):
            return {k: (None if isinstance(v, float) and not math.isfinite(v) and v != math.inf
                        else (1e9 if v == math.inf else v)) for k, v in d.items()}
        return {"fp32": self.fp32, "int8": self.int8, "batches": self.batches,
                "backend": self.backend,
                "layers": [clean(asdict(r)) for r in self.layers],
                "outputs": [clean(asdict(r)) for r in self.outputs]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        rows = [f"{'layer':32s} {'op':10s} {'SQNR dB':>8s} {'local dB':>8s} {'cosine':>8s} "
                f"{'max|err|':>9s} {'sat %':>6s}"]
        for r in self.layers + self.outputs:
            local = _f(r.local_sqnr_db) + ("*" if r.local_note else "")
            rows.append(f"{(r.layer + ('  <-- worst' if r.worst else ''))[:32]:32s} "
                        f"{r.op_type[:10]:10s} {_f(r.sqnr_db):>8s} {local:>8s} "
                        f"{_f(r.cosine, 5):>8s} {_f(r.max_abs_error, 4):>9s} "
                        f"{100 * r.saturation_rate:6.2f}")
        if any(r.local_note for r in self.layers):
            rows.append(f"* {LOCAL_NOTE}")
        return "\n".join(rows)

    def to_html(self, path=None) -> str:
        doc = _html(self)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(doc)
        return doc


def _f(v, nd=2):
    if v is None:
        return "-"
    if v == math.inf:
        return "inf"
    return f"{v:.{nd}f}"


class _Acc:
    def __init__(self):
        self.sig = self.noise = self.dot = self.na = self.nb = 0.0
        self.maxabs = 0.0
        self.n = 0

    def add(self, ref, y):
        r = np.asarray(ref, np.float64).ravel()
        y = np.asarray(y, np.float64).ravel()
        if r.shape != y.shape:
            return
        d = r - y
        self.sig += float(r @ r)
        self.noise += float(d @ d)
        self.dot += float(r @ y)
        self.na += float(r @ r)
        self.nb += float(y @ y)
        self.maxabs = max(self.maxabs, float(np.abs(d).max(initial=0.0)))
        self.n += 1

    def sqnr(self):
        if not self.n:
            return None
        if self.noise == 0:
            return math.inf
        if self.sig == 0:
            return -math.inf
        return 10 * math.log10(self.sig / self.noise)

    def cosine(self):
        if not self.n:
            return None
        if self.na == 0 and self.nb == 0:
            return 1.0
        return self.dot / math.sqrt(max(self.na * self.nb, 1e-300))


def _qdq_pairs(m: onnx.ModelProto):
    """[(float tensor, DQ output, scale name, zero point name)] for every activation Q->DQ."""
    inits = {t.name for t in m.graph.initializer}
    cons = {}
    for n in m.graph.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    out = []
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            for d in cons.get(n.output[0], []):
                if d.op_type == "DequantizeLinear":
                    out.append((n.input[0], d.output[0], n.input[1],
                                n.input[2] if len(n.input) > 2 else ""))
                    break
    return out


def _layer_of(fp32: onnx.ModelProto, t: str):
    prod = {o: n for n in fp32.graph.node for o in n.output}
    cons = {}
    for n in fp32.graph.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    inits = {i.name for i in fp32.graph.initializer} | \
        {c.output[0] for c in fp32.graph.node if c.op_type == "Constant" and c.output}
    n = prod.get(t)
    if n is None:
        return f"input:{t}", "Input"
    if n is not None and n.op_type == "BatchNormalization" and n.input[0] in prod \
            and prod[n.input[0]].op_type == "Conv" and len(cons.get(n.input[0], [])) == 1:
        n = prod[n.input[0]]  # folded into the Conv by the quantizer
    for _ in range(3):  # walk back over Relu/Clip and a bias Add to the group's head
        if n.op_type in FUSABLE_ACT or (n.op_type == "Add" and any(i in inits for i in n.input)):
            src = next(i for i in n.input if i not in inits)
            head = prod.get(src)
            if head is not None and head.op_type == "BatchNormalization" \
                    and len(cons.get(src, [])) == 1 and head.input[0] in prod \
                    and prod[head.input[0]].op_type == "Conv":
                head = prod[head.input[0]]  # folded into the Conv by the quantizer
            if head is not None and (head.op_type in COMPUTE or head.op_type in ("Add",)) \
                    and len(cons.get(src, [])) == 1:
                n = head
                continue
        break
    return n.name or n.output[0], n.op_type


def _local_model(fp32: onnx.ModelProto, q: onnx.ModelProto):
    """The FP32 graph plus, for each node of `q` that reads dequantized tensors, a copy fed from the
    FP32 graph through the same Q/DQ. Returns (model, {node name: (local output, fp32 output)})."""
    m = onnx.ModelProto()
    m.CopyFrom(fp32)
    g = m.graph
    f_names = {i.name for i in g.input} | {t.name for t in g.initializer} | \
        {o for n in g.node for o in n.output}
    q_inits = {t.name: t for t in q.graph.initializer}
    q_prod = {o: n for n in q.graph.node for o in n.output}
    q_cons: dict = {}
    for n in q.graph.node:
        for i in n.input:
            q_cons.setdefault(i, []).append(n)
    f_prod = {o: n for n in fp32.graph.node for o in n.output}
    f_inits = {t.name for t in fp32.graph.initializer} | \
        {n.output[0] for n in fp32.graph.node if n.op_type == "Constant" and n.output}
    copied: set = set()
    made: dict = {}
    layers = {}

    def init(name):
        if name and name not in copied:
            t = onnx.TensorProto()
            t.CopyFrom(q_inits[name])
            t.name = LOCAL + name
            g.initializer.append(t)
            copied.add(name)
        return LOCAL + name if name else ""

    def dq_input(i):
        """Local name for q-model tensor i, or None if it cannot be fed from the FP32 graph."""
        if i in made:
            return made[i]
        d = q_prod.get(i)
        if d is not None and d.op_type == "DequantizeLinear":
            src = d.input[0]
            if src in q_inits:  # weight
                node = onnx.NodeProto()
                node.CopyFrom(d)
                node.input[:] = [init(x) for x in d.input]
                node.output[:] = [LOCAL + i]
                node.name = LOCAL + d.name
                g.node.append(node)
                made[i] = LOCAL + i
                return made[i]
            qn = q_prod.get(src)
            if qn is not None and qn.op_type == "QuantizeLinear" and qn.input[0] in f_names:
                qnode = onnx.NodeProto()
                qnode.CopyFrom(qn)
                qnode.input[:] = [qn.input[0]] + [init(x) for x in qn.input[1:]]
                qnode.output[:] = [LOCAL + src]
                qnode.name = LOCAL + qn.name
                dnode = onnx.NodeProto()
                dnode.CopyFrom(d)
                dnode.input[:] = [LOCAL + src] + [init(x) for x in d.input[1:]]
                dnode.output[:] = [LOCAL + i]
                dnode.name = LOCAL + d.name
                g.node.extend([qnode, dnode])
                made[i] = LOCAL + i
                return made[i]
            return None
        if i in f_names:
            return i
        if i in q_inits:
            return init(i)
        return None

    for n in q.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if not any(q_prod.get(i) is not None and q_prod[i].op_type == "DequantizeLinear"
                   for i in n.input if i):
            continue
        if not n.output or n.output[0] not in f_names:
            continue
        ins = [dq_input(i) if i else "" for i in n.input]
        if any(x is None for x in ins):
            continue
        out = n.output[0]
        note = ""
        if not _same_math(f_prod.get(out), n, f_inits, f_prod):
            # The FP32 tensor comes out of an op the quantizer dropped (onnxruntime removes a
            # Relu/Clip after Conv/Add and lets the output QuantizeLinear's range clip instead):
            # the layer as quantized then ends at that Q/DQ, so the graft includes it.
            qdq = _output_qdq(n, q_cons)
            if qdq is None:
                continue  # nothing in the quantized graph computes the FP32 tensor
            note = (f"FP32 {f_prod[out].op_type if out in f_prod else '?'} vs quantized "
                    f"{n.op_type}: measured after the output Q/DQ")
        node = onnx.NodeProto()
        node.CopyFrom(n)
        node.input[:] = ins
        node.output[:] = [LOCAL + o if o else "" for o in n.output]
        node.name = LOCAL + (n.name or out)
        g.node.append(node)
        local_out = LOCAL + out
        if note:
            qn, dn = qdq
            qc, dc = onnx.NodeProto(), onnx.NodeProto()
            qc.CopyFrom(qn)
            qc.input[:] = [local_out] + [init(x) for x in qn.input[1:]]
            qc.output[:] = [LOCAL + "out/" + qn.output[0]]
            qc.name = LOCAL + "out/" + qn.name
            dc.CopyFrom(dn)
            dc.input[:] = [qc.output[0]] + [init(x) for x in dn.input[1:]]
            dc.output[:] = [LOCAL + "out/" + dn.output[0]]
            dc.name = LOCAL + "out/" + dn.name
            g.node.extend([qc, dc])
            local_out = dc.output[0]
        layers[n.name or out] = (local_out, out, note)
    return m, layers


# ops a quantizer folds into the previous layer without changing what the layer computes
_FOLDED = ("BatchNormalization", "Add", "Mul", "Sub", "Div")


def _same_math(fp_node, q_node, f_inits, f_prod) -> bool:
    """Does the FP32 tensor that `q_node` writes hold what `q_node` computes? True when the FP32
    producer is the same op, possibly behind ops folded into it (BatchNormalization, constant bias
    Add/Mul); False when it is an activation the quantizer dropped (Relu, Clip, ...)."""
    n = fp_node
    for _ in range(4):
        if n is None:
            return False
        if n.op_type == q_node.op_type:
            return True
        if n.op_type not in _FOLDED:
            return False
        if n.op_type != "BatchNormalization" and not any(i in f_inits for i in n.input):
            return False
        src = next((i for i in n.input if i and i not in f_inits), None)
        n = f_prod.get(src)
    return False


def _output_qdq(n, q_cons):
    """(QuantizeLinear, DequantizeLinear) reading `n`'s first output, or None."""
    for c in q_cons.get(n.output[0], []):
        if c.op_type == "QuantizeLinear":
            for d in q_cons.get(c.output[0], []):
                if d.op_type == "DequantizeLinear":
                    return c, d
    return None


def _feeds_for(data, fp32: onnx.ModelProto, batches: int = 8):
    from qrt.quantization.calibrate import npz_batches, random_feeds
    if data is None:
        return random_feeds(fp32, batches)
    if isinstance(data, (str, bytes)) or hasattr(data, "__fspath__"):
        return npz_batches(data, fp32)
    return list(iter_feeds(data))


def compare_models(fp32, int8, data=None, *, backend: str = "auto") -> CompareReport:
    """Run both models on `data` (npz path, iterable of feed dicts, reader, or None for random
    inputs) and report the error of every quantized tensor."""
    f_model = load(fp32)
    q_model = load(int8)
    if opset(f_model) < opset(q_model):
        f_model = upgrade_opset(f_model, opset(q_model))
    feeds = _feeds_for(data, f_model)
    pairs = _qdq_pairs(q_model)
    f_names = {i.name for i in f_model.graph.input} | {o for n in f_model.graph.node for o in n.output}
    pairs = [p for p in pairs if p[0] in f_names]
    outputs = [o.name for o in f_model.graph.output]
    q_inits = {t.name: numpy_helper.to_array(t) for t in q_model.graph.initializer}

    local_model, local_layers = _local_model(f_model, q_model)
    f_ex = Executor(local_model, backend)
    q_ex = Executor(q_model, backend)
    f_want = {p[0] for p in pairs} | set(outputs) | \
        {v for entry in local_layers.values() for v in entry[:2]}
    q_want = {p[0] for p in pairs} | {p[1] for p in pairs}

    rows: dict[str, LayerError] = {}
    accs: dict[str, _Acc] = {}
    local_accs: dict[str, _Acc] = {}
    for t, dq, s, z in pairs:
        layer, op = _layer_of(f_model, t)
        rows[t] = LayerError(layer, op, t)
        accs[t] = _Acc()
    for name in local_layers:
        local_accs[name] = _Acc()
    out_rows = {o: LayerError(f"output:{o}", "Output", o) for o in outputs}
    out_accs = {o: _Acc() for o in outputs}

    n = 0
    for feed in feeds:
        fv, qv = {}, {}
        f_out = f_ex.run(feed, f_want, lambda k, a: fv.__setitem__(k, np.array(a, copy=True)))
        q_out = q_ex.run(feed, q_want, lambda k, a: qv.__setitem__(k, np.array(a, copy=True)))
        for t, dq, s, z in pairs:
            if t in fv and dq in qv:
                accs[t].add(fv[t], qv[dq])
            if t in qv and s in q_inits:
                scale = q_inits[s].astype(np.float32)
                zp = q_inits[z] if z else np.zeros((), np.uint8)
                from qrt.quantization.params import qrange
                lo, hi = qrange(np.dtype(zp.dtype).name)
                raw = np.rint(qv[t].astype(np.float32) / scale) + zp.astype(np.float32)
                # a range starting at 0 (zero point = qmin) clips negatives on purpose (ReLU
                # folded into the Q): only values above qmax count then.
                low = (raw < lo) if np.all(zp.astype(np.int64) > lo) else False
                rows[t].saturated += int(np.count_nonzero(low | (raw > hi)))
                rows[t].count += int(raw.size)
        for name, (lo_name, ref_name, _) in local_layers.items():
            if lo_name in fv and ref_name in fv:
                local_accs[name].add(fv[ref_name], fv[lo_name])
        q_map = dict(zip(q_ex.output_names, q_out))
        for o, a in zip(outputs, f_out):
            if o in q_map:
                out_accs[o].add(a, q_map[o])
        n += 1
    if n == 0:
        raise ValueError("no data to compare on")

    local_by_tensor = {entry[1]: name for name, entry in local_layers.items()}
    used: set = set()
    for t, r in rows.items():
        acc = accs[t]
        r.sqnr_db, r.cosine = acc.sqnr(), acc.cosine()
        r.max_abs_error = acc.maxabs if acc.n else None
        # the quantized node that writes this very tensor, else the layer's head by name
        name = local_by_tensor.get(r.tensor, r.layer)
        la = local_accs.get(name)
        if la is not None and la.n:
            r.local_sqnr_db, r.local_cosine = la.sqnr(), la.cosine()
            r.local_note = local_layers[name][2]
            used.add(name)
    # Layers quantized without a quantized output (e.g. the last Gemm): a row of their own.
    covered = {r.layer for r in rows.values()} | used
    f_prod = {n.name: n for n in f_model.graph.node}
    extra = []
    for name, la in local_accs.items():
        if name not in covered and la.n and name in f_prod:
            r = LayerError(name, f_prod[name].op_type, local_layers[name][1])
            r.local_sqnr_db, r.local_cosine = la.sqnr(), la.cosine()
            r.local_note = local_layers[name][2]
            out_name = local_layers[name][1]
            if out_name in out_accs:
                r.sqnr_db, r.cosine = out_accs[out_name].sqnr(), out_accs[out_name].cosine()
                r.max_abs_error = out_accs[out_name].maxabs
            extra.append(r)
    for o, r in out_rows.items():
        acc = out_accs[o]
        r.sqnr_db, r.cosine, r.max_abs_error = acc.sqnr(), acc.cosine(), acc.maxabs
    order = {nd.name: k for k, nd in enumerate(f_model.graph.node)}
    layers = sorted(list(rows.values()) + extra, key=lambda r: order.get(r.layer, -1))
    rep = CompareReport(str(fp32) if not isinstance(fp32, onnx.ModelProto) else "<fp32>",
                        str(int8) if not isinstance(int8, onnx.ModelProto) else "<int8>", n,
                        layers, list(out_rows.values()),
                        q_ex.backend if q_ex.backend == f_ex.backend else
                        f"{f_ex.backend}+{q_ex.backend}")
    for r in rep.worst(1):
        r.worst = True
    return rep


def _html(rep: CompareReport) -> str:
    rows = rep.layers + rep.outputs
    worst = {id(r) for r in rep.worst(3)}
    vals = [v for r in rows for v in (r.sqnr_db, r.local_sqnr_db) if v is not None and math.isfinite(v)]
    vmax = max([60.0] + vals)
    bar_h, gap, label_w, plot_w = 18, 6, 240, 520
    h = len(rows) * (bar_h + gap) + 40
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 80}" height="{h}" '
           'font-family="sans-serif" font-size="12">']
    for k in range(0, int(vmax) + 1, 10):
        x = label_w + plot_w * k / vmax
        svg.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{h - 30}" stroke="#ddd"/>'
                   f'<text x="{x:.1f}" y="{h - 15}" text-anchor="middle" fill="#666">{k} dB</text>')
    for i, r in enumerate(rows):
        y = i * (bar_h + gap) + 5
        bad = id(r) in worst
        svg.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" '
                   f'fill="{"#b00" if bad else "#222"}" font-weight="{"bold" if bad else "normal"}">'
                   f'{html.escape(r.layer[:34])}</text>')
        for v, off, color in ((r.sqnr_db, 0, "#c0392b" if bad else "#4a7fb5"),
                              (r.local_sqnr_db, bar_h // 2, "#e67e22" if bad else "#9bc1e6")):
            if v is None:
                continue
            w = plot_w * min(max(v if math.isfinite(v) else vmax, 0.0), vmax) / vmax
            svg.append(f'<rect x="{label_w}" y="{y + off}" width="{w:.1f}" height="{bar_h // 2}" '
                       f'fill="{color}"><title>{html.escape(r.layer)}: {_f(v)} dB</title></rect>')
        svg.append(f'<text x="{label_w + plot_w + 6}" y="{y + 13}" fill="#444">'
                   f'{_f(r.sqnr_db, 1)}</text>')
    svg.append("</svg>")
    trs = []
    for r in rows:
        cls = ' class="worst"' if id(r) in worst else ""
        tip = f' title="{html.escape(r.local_note)}"' if r.local_note else ""
        star = "*" if r.local_note else ""
        trs.append(f"<tr{cls}><td>{html.escape(r.layer)}</td><td>{html.escape(r.op_type)}</td>"
                   f"<td>{html.escape(r.tensor)}</td><td>{_f(r.sqnr_db)}</td>"
                   f"<td{tip}>{_f(r.local_sqnr_db)}{star}</td>"
                   f"<td>{_f(r.cosine, 5)}</td>"
                   f"<td>{_f(r.max_abs_error, 4)}</td><td>{r.saturated}</td>"
                   f"<td>{100 * r.saturation_rate:.3f}</td></tr>")
    w = rep.worst(1)
    headline = (f"Worst layer: <b>{html.escape(w[0].layer)}</b> (local SQNR "
                f"{_f(w[0].local_sqnr_db)} dB, cumulative {_f(w[0].sqnr_db)} dB)" if w else "")
    note = (f" *: {html.escape(LOCAL_NOTE)}." if any(r.local_note for r in rep.layers) else "")
    outs = "; ".join(f"{html.escape(r.tensor)}: SQNR {_f(r.sqnr_db)} dB, cosine {_f(r.cosine, 5)}"
                     for r in rep.outputs)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>qrt quantization report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:nth-child(-n+3), th:nth-child(-n+3) {{ text-align: left; }}
tr.worst {{ background: #fde2e1; font-weight: bold; }}
.legend span {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; }}
</style></head><body>
<h1>INT8 vs FP32, layer by layer</h1>
<p>FP32: {html.escape(rep.fp32)}<br>INT8: {html.escape(rep.int8)}<br>{rep.batches} batches,
run on {html.escape(rep.backend)}.</p>
<p>{headline}</p><p>Outputs: {outs}</p>
<p class="legend"><span style="background:#4a7fb5"></span>SQNR as the INT8 model runs (errors of
earlier layers included) <span style="background:#9bc1e6"></span>local SQNR (the layer alone, FP32
inputs). Higher is better; red rows are the worst layers.{note}</p>
{''.join(svg)}
<h2>Details</h2>
<table><tr><th>layer</th><th>op</th><th>tensor</th><th>SQNR dB</th><th>local SQNR dB</th>
<th>cosine</th><th>max |err|</th><th>saturated</th><th>saturated %</th></tr>
{''.join(trs)}
</table></body></html>
"""
