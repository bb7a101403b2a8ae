"""Real CNN and transformer models, opsets 11 to 21, agree with onnxruntime's FP32 output."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import qrt
from tests.models.builders import mobilenet_like, random_tokens, transformer_block, unet_like

# FP32 agreement: both runtimes use float32 with different summation orders (BLAS, im2col), so
# elementwise results differ by a few ulps times the depth of the network.
COSINE_MIN = 0.9999
FP32_ATOL = 2e-4
OPSETS = [11, 13, 15, 17, 18, 19, 21]


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def compare(model, feeds, optimize=True):
    peer = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = peer.run(None, feeds)
    sess = qrt.InferenceSession(model, optimize=optimize, threads=1)
    got = sess.run(None, feeds)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert cosine(g, w) >= COSINE_MIN
        np.testing.assert_allclose(g, w, atol=FP32_ATOL, rtol=1e-3)


@pytest.mark.parametrize("opset", OPSETS)
def test_mobilenet_like(opset):
    rng = np.random.default_rng(opset)
    compare(mobilenet_like(opset), {"input": rng.standard_normal((2, 3, 32, 32), np.float32)})


@pytest.mark.parametrize("opset", OPSETS)
def test_unet_like(opset):
    rng = np.random.default_rng(opset)
    compare(unet_like(opset), {"input": rng.standard_normal((1, 3, 32, 32), np.float32)})


@pytest.mark.parametrize("opset", OPSETS)
def test_transformer_block(opset):
    rng = np.random.default_rng(opset)
    compare(transformer_block(opset), {"tokens": random_tokens(rng, 2, 12)})


@pytest.mark.parametrize("optimize", [True, False])
def test_batch_sizes_and_passes_agree(optimize):
    rng = np.random.default_rng(1)
    m = mobilenet_like(17)
    for n in (1, 3):
        compare(m, {"input": rng.standard_normal((n, 3, 32, 32), np.float32)}, optimize)
