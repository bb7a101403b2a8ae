"""Train the digits CNN and MLP (scikit-learn's bundled 8x8 digits) and export FP32 ONNX.

    ~/.venvs/qrt-tools/bin/python models/train_digits.py

Writes qrt/data/digits_cnn.onnx (the demo model), models/digits_mlp.onnx and
qrt/data/digits_test.npz (the held-out images [N,1,8,8] float32 in [0,1] and int64 labels), and
prints test accuracy (PyTorch and, when installed, onnxruntime on the exported files).
Deterministic: fixed seed, fixed split, single thread.
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import digits_common as dc  # noqa: E402


def main() -> int:
    x_train, x_test, y_train, y_test = dc.load_split()
    print(f"digits: {len(x_train)} train, {len(x_test)} test")
    os.makedirs(dc.DATA_DIR, exist_ok=True)
    np.savez_compressed(os.path.join(dc.DATA_DIR, "digits_test.npz"), images=x_test, labels=y_test)

    results = {}
    for name, make, path in [
        ("cnn", dc.make_cnn, os.path.join(dc.DATA_DIR, "digits_cnn.onnx")),
        ("mlp", dc.make_mlp, os.path.join(dc.HERE, "digits_mlp.onnx")),
    ]:
        dc.seed_everything()
        print(f"training {name}")
        model = dc.train(make(), x_train, y_train)
        acc = dc.accuracy(model, x_test, y_test)
        dc.export(model, path)
        line = f"{name}: torch test accuracy {acc:.4f}"
        try:
            line += f", onnxruntime {dc.ort_accuracy(path, x_test, y_test):.4f}"
        except ImportError:
            pass
        print(line + f"  -> {os.path.relpath(path, dc.ROOT)} ({os.path.getsize(path)} bytes)")
        results[name] = acc
    return 0 if min(results.values()) >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
