#!/usr/bin/env python
"""GPU benchmark for qrt's numba.cuda INT8 kernels. Not part of the test run (needs a real GPU).

    pip install -e '.[cuda]'            # numba-cuda; cupy and/or torch optional (cuBLAS peers)
    python bench/gpu/bench_gpu.py                       # kernels + any bundled models, JSON to stdout
    python bench/gpu/bench_gpu.py --model m.onnx --repeat 50 --out result.json
    python bench/gpu/bench_gpu.py --quick               # small shapes, few repeats (smoke run)

What it measures (each section reports its own error instead of aborting the run):
- "device": GPU name, compute capability, numba-cuda version, and the rounding self-check
  (ties to even on the device == numpy; every qrt kernel relies on it).
- "correctness": qrt's GEMM / conv / depthwise / dynamic quantization vs the numpy reference on a
  small case, run on the GPU: must be bit-exact ("exact": true).
- "gemm": u8 x s8 -> u8 GEMM with fused requantize epilogue, for a few (M, N, K): median kernel
  time (CUDA events), TOPS = 2*M*N*K / time. Peers when importable: cuBLAS int8 GEMM (int32 out, no
  epilogue) through cupy's cublasGemmEx, and torch._int_mm (cuBLASLt). Peers use tensor cores
  (IMMA); qrt's kernel uses plain int32 multiply-adds (numba.cuda exposes neither dp4a nor mma),
  so expect it to be far below them: this number says how far.
- "conv": implicit-GEMM 3x3 conv and depthwise 3x3 conv, time and effective TOPS.
- "models": end-to-end latency (median ms, host feeds in, host outputs out, interleaved runs) of
  qrt.InferenceSession(device="cuda") vs qrt on the CPU and onnxruntime on the CPU (both with
  --threads threads), for each model given with --model (default: the .onnx files under qrt/data
  and models/), at --batch. Per model also: the first call (CUDA kernels compile then), whether
  the cuda outputs equal qrt's CPU outputs bit for bit (they should), and where the nodes ran:
  nodes on cuda / on cpu and the host<->device copies per call (from the lowering report).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import sys
import time
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GEMM_SHAPES = [(1, 4096, 4096), (64, 4096, 4096), (512, 1024, 1024), (2048, 2048, 2048),
               (4096, 4096, 4096)]
GEMM_SHAPES_QUICK = [(1, 512, 512), (256, 256, 256)]
# (N, C, H, W, Cout, k, stride, group)
CONV_SHAPES = [(1, 64, 56, 56, 64, 3, 1, 1), (8, 128, 28, 28, 128, 3, 1, 1),
               (1, 128, 56, 56, 128, 3, 1, 128), (8, 256, 14, 14, 256, 3, 2, 256)]
CONV_SHAPES_QUICK = [(1, 16, 16, 16, 16, 3, 1, 1), (1, 16, 16, 16, 16, 3, 1, 16)]


def _section(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # a benchmark section must never abort the others
        return {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=4)}


def _median_ms_events(cuda, fn, repeat, warmup=2):
    for _ in range(warmup):
        fn()
    cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = cuda.event(), cuda.event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _median_ms_wall(fn, repeat, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _tops(ops, ms):
    return round(ops / (ms * 1e-3) / 1e12, 4) if ms > 0 else None


# ------------------------------------------------------------------------------------------------

def device_info():
    from qrt.cuda_device import require_cuda
    info = require_cuda(check_rounding=True)
    return {"name": info.name, "compute_capability": list(info.compute_capability),
            "numba_cuda": info.numba_cuda, "simulator": info.simulator, "rounding_check": "ok"}


def correctness():
    from qrt.kernels import ref
    from qrt.kernels.cuda import api as C
    from qrt.kernels.qlinear import Epilogue, pack_weight, qlinear

    rng = np.random.default_rng(0)
    out = {}
    m, n, k = 200, 130, 300
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    pw = pack_weight(w, rng.integers(-2, 3, n))
    ep = Epilogue(np.uint8, bias=rng.integers(-9999, 9999, n).astype(np.int32),
                  multiplier=rng.uniform(2e-5, 6e-5, n).astype(np.float32), out_zero_point=100)
    out["gemm"] = {"exact": bool(np.array_equal(
        C.qlinear_cuda(a, 7, C.upload_weight(pw), ep).copy_to_host(), qlinear(a, 7, pw, ep)))}

    x = rng.integers(0, 256, (2, 8, 17, 15), dtype=np.uint8)
    for name, group, cout in (("conv", 2, 12), ("depthwise", 8, 8)):
        wc = rng.integers(-128, 128, (cout, 8 // group, 3, 3), dtype=np.int8)
        epc = Epilogue(np.int8, multiplier=np.full(cout, 2e-4, np.float32), out_zero_point=-3)
        got = C.qconv_cuda(x, 5, C.upload_weight(wc, 0), epc, (3, 3), (2, 1), (1, 1, 0, 1), (1, 2),
                           group=group).copy_to_host()
        cg, cog = 8 // group, cout // group
        accs = []
        for g in range(group):
            cols, osp = ref.im2col(x[:, g * cg:(g + 1) * cg], (3, 3), (2, 1), (1, 1, 0, 1), (1, 2), 5)
            accs.append(ref.qgemm_i32(cols, 5, wc[g * cog:(g + 1) * cog].reshape(cog, -1), 0))
        want = ref.requantize(np.concatenate(accs, 1), None, epc.multiplier, -3, np.int8)
        want = want.reshape(2, osp[0], osp[1], cout).transpose(0, 3, 1, 2)
        out[name] = {"exact": bool(np.array_equal(got, want))}

    xf = rng.normal(size=(64, 1000)).astype(np.float32)
    y, s, z = C.dynamic_quantize_cuda(xf)
    mx, mn = np.float32(max(0, xf.max())), np.float32(min(0, xf.min()))
    ws = np.float32(mx - mn) / np.float32(255)
    wz = np.rint(np.clip(np.float32(0) - mn / ws, 0, 255))
    wy = np.clip(np.rint(xf / ws) + wz, 0, 255).astype(np.uint8)
    out["dynamic_quantize"] = {"exact": bool(s.copy_to_host()[0] == ws and z.copy_to_host()[0] == wz
                                             and np.array_equal(y.copy_to_host(), wy))}
    return out


def _cublas_int8(cp):
    """C(M,N) int32 = A(M,K) s8 @ W(N,K)^T s8 via cublasGemmEx (TN, column-major view)."""
    from cupy.cuda import cublas, device

    handle = device.get_cublas_handle()
    r8 = getattr(cp.cuda.runtime, "CUDA_R_8I", 3)
    r32 = getattr(cp.cuda.runtime, "CUDA_R_32I", 10)
    c32 = getattr(cublas, "CUBLAS_COMPUTE_32I", 72)
    one, zero = np.array(1, np.int32), np.array(0, np.int32)

    def gemm(a, w, c):
        m, k = a.shape
        n = w.shape[0]
        cublas.gemmEx(handle, cublas.CUBLAS_OP_T, cublas.CUBLAS_OP_N, n, m, k, one.ctypes.data,
                      w.data.ptr, r8, k, a.data.ptr, r8, k, zero.ctypes.data, c.data.ptr, r32, n,
                      c32, -1)
    return gemm


def gemm_bench(shapes, repeat):
    from numba import cuda

    from qrt.kernels.cuda import api as C
    from qrt.kernels.qlinear import Epilogue

    try:
        import cupy as cp
        cublas_gemm = _cublas_int8(cp)
    except Exception as e:
        cp, cublas_gemm, cupy_why = None, None, f"{type(e).__name__}: {e}"
    try:
        import torch
        has_torch = torch.cuda.is_available() and hasattr(torch, "_int_mm")
    except Exception:
        has_torch = False

    rows = []
    rng = np.random.default_rng(1)
    for m, n, k in shapes:
        row = {"M": m, "N": n, "K": k}
        ops = 2.0 * m * n * k
        a = cuda.to_device(rng.integers(0, 256, (m, k), dtype=np.uint8))
        cw = C.upload_weight(rng.integers(-128, 128, (n, k), dtype=np.int8), 0)
        cep = C.prepare_epilogue(Epilogue(np.uint8, multiplier=np.full(n, 1e-5, np.float32),
                                          out_zero_point=128), n)
        y = cuda.device_array((m, n), np.uint8)
        ms = _median_ms_events(cuda, lambda: C.qlinear_cuda(a, 128, cw, cep, out=y), repeat)
        row["qrt_ms"], row["qrt_tops"] = round(ms, 4), _tops(ops, ms)
        if cublas_gemm is not None:
            try:
                ca = cp.asarray(rng.integers(-128, 128, (m, k), dtype=np.int8))
                cwt = cp.asarray(rng.integers(-128, 128, (n, k), dtype=np.int8))
                cc = cp.empty((m, n), np.int32)
                ms = _median_ms_events(cuda, lambda: cublas_gemm(ca, cwt, cc), repeat)
                row["cublas_int8_ms"], row["cublas_int8_tops"] = round(ms, 4), _tops(ops, ms)
            except Exception as e:
                row["cublas_int8_error"] = f"{type(e).__name__}: {e}"
        else:
            row["cublas_int8_error"] = f"cupy not usable: {cupy_why}"
        if has_torch:
            try:
                ta = torch.randint(-128, 128, (max(m, 17), k), dtype=torch.int8, device="cuda")
                tb = torch.randint(-128, 128, (k, n), dtype=torch.int8, device="cuda")
                ms = _median_ms_events(cuda, lambda: torch._int_mm(ta, tb), repeat)
                row["torch_int_mm_ms"] = round(ms, 4)
                row["torch_int_mm_tops"] = _tops(2.0 * max(m, 17) * n * k, ms)
            except Exception as e:  # _int_mm has shape rules (M > 16, K and N multiples of 8)
                row["torch_int_mm_error"] = f"{type(e).__name__}: {e}"
        if "qrt_tops" in row and row.get("cublas_int8_tops"):
            row["qrt_vs_cublas"] = round(row["qrt_tops"] / row["cublas_int8_tops"], 4)
        rows.append(row)
    return rows


def conv_bench(shapes, repeat):
    from numba import cuda

    from qrt.kernels.cuda import api as C
    from qrt.kernels.qlinear import Epilogue

    rng = np.random.default_rng(2)
    rows = []
    for nb, c, h, w, cout, k, s, group in shapes:
        p = k // 2
        x = cuda.to_device(rng.integers(0, 256, (nb, c, h, w), dtype=np.uint8))
        cw = C.upload_weight(rng.integers(-128, 128, (cout, c // group, k, k), dtype=np.int8), 0)
        cep = C.prepare_epilogue(Epilogue(np.uint8, multiplier=np.full(cout, 1e-4, np.float32)), cout)
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        y = cuda.device_array((nb, cout, oh, ow), np.uint8)
        ms = _median_ms_events(cuda, lambda: C.qconv_cuda(x, 128, cw, cep, (k, k), (s, s),
                                                          (p, p, p, p), group=group, out=y), repeat)
        ops = 2.0 * nb * cout * oh * ow * (c // group) * k * k
        rows.append({"N": nb, "C": c, "H": h, "W": w, "Cout": cout, "kernel": k, "stride": s,
                     "group": group, "algo": "depthwise" if group == c else "implicit_gemm",
                     "ms": round(ms, 4), "tops": _tops(ops, ms)})
    return rows


def _split_spec(spec: str):
    """'model.onnx' or 'model.onnx@1x3x48x192' (the shape of the model's first input)."""
    path, _, shape = spec.partition("@")
    return path, (tuple(int(d) for d in shape.split("x")) if shape else None)


def _feeds(ort_sess, rng, batch, first_shape=None):
    feeds = {}
    for n, i in enumerate(ort_sess.get_inputs()):
        shape = [d if isinstance(d, int) and d > 0 else batch for d in i.shape]
        if n == 0 and first_shape is not None:
            shape = list(first_shape)
        t = i.type
        if "float" in t:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
        elif "uint8" in t:
            feeds[i.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        elif "int8" in t:
            feeds[i.name] = rng.integers(-128, 128, shape, dtype=np.int8)
        elif "int64" in t:
            feeds[i.name] = np.zeros(shape, np.int64)
        else:
            raise TypeError(f"input {i.name}: no generator for {t}")
    return feeds


def _interleaved_ms(fns: dict, repeat, warmup=2):
    """Median wall ms per named callable, the callables taking turns (a drifting machine then
    shifts every column alike instead of favouring whichever ran first)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: round(statistics.median(v), 4) for k, v in times.items()}


def _placement(sess) -> dict:
    rep = sess.lowering_report()
    devs = [e.get("device") for e in rep]
    known = [t["bytes"] for t in rep.transfers]
    return {"nodes_on_cuda": devs.count("cuda"), "nodes_on_cpu": devs.count("cpu"),
            "cpu_nodes": sorted({f"{e['op_type']}: {e['device_reason']}" for e in rep
                                 if e.get("device") == "cpu"}),
            "copies_per_call": len(rep.transfers),
            "copy_bytes_per_call": sum(known) if all(b is not None for b in known) else None}


def model_bench(paths, repeat, threads=1, batch=1):
    import onnxruntime as ort

    import qrt

    rows = []
    rng = np.random.default_rng(3)
    for spec in paths:
        path, first_shape = _split_spec(spec)
        row = {"model": os.path.relpath(path, ROOT) if path.startswith(ROOT) else path,
               "threads": threads, "batch": batch}
        if first_shape is not None:
            row["input_shape"] = list(first_shape)
        fns = {}
        try:
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            osess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            feeds = _feeds(osess, rng, batch, first_shape)
            ref_out = osess.run(None, feeds)
            fns["onnxruntime_cpu"] = lambda: osess.run(None, feeds)
        except Exception as e:
            row["onnxruntime_error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
            continue
        outs = {}
        for dev in ("cuda", "cpu"):
            try:
                t = time.perf_counter()
                s = qrt.InferenceSession(path, threads=threads, device=dev)
                row[f"qrt_{dev}_build_ms"] = round((time.perf_counter() - t) * 1e3, 2)
                t = time.perf_counter()
                outs[dev] = s.run(None, feeds)
                row[f"qrt_{dev}_first_call_ms"] = round((time.perf_counter() - t) * 1e3, 2)
                row[f"qrt_{dev}_max_abs_diff_vs_ort"] = float(max(
                    np.max(np.abs(np.asarray(o, np.float64) - np.asarray(r, np.float64)), initial=0)
                    for o, r in zip(outs[dev], ref_out)))
                if dev == "cuda":
                    row["placement"] = _placement(s)
                fns[f"qrt_{dev}"] = (lambda s=s: s.run(None, feeds))
            except Exception as e:
                row[f"qrt_{dev}_error"] = f"{type(e).__name__}: {e}"
        if "cuda" in outs and "cpu" in outs:
            row["qrt_cuda_identical_to_qrt_cpu"] = all(
                o.dtype == c.dtype and np.array_equal(o, c, equal_nan=o.dtype.kind == "f")
                for o, c in zip(outs["cuda"], outs["cpu"]))
        try:
            for k, ms in _interleaved_ms(fns, repeat).items():
                row[f"{k}_ms"] = ms
        except Exception as e:
            row["timing_error"] = f"{type(e).__name__}: {e}"
        if row.get("qrt_cuda_ms") and row.get("onnxruntime_cpu_ms"):
            row["speedup_qrt_cuda_vs_ort_cpu"] = round(row["onnxruntime_cpu_ms"] / row["qrt_cuda_ms"], 3)
        if row.get("qrt_cuda_ms") and row.get("qrt_cpu_ms"):
            row["speedup_qrt_cuda_vs_qrt_cpu"] = round(row["qrt_cpu_ms"] / row["qrt_cuda_ms"], 3)
        rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", default=None,
                    help="ONNX model to time end to end, PATH or PATH@1x3x48x192 to fix the first "
                    "input's shape (repeatable; default: bundled models)")
    ap.add_argument("--repeat", type=int, default=20, help="timed runs per measurement (median)")
    ap.add_argument("--quick", action="store_true", help="small shapes and 5 repeats")
    ap.add_argument("--skip", action="append", default=[],
                    choices=["correctness", "gemm", "conv", "models"], help="skip a section")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads of qrt's and onnxruntime's CPU sessions (models section)")
    ap.add_argument("--batch", type=int, default=1, help="value of symbolic dims (models section)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    repeat = 5 if args.quick else args.repeat

    result = {"host": {"python": platform.python_version(), "platform": platform.platform(),
                       "numpy": np.__version__}}
    dev = _section(device_info)
    result["device"] = dev
    if "error" in dev:
        result["note"] = ("no usable CUDA device; nothing else was run. Install numba-cuda "
                          "(pip install 'qrt[cuda]') on a machine with an NVIDIA GPU and driver.")
    else:
        if dev.get("simulator"):
            result["note"] = ("NUMBA_ENABLE_CUDASIM=1: the CUDA simulator ran every kernel as "
                              "Python; the timings below say nothing about a GPU (smoke run only)")
        if "correctness" not in args.skip:
            result["correctness"] = _section(correctness)
        if "gemm" not in args.skip:
            result["gemm"] = _section(gemm_bench, GEMM_SHAPES_QUICK if args.quick else GEMM_SHAPES,
                                      repeat)
        if "conv" not in args.skip:
            result["conv"] = _section(conv_bench, CONV_SHAPES_QUICK if args.quick else CONV_SHAPES,
                                      repeat)
        if "models" not in args.skip:
            paths = args.model or sorted(glob.glob(os.path.join(ROOT, "qrt", "data", "*.onnx"))
                                         + glob.glob(os.path.join(ROOT, "models", "*.onnx")))
            result["models"] = _section(model_bench, paths, repeat, args.threads, args.batch) \
                if paths else \
                {"error": "no models found; pass --model path.onnx"}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0 if "error" not in dev else 2


if __name__ == "__main__":
    sys.exit(main())
