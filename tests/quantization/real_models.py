"""qrt's quantizer against onnxruntime's `quantize_static` on the real PP-OCR models, as a new user
would try it: a few text-like calibration pages, the settings one expects (QDQ, u8 activations, s8
per-channel weights, MinMax unless another method is named), evaluation on different held-out
pages. Every INT8 model runs in qrt and in onnxruntime (default session options, i.e. its fused
integer kernels), and also in onnxruntime with graph optimizations off ("exact": the QDQ graph
evaluated as written, in float); its output is compared with the FP32 model's (onnxruntime FP32).

onnxruntime's quantizer is run twice: straight on the model (`onnxruntime`, its first documented
example) and after its own recommended pre-processing, `quant_pre_process` (`onnxruntime+pre`:
shape inference, constant folding, BatchNorm fusion). With `dynamic=True`, compare_real adds
`quantize_dynamic` rows (method "dynamic"): qrt's default format and onnxruntime's
(per_channel=True, QInt8 weights), straight and pre-processed; where onnxruntime's quantizer raises
(straight on PP-OCR det/rec), the row holds "error" (exception type and message) instead of metrics.

Used by bench/compare_quantizers.py (the full table) and tests/quantization/test_real_models.py.
"""
from __future__ import annotations

import math
import os
import tempfile
import warnings

import numpy as np
import onnx

from tests.models.test_real_models import SHAPES, text_like_image

# name -> model file in models/fetch_real_models.py's cache
REAL_MODELS = {"cls": "ppocr_cls.onnx", "det": "ppocr_det.onnx", "rec": "ppocr_rec.onnx"}
ORT_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
QRT_METHODS = ("minmax", "moving_average", "percentile", "mse", "entropy", "auto")
RUNTIMES = ("qrt", "onnxruntime", "exact")
CALIB_SEED, TEST_SEED = 100, 1000  # calibration pages 100.., held-out pages 1000..


def real_model_path(name: str) -> str | None:
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "..", "models"))
    from fetch_real_models import cache_dir
    path = os.path.join(cache_dir(), REAL_MODELS[name])
    return path if os.path.exists(path) else None


def pages(name: str, n: int, seed: int) -> list[dict]:
    shape = SHAPES[REAL_MODELS[name]]
    return [{"x": text_like_image(shape, seed + i)} for i in range(n)]


def metrics(ref: list[np.ndarray], out: list[np.ndarray]) -> dict:
    r = np.concatenate([np.asarray(a, np.float64).ravel() for a in ref])
    o = np.concatenate([np.asarray(a, np.float64).ravel() for a in out])
    noise = float((r - o) @ (r - o))
    sqnr = math.inf if noise == 0 else 10 * math.log10(float(r @ r) / noise)
    cos = float(r @ o / (np.linalg.norm(r) * np.linalg.norm(o) + 1e-300))
    return {"sqnr_db": sqnr, "cosine": cos}


def ort_session(model, optimize: bool = True):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else os.fspath(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def run_model(model, feeds: list[dict], runtime: str) -> list[np.ndarray]:
    """First output per feed. runtime: qrt | onnxruntime | exact (onnxruntime, no optimization)."""
    if runtime == "qrt":
        import qrt
        sess = qrt.InferenceSession(model, threads=1)
    else:
        sess = ort_session(model, optimize=(runtime == "onnxruntime"))
    return [np.asarray(sess.run(None, f)[0]) for f in feeds]


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds):
        self.it = iter(feeds)

    def get_next(self):
        return next(self.it, None)


def ort_quantize(src: str, dst: str, calib: list[dict], method: str = "minmax",
                 preprocess: bool = False, per_channel: bool = True) -> str:
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    import contextlib
    import sys
    # onnxruntime prints calibration progress on stdout: keep stdout for the caller's results
    with warnings.catch_warnings(), _quiet_root_logger(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        if preprocess:
            src = _ort_preprocess(src, dst)
        extra = {"CalibPercentile": 99.99} if method == "percentile" else {}
        quantize_static(src, dst, _Reader(calib), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, ORT_METHODS[method]),
                        extra_options=extra)
    return dst


def _ort_preprocess(src: str, dst: str) -> str:
    """onnxruntime's recommended pre-processing (`quant_pre_process`) of `src`, written next to
    `dst`; returns the pre-processed model's path. Callers silence warnings/logging."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    # Per-channel QDQ needs opset 13 (DequantizeLinear's axis); quantize_static does not
    # upgrade a pre-processed opset-11/12 model and writes an invalid one, so upgrade first.
    m = onnx.load(src)
    if _opset(m) < 13:
        from onnx import version_converter
        m = version_converter.convert_version(m, 13)
    up, pre = dst[:-5] + "_opset13.onnx", dst[:-5] + "_pre.onnx"
    onnx.save(m, up)
    quant_pre_process(up, pre, skip_symbolic_shape=True)  # sympy not needed: static shapes
    return pre


def ort_quantize_dynamic(src: str, dst: str, preprocess: bool = False) -> str:
    """onnxruntime's `quantize_dynamic` as its docs show it (per-channel s8 weights), straight on
    `src` or after `quant_pre_process` (the same pre-processing as ort_quantize's)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    import contextlib
    import sys
    with warnings.catch_warnings(), _quiet_root_logger(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        if preprocess:
            src = _ort_preprocess(src, dst)
        quantize_dynamic(src, dst, per_channel=True, weight_type=QuantType.QInt8)
    return dst


def _error(e: BaseException) -> str:
    """One line: exception type and message."""
    return " ".join(f"{type(e).__name__}: {e}".split())


def _opset(m: onnx.ModelProto) -> int:
    return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 1)


class _quiet_root_logger:
    """onnxruntime's quantizer logs a warning per un-foldable bias on the root logger."""

    def __enter__(self):
        import logging
        self.logger = logging.getLogger()
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


_ORT_CACHE: dict = {}


def ort_quantized(name: str, method: str = "minmax", preprocess: bool = True,
                  n_calib: int = 4) -> str:
    """Path of model `name` quantized by onnxruntime on the calibration pages, made once per
    process (a temporary folder removed at exit): the tests share it."""
    key = (name, method, preprocess, n_calib, CALIB_SEED)
    if key not in _ORT_CACHE or not os.path.exists(_ORT_CACHE[key]):
        import atexit
        import shutil
        tmp = tempfile.mkdtemp(prefix="qrt-ortq-")
        atexit.register(shutil.rmtree, tmp, True)
        dst = os.path.join(tmp, f"{name}_{method}_{'pre' if preprocess else 'plain'}.onnx")
        _ORT_CACHE[key] = ort_quantize(real_model_path(name), dst,
                                       pages(name, n_calib, CALIB_SEED), method, preprocess)
    return _ORT_CACHE[key]


def compare_real(name: str, *, n_calib: int = 4, n_test: int = 8,
                 qrt_methods=("minmax",), ort_methods=("minmax",), ort_preprocess=(False, True),
                 runtimes=RUNTIMES, qrt_options: dict | None = None, keep_dir: str | None = None,
                 dynamic: bool = False, progress=None) -> dict:
    """Quantize model `name` with both tools on `n_calib` pages and evaluate on `n_test` other
    pages. Returns {"model", "n_calib", "n_test", "rows": [{tool, method, runtime: metrics}]};
    with `dynamic`, also quantize_dynamic rows (method "dynamic"; an onnxruntime row whose
    quantizer raised holds {"error": "Type: message"} instead of metrics)."""
    from qrt.quantization import quantize_static
    src = real_model_path(name)
    if src is None:
        raise FileNotFoundError(f"{REAL_MODELS[name]} not fetched: run "
                                "`python models/fetch_real_models.py`")
    calib = pages(name, n_calib, CALIB_SEED)
    test = pages(name, n_test, TEST_SEED)
    ref = run_model(src, test, "onnxruntime")
    rows = []
    say = progress or (lambda *_: None)
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = keep_dir or tmp
        for method in qrt_methods:
            dst = os.path.join(out_dir, f"{name}_qrt_{method}.onnx")
            quantize_static(src, dst, calib, method=method, **(qrt_options or {}))
            rows.append({"tool": "qrt", "method": method,
                         **{rt: metrics(ref, run_model(dst, test, rt)) for rt in runtimes}})
            say(rows[-1])
        for pre in ort_preprocess:
            tool = "onnxruntime+pre" if pre else "onnxruntime"
            for method in ort_methods:
                if keep_dir:
                    dst = os.path.join(out_dir, f"{name}_{tool.replace('+', '_')}_{method}.onnx")
                    ort_quantize(src, dst, calib, method, pre)
                else:
                    dst = ort_quantized(name, method, pre, n_calib)
                rows.append({"tool": tool, "method": method,
                             **{rt: metrics(ref, run_model(dst, test, rt)) for rt in runtimes}})
                say(rows[-1])
        if dynamic:  # quantize_dynamic of both tools (no calibration), per-channel s8 weights
            from qrt.quantization import quantize_dynamic
            dst = os.path.join(out_dir, f"{name}_qrt_dynamic.onnx")
            quantize_dynamic(src, dst)
            rows.append({"tool": "qrt", "method": "dynamic",
                         **{rt: metrics(ref, run_model(dst, test, rt)) for rt in runtimes}})
            say(rows[-1])
            for pre in ort_preprocess:
                tool = "onnxruntime+pre" if pre else "onnxruntime"
                dst = os.path.join(out_dir, f"{name}_{tool.replace('+', '_')}_dynamic.onnx")
                try:  # onnxruntime's quantize_dynamic raises straight on PP-OCR det/rec
                    ort_quantize_dynamic(src, dst, pre)
                except Exception as e:  # noqa: BLE001 - recorded as the row's result
                    rows.append({"tool": tool, "method": "dynamic", "error": _error(e)})
                else:
                    rows.append({"tool": tool, "method": "dynamic",
                                 **{rt: metrics(ref, run_model(dst, test, rt))
                                    for rt in runtimes}})
                say(rows[-1])
    return {"model": REAL_MODELS[name], "n_calib": n_calib, "n_test": n_test, "rows": rows}
