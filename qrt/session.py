"""InferenceSession: onnxruntime's API over qrt's importer, passes and plan."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from qrt import ir
from qrt.errors import InvalidFeedError, NodeExecutionError, QrtError

_TYPE_NAMES = {
    np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.float16): "float16",
    np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8", np.dtype(np.int16): "int16",
    np.dtype(np.uint16): "uint16", np.dtype(np.int32): "int32", np.dtype(np.uint32): "uint32",
    np.dtype(np.int64): "int64", np.dtype(np.uint64): "uint64", np.dtype(np.bool_): "bool",
}


def type_string(dtype) -> str:
    if dtype is None:
        return "tensor(unknown)"
    return f"tensor({_TYPE_NAMES.get(np.dtype(dtype), np.dtype(dtype).name)})"


@dataclass(frozen=True)
class NodeArg:
    """Mirrors onnxruntime.NodeArg: `.name`, `.shape` (ints, strings for symbolic dims, None),
    `.type` ("tensor(float)" ...), plus `.dtype` as a numpy dtype."""

    name: str
    shape: list
    type: str
    dtype: Any = None


def _arg(t: ir.TensorInfo) -> NodeArg:
    shape = list(t.shape) if t.shape is not None else None
    if t.kind != "tensor":
        return NodeArg(t.name, shape, f"{t.kind}(unknown)", None)
    return NodeArg(t.name, shape, type_string(t.dtype), t.dtype)


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _asks_for_dynamic(graph: ir.Graph) -> bool:
    import json

    try:
        return json.loads(graph.metadata.get("qrt.quantization", "{}")).get("mode") == "dynamic"
    except (ValueError, AttributeError):
        return False


def _from_python(what, x, dtype):
    """A Python scalar/list feed as an array of the input's dtype, refusing what would not survive
    the conversion exactly (1.7 into an integer input, 300 into uint8, ragged or string lists)."""
    try:
        raw = np.asarray(x)
    except ValueError as e:  # ragged nesting
        raise InvalidFeedError(f"{what}: cannot make an array of this list ({e})") from None
    if raw.dtype.kind not in "biuf":
        raise InvalidFeedError(f"{what}: a list of {raw.dtype.name} values is not a "
                               "numeric tensor")
    if dtype is None:
        return raw
    dtype = np.dtype(dtype)
    with np.errstate(all="ignore"):
        try:
            arr = raw.astype(dtype)
        except (OverflowError, ValueError) as e:
            raise InvalidFeedError(f"{what}: values do not fit {dtype.name} ({e})") from None
        exact = (arr.astype(np.float64) == raw.astype(np.float64)) | (
            np.isnan(raw.astype(np.float64)) if dtype.kind == "f" else False)
    if dtype.kind != "f" and not np.all(exact):
        bad = raw.reshape(-1)[np.flatnonzero(~exact.reshape(-1))[0]]
        raise InvalidFeedError(
            f"{what}: value {bad!r} is not representable as {dtype.name}")
    return arr


class InferenceSession:
    """Load an ONNX model and run it.

    model: a path, the model's bytes, or an onnx.ModelProto.
    threads: worker threads for the kernels (default: every core this process may use).
    optimize: run the graph passes (constant folding, BatchNorm folding, QDQ fusion into integer
        kernels). `optimize=False` runs every node as written, for debugging and conformance.
    dynamic_quantization: run float MatMul/Gemm/Conv with int8 weights and activations quantized
        per call (FP32 models, no calibration). Default: on for models written by
        qrt.quantization.quantize_dynamic (they say so in their metadata), off otherwise.
    cache_graph: also write the lowered graph to qrt's on-disk cache (what `qrt warmup` does), so
        that a later session of the same model bytes starts without importing onnx or running
        the passes (qrt.graph_cache; read whenever an entry exists, QRT_GRAPH_CACHE=0 to skip).
    sess_options, providers, provider_options: accepted so that onnxruntime code runs unchanged;
        they are ignored.
    """

    def __init__(self, model, sess_options=None, providers=None, provider_options=None, *,
                 threads: int | None = None, optimize: bool = True,
                 dynamic_quantization: bool | None = None, device: str = "cpu",
                 cache_graph: bool = False):
        from qrt import graph_cache
        from qrt.plan import Plan

        if threads is None:
            threads = default_threads()
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        self.threads = threads
        self.device = device
        if device == "cuda":
            from qrt.cuda_device import require_cuda
            self.cuda_info = require_cuda()  # clear error when numba-cuda, a driver or a GPU is missing
        # The lowered graph from the on-disk cache when `qrt warmup` wrote one (qrt.graph_cache):
        # no onnx import, no passes.
        use_cache = device == "cpu" and graph_cache.enabled() and (
            cache_graph or os.path.isdir(graph_cache.cache_dir()))
        data = graph_cache.model_bytes(model) if use_cache else None
        ckey = None if data is None else graph_cache.key(
            data, optimize=optimize, dynamic_quantization=dynamic_quantization)
        cached = graph_cache.load(ckey) if ckey is not None else None
        if cached is not None:
            self._graph, self._report = cached["graph"], cached["report"]
            dynamic_quantization = cached["dynamic_quantization"]
        else:
            from qrt import onnx_import
            from qrt.passes import run_pipeline
            self._graph = onnx_import.load_graph(model)
            if dynamic_quantization is None:  # models from qrt's quantize_dynamic ask for it
                dynamic_quantization = _asks_for_dynamic(self._graph)
            self._report = run_pipeline(self._graph, optimize=optimize,
                                        dynamic_quantization=dynamic_quantization, device=device)
            if cache_graph and ckey is not None and not self._graph.external_data:
                graph_cache.store(ckey, graph=self._graph, report=self._report,
                                  dynamic_quantization=dynamic_quantization)
        self.dynamic_quantization = dynamic_quantization
        self._inputs = [_arg(t) for t in self._graph.inputs]
        self._kinds = {t.name: t.kind for t in self._graph.inputs}
        # declared element types of sequence/optional inputs (None: not declared)
        self._elem_dtypes = {t.name: t.dtype for t in self._graph.inputs
                             if t.kind in ("sequence", "optional")}
        # (name, dtype) of every input when all are tensors of a declared type, for the fast
        # feed check; the input shape combinations already checked in full
        self._feed_types = tuple((a.name, np.dtype(a.dtype)) for a in self._inputs) if all(
            self._kinds[a.name] not in ("sequence", "optional") and a.dtype is not None
            for a in self._inputs) else ()
        self._checked_shapes: set = set()
        self._outputs = [_arg(t) for t in self._graph.outputs]
        # declared tensor output types, checked after each run (a wrong type is never handed out)
        self._declared_out = {t.name: np.dtype(t.dtype) for t in self._graph.outputs
                              if t.kind == "tensor" and t.dtype is not None}
        if device == "cuda":  # CUDA kernels where they exist, CPU ops elsewhere (qrt.cuda_plan)
            from qrt.cuda_plan import CudaPlan
            self._plan = CudaPlan(self._graph, threads)
            self._report = self._plan.annotate(self._report)
        else:
            self._plan = Plan(self._graph, threads)
        self._protected = {id(a) for a in self._graph.initializers.values()}
        self._lock = threading.Lock()

    # -- onnxruntime-compatible API ---------------------------------------------------------
    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return ["CUDAExecutionProvider" if self.device == "cuda" else "CPUExecutionProvider"]

    def run(self, output_names: Sequence[str] | None, input_feed: dict[str, Any],
            run_options=None) -> list[np.ndarray]:
        names = self._output_names(output_names)
        feeds = self._check_feeds(input_feed)
        results = self._execute(feeds, names)
        declared = self._declared_out
        for n, r in zip(names, results):
            want = declared.get(n)
            if want is not None and getattr(r, "dtype", want) != want:
                from qrt.plan import _describe
                raise NodeExecutionError(
                    f"output '{n}' came out as {_describe(r)}, but the model declares it "
                    f"{np.dtype(want).name}: the model is inconsistent (or an op's result type "
                    "is wrong)")
        # Never hand out an array that aliases a weight or a caller's feed.
        return [self._owned(r, feeds) for r in results]

    def _owned(self, r, feeds):
        if isinstance(r, list):
            return [self._owned(v, feeds) for v in r]
        if not isinstance(r, np.ndarray):
            return r
        if r.base is not None or id(r) in self._protected or any(r is f for f in feeds.values()):
            return np.array(r, copy=True)
        return r

    def lowering_report(self):
        from qrt.report import LoweringReport
        return LoweringReport(self._report,
                              transfers=self._plan.transfers if self.device == "cuda" else None)

    # -- internals ----------------------------------------------------------------------------
    def _execute(self, feeds, names, observer=None):
        return _threading_ctl().call_with_threads(self.threads, self._plan.execute, feeds, names,
                                                  observer)

    def _output_names(self, output_names) -> list[str]:
        known = [o.name for o in self._outputs]
        if output_names is None:
            return known
        if isinstance(output_names, str):
            raise TypeError("output_names must be a list of names or None, not a string")
        names = list(output_names)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InvalidFeedError(f"unknown output name(s) {unknown}; the model's outputs are "
                                   f"{known}")
        return names

    def _element(self, name, k, v):
        """One tensor of a sequence/optional feed, of the declared element type."""
        where = f"input '{name}'" + ("" if k is None else f" element {k}")
        dt = self._elem_dtypes.get(name)
        if not isinstance(v, np.ndarray):
            if isinstance(v, (np.generic, int, float, bool, list, tuple)):
                v = _from_python(where, v, dt)
            else:
                raise InvalidFeedError(f"{where}: expected a numpy array, got {type(v).__name__}")
        if dt is not None and v.dtype != dt:
            raise InvalidFeedError(f"{where}: expected dtype {np.dtype(dt).name}, got "
                                   f"{v.dtype.name}")
        return v

    def _check_feeds(self, input_feed) -> dict[str, np.ndarray]:
        # Fast path: the same input shapes as an earlier checked call, every feed a C-contiguous
        # array of the declared type (the full check below costs ~3 us a call).
        known = self._checked_shapes
        if type(input_feed) is dict and known and len(input_feed) == len(self._feed_types):
            try:
                shapes = []
                for name, dt in self._feed_types:
                    x = input_feed[name]
                    if type(x) is not np.ndarray or x.dtype != dt or not x.flags.c_contiguous:
                        break
                    shapes.append(x.shape)
                else:
                    if tuple(shapes) in known:
                        return input_feed
            except KeyError:
                pass
        feeds = self._check_feeds_full(input_feed)
        types = self._feed_types
        if (types and len(known) < 64
                and all(isinstance(feeds.get(name), np.ndarray) for name, _ in types)):
            known.add(tuple(feeds[name].shape for name, _ in types))
        return feeds

    def _check_feeds_full(self, input_feed) -> dict[str, np.ndarray]:
        if not isinstance(input_feed, dict):
            raise InvalidFeedError(
                f"input_feed must be a dict of input name -> array, not {type(input_feed).__name__}")
        expected = {a.name: a for a in self._inputs}
        unknown = [k for k in input_feed if k not in expected]
        missing = [k for k in expected if k not in input_feed]
        if unknown or missing:
            msg = []
            if missing:
                msg.append(f"missing input(s) {missing}")
            if unknown:
                msg.append(f"unknown input(s) {unknown}")
            raise InvalidFeedError("; ".join(msg) + f"; the model's inputs are {list(expected)}")
        feeds: dict[str, np.ndarray] = {}
        symbols: dict[str, tuple[int, str]] = {}
        for name, arg in expected.items():
            x = input_feed[name]
            if self._kinds[name] == "sequence":
                if not isinstance(x, (list, tuple)):
                    raise InvalidFeedError(f"input '{name}' is a sequence: pass a list of arrays, "
                                           f"not {type(x).__name__}")
                feeds[name] = [self._element(name, k, v) for k, v in enumerate(x)]
                continue
            if self._kinds[name] == "optional" and (x is None or isinstance(x, (list, tuple))):
                feeds[name] = None if x is None else [self._element(name, k, v)
                                                      for k, v in enumerate(x)]
                continue
            if self._kinds[name] == "optional":
                x = self._element(name, None, x)
            if not isinstance(x, np.ndarray):
                if isinstance(x, (np.generic, int, float, bool, list, tuple)):
                    x = _from_python(f"input '{name}'", x, arg.dtype)
                else:
                    raise InvalidFeedError(
                        f"input '{name}': expected a numpy array, got {type(x).__name__}")
            if arg.dtype is not None and x.dtype != arg.dtype:
                got = x.dtype.name
                if x.dtype.newbyteorder("=") == np.dtype(arg.dtype):
                    got += f" in {'big' if x.dtype.byteorder == '>' else 'little'}-endian byte order"
                raise InvalidFeedError(
                    f"input '{name}': expected dtype {np.dtype(arg.dtype).name} "
                    f"({arg.type}), got {got}")
            if arg.shape is not None:
                if x.ndim != len(arg.shape):
                    raise InvalidFeedError(
                        f"input '{name}': expected rank {len(arg.shape)} (shape {arg.shape}), "
                        f"got rank {x.ndim} (shape {list(x.shape)})")
                for axis, (want, got) in enumerate(zip(arg.shape, x.shape)):
                    if isinstance(want, int) and want != got:
                        raise InvalidFeedError(
                            f"input '{name}': dimension {axis} must be {want} (shape {arg.shape}), "
                            f"got shape {list(x.shape)}")
                    # A symbolic dim shared by two inputs must bind to one size ("?" and
                    # generated "unk__" names mean only "unknown", so they bind nothing).
                    if isinstance(want, str) and want != "?" and not want.startswith("unk__"):
                        if want in symbols and symbols[want][0] != got:
                            other, oaxis = symbols[want][1].split("#")
                            raise InvalidFeedError(
                                f"input '{name}': dimension {axis} ('{want}') is {got}, but input "
                                f"'{other}' dimension {oaxis} binds '{want}' to {symbols[want][0]}")
                        symbols.setdefault(want, (got, f"{name}#{axis}"))
            if not x.flags.c_contiguous:
                x = np.ascontiguousarray(x)
            feeds[name] = x
        return feeds


_TC: list = []


def _threading_ctl():
    """qrt.kernels.threading_ctl, imported on first use (it imports numba)."""
    if not _TC:
        from qrt.kernels import threading_ctl
        _TC.append(threading_ctl)
    return _TC[0]


__all__ = ["InferenceSession", "NodeArg", "QrtError"]
