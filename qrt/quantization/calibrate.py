"""Calibration: feed iteration, in-process execution with observer hooks, streaming statistics."""
from __future__ import annotations

import sys
import warnings
from typing import Callable, Iterable, Iterator

import numpy as np
import onnx

from qrt.quantization.observers import TensorObserver


def iter_feeds(data) -> Iterator[dict]:
    """Feed dicts from an iterable of dicts, an onnxruntime-style reader (`get_next()` -> None at
    the end), or a single dict."""
    if data is None:
        return iter(())
    if isinstance(data, dict):
        return iter([data])
    if hasattr(data, "get_next") and callable(data.get_next):
        def gen():
            while True:
                item = data.get_next()
                if item is None:
                    return
                yield item
        return gen()
    if isinstance(data, Iterable):
        return iter(data)
    raise TypeError("calibration_data must be an iterable of feed dicts or a reader with "
                    f"get_next(), not {type(data).__name__}")


def model_inputs(model: onnx.ModelProto) -> list[tuple[str, np.dtype, list]]:
    inits = {t.name for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dt = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else np.float32
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                 for d in tt.shape.dim] if tt.HasField("shape") else None
        out.append((vi.name, np.dtype(dt), shape))
    return out


def cast_feed(feed: dict, inputs) -> dict:
    types = {n: dt for n, dt, _ in inputs}
    out = {}
    for k, v in feed.items():
        v = np.asarray(v)
        if k in types and v.dtype != types[k]:
            v = v.astype(types[k])
        out[k] = np.ascontiguousarray(v)
    return out


def npz_batches(path_or_arrays, model: onnx.ModelProto, batch_size: int | None = None) -> list[dict]:
    """Split an npz (one array per input name, samples on axis 0) into feed dicts. When the model
    fixes the batch dimension, batches have that size."""
    arrays = dict(np.load(path_or_arrays)) if not isinstance(path_or_arrays, dict) else path_or_arrays
    inputs = model_inputs(model)
    names = [n for n, _, _ in inputs]
    if len(names) == 1 and names[0] not in arrays:
        # one input: take the only array, else the one whose rank and kind match (images, labels)
        rank = len(inputs[0][2]) if inputs[0][2] is not None else None
        fits = [a for a in arrays.values() if len(arrays) == 1 or
                (a.ndim == rank and a.dtype.kind == inputs[0][1].kind)]
        if len(fits) == 1:
            arrays = {names[0]: fits[0]}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ValueError(f"data file has no array for input(s) {missing}; it has {list(arrays)}")
    n = min(arrays[k].shape[0] for k in names)
    bs = batch_size
    for _, _, shape in inputs:
        if shape and isinstance(shape[0], int) and shape[0] > 0:
            bs = shape[0]
    bs = bs or 32
    return [cast_feed({k: arrays[k][i:i + bs] for k in names}, inputs)
            for i in range(0, n - bs + 1 if n >= bs else 1, bs)]


def random_feeds(model: onnx.ModelProto, n: int = 8, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        f = {}
        for name, dt, shape in model_inputs(model):
            shp = [d if isinstance(d, int) and d > 0 else 1 for d in (shape or [1])]
            if dt.kind == "f":
                f[name] = rng.standard_normal(shp).astype(dt)
            else:
                f[name] = rng.integers(0, 10, shp).astype(dt)
        feeds.append(f)
    return feeds


class Executor:
    """Runs a model in-process with a per-tensor callback. qrt's own session (optimize=False, so
    every source tensor is seen) through its observer hook; when qrt cannot load the model (an op
    it does not implement yet) it falls back to onnxruntime, fetching the wanted tensors as extra
    outputs of an in-memory copy of the model (nothing is written to disk)."""

    def __init__(self, model: onnx.ModelProto, backend: str = "auto"):
        self.model = model
        self.inputs = model_inputs(model)
        self.output_names = [o.name for o in model.graph.output]
        self.backend = None
        self._sess = None
        self._qrt_error = None
        if backend in ("auto", "qrt"):
            try:
                import qrt
                self._sess = qrt.InferenceSession(model, optimize=False, threads=1)
                self.backend = "qrt"
            except Exception as e:
                from qrt.errors import UnsupportedOpError
                if backend == "qrt" or not isinstance(e, UnsupportedOpError):
                    raise  # a broken model is reported as qrt sees it
                self._qrt_error = e  # ops qrt lacks: onnxruntime may still run the FP32 model
        if self._sess is None:
            self.backend = "onnxruntime"
            self._ort_cache: dict = {}

    def _ort(self, want: tuple):
        if want not in self._ort_cache:
            import onnxruntime as ort
            m = onnx.ModelProto()
            m.CopyFrom(self.model)
            have = set(self.output_names)
            for name in want:
                if name not in have:
                    m.graph.output.append(onnx.ValueInfoProto(name=name))
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            so.log_severity_level = 3
            try:
                self._ort_cache[want] = ort.InferenceSession(m.SerializeToString(), so,
                                                             providers=["CPUExecutionProvider"])
            except Exception as e:  # neither runtime can run it: qrt's error names the ops
                if self._qrt_error is None:
                    raise
                raise self._qrt_error from e
        return self._ort_cache[want]

    def run(self, feed: dict, want=(), callback: Callable[[str, np.ndarray], None] | None = None,
            node_callback=None) -> list[np.ndarray]:
        """Run one feed; call `callback(name, array)` once for every tensor named in `want`
        (graph inputs included) and `node_callback(op_type, name, inputs, outputs)` per node (qrt
        backend only). Returns the graph outputs."""
        feed = cast_feed(feed, self.inputs)
        want = set(want)
        if self.backend == "qrt":
            seen = set()

            def obs(node, ins, outs):
                if node_callback is not None:
                    node_callback(node, ins, outs)
                if callback is None:
                    return
                for name, arr in zip(list(node.inputs) + list(node.outputs), list(ins) + list(outs)):
                    if name in want and name not in seen and arr is not None:
                        seen.add(name)
                        callback(name, np.asarray(arr))

            return self._sess._execute(feed, self.output_names, obs)
        names = tuple(sorted(want - set(feed)))
        sess = self._ort(names)
        avail = {o.name for o in sess.get_outputs()}
        req = self.output_names + [n for n in names if n in avail and n not in self.output_names]
        res = sess.run(req, feed)
        vals = dict(zip(req, res))
        if callback is not None:
            for n in want:
                if n in feed:
                    callback(n, feed[n])
                elif n in vals:
                    callback(n, vals[n])
        return [vals[n] for n in self.output_names]


def calibrate(model: onnx.ModelProto, data, tensors: Iterable[str], *, histogram: bool,
              num_bins: int = 2048, progress=False, keep_feeds: bool | int = False,
              backend: str = "auto"):
    """Stream `data` through `model`; returns (observers by tensor name, batches, backend name,
    the feeds if keep_feeds: all of them for True, at most that many for an int)."""
    tensors = list(dict.fromkeys(tensors))
    obs = {t: TensorObserver(histogram, num_bins) for t in tensors}
    ex = Executor(model, backend)
    every = progress if isinstance(progress, int) and not isinstance(progress, bool) else 10
    kept = [] if keep_feeds else None
    keep_max = None if keep_feeds is True else int(keep_feeds)
    n = 0

    def cb(name, arr):
        obs[name].update(arr)

    for feed in iter_feeds(data):
        if not isinstance(feed, dict):
            raise TypeError(f"calibration batch {n} is a {type(feed).__name__}, expected a dict "
                            "of input name -> array")
        ex.run(feed, obs.keys(), cb)
        if kept is not None and (keep_max is None or len(kept) < keep_max):
            kept.append(cast_feed(feed, ex.inputs))
        n += 1
        if progress and n % every == 0:
            print(f"qrt.quantization: calibrated {n} batches", file=sys.stderr, flush=True)
    if n == 0:
        raise ValueError("calibration_data yielded no batches")
    if progress:
        print(f"qrt.quantization: calibration done, {n} batches ({ex.backend})", file=sys.stderr,
              flush=True)
    if ex.backend != "qrt" and backend == "auto":
        warnings.warn(f"qrt could not load the model for calibration ({ex._qrt_error}); "
                      "calibrated with onnxruntime instead", RuntimeWarning, stacklevel=3)
    return obs, n, ex.backend, kept
