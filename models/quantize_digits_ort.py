"""INT8 QDQ copy of the demo CNN, made with onnxruntime's static quantizer.

    python models/quantize_digits_ort.py      # in the qrt venv (needs onnxruntime, scikit-learn)

Reads qrt/data/digits_cnn.onnx, calibrates min/max on 256 training images (the held-out test set
is never seen), and writes qrt/data/digits_cnn_int8.onnx: QDQ format, uint8 activations, int8
per-channel weights. onnxruntime's pre-processing folds BatchNorm into the Conv first (the
quantizer only quantizes the ops it knows; a float BatchNorm between QDQ pairs would stay float).
qrt's own quantizer (qrt.quantization.quantize_static) is meant to replace this script.
"""
from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import digits_common as dc  # noqa: E402

SRC = os.path.join(dc.DATA_DIR, "digits_cnn.onnx")
DST = os.path.join(dc.DATA_DIR, "digits_cnn_int8.onnx")


class Reader:
    """onnxruntime CalibrationDataReader: one image per feed."""

    def __init__(self, images):
        self._it = iter([{"input": images[i:i + 1]} for i in range(len(images))])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # not needed for min/max
        pass


def strip_unused_opsets(path):
    """onnxruntime's optimizer declares a dozen private domains (com.microsoft.nchwc, ...) that no
    node uses; keep the model portable by declaring only the domains its nodes use."""
    import onnx

    m = onnx.load(path)
    used = {n.domain for n in m.graph.node} | {""}
    keep = [o for o in m.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del m.opset_import[:]
    m.opset_import.extend(keep)
    m.producer_name = "onnxruntime.quantization (models/quantize_digits_ort.py)"
    onnx.checker.check_model(m)
    onnx.save(m, path)


def main() -> int:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    x_train, x_test, y_train, y_test = dc.load_split()
    calib = x_train[:256]
    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(SRC, pre, skip_optimization=False, skip_onnx_shape=False,
                          skip_symbolic_shape=True)
        quantize_static(pre, DST, Reader(calib), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, calibrate_method=CalibrationMethod.MinMax)
    strip_unused_opsets(DST)
    fp32 = dc.ort_accuracy(SRC, x_test, y_test)
    int8 = dc.ort_accuracy(DST, x_test, y_test)
    exact = dc.ort_accuracy(DST, x_test, y_test, optimize=False)
    print(f"onnxruntime test accuracy: FP32 {fp32:.4f}, INT8 QDQ {int8:.4f} with its fused int8 "
          f"kernels, {exact:.4f} with exact QDQ semantics (optimizations off) -> "
          f"{os.path.relpath(DST, dc.ROOT)} ({os.path.getsize(DST)} bytes)")
    return 0 if int8 >= fp32 - 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
