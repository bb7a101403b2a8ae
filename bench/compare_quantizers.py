"""qrt's quantizer vs onnxruntime's, as a new user would try them; prints Markdown tables, writes JSON.

1. Digits CNN and MLP (models/): 100 calibration images, 350 held-out; every static method of
   both tools (QDQ, u8 activations, s8 per-channel weights) and quantize_dynamic of both tools:
   FP32 vs INT8 test accuracy and output SQNR, each INT8 model run in qrt and in onnxruntime.
2. PP-OCR classifier, detector and recognizer (models/fetch_real_models.py): a few text-like
   calibration pages (tests/models/test_real_models.py's generator), other pages held out; qrt's
   quantize_static (every method) vs onnxruntime's quantize_static straight and after its
   quant_pre_process (MinMax, Percentile, Entropy), same pages and settings; SQNR / cosine of the
   output against FP32 with each INT8 model run in qrt, in onnxruntime (default session options:
   its fused integer kernels) and in onnxruntime with optimizations off (the QDQ graph as written).
   With --dynamic, also quantize_dynamic on PP-OCR: qrt's default format vs onnxruntime's
   (per_channel=True, QInt8 weights) straight and after quant_pre_process; where onnxruntime's
   quantizer raises (straight on det/rec), the row shows the error. --no-static skips the PP-OCR
   quantize_static rows (e.g. a dynamic-only run).

    python bench/compare_quantizers.py [--models cls,det,rec] [--no-digits] [--calib 4]
                                       [--test cls=96,det=16,rec=16] [--quick]
                                       [--dynamic] [--no-static]
                                       [--out bench/results/compare_quantizers.json]

PP-OCR quantize_dynamic only (README's table):
    python bench/compare_quantizers.py --no-digits --models cls,det,rec --dynamic --no-static \
        --out bench/results/compare_quantizers_ppocr_dynamic.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.quantization.compare_ort import DIGITS, DIGITS_DATA, digits_split  # noqa: E402
from tests.quantization.real_models import (ORT_METHODS, QRT_METHODS, compare_real,  # noqa: E402
                                            metrics, ort_session, real_model_path)


def _acc(outs, labels):
    return float(np.mean(np.concatenate(outs).argmax(-1) == labels))


def _run(model, feeds, runtime):
    if runtime == "qrt":
        import qrt
        sess = qrt.InferenceSession(model, threads=1)
    else:
        sess = ort_session(model, optimize=True)
    return [sess.run(None, f)[0] for f in feeds]


def digits_rows(methods=QRT_METHODS, ort_methods=tuple(ORT_METHODS)) -> list[dict]:
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_dynamic

    from qrt.quantization import quantize_dynamic, quantize_static
    from tests.quantization.compare_ort import ort_quantize
    calib, test, labels = digits_split()
    rows = []
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in DIGITS.items():
            if not os.path.exists(path):
                continue
            ref = _run(onnx.load(path), test, "onnxruntime")
            fp32 = _acc(ref, labels)

            def row(mode, method, tool, model):
                outs = {rt: _run(model, test, rt) for rt in ("qrt", "onnxruntime")}
                rows.append({"model": name, "mode": mode, "method": method, "tool": tool,
                             "fp32_accuracy": fp32,
                             **{rt: {"accuracy": _acc(o, labels), **metrics(ref, o)}
                                for rt, o in outs.items()}})
                _say(rows[-1])

            for method in methods:
                row("static", method, "qrt", quantize_static(path, None, calib, method=method).model)
                if method in ort_methods:
                    dst = os.path.join(tmp, f"{name}_{method}.onnx")
                    with contextlib.redirect_stdout(sys.stderr):  # its progress lines
                        ort_quantize(path, dst, calib, method)
                    row("static", method, "onnxruntime", dst)
            row("dynamic", "-", "qrt", quantize_dynamic(path, None).model)
            dst = os.path.join(tmp, f"{name}_dynamic.onnx")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ort_dynamic(path, dst, per_channel=True, weight_type=QuantType.QInt8)
            row("dynamic", "-", "onnxruntime", dst)
    return rows


def _say(r):
    keys = [k for k in ("qrt", "onnxruntime", "exact") if k in r]
    res = (f"ERROR {r['error']}" if "error" in r else
           "  ".join(f"{k} {r[k]['sqnr_db']:.2f} dB" for k in keys))
    mode = r.get("mode", "" if r["method"] == "dynamic" else "static")
    print(f"  {r.get('model', '')} {mode} {r['tool']} {r['method']}: {res}",
          file=sys.stderr, flush=True)


def _f(v, nd=2):
    return "inf" if v == math.inf else f"{v:.{nd}f}"


def digits_markdown(rows) -> str:
    out = ["| model | quantization | method | tool | FP32 acc | INT8 acc in qrt | INT8 acc in "
           "onnxruntime | SQNR dB in qrt | SQNR dB in onnxruntime |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| digits {r['model'].split('_')[1].upper()} | {r['mode']} | {r['method']} | "
                   f"{r['tool']} | {100 * r['fp32_accuracy']:.2f}% | "
                   f"{100 * r['qrt']['accuracy']:.2f}% | {100 * r['onnxruntime']['accuracy']:.2f}% "
                   f"| {_f(r['qrt']['sqnr_db'])} | {_f(r['onnxruntime']['sqnr_db'])} |")
    return "\n".join(out)


def real_markdown(results) -> str:
    out = ["| model | quantizer | method | SQNR dB in qrt | SQNR dB in onnxruntime | SQNR dB exact "
           "| cosine in qrt | cosine in onnxruntime | cosine exact |",
           "|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for r in res["rows"]:
            if "error" in r:  # the quantizer raised: no model to run
                err = r["error"].replace("|", "\\|")
                out.append(f"| {res['model'].replace('.onnx', '')} | {r['tool']} | {r['method']} | "
                           f"fails: {err} | — | — | — | — | — |")
                continue
            out.append(f"| {res['model'].replace('.onnx', '')} | {r['tool']} | {r['method']} | "
                       f"{_f(r['qrt']['sqnr_db'])} | {_f(r['onnxruntime']['sqnr_db'])} | "
                       f"{_f(r['exact']['sqnr_db'])} | {r['qrt']['cosine']:.5f} | "
                       f"{r['onnxruntime']['cosine']:.5f} | {r['exact']['cosine']:.5f} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="cls,det,rec")
    ap.add_argument("--no-digits", action="store_true")
    ap.add_argument("--calib", type=int, default=4, help="calibration pages (real models)")
    ap.add_argument("--test", default="cls=96,det=16,rec=16", help="held-out pages per model")
    ap.add_argument("--quick", action="store_true", help="MinMax only (static methods)")
    ap.add_argument("--dynamic", action="store_true",
                    help="PP-OCR: also quantize_dynamic rows of qrt and onnxruntime (+pre)")
    ap.add_argument("--no-static", action="store_true",
                    help="PP-OCR: skip the quantize_static rows")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "compare_quantizers.json"))
    args = ap.parse_args(argv)
    n_test = {k: int(v) for k, v in (kv.split("=") for kv in args.test.split(","))}
    qrt_methods = ("minmax",) if args.quick else QRT_METHODS
    ort_methods = ("minmax",) if args.quick else tuple(ORT_METHODS)
    real_qrt, real_ort = ((), ()) if args.no_static else (qrt_methods, ort_methods)
    t0 = time.time()
    import onnxruntime

    import qrt
    report = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
                          "qrt": getattr(qrt, "__version__", "")},
              "command": "python bench/compare_quantizers.py " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "digits": [], "real": []}
    if not args.no_digits:
        print("digits models ...", file=sys.stderr)
        report["digits"] = digits_rows(qrt_methods, ort_methods)
    for name in [m for m in args.models.split(",") if m]:
        if real_model_path(name) is None:
            print(f"{name}: not fetched (python models/fetch_real_models.py), skipped",
                  file=sys.stderr)
            continue
        print(f"PP-OCR {name} ...", file=sys.stderr)
        t1 = time.time()
        res = compare_real(name, n_calib=args.calib, n_test=n_test.get(name, 8),
                           qrt_methods=real_qrt, ort_methods=real_ort, dynamic=args.dynamic,
                           progress=_say)
        res["seconds"] = round(time.time() - t1, 1)
        report["real"].append(res)
    report["seconds"] = round(time.time() - t0, 1)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1, default=lambda v: None if v != v else v)
    if report["digits"]:
        print("\n" + digits_markdown(report["digits"]))
    if report["real"]:
        cal = ", ".join(f"{r['model'].replace('.onnx', '')} {r['n_test']}" for r in report["real"])
        cal_s = ("no calibration (dynamic only)" if args.no_static
                 else f"{args.calib} calibration pages")
        print(f"\nPP-OCR: {cal_s}; held-out pages: {cal}\n")
        print(real_markdown(report["real"]))
    print(f"\nwritten {args.out} ({report['seconds']} s)")


if __name__ == "__main__":
    main()
