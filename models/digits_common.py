"""Shared pieces of the digits model scripts: data split, model definitions, paths.

Runs in a tools environment with PyTorch (torch is not a qrt dependency):

    python3 -m venv ~/.venvs/qrt-tools
    ~/.venvs/qrt-tools/bin/pip install torch onnx numpy scikit-learn
    ~/.venvs/qrt-tools/bin/python models/train_digits.py
"""
from __future__ import annotations

import os
import random

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA_DIR = os.path.join(ROOT, "qrt", "data")
SEED = 0
OPSET = 17


def load_split():
    """scikit-learn's bundled 8x8 digits (no download), scaled to [0, 1], a fixed stratified split:
    75% train, 25% held-out test. Images are float32 [N, 1, 8, 8]; labels int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)


def seed_everything(seed: int = SEED):
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def make_cnn():
    """Conv3x3+BN+ReLU, depthwise 3x3+BN+ReLU, pointwise 1x1+ReLU, MaxPool 2, Flatten, Gemm."""
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


def make_mlp():
    import torch.nn as nn

    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 128), nn.ReLU(),
        nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def train(model, x, y, *, epochs=60, batch=64, lr=3e-3, weight_decay=1e-4, log=print):
    import torch
    import torch.nn.functional as F

    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(SEED)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=g)
        total = 0.0
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        if log and (epoch % 10 == 9 or epoch == epochs - 1):
            log(f"  epoch {epoch + 1:3d}  loss {total / len(xt):.4f}")
    model.eval()
    return model


def accuracy(model, x, y) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def export(model, path, *, keep_batchnorm=True):
    """FP32 ONNX, opset 17, input "input" [N, 1, 8, 8] with a symbolic batch, output "logits"."""
    import torch

    model.eval()
    dummy = torch.zeros(1, 1, 8, 8)
    kw = dict(input_names=["input"], output_names=["logits"], opset_version=OPSET,
              dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, dynamo=False)
    if keep_batchnorm:
        # PRESERVE skips the exporter's eval-mode peephole that folds BatchNorm into Conv: the
        # folding is qrt's job (qrt.passes), so the shipped model keeps its BatchNormalization.
        kw.update(training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    torch.onnx.export(model, (dummy,), path, **kw)
    return path


def ort_accuracy(path, x, y, optimize=True) -> float:
    """Test accuracy in onnxruntime. optimize=False runs the graph as written (QDQ models then
    compute exact Quantize/Dequantize semantics in float instead of onnxruntime's fused int8
    kernels, which saturate on CPUs without VNNI)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": x})[0]
    return float((logits.argmax(1) == y).mean())
