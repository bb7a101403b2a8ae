"""The shipped digits models (qrt/data, models/) run in qrt with the accuracy recorded when they
were made, and agree with onnxruntime.

Recorded (models/train_digits.py, models/qat_digits.py, models/quantize_digits_ort.py; 450 held-out
images): CNN FP32 0.9933, MLP FP32 0.9756, CNN INT8 (onnxruntime quantize_static, QDQ) 0.9933 with
exact QDQ semantics, CNN QAT (QDQ) 0.9911.

On CPUs without VNNI, onnxruntime's fused u8 x s8 kernels go through saturating 16-bit pairwise
sums (AVX2 vpmaddubsw), so its optimized INT8 outputs can move off the exact QDQ result (seen on an
AVX2 machine: logits off by up to ~3, accuracy 0.9867 on the INT8 CNN). The exact reference is
onnxruntime with graph optimizations off (it then runs Q/DQ/Conv as written, in float): qrt is
compared with that tightly, and with the optimized session loosely.
"""
from __future__ import annotations

import os
from importlib import resources

import numpy as np
import pytest

import qrt

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(REPO, "models")

RECORDED = {  # model -> test accuracy recorded when the file was made
    "digits_cnn.onnx": 0.9933,
    "digits_mlp.onnx": 0.9756,
    "digits_cnn_int8.onnx": 0.9933,
    "digits_cnn_qat.onnx": 0.9911,
}


def shipped(name: str) -> str:
    return str(resources.files("qrt.data").joinpath(name))


def repo_model(name: str) -> str:
    path = os.path.join(MODELS, name)
    if not os.path.exists(path):
        pytest.skip(f"{name} is in the source tree's models/, not in this installation")
    return path


PATHS = {
    "digits_cnn.onnx": lambda: shipped("digits_cnn.onnx"),
    "digits_cnn_int8.onnx": lambda: shipped("digits_cnn_int8.onnx"),
    "digits_mlp.onnx": lambda: repo_model("digits_mlp.onnx"),
    "digits_cnn_qat.onnx": lambda: repo_model("digits_cnn_qat.onnx"),
}


@pytest.fixture(scope="module")
def test_set():
    with resources.as_file(resources.files("qrt.data").joinpath("digits_test.npz")) as p:
        d = np.load(p)
        x, y = d["images"], d["labels"]
    assert x.shape == (len(y), 1, 8, 8) and x.dtype == np.float32
    assert y.dtype == np.int64 and len(y) >= 400
    return x, y


_cache: dict = {}


def qrt_logits(name, x, threads=1):
    key = (name, threads)
    if key not in _cache:
        _cache[key] = qrt.InferenceSession(PATHS[name](), threads=threads).run(
            None, {"input": x})[0]
    return _cache[key]


def ort_logits(name, x, optimize=True):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(PATHS[name](), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def cosine(a, b) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def accuracy(logits, y) -> float:
    return float((logits.argmax(1) == y).mean())


def test_shipped_files_are_small_and_declare_a_symbolic_batch():
    import onnx

    for name in PATHS:
        path = PATHS[name]()
        assert os.path.getsize(path) < 200_000, name
        m = onnx.load(path)
        (inp,) = m.graph.input if not m.graph.initializer else [
            i for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
        assert inp.name == "input"
        dims = inp.type.tensor_type.shape.dim
        assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 8, 8], name


@pytest.mark.parametrize("name", list(RECORDED))
def test_accuracy_matches_the_recorded_one(name, test_set):
    x, y = test_set
    acc = accuracy(qrt_logits(name, x), y)
    assert acc >= RECORDED[name] - 0.005, f"{name}: {acc:.4f} vs recorded {RECORDED[name]:.4f}"
    assert acc >= 0.95


@pytest.mark.parametrize("name", ["digits_cnn_int8.onnx", "digits_cnn_qat.onnx"])
def test_int8_within_one_point_of_fp32(name, test_set):
    x, y = test_set
    fp32 = accuracy(qrt_logits("digits_cnn.onnx", x), y)
    int8 = accuracy(qrt_logits(name, x), y)
    assert int8 >= fp32 - 0.01, f"{name}: INT8 {int8:.4f} vs FP32 {fp32:.4f}"


@pytest.mark.parametrize("name", ["digits_cnn.onnx", "digits_mlp.onnx"])
def test_fp32_agrees_with_onnxruntime(name, test_set):
    x, _ = test_set
    ours, ref = qrt_logits(name, x), ort_logits(name, x)
    assert cosine(ours, ref) >= 0.9999
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)
    assert (ours.argmax(1) == ref.argmax(1)).all()


@pytest.mark.parametrize("name", ["digits_cnn_int8.onnx", "digits_cnn_qat.onnx"])
def test_int8_agrees_with_exact_qdq_semantics(name, test_set):
    """onnxruntime with optimizations off runs the QDQ graph as written (float Conv between exact
    Quantize/Dequantize): the exact answer. qrt's integer kernels may differ by one requantization
    step in a few places, which moves a logit by at most a few output steps."""
    x, _ = test_set
    ours, ref = qrt_logits(name, x), ort_logits(name, x, optimize=False)
    assert cosine(ours, ref) >= 0.9999
    assert (ours.argmax(1) == ref.argmax(1)).mean() >= 0.995


@pytest.mark.parametrize("name", ["digits_cnn_int8.onnx", "digits_cnn_qat.onnx"])
def test_int8_close_to_onnxruntime_optimized(name, test_set):
    x, _ = test_set
    ours, ref = qrt_logits(name, x), ort_logits(name, x, optimize=True)
    assert cosine(ours, ref) >= 0.99
    assert (ours.argmax(1) == ref.argmax(1)).mean() >= 0.98


@pytest.mark.parametrize("name", ["digits_cnn.onnx", "digits_cnn_int8.onnx"])
def test_batch_of_one_matches_the_full_batch(name, test_set):
    x, _ = test_set
    sess = qrt.InferenceSession(PATHS[name](), threads=1)
    full = qrt_logits(name, x)
    for i in (0, 1, len(x) // 2, len(x) - 1):
        one = sess.run(None, {"input": x[i:i + 1]})[0]
        assert one.shape == (1, 10)
        np.testing.assert_allclose(one[0], full[i], rtol=1e-5, atol=1e-4)


def test_threads_do_not_change_the_answer(test_set):
    x, _ = test_set
    for name in ("digits_cnn.onnx", "digits_cnn_int8.onnx"):
        np.testing.assert_allclose(qrt_logits(name, x, threads=2), qrt_logits(name, x),
                                   rtol=1e-5, atol=1e-4)


def test_int8_model_runs_its_conv_and_gemm_in_int8():
    report = qrt.InferenceSession(shipped("digits_cnn_int8.onnx"), threads=1).lowering_report()
    heavy = [e for e in report if e["op_type"] in ("Conv", "Gemm")]
    assert len(heavy) == 4
    assert all(e["precision"] == "int8" for e in heavy), str(report)
