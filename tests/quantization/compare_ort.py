"""qrt's quantizer against onnxruntime.quantization.quantize_static: same FP32 model, same
calibration batches, same settings (QDQ, per-channel int8 weights, uint8 activations). Both INT8
models run in onnxruntime (ORT_DISABLE_ALL, the QDQ semantics as written) on held-out data.

    python -m tests.quantization.compare_ort          # prints the table (digits CNN and MLP)
"""
from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np
import onnx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS = {"digits_cnn": os.path.join(ROOT, "qrt", "data", "digits_cnn.onnx"),
          "digits_mlp": os.path.join(ROOT, "models", "digits_mlp.onnx")}
DIGITS_DATA = os.path.join(ROOT, "qrt", "data", "digits_test.npz")
ORT_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def _ort_session(model):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _run(model, feeds):
    s = _ort_session(model)
    return np.concatenate([s.run(None, f)[0] for f in feeds])


def _metrics(ref, out, labels=None):
    ref64, out64 = ref.astype(np.float64).ravel(), out.astype(np.float64).ravel()
    noise = np.sum((ref64 - out64) ** 2)
    d = {"sqnr_db": float(10 * np.log10(np.sum(ref64 ** 2) / noise)) if noise else float("inf"),
         "cosine": float(ref64 @ out64 / np.linalg.norm(ref64) / np.linalg.norm(out64))}
    if labels is not None:
        d["accuracy"] = float(np.mean(out.argmax(-1) == labels))
    return d


def ort_quantize(model_path, out_path, calib, method="minmax", per_channel=True):
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    extra = {"CalibPercentile": 99.99} if method == "percentile" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(model_path, out_path, Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, ORT_METHODS[method]),
                        extra_options=extra)


def compare(model_path, calib, test, labels=None, methods=("minmax", "percentile", "entropy"),
            per_channel=True, qrt_only=("mse", "auto")) -> list[dict]:
    from qrt.quantization import quantize_static
    ref = _run(onnx.load(model_path), test)
    rows = [{"tool": "fp32", "method": "-", **_metrics(ref, ref, labels)}]
    with tempfile.TemporaryDirectory() as tmp:
        for method in tuple(methods) + tuple(qrt_only):
            r = quantize_static(model_path, None, calib, method=method, per_channel=per_channel)
            rows.append({"tool": "qrt", "method": method, **_metrics(ref, _run(r.model, test), labels)})
            if method in ORT_METHODS:
                out = os.path.join(tmp, f"ort_{method}.onnx")
                ort_quantize(model_path, out, calib, method, per_channel)
                rows.append({"tool": "onnxruntime", "method": method,
                             **_metrics(ref, _run(out, test), labels)})
    return rows


def digits_split(n_calib=100, batch=25):
    d = np.load(DIGITS_DATA)
    x, y = d["images"].astype(np.float32), d["labels"]
    calib = [{"input": x[i:i + batch]} for i in range(0, n_calib, batch)]
    test = [{"input": x[i:i + 50]} for i in range(n_calib, len(x), 50)]
    return calib, test, y[n_calib:]


def main():
    calib, test, labels = digits_split()
    for name, path in DIGITS.items():
        if not os.path.exists(path):
            continue
        print(f"\n{name}: calibration 100 images, test {len(labels)} images")
        print(f"{'tool':12s} {'method':10s} {'accuracy':>8s} {'SQNR dB':>8s} {'cosine':>9s}")
        for r in compare(path, calib, test, labels):
            print(f"{r['tool']:12s} {r['method']:10s} {r['accuracy']:8.4f} {r['sqnr_db']:8.2f} "
                  f"{r['cosine']:9.6f}")


if __name__ == "__main__":
    main()
