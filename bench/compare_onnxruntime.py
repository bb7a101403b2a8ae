"""qrt vs onnxruntime, INT8 and FP32, interleaved in one process.

For each model and setting (threads 1/2, batch 1/larger) the four runners — qrt INT8, qrt FP32,
onnxruntime INT8 (the same QDQ model) and onnxruntime FP32 — take turns call by call, so machine
noise hits them alike. Reports medians and ratios, cold start (new process: import, load, first
result) with an empty and a warm Numba cache, peak RSS and model sizes; writes JSON and prints a
Markdown table.

    python bench/compare_onnxruntime.py [--runs 30]
        [--models demo,ppocr_cls,ppocr_rec,transformer,transformer_d256]
                                        [--out bench/results/compare.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "models"))


def _ort_quantize(src: str, dst: str, feeds: list[dict]) -> str:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    class Reader:
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    return dst


def model_zoo(names: list[str], tmp: str) -> dict:
    """name -> (fp32 path, int8 path, feed builder(batch))."""
    zoo = {}
    rng = np.random.default_rng(0)
    if "demo" in names:
        from importlib import resources
        data = resources.files("qrt.data")
        fp32, int8 = str(data / "digits_cnn.onnx"), str(data / "digits_cnn_int8.onnx")
        test = np.load(str(data / "digits_test.npz"))
        xs = test[test.files[0]].astype(np.float32)

        def demo_feeds(b, xs=xs):
            return {"input": np.ascontiguousarray(xs[:b].reshape(b, 1, 8, 8))}
        zoo["demo"] = (fp32, int8, demo_feeds)
    if "ppocr_cls" in names:
        from fetch_real_models import fetch
        src = os.path.join(fetch(), "ppocr_cls.onnx")

        def cls_feeds(b):
            return {"x": rng.uniform(-1, 1, (b, 3, 48, 192)).astype(np.float32)}
        dst = _ort_quantize(src, os.path.join(tmp, "cls_int8.onnx"), [cls_feeds(1) for _ in range(4)])
        zoo["ppocr_cls"] = (src, dst, cls_feeds)
    if "ppocr_rec" in names:
        from fetch_real_models import fetch
        src = os.path.join(fetch(), "ppocr_rec.onnx")

        def rec_feeds(b):
            return {"x": rng.uniform(-1, 1, (b, 3, 48, 160)).astype(np.float32)}
        dst = _ort_quantize(src, os.path.join(tmp, "rec_int8.onnx"), [rec_feeds(1) for _ in range(4)])
        zoo["ppocr_rec"] = (src, dst, rec_feeds)
    if "transformer" in names:
        import onnx
        from tests.models.builders import random_tokens, transformer_block
        src = os.path.join(tmp, "transformer.onnx")
        onnx.save(transformer_block(17), src)

        def tok_feeds(b):
            return {"tokens": random_tokens(rng, b, 16)}
        dst = _ort_quantize(src, os.path.join(tmp, "transformer_int8.onnx"),
                            [tok_feeds(2) for _ in range(4)])
        zoo["transformer"] = (src, dst, tok_feeds)
    if "transformer_d256" in names:
        # a realistic width: d=256, 4 heads, 128 tokens (attention products of 4x128x64x128)
        import onnx
        from tests.models.builders import random_tokens, transformer_block
        src = os.path.join(tmp, "transformer_d256.onnx")
        onnx.save(transformer_block(17, d=256, heads=4, vocab=1000, max_seq=128), src)

        def tok256_feeds(b):
            return {"tokens": random_tokens(rng, b, 128, vocab=1000)}
        dst = _ort_quantize(src, os.path.join(tmp, "transformer_d256_int8.onnx"),
                            [tok256_feeds(2) for _ in range(4)])
        zoo["transformer_d256"] = (src, dst, tok256_feeds)
    return zoo


def runners(fp32: str, int8: str, threads: int):
    import onnxruntime as ort

    import qrt

    def ort_sess(path):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        # Spin-waiting workers steal the only other core on a 2-core shared machine (and with it
        # time from whichever runner goes next in the interleaving); off, as for qrt's threads.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    return {
        "qrt_int8": qrt.InferenceSession(int8, threads=threads),
        "qrt_fp32": qrt.InferenceSession(fp32, threads=threads),
        "ort_int8": ort_sess(int8),
        "ort_fp32": ort_sess(fp32),
    }


def interleaved(sessions: dict, feeds: dict, runs: int, warmup: int = 3) -> dict:
    times = {k: [] for k in sessions}
    for _ in range(warmup):
        for s in sessions.values():
            s.run(None, feeds)
    for _ in range(runs):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


COLD_SNIPPET = r"""
import time, sys, resource
t0 = time.perf_counter()
import numpy as np, qrt
s = qrt.InferenceSession(sys.argv[1], threads=1)
feed = dict(np.load(sys.argv[2]))  # the benchmark's own batch-1 feed (symbolic dims resolved)
s.run(None, feed)
wall = time.perf_counter() - t0
# VmHWM: this process's own peak. ru_maxrss is not: Linux carries the forking parent's peak
# across exec, so it reported the benchmark process's size (growing model by model).
try:
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(wall, kb)
"""


def cold_start(path: str, feed: dict) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        # empty_cache: nothing compiled; warm_cache: Numba's kernels cached by the first process;
        # after_warmup: `qrt warmup MODEL` ran (kernels + the lowered graph: no onnx import)
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, QRT_CACHE_DIR=os.path.join(cache, "qrt"))
        feed_path = os.path.join(cache, "feed.npz")
        np.savez(feed_path, **feed)
        for label in ("empty_cache", "warm_cache", "after_warmup"):
            if label == "after_warmup":
                specs = []
                for i, (k, v) in enumerate(feed.items()):
                    npy = os.path.join(cache, f"in_{i}.npy")
                    np.save(npy, v)
                    specs += ["--input", f"{k}={npy}"]
                w = subprocess.run([sys.executable, "-m", "qrt", "warmup", path, *specs], env=env,
                                   capture_output=True, text=True)
                if w.returncode != 0:
                    raise RuntimeError(f"qrt warmup {path} failed:\n{w.stderr[-2000:]}")
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", COLD_SNIPPET, path, feed_path], env=env,
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"cold start of {path} failed:\n{r.stderr[-2000:]}")
            wall = time.perf_counter() - t0
            inner, rss_kb = r.stdout.split()
            out[label] = {"process_wall_s": round(wall, 3), "import_load_first_run_s":
                          round(float(inner), 3), "peak_rss_mb": round(int(rss_kb) / 1024, 1)}
    return out


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from qrt.kernels import cpu as kcpu
    import numba
    import onnxruntime
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numba": numba.__version__, "onnxruntime": onnxruntime.__version__,
            "kernel_path": kcpu.chosen_path()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--models", default="demo,ppocr_cls,ppocr_rec,transformer,transformer_d256")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "compare.json"))
    ap.add_argument("--no-cold", action="store_true")
    args = ap.parse_args(argv)
    names = args.models.split(",")
    rows, result = [], {"machine": machine(), "runs": args.runs, "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        zoo = model_zoo(names, tmp)
        for name, (fp32, int8, feeds_for) in zoo.items():
            sizes = {"fp32_bytes": os.path.getsize(fp32), "int8_bytes": os.path.getsize(int8)}
            for threads in map(int, args.threads.split(",")):
                sess = runners(fp32, int8, threads)
                for batch in map(int, args.batches.split(",")):
                    med = interleaved(sess, feeds_for(batch), args.runs)
                    entry = {"model": name, "threads": threads, "batch": batch, "median_ms": med,
                             "qrt_int8_over_ort_int8": med["qrt_int8"] / med["ort_int8"],
                             "qrt_int8_over_ort_fp32": med["qrt_int8"] / med["ort_fp32"],
                             **sizes}
                    result["results"].append(entry)
                    rows.append(entry)
                    print(f"{name:12} t={threads} b={batch:<3} " + "  ".join(
                        f"{k}={v:8.3f}ms" for k, v in med.items())
                        + f"  int8 ratio={entry['qrt_int8_over_ort_int8']:.2f}", flush=True)
            if not args.no_cold:
                result.setdefault("cold_start", {})[name] = cold_start(int8, feeds_for(1))
    real = [r for r in rows if r["model"].startswith("ppocr")]
    for key in ("qrt_int8_over_ort_int8", "qrt_int8_over_ort_fp32"):
        for threads in sorted({r["threads"] for r in real}):
            vals = [r[key] for r in real if r["threads"] == threads]
            result[f"geomean_{key}_real_models_{threads}t"] = float(np.exp(np.mean(np.log(vals))))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print()
    print("| model | threads | batch | qrt INT8 ms | qrt FP32 ms | ORT INT8 ms | ORT FP32 ms | "
          "qrt INT8 / ORT INT8 | qrt INT8 / ORT FP32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["median_ms"]
        print(f"| {r['model']} | {r['threads']} | {r['batch']} | {m['qrt_int8']:.3f} | "
              f"{m['qrt_fp32']:.3f} | {m['ort_int8']:.3f} | {m['ort_fp32']:.3f} | "
              f"{r['qrt_int8_over_ort_int8']:.2f} | {r['qrt_int8_over_ort_fp32']:.2f} |")
    for k, v in result.items():
        if k.startswith("geomean_"):
            print(f"{k}: {v:.2f}")
    if "cold_start" in result:
        print(json.dumps(result["cold_start"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
