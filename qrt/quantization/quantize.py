"""quantize_static / quantize_dynamic: typed options in, a QDQ ONNX model and a result object out."""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from qrt.quantization import qdq
from qrt.quantization.calibrate import Executor, calibrate, cast_feed
from qrt.quantization.observers import HISTOGRAM_METHODS, METHODS
from qrt.quantization.params import qparams, qtype_names
from qrt.quantization.preprocess import preprocess


@dataclass(frozen=True)
class Target:
    """Accuracy target of automatic mixed precision, measured on the model's outputs over the
    calibration data: SQNR in dB (higher is better) and/or cosine similarity."""

    sqnr_db: float | None = None
    cosine: float | None = None

    def met(self, sqnr_db: float, cosine: float) -> bool:
        return ((self.sqnr_db is None or sqnr_db >= self.sqnr_db)
                and (self.cosine is None or cosine >= self.cosine))

    def __str__(self):
        parts = []
        if self.sqnr_db is not None:
            parts.append(f"SQNR >= {self.sqnr_db:g} dB")
        if self.cosine is not None:
            parts.append(f"cosine >= {self.cosine:g}")
        return " and ".join(parts)


@dataclass(frozen=True)
class QuantOptions:
    method: Any = "minmax"  # a method name, or a mapping tensor name -> method ("*": default)
    per_channel: bool = True
    activation_type: str = "uint8"
    weight_type: str = "int8"
    symmetric_activations: bool = False
    symmetric_weights: bool = True
    block_size: int | None = None
    exclude_nodes: tuple = ()
    exclude_op_types: tuple = ()
    target_error: Target | None = None
    percentile: float = 99.99
    num_bins: int = 2048
    progress: Any = False
    bias_correction: bool = True
    saturation_safe: bool = True

    def __post_init__(self):
        methods = self.method.values() if isinstance(self.method, Mapping) else [self.method]
        for m in methods:
            if m not in METHODS:
                raise ValueError(f"unknown calibration method {m!r}; expected one of {METHODS}")
        if self.activation_type not in ("uint8", "int8", "uint16", "int16"):
            raise ValueError(f"activation_type must be uint8, int8, uint16 or int16, "
                             f"got {self.activation_type!r}")
        if self.weight_type not in ("int8", "uint8", "int4", "uint4"):
            raise ValueError(f"weight_type must be int8, uint8, int4 or uint4, got {self.weight_type!r}")
        if self.block_size is not None and (not isinstance(self.block_size, int) or
                                            self.block_size < 2):
            raise ValueError(f"block_size must be an integer >= 2, got {self.block_size!r}")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.num_bins < 256:
            raise ValueError(f"num_bins must be >= 256, got {self.num_bins}")
        object.__setattr__(self, "exclude_nodes", tuple(self.exclude_nodes))
        object.__setattr__(self, "exclude_op_types", tuple(self.exclude_op_types))
        t = self.target_error
        if t is not None and not isinstance(t, Target):
            if isinstance(t, (int, float)):
                object.__setattr__(self, "target_error", Target(sqnr_db=float(t)))
            else:
                raise TypeError("target_error must be a number (SQNR dB) or a Target")

    def method_for(self, tensor: str) -> str:
        if isinstance(self.method, Mapping):
            return self.method.get(tensor, self.method.get("*", "minmax"))
        return self.method

    @property
    def needs_histogram(self) -> bool:
        methods = self.method.values() if isinstance(self.method, Mapping) else [self.method]
        return any(m in HISTOGRAM_METHODS for m in methods)

    @property
    def opset(self) -> int:
        if self.block_size or self.weight_type in ("int4", "uint4"):
            return 21
        return 13


@dataclass
class TensorRange:
    rmin: float
    rmax: float
    scale: float
    zero_point: int
    method: str
    shared_with: str | None = None  # the tensor whose statistics set these parameters


@dataclass
class MixedPrecision:
    target: Target
    before: dict  # {"sqnr_db", "cosine"} with everything quantized
    after: dict
    kept_float: list  # [(layer, local SQNR dB)] in the order they were excluded
    met: bool


@dataclass
class QuantResult:
    model_path: str | None
    options: QuantOptions
    mode: str  # "static" or "dynamic"
    ranges: dict = field(default_factory=dict)  # tensor -> TensorRange
    weights: dict = field(default_factory=dict)  # initializer -> {axis, type, sqnr_db, ...}
    quantized_nodes: list = field(default_factory=list)
    excluded: dict = field(default_factory=dict)  # node -> reason it stays float
    preprocessing: dict = field(default_factory=dict)
    calibration_batches: int = 0
    backend: str = ""
    mixed_precision: MixedPrecision | None = None
    model: onnx.ModelProto | None = field(default=None, repr=False)
    format: str = "qdq"  # "qdq" (static), "integer" or "weight_only" (dynamic)

    def summary(self) -> str:
        lines = [f"{self.mode} quantization ({self.format}) -> {self.model_path or '<in memory>'}",
                 f"  quantized nodes: {len(self.quantized_nodes)}; activations with Q/DQ: "
                 f"{len(self.ranges)}; weights: {len(self.weights)}"]
        if self.calibration_batches:
            lines.append(f"  calibration: {self.calibration_batches} batches on {self.backend}")
        for n, why in self.excluded.items():
            lines.append(f"  kept float: {n} ({why})")
        mp = self.mixed_precision
        if mp:
            lines.append(f"  mixed precision target {mp.target}: before SQNR "
                         f"{mp.before['sqnr_db']:.2f} dB cos {mp.before['cosine']:.5f}; after SQNR "
                         f"{mp.after['sqnr_db']:.2f} dB cos {mp.after['cosine']:.5f}"
                         f"{'' if mp.met else ' (target NOT met)'}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "model_path": self.model_path, "mode": self.mode, "format": self.format,
            "ranges": {k: vars(v) for k, v in self.ranges.items()},
            "weights": self.weights, "quantized_nodes": self.quantized_nodes,
            "excluded": self.excluded, "preprocessing": self.preprocessing,
            "calibration_batches": self.calibration_batches, "backend": self.backend,
            "mixed_precision": None if self.mixed_precision is None else {
                "target": str(self.mixed_precision.target),
                "before": self.mixed_precision.before, "after": self.mixed_precision.after,
                "kept_float": self.mixed_precision.kept_float, "met": self.mixed_precision.met},
        }


def _exclusions(model: onnx.ModelProto, opts: QuantOptions) -> dict[str, str]:
    names = {n.name for n in model.graph.node}
    unknown = [n for n in opts.exclude_nodes if n not in names]
    if unknown:
        raise ValueError(f"exclude_nodes names unknown node(s) {unknown}; the model's nodes are "
                         f"{sorted(names)}")
    out = {n: "excluded by name" for n in opts.exclude_nodes}
    for n in model.graph.node:
        if n.op_type in opts.exclude_op_types and n.name not in out:
            out[n.name] = f"op type {n.op_type} excluded"
    return out


def _act_params(p: qdq.Placement, obs: dict, opts: QuantOptions):
    params, ranges = {}, {}
    for root, members in p.groups().items():
        members = [t for t in members if t in obs and obs[t].dtype is not None
                   and obs[t].dtype.kind == "f" and obs[t].batches]
        if not members:
            continue
        # The widest member's statistics cover the others (a Concat's output, a MaxPool's input).
        rep = max(members, key=lambda t: obs[t].minmax.max - obs[t].minmax.min)
        lo, hi, used = obs[rep].compute_range(opts.method_for(rep), opts.activation_type,
                                              opts.symmetric_activations, opts.percentile)
        s, z = qparams(lo, hi, opts.activation_type, opts.symmetric_activations)
        for t in members:
            params[t] = (s, z)
            ranges[t] = TensorRange(float(lo), float(hi), float(s), int(z), used,
                                    None if t == rep else rep)
    return params, ranges


def _metadata(opts: QuantOptions, mode: str) -> dict:
    return {"qrt.quantization": json.dumps({
        "mode": mode, "method": opts.method if isinstance(opts.method, str) else dict(opts.method),
        "per_channel": opts.per_channel, "activation_type": opts.activation_type,
        "weight_type": opts.weight_type, "block_size": opts.block_size})}


def _build(model, opts, exclude, obs, mode="static"):
    p = qdq.place(model, exclude=exclude, static=(mode == "static"), per_channel=opts.per_channel,
                  block_size=opts.block_size)
    params, ranges = _act_params(p, obs, opts) if mode == "static" else ({}, {})
    m, wfacts = qdq.write(model, p, params, activation_type=opts.activation_type,
                          weight_type=opts.weight_type, symmetric_weights=opts.symmetric_weights,
                          block_size=opts.block_size, metadata=_metadata(opts, mode),
                          saturation_safe=opts.saturation_safe and mode == "static"
                          and opts.activation_type in ("uint8", "int8"))
    return m, p, ranges, wfacts


def output_error(refs: list[list[np.ndarray]], outs: list[list[np.ndarray]]) -> dict:
    """SQNR (dB) and cosine of all outputs over all batches, flattened together."""
    sig = noise = dot = na = nb = 0.0
    for r_batch, o_batch in zip(refs, outs):
        for r, o in zip(r_batch, o_batch):
            r = np.asarray(r, np.float64).ravel()
            o = np.asarray(o, np.float64).ravel()
            sig += float(r @ r)
            noise += float((r - o) @ (r - o))
            dot += float(r @ o)
            na += float(r @ r)
            nb += float(o @ o)
    sqnr = math.inf if noise == 0 else (-math.inf if sig == 0 else 10 * math.log10(sig / noise))
    cos = 1.0 if na == nb == 0 else dot / math.sqrt(max(na * nb, 1e-300))
    return {"sqnr_db": sqnr, "cosine": cos}


def _run_all(model, feeds, backend="auto"):
    ex = Executor(model, backend)
    return [[np.asarray(o) for o in ex.run(f)] for f in feeds]


BIAS_CORRECTION_BATCHES = 32  # calibration batches kept in memory for bias correction


def _out_axis(node: onnx.NodeProto, rank: int) -> int:
    return 1 if node.op_type in ("Conv", "ConvTranspose") else rank - 1


def _bias_slot(model: onnx.ModelProto, node: onnx.NodeProto, cons: dict):
    """(node, input slot) holding the float bias of `node`'s output channels, or (node, None) when
    a bias input can be added; None when the layer has no bias we can correct."""
    inits = {t.name for t in model.graph.initializer}
    if node.op_type in ("Conv", "Gemm"):
        if len(node.input) > 2 and node.input[2]:
            return (node, 2) if node.input[2] in inits else None
        return node, None
    if node.op_type == "MatMul":
        c = cons.get(node.output[0], [])
        if len(c) == 1 and c[0].op_type == "Add":
            k = [j for j, i in enumerate(c[0].input) if i in inits]
            if len(k) == 1:
                return c[0], k[0]
    return None


def _bias_correction(model, built, feeds):
    """Empirical bias correction, layer after layer. Rounding is unbiased one value at a time, but
    not after non-linear layers: MaxPool and ReLU-like activations of noisy inputs come out larger
    on average, and averaging layers (GlobalAveragePool, the classifier) keep that shift while
    they average the noise away. So the calibration batches run through the QDQ model together,
    one thread each, meeting at every quantized Conv/Gemm/MatMul: there the mean of each output
    channel over all batches is compared with the FP32 model's, the difference is subtracted from
    the layer's float bias, and the corrected output goes on to the next layers, which therefore
    see (and correct) only what is left. Needs qrt to run both models (observer hook); returns
    (corrected float model, {node: max |correction|}) or (model, {}) when it cannot run."""
    import threading

    import qrt
    m_q, p = built[0], built[1]
    nodes = {n.name: n for n in model.graph.node}
    cons: dict = {}
    for n in model.graph.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    q_out = {n.name: n.output[0] for n in m_q.graph.node if n.output}
    targets: dict[str, str] = {}  # layer output tensor -> node
    for name in p.quantized_nodes:
        n = nodes.get(name)
        if n is None or n.op_type not in ("Conv", "Gemm", "MatMul") or \
                q_out.get(name) != n.output[0] or _bias_slot(model, n, cons) is None:
            continue
        targets[n.output[0]] = name
    feeds = list(feeds)
    if not targets or not feeds:
        return model, {}

    def channel_sum(node_name, y):
        y = np.asarray(y)
        ax = _out_axis(nodes[node_name], y.ndim)
        red = tuple(i for i in range(y.ndim) if i != ax)
        return y.sum(axis=red, dtype=np.float64), y.size // max(y.shape[ax], 1)

    try:
        ex = Executor(model, "qrt")
        ref: dict = {}
        for feed in feeds:
            def acc(t, y):
                s_, c_ = channel_sum(targets[t], y)
                old = ref.get(t, (0.0, 0))
                ref[t] = (old[0] + s_, old[1] + c_)
            ex.run(feed, targets, acc)
        sess = qrt.InferenceSession(m_q, optimize=False, threads=1)
        q_inputs = Executor(m_q, "qrt").inputs
    except Exception as e:  # qrt cannot run one of the models: no correction
        warnings.warn(f"bias correction skipped: {e}", RuntimeWarning, stacklevel=3)
        return model, {}

    n = len(feeds)
    corr: dict[str, np.ndarray] = {}
    part: list = [None] * n
    state = {"t": None}

    def combine():
        t = state["t"]
        tot = sum(x[0] for x in part)
        cnt = sum(x[1] for x in part)
        rs, rc = ref.get(t, (None, 0))
        if rs is None or np.shape(tot) != np.shape(rs) or not cnt or not rc:
            corr[t] = None
            return
        c = tot / cnt - rs / rc
        if n > 1:
            # Shrink each channel's correction by how well the batches agree on it (positive-part
            # James-Stein: c * max(0, 1 - var(c) / c^2)), so that a few calibration batches do not
            # turn into a noisy bias where there was little to correct.
            per = np.stack([x[0] / max(x[1], 1) for x in part]) - rs / rc
            var = per.var(axis=0, ddof=1) / n
            c = c * np.maximum(0.0, 1.0 - var / np.maximum(c * c, 1e-300))
        corr[t] = c if np.all(np.isfinite(c)) else None

    barrier = threading.Barrier(n, action=combine)
    errors: list = []

    def worker(i):
        def obs(node, ins, outs):
            t = node.outputs[0] if node.outputs else None
            if t not in targets:
                return
            y = outs[0]
            part[i] = channel_sum(targets[t], y)
            state["t"] = t
            barrier.wait(timeout=600)
            c = corr.get(t)
            if c is not None:
                ax = _out_axis(nodes[targets[t]], y.ndim)
                shape = [1] * y.ndim
                shape[ax] = -1
                y -= c.reshape(shape).astype(y.dtype)  # in place: the next layers read it

        try:
            sess._execute(cast_feed(feeds[i], q_inputs), [o.name for o in m_q.graph.output], obs)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)] or errors
        warnings.warn(f"bias correction skipped: {real[0]!r}", RuntimeWarning, stacklevel=3)
        return model, {}

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    onodes = {nd.name: nd for nd in g.node}
    ocons: dict = {}
    for nd in g.node:
        for i in nd.input:
            ocons.setdefault(i, []).append(nd)
    done = {}
    for t, name in targets.items():
        c = corr.get(t)
        if c is None:
            continue
        node = onodes[name]
        holder, slot = _bias_slot(out, node, ocons)
        if slot is None:  # Conv/Gemm without a bias: give it one
            old = np.zeros(c.shape, np.float32)
            while len(node.input) < 2:
                node.input.append("")
            node.input.append("")
            holder, slot = node, len(node.input) - 1
        else:
            old = numpy_helper.to_array(inits[holder.input[slot]])
            if old.size != c.size or old.dtype != np.float32:
                continue
        new = (old.reshape(-1).astype(np.float64) - c).astype(np.float32).reshape(old.shape)
        bname = holder.input[slot]
        if bname and bname in inits and len(ocons.get(bname, [])) == 1:
            inits[bname].CopyFrom(numpy_helper.from_array(new, bname))
        else:  # new, or shared with another layer (which keeps its own)
            bname = qdq.fresh_name(out, f"{name}_bias_corrected")
            g.initializer.append(numpy_helper.from_array(new, bname))
            holder.input[slot] = bname
        done[name] = float(np.abs(c).max())
    return out, done


def _mixed_precision(model, opts, exclude, obs, feeds, built):
    from qrt.quantization.compare import compare_models
    target = opts.target_error
    refs = _run_all(model, feeds)
    m, p, ranges, wfacts = built
    before = output_error(refs, _run_all(m, feeds))
    current = before
    kept: list = []
    if not target.met(current["sqnr_db"], current["cosine"]):
        rep = compare_models(model, m, feeds)
        sens = {r.layer: r.local_sqnr_db for r in rep.layers if r.local_sqnr_db is not None}
        candidates = [n for n in p.quantized_nodes if n in sens and n not in exclude]
        candidates.sort(key=lambda n: sens[n])
        exclude = dict(exclude)
        for layer in candidates:
            exclude[layer] = (f"mixed precision: kept float to meet {target} "
                              f"(local SQNR {sens[layer]:.1f} dB)")
            kept.append((layer, float(sens[layer])))
            built = _build(model, opts, exclude, obs)
            current = output_error(refs, _run_all(built[0], feeds))
            if opts.progress:
                import sys
                print(f"qrt.quantization: kept {layer} float -> SQNR {current['sqnr_db']:.2f} dB, "
                      f"cosine {current['cosine']:.5f}", file=sys.stderr, flush=True)
            if target.met(current["sqnr_db"], current["cosine"]):
                break
    mp = MixedPrecision(target, before, current, kept, target.met(current["sqnr_db"],
                                                                   current["cosine"]))
    return built, exclude, mp


def quantize_static(model_in, model_out, calibration_data, *, method="minmax", per_channel=True,
                    activation_type="uint8", weight_type="int8", symmetric_activations=False,
                    symmetric_weights=True, block_size=None, exclude_nodes=(), exclude_op_types=(),
                    target_error=None, percentile=99.99, num_bins=2048, progress=False,
                    bias_correction=True, saturation_safe=True, backend="auto") -> QuantResult:
    """Calibrate `model_in` on `calibration_data` (iterable of feed dicts, or a reader with
    `get_next()`) and write a QDQ model to `model_out` (a path, or None to keep it in memory as
    `result.model`). See QuantOptions for the options; `backend` ("auto", "qrt", "onnxruntime")
    picks the engine that runs calibration ("auto": qrt, onnxruntime only if qrt cannot load the
    model)."""
    opts = QuantOptions(method, per_channel, activation_type, weight_type, symmetric_activations,
                        symmetric_weights, block_size, tuple(exclude_nodes), tuple(exclude_op_types),
                        target_error, percentile, num_bins, progress, bias_correction,
                        saturation_safe)
    return _quantize_static(model_in, model_out, calibration_data, opts, backend)


def _quantize_static(model_in, model_out, calibration_data, opts: QuantOptions, backend="auto"):
    model, facts = preprocess(model_in, opts.opset)
    exclude = _exclusions(model, opts)
    p = qdq.place(model, exclude=exclude, static=True, per_channel=opts.per_channel,
                  block_size=opts.block_size)
    obs, nb, used_backend, feeds = calibrate(
        model, calibration_data, p.activations, histogram=opts.needs_histogram,
        num_bins=opts.num_bins, progress=opts.progress,
        keep_feeds=True if opts.target_error is not None else
        (BIAS_CORRECTION_BATCHES if opts.bias_correction else 0), backend=backend)
    built = _build(model, opts, exclude, obs)
    if opts.bias_correction:
        model, corrected = _bias_correction(model, built, feeds[:BIAS_CORRECTION_BATCHES])
        facts = dict(facts, bias_corrected=corrected)
        if corrected:
            built = _build(model, opts, exclude, obs)
    mp = None
    if opts.target_error is not None:
        built, exclude, mp = _mixed_precision(model, opts, exclude, obs, feeds, built)
    m, p, ranges, wfacts = built
    return _finish(m, model_out, opts, "static", ranges, wfacts, p, exclude, facts, nb,
                   used_backend, mp)


def _finish(m, model_out, opts, mode, ranges, wfacts, p, exclude, facts, nb, backend, mp):
    try:
        onnx.checker.check_model(m)
    except Exception as e:  # pragma: no cover - a bug in the writer
        raise RuntimeError(f"qrt.quantization wrote an invalid model: {e}") from e
    path = None
    if model_out is not None:
        path = os.fspath(model_out)
        onnx.save(m, path)
    quantized = [n for n in p.quantized_nodes if n not in exclude]
    return QuantResult(path, opts, mode, ranges, wfacts, quantized, dict(exclude), facts, nb,
                       backend, mp, m)


DYNAMIC_FORMATS = ("integer", "weight_only")


def quantize_dynamic(model_in, model_out, *, per_channel=True, weight_type="int8",
                     symmetric_weights=True, block_size=None, exclude_nodes=(),
                     exclude_op_types=(), format=None, saturation_safe=True) -> QuantResult:
    """Dynamic quantization, no calibration data. Two formats:

    - "integer" (the default for 8-bit weights): what onnxruntime's quantize_dynamic writes,
      standard ONNX that runtimes run as integer math. Each Conv/MatMul/Gemm with a constant weight
      becomes DynamicQuantizeLinear on its input (u8, range of each call's data) + ConvInteger /
      MatMulInteger with int8 per-channel weights + Cast + Mul by x_scale * w_scale (+ bias Add);
      see qrt/quantization/dynamic.py. qrt fuses the pattern into integer kernels.
    - "weight_only" (the default for int4 weights or `block_size`, which the integer ops cannot
      hold): weights become int8/int4 initializers + DequantizeLinear and activations stay float;
      the metadata asks qrt's session to quantize activations per call
      (`qrt.InferenceSession(..., dynamic_quantization=True)`); other runtimes run it in float.
    """
    if format is None:
        format = "weight_only" if block_size or weight_type in ("int4", "uint4") else "integer"
    if format not in DYNAMIC_FORMATS:
        raise ValueError(f"format must be one of {DYNAMIC_FORMATS}, got {format!r}")
    opts = QuantOptions("minmax", per_channel, "uint8", weight_type, False, symmetric_weights,
                        block_size, tuple(exclude_nodes), tuple(exclude_op_types),
                        saturation_safe=saturation_safe)
    if format == "integer":
        if block_size:
            raise ValueError("block_size needs format='weight_only' (MatMulInteger/ConvInteger "
                             "have no blocked weights)")
        from qrt.quantization.dynamic import write_integer
        model, facts = preprocess(model_in, 13)
        exclude = _exclusions(model, opts)
        meta = json.loads(_metadata(opts, "dynamic")["qrt.quantization"])
        # "dynamic_integer", not "dynamic": qrt's session switches on its own per-call activation
        # quantization only for the weight-only format (excluded nodes here must stay float).
        meta.update(mode="dynamic_integer", format="integer")
        m, quantized, wfacts, skipped = write_integer(
            model, exclude, per_channel=per_channel, weight_type=weight_type,
            symmetric_weights=symmetric_weights, saturation_safe=saturation_safe,
            metadata={"qrt.quantization": json.dumps(meta)})
        p = qdq.Placement(quantized_nodes=quantized)
        res = _finish(m, model_out, opts, "dynamic", {}, wfacts, p, dict(exclude, **skipped),
                      facts, 0, "", None)
        res.format = "integer"
        return res
    model, facts = preprocess(model_in, opts.opset if per_channel or block_size else 10)
    exclude = _exclusions(model, opts)
    m, p, ranges, wfacts = _build(model, opts, exclude, {}, mode="dynamic")
    res = _finish(m, model_out, opts, "dynamic", ranges, wfacts, p, exclude, facts, 0, "", None)
    res.format = "weight_only"
    return res


__all__ = ["quantize_static", "quantize_dynamic", "QuantOptions", "QuantResult", "Target",
           "TensorRange", "MixedPrecision", "output_error", "qtype_names"]
