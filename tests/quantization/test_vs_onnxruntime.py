"""qrt's quantizer is at least as close to FP32 as onnxruntime's quantize_static with the same
calibration data and settings (QDQ, per-channel s8 weights, u8 activations)."""
import os

import onnx
import pytest

from tests.quantization.compare_ort import DIGITS, DIGITS_DATA, compare, digits_split
from tests.quantization.models import cnn, feeds

pytest.importorskip("onnxruntime.quantization")


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_small_cnn_vs_ort(method, tmp_path):
    m = cnn(seed=3)
    path = tmp_path / "f.onnx"
    onnx.save(m, path)
    fd = feeds(m, n=8, seed=1)
    rows = compare(str(path), fd, feeds(m, n=4, seed=2), methods=(method,), qrt_only=())
    mine = next(r for r in rows if r["tool"] == "qrt")
    theirs = next(r for r in rows if r["tool"] == "onnxruntime")
    assert mine["sqnr_db"] >= theirs["sqnr_db"]


@pytest.mark.skipif(not (os.path.exists(DIGITS["digits_cnn"]) and os.path.exists(DIGITS_DATA)),
                    reason="digits model not present")
def test_digits_cnn_vs_ort():
    calib, test, labels = digits_split()
    rows = compare(DIGITS["digits_cnn"], calib, test, labels, methods=("minmax",), qrt_only=())
    fp32, mine, theirs = rows
    assert mine["sqnr_db"] >= theirs["sqnr_db"]
    assert mine["accuracy"] >= fp32["accuracy"] - 0.01
