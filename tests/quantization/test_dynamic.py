"""quantize_dynamic: the integer format (DynamicQuantizeLinear + ConvInteger/MatMulInteger, what
onnxruntime's quantize_dynamic writes) runs in onnxruntime and in qrt (fused integer kernels), the
two agree and stay close to FP32; the weight-only format is still there on request; the digits
models keep their accuracy. Also: saturation-safe weights are the same numbers stored as uint8."""
import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qrt
from qrt.quantization import quantize_dynamic, quantize_static
from qrt.quantization.params import PAIR_LIMIT, pairs_overflow_int16
from tests.quantization.models import cnn, feeds, mlp

ort = pytest.importorskip("onnxruntime")

# qrt vs onnxruntime on the same integer model: both compute exact int32 sums (the weights are
# saturation-safe), so the only differences are float32 rounding of the scale products.
AGREE_COSINE = 0.995
# INT8 vs FP32 on these small random models with per-call activation ranges (measured >= 0.9998).
FP32_COSINE = 0.999
ACCURACY_POINTS = 0.005  # digits test accuracy: INT8 within half a point of FP32


def _ort(model, optimize=True):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _cos(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _outs(sess, fd):
    return np.concatenate([sess.run(None, f)[0] for f in fd])


def _gemm_model():
    """x[N,16] -> Gemm(alpha 0.5, beta 2, transB 0, 1-D bias) -> Relu -> Gemm(transB 1, no bias)."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 24)).astype(np.float32) * 0.3, "w1"),
             numpy_helper.from_array(rng.standard_normal(24).astype(np.float32) * 0.1, "b1"),
             numpy_helper.from_array(rng.standard_normal((6, 24)).astype(np.float32) * 0.3, "w2")]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="g1", alpha=0.5, beta=2.0),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2"], ["y"], name="g2", transB=1)]
    g = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                        ["N", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("build", [cnn, mlp, _gemm_model], ids=["cnn", "mlp", "gemm"])
def test_integer_format_runs_in_both_and_agrees(build, tmp_path):
    m = build()
    fd = feeds(m)
    res = quantize_dynamic(m, tmp_path / "d.onnx")
    assert res.mode == "dynamic" and res.format == "integer" and not res.ranges
    q = onnx.load(tmp_path / "d.onnx")
    ops = [n.op_type for n in q.graph.node]
    assert "DequantizeLinear" not in ops and "QuantizeLinear" not in ops
    assert "DynamicQuantizeLinear" in ops
    assert not ({"Conv", "MatMul", "Gemm"} & set(ops))  # every linear layer became integer
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    for n in q.graph.node:
        if n.op_type == "MatMulInteger":  # per-column weight zero point [N]
            w, wz = inits[n.input[1]], inits[n.input[3]]
            assert wz.shape == (w.shape[1],) and wz.dtype == w.dtype
        if n.op_type == "ConvInteger":  # scalar zero point (onnxruntime's ConvInteger takes no more)
            assert inits[n.input[3]].ndim == 0
    # per-channel scales: the scale Mul's weight factor has one value per output channel
    scales = [v for k, v in inits.items() if k.endswith("_scale") and v.size > 1]
    assert scales
    meta = json.loads(next(p.value for p in q.metadata_props if p.key == "qrt.quantization"))
    assert meta["mode"] == "dynamic_integer"

    ref = _outs(_ort(m), fd)
    theirs = _outs(_ort(q), fd)
    sess = qrt.InferenceSession(str(tmp_path / "d.onnx"), threads=1)
    assert not sess.dynamic_quantization  # the graph says what to do; nothing else is quantized
    mine = _outs(sess, fd)
    assert _cos(mine, theirs) >= AGREE_COSINE
    assert _cos(ref, mine) >= FP32_COSINE and _cos(ref, theirs) >= FP32_COSINE
    # qrt runs every integer layer in its fused int8 kernels
    rep = sess.lowering_report().nodes
    ints = [e for e in rep if e["op_type"] in ("ConvInteger", "MatMulInteger")]
    assert ints and all(e["precision"] == "int8" for e in ints), ints
    assert all(e["precision"] == "int8" for e in rep if e["op_type"] == "DynamicQuantizeLinear")


def test_excluded_layers_stay_float():
    m = cnn()
    res = quantize_dynamic(m, None, exclude_nodes=["conv3"])
    assert "conv3" in res.excluded and "conv3" not in res.quantized_nodes
    assert any(n.op_type == "Conv" and n.name == "conv3" for n in res.model.graph.node)
    rep = qrt.InferenceSession(res.model, threads=1).lowering_report().nodes
    assert next(e for e in rep if e["name"] == "conv3")["precision"] == "float"


def test_weight_only_format_on_request_and_for_int4():
    m = mlp()
    fd = feeds(m)
    res = quantize_dynamic(m, None, format="weight_only")
    assert res.format == "weight_only"
    ops = {n.op_type for n in res.model.graph.node}
    assert "DequantizeLinear" in ops and "MatMulInteger" not in ops
    sess = qrt.InferenceSession(res.model, threads=1)
    assert sess.dynamic_quantization  # its metadata asks qrt to quantize activations per call
    assert _cos(_outs(_ort(m), fd), _outs(sess, fd)) >= FP32_COSINE
    assert quantize_dynamic(m, None, weight_type="int4").format == "weight_only"
    with pytest.raises(ValueError, match="weight_only"):
        quantize_dynamic(m, None, format="integer", block_size=8)
    with pytest.raises(ValueError, match="format"):
        quantize_dynamic(m, None, format="qoperator")


DIGITS_DATA = os.path.join(os.path.dirname(qrt.__file__), "data", "digits_test.npz")
DIGITS = {"cnn": os.path.join(os.path.dirname(qrt.__file__), "data", "digits_cnn.onnx"),
          "mlp": os.path.join(os.path.dirname(os.path.dirname(qrt.__file__)), "models",
                              "digits_mlp.onnx")}


@pytest.mark.parametrize("name", sorted(DIGITS))
def test_digits_accuracy_dynamic(name):
    if not os.path.exists(DIGITS[name]):
        pytest.skip(f"{DIGITS[name]} not present")
    d = np.load(DIGITS_DATA)
    x, y = d["images"].astype(np.float32), d["labels"]
    fp32 = np.mean(_ort(onnx.load(DIGITS[name])).run(None, {"input": x})[0].argmax(1) == y)
    res = quantize_dynamic(DIGITS[name], None)
    for sess in (qrt.InferenceSession(res.model, threads=1), _ort(res.model)):
        acc = np.mean(sess.run(None, {"input": x})[0].argmax(1) == y)
        assert acc >= fp32 - ACCURACY_POINTS, (name, acc, fp32)


def test_pairs_overflow_int16_is_exact_for_every_pairing():
    """Brute force: a weight passes iff no pair of its values, times the largest u8 input (255) and
    summed, leaves int16 (the pairing a kernel uses is unknown, so every pair counts)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        q = rng.integers(-128, 128, (3, int(rng.integers(2, 7)))) // int(rng.integers(1, 4))
        worst = 0
        for row in q:
            for i in range(len(row)):
                for j in range(i + 1, len(row)):
                    for sign in (1, -1):
                        s = 255 * (max(sign * row[i], 0) + max(sign * row[j], 0))
                        worst = max(worst, s)
        assert pairs_overflow_int16(q, 0) == (worst > 32767), q
    assert PAIR_LIMIT == 128


def test_saturation_safe_static_weights_are_the_same_numbers():
    m = cnn(seed=4)
    fd = feeds(m)
    safe = quantize_static(m, None, fd, bias_correction=False)
    plain = quantize_static(m, None, fd, bias_correction=False, saturation_safe=False)
    s_init = {t.name: numpy_helper.to_array(t) for t in safe.model.graph.initializer}
    p_init = {t.name: numpy_helper.to_array(t) for t in plain.model.graph.initializer}
    shifted = 0
    for name, w in p_init.items():
        if not name.endswith("_quantized") or w.dtype != np.int8:
            continue
        base = name[: -len("_quantized")]
        ws, zs = s_init[name], s_init[base + "_zero_point"]
        if pairs_overflow_int16(w, 0):
            assert ws.dtype == np.uint8 and np.all(zs == 128)
            assert np.array_equal(ws.astype(np.int64) - 128, w.astype(np.int64))
            shifted += 1
        else:
            assert ws.dtype == np.int8 and np.array_equal(ws, w)
    assert shifted
    # the QDQ graphs compute the same thing (onnxruntime, graph as written)
    a, b = _outs(_ort(safe.model, False), fd), _outs(_ort(plain.model, False), fd)
    np.testing.assert_array_equal(a, b)
