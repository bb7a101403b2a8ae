"""Fetch real, publicly shipped ONNX models for the end-to-end tests and benchmarks.

The PP-OCR models (a small depthwise-conv classifier, a segmentation-style text detector with
ConvTranspose/Resize/HardSigmoid, and a conv+attention text recognizer) ship inside the
`rapidocr-onnxruntime` wheel on PyPI. This downloads that wheel with pip (no dependencies
installed) and extracts only the .onnx files into a cache folder (default: .cache/real-models next
to this repository's top level, or $QRT_REAL_MODELS).

    python models/fetch_real_models.py
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "rapidocr-onnxruntime==1.4.4"
MODELS = {
    "ppocr_cls.onnx": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
    "ppocr_det.onnx": "ch_PP-OCRv4_det_infer.onnx",
    "ppocr_rec.onnx": "ch_PP-OCRv4_rec_infer.onnx",
}


def cache_dir() -> str:
    env = os.environ.get("QRT_REAL_MODELS")
    if env:
        return env
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache",
                        "real-models")


def fetch(dest: str | None = None) -> str:
    dest = dest or cache_dir()
    os.makedirs(dest, exist_ok=True)
    if all(os.path.exists(os.path.join(dest, k)) for k in MODELS):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "--dest", tmp, WHEEL], check=True)
        (wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for local, member in MODELS.items():
                (path,) = [n for n in z.namelist() if n.endswith("/" + member)]
                with z.open(path) as src, open(os.path.join(dest, local), "wb") as out:
                    out.write(src.read())
    return dest


if __name__ == "__main__":
    print(fetch(sys.argv[1] if len(sys.argv) > 1 else None))
