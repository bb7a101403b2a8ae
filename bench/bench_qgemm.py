"""int8 GEMM throughput: qrt's packed kernels per CPU path vs onnxruntime MatMulInteger (u8 x s8).

    pytest bench/bench_qgemm.py --benchmark-only        # pytest-benchmark suite
    python bench/bench_qgemm.py [--quick] [--threads N]   # table: GOPS = 2*M*N*K / median time

Runs are interleaved (qrt path, onnxruntime, next path, ...) per shape so machine noise hits all alike.
Reference rates: 140 GOPS/core is ~4.4 G vpmaddwd/s (16 MACs each), what a vpmaddwd + vpaddd +
broadcast loop sustained on one core of this VM; it is the rate of qrt's exact instruction mix, not
of the multiplier: onnxruntime's vpmaddubsw kernel issues ~5.7 G multiply instructions/s here (a
dependent-chain test puts the boost clock near 3.2 GHz). The Zen 4 VNNI figure of PERF-NOTES is
448 GOPS/core (one zmm vpdpbusd = 64 MACs per cycle).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pytest

from qrt.kernels import qlinear as ql
from qrt.kernels.cpu import available_paths

ZEN3_AVX2_GOPS_PER_CORE = 140.0  # qrt's exact vpmaddwd mix on this VM (see module docstring)
ZEN4_VNNI_GOPS_PER_CORE = 448.0
SHAPES = [(m, n, k) for m in (1, 64, 256, 1024) for k in (256, 1024, 4096) for n in (256, 1024, 4096)]
QUICK = [(1, 1024, 1024), (1, 4096, 4096), (64, 1024, 1024), (256, 1024, 1024), (256, 4096, 1024),
         (1024, 1024, 1024), (1024, 4096, 4096)]


def _data(m, n, k, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    return a, w


def qrt_runner(path, m, n, k, threads=1):
    a, w = _data(m, n, k)
    pw = ql.pack_weight(w, 0, path=path)
    ep = ql.Epilogue(np.uint8, bias=np.zeros(n, np.int32), multiplier=np.full(n, 1e-4, np.float32),
                     out_zero_point=128)
    return lambda: ql.qlinear(a, 128, pw, ep, threads)


def ort_runner(m, n, k, threads=1):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    a, w = _data(m, n, k)
    node = helper.make_node("MatMulInteger", ["a", "b", "za"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
                          [numpy_helper.from_array(np.ascontiguousarray(w.T), "b"),
                           numpy_helper.from_array(np.array(128, np.uint8), "za")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = {"a": a}
    return lambda: sess.run(None, feed)


def _median_time(fn, min_time=0.3, min_reps=5, max_reps=200):
    fn()
    ts = []
    t_end = time.perf_counter() + min_time
    while len(ts) < min_reps or (time.perf_counter() < t_end and len(ts) < max_reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


# ------------------------------------------------------------------ pytest-benchmark suite
BENCH_SHAPES = QUICK
FAST_PATHS = [p for p in available_paths() if p != "ref"]


@pytest.mark.parametrize("shape", BENCH_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("impl", FAST_PATHS + ["onnxruntime"])
def test_qgemm(benchmark, impl, shape):
    m, n, k = shape
    fn = ort_runner(m, n, k) if impl == "onnxruntime" else qrt_runner(impl, m, n, k)
    fn()
    benchmark.extra_info["ops"] = 2 * m * n * k
    benchmark(fn)
    benchmark.extra_info["gops_median"] = 2 * m * n * k / benchmark.stats.stats.median / 1e9


# ------------------------------------------------------------------ table
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few representative shapes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--paths", default=",".join(FAST_PATHS))
    args = ap.parse_args(argv)
    paths = [p for p in args.paths.split(",") if p]
    shapes = QUICK if args.quick else SHAPES
    peak = ZEN3_AVX2_GOPS_PER_CORE * args.threads
    cols = paths + ["onnxruntime"]
    print(f"threads={args.threads}; GOPS (median); %AVX2 = share of {peak:.0f} GOPS "
          f"(the exact vpmaddwd mix on Zen 3), %VNNI = share of {ZEN4_VNNI_GOPS_PER_CORE * args.threads:.0f}")
    print(f"{'M':>5} {'N':>5} {'K':>5} " + " ".join(f"{c:>11}" for c in cols)
          + f" {'best/ort':>8} {'%AVX2':>6} {'%VNNI':>6}")
    for m, n, k in shapes:
        ops = 2 * m * n * k
        res = {}
        for c in cols:
            fn = ort_runner(m, n, k, args.threads) if c == "onnxruntime" else \
                qrt_runner(c, m, n, k, args.threads)
            res[c] = ops / _median_time(fn) / 1e9
        best = max(res[p] for p in paths) if paths else 0.0
        print(f"{m:>5} {n:>5} {k:>5} " + " ".join(f"{res[c]:>11.1f}" for c in cols)
              + f" {best / res['onnxruntime']:>8.2f} {100 * best / peak:>5.0f}%"
              f" {100 * best / (ZEN4_VNNI_GOPS_PER_CORE * args.threads):>5.0f}%", flush=True)


if __name__ == "__main__":
    main()
