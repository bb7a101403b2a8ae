"""pytest plugin (registered through the `pytest11` entry point): latency tracking of your own
models with pytest-benchmark.

    def test_my_model_latency(qrt_benchmark):
        outputs = qrt_benchmark("model.onnx", {"input": x})        # returns sess.run's outputs
        qrt_benchmark.extra_info["p50_ms"]                          # also in the benchmark JSON

`qrt_benchmark(model, feeds, *, threads=None, output_names=None, rounds=None, warmup_rounds=1,
**session_kwargs)`: builds a qrt.InferenceSession (path, bytes or ModelProto; a relative path is
looked up from the working directory, then from the test file's folder), runs it once untimed so
kernel compilation is not measured, then times `sess.run(output_names, feeds)` with
pytest-benchmark's `benchmark` fixture (with `rounds`, through `benchmark.pedantic`). The model, the
thread count, the batch shapes, the lowering summary and the median latency (`p50_ms`) go to
`extra_info` (`p50_ms` only when timing is on: with `--benchmark-disable` the call runs once,
untimed). Like `benchmark`, it can be called once per test.

Without pytest-benchmark installed (or with `-p no:benchmark`), tests that request the fixture are
skipped with a message saying so; nothing else changes. This module imports only pytest at load
time, so every pytest run in an environment with qrt installed stays unaffected.
"""
from __future__ import annotations

import os

import pytest

_MISSING = ("qrt_benchmark needs pytest-benchmark (pip install pytest-benchmark, or "
            "pip install 'qrt[test]'); skipping")


class QrtBenchmark:
    """The callable the `qrt_benchmark` fixture returns."""

    def __init__(self, benchmark, test_dir: str | None):
        self._benchmark = benchmark
        self._test_dir = test_dir
        self.session = None
        self.called = False

    @property
    def extra_info(self) -> dict:
        return self._benchmark.extra_info

    def _resolve(self, model):
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            if (not os.path.isabs(path) and not os.path.exists(path) and self._test_dir
                    and os.path.exists(os.path.join(self._test_dir, path))):
                return os.path.join(self._test_dir, path)
            return path
        return model

    def __call__(self, model, feeds: dict, *, threads: int | None = None, output_names=None,
                 rounds: int | None = None, warmup_rounds: int = 1, **session_kwargs):
        import numpy as np

        import qrt

        if self.called:
            raise RuntimeError("qrt_benchmark can be called only once per test (like pytest-"
                               "benchmark's `benchmark` fixture)")
        self.called = True
        sess = model if isinstance(model, qrt.InferenceSession) else \
            qrt.InferenceSession(self._resolve(model), threads=threads, **session_kwargs)
        self.session = sess
        for _ in range(max(1, warmup_rounds)):  # compile / load the kernels outside the timing
            sess.run(output_names, feeds)
        bm = self._benchmark
        if rounds is None:
            outputs = bm(sess.run, output_names, feeds)
        else:
            outputs = bm.pedantic(sess.run, args=(output_names, feeds), rounds=rounds,
                                  warmup_rounds=0, iterations=1)
        info = bm.extra_info
        info["model"] = (os.fspath(model) if isinstance(model, (str, os.PathLike))
                         else f"<{type(model).__name__}>")
        info["threads"] = sess.threads
        info["inputs"] = {k: list(np.shape(v)) for k, v in feeds.items()}
        try:
            info["lowering"] = sess.lowering_report().summary()
        except Exception:  # noqa: BLE001 - the report is informative only
            pass
        stats = getattr(getattr(bm, "stats", None), "stats", None)
        if stats is not None and getattr(stats, "data", None):
            info["p50_ms"] = float(stats.median) * 1e3
        return outputs


@pytest.fixture
def qrt_benchmark(request):
    """Time `qrt.InferenceSession.run` of a model with pytest-benchmark; see the module doc."""
    try:
        benchmark = request.getfixturevalue("benchmark")
    except pytest.FixtureLookupError:
        pytest.skip(_MISSING)
    test_dir = None
    path = getattr(request.node, "path", None) or getattr(request.node, "fspath", None)
    if path is not None:
        test_dir = os.path.dirname(os.fspath(path))
    return QrtBenchmark(benchmark, test_dir)
