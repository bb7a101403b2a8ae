"""quantize_static / quantize_dynamic end to end: onnxruntime loads the models, outputs stay close to
FP32, qrt agrees with onnxruntime, compare names a deliberately bad layer, mixed precision fixes it."""
import json
import argparse

import numpy as np
import onnx
import pytest

import qrt
from qrt.quantization import compare_models, quantize_dynamic, quantize_static
from qrt.quantization.params import pairs_overflow_int16
from qrt.quantization.qdq import DQ_SUFFIX

from tests.quantization.models import cnn, feeds, mlp

ort = pytest.importorskip("onnxruntime")


def _ort(model, optimize=False):
    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _cos(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return a @ b / np.linalg.norm(a) / np.linalg.norm(b)


def _outputs(sess, fd):
    return np.concatenate([sess.run(None, f)[0] for f in fd])


@pytest.fixture(scope="module")
def cnn_model():
    return cnn()


@pytest.mark.parametrize("build", [cnn, mlp], ids=["cnn", "mlp"])
@pytest.mark.parametrize("method", ["minmax", "moving_average", "percentile", "mse", "entropy",
                                    "auto"])
def test_static_close_to_fp32_and_qrt_matches_ort(build, method, tmp_path):
    m = build()
    fd = feeds(m)
    out = tmp_path / "q.onnx"
    res = quantize_static(m, out, fd, method=method)
    assert res.model_path == str(out) and res.calibration_batches == len(fd)
    assert res.backend == "qrt"
    ref = _outputs(_ort(m), fd)
    got = _outputs(_ort(out), fd)
    assert _cos(ref, got) >= 0.99
    # qrt runs the QDQ model as written (optimize=False) and through its integer kernels
    # (float rounding may flip a rounding tie now and then: one step in one value, rarely)
    step = max(r.scale for r in res.ranges.values())
    plain = _outputs(qrt.InferenceSession(str(out), optimize=False, threads=1), fd)
    assert np.mean(np.abs(plain - got) <= 1e-4 + 1e-4 * np.abs(got)) >= 0.9
    assert np.abs(plain - got).max() <= 2 * step
    fused = _outputs(qrt.InferenceSession(str(out), threads=1), fd)
    assert np.abs(fused - got).max() <= 4 * step  # integer requantization: a few steps at most


def test_placement_rules(cnn_model):
    res = quantize_static(cnn_model, None, feeds(cnn_model))
    m = res.model
    ops = [n.op_type for n in m.graph.node]
    assert "BatchNormalization" not in ops  # folded into conv1
    prod = {o: n for n in m.graph.node for o in n.output}
    # no Q/DQ between conv1 and relu1; relu1's output is quantized
    conv1 = next(n for n in m.graph.node if n.name == "conv1")
    relu1 = next(n for n in m.graph.node if n.name == "relu1")
    assert relu1.input[0] == conv1.output[0]
    assert "r1" in res.ranges and conv1.output[0] not in res.ranges
    # MaxPool, Flatten share their input's params; Concat inputs share the output's
    assert res.ranges["p1"].scale == res.ranges["r1"].scale
    assert res.ranges["flat"].scale == res.ranges["cat"].scale
    assert res.ranges["r3"].scale == res.ranges["cat"].scale == res.ranges["c4"].scale
    # residual Add: both inputs quantized
    assert "c3" in res.ranges and "p1" in res.ranges
    # weights int8 per channel (axis 0 for Conv; Gemm transB=1 -> axis 0), bias int32 at sx*sw;
    # a weight whose u8 x s8 pair sums could overflow int16 is stored as uint8 - 128 (same values)
    inits = {t.name: t for t in m.graph.initializer}
    w2 = onnx.numpy_helper.to_array(inits["w2_quantized"])
    if pairs_overflow_int16(w2.astype(np.int64) - 128 if w2.dtype == np.uint8 else w2, 0):
        assert w2.dtype == np.uint8
        assert np.all(onnx.numpy_helper.to_array(inits["w2_zero_point"]) == 128)
    else:
        assert w2.dtype == np.int8
    dq_w2 = prod["w2" + DQ_SUFFIX]
    assert next(a.i for a in dq_w2.attribute if a.name == "axis") == 0
    b2 = onnx.numpy_helper.to_array(inits["b2_quantized"])
    assert b2.dtype == np.int32
    sb = onnx.numpy_helper.to_array(inits["b2_scale"])
    sw = onnx.numpy_helper.to_array(inits["w2_scale"])
    assert np.allclose(sb, res.ranges["p1"].scale * sw)
    # the graph output stays float, straight from the Gemm
    assert prod["y"].op_type == "Gemm"
    meta = json.loads(next(p.value for p in m.metadata_props if p.key == "qrt.quantization"))
    assert meta["mode"] == "static"


@pytest.mark.parametrize("kw", [dict(per_channel=False), dict(activation_type="int8"),
                                dict(symmetric_activations=True),
                                dict(weight_type="int4"), dict(block_size=4)],
                         ids=["per-tensor", "s8-act", "sym-act", "int4", "block4"])
def test_static_variants_run_in_ort(cnn_model, kw):
    fd = feeds(cnn_model)
    res = quantize_static(cnn_model, None, fd, **kw)
    if kw.get("weight_type") == "int4" or kw.get("block_size"):
        assert res.preprocessing["opset"] >= 21
    ref = _outputs(_ort(cnn_model), fd)
    got = _outputs(_ort(res.model), fd)
    assert _cos(ref, got) >= (0.95 if kw.get("weight_type") == "int4" else 0.99)


def test_reader_progress_and_exclusions(cnn_model, capsys):
    fd = feeds(cnn_model, n=12)

    class Reader:  # onnxruntime's CalibrationDataReader protocol
        def __init__(self):
            self.it = iter(fd)

        def get_next(self):
            return next(self.it, None)

    res = quantize_static(cnn_model, None, Reader(), progress=5, exclude_nodes=["conv3"],
                          exclude_op_types=["Gemm"])
    assert res.calibration_batches == 12
    assert "calibrated 10 batches" in capsys.readouterr().err
    assert set(res.excluded) == {"conv3", "fc"} and "conv3" not in res.quantized_nodes
    names = {t.name for t in res.model.graph.initializer}
    assert "w3_quantized" not in names and "wf_quantized" not in names
    with pytest.raises(ValueError, match="unknown node"):
        quantize_static(cnn_model, None, fd, exclude_nodes=["nope"])
    with pytest.raises(ValueError, match="method"):
        quantize_static(cnn_model, None, fd, method="magic")


def test_opset_upgrade():
    m = mlp(opset=11)
    res = quantize_static(m, None, feeds(m))
    assert res.preprocessing["opset_before"] == 11 and res.preprocessing["opset"] >= 13
    _ort(res.model)


@pytest.mark.parametrize("build", [cnn, mlp], ids=["cnn", "mlp"])
def test_dynamic(build, tmp_path):
    m = build()
    fd = feeds(m)
    res = quantize_dynamic(m, tmp_path / "d.onnx")
    assert res.mode == "dynamic" and not res.ranges and res.weights
    ref = _outputs(_ort(m), fd)
    got = _outputs(_ort(tmp_path / "d.onnx"), fd)
    assert _cos(ref, got) >= 0.999
    mine = _outputs(qrt.InferenceSession(str(tmp_path / "d.onnx"), optimize=False, threads=1), fd)
    assert np.allclose(mine, got, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def bad():
    m = cnn(outlier=40.0)  # one huge weight in conv2: per-tensor scale wipes out the others
    return m, feeds(m)


def test_compare_names_the_bad_layer(bad, tmp_path):
    m, fd = bad
    res = quantize_static(m, None, fd, per_channel=False)
    rep = compare_models(m, res.model, fd)
    assert rep.worst(1)[0].layer == "conv2"
    rows = {r.layer: r for r in rep.layers}
    assert {"conv1", "conv2", "conv3", "fc"} <= set(rows)
    assert all(r.sqnr_db is not None and r.cosine is not None for r in rep.layers
               if r.op_type != "Gemm")
    assert rep.outputs[0].cosine > 0.99
    html = rep.to_html(tmp_path / "r.html")
    assert "<svg" in html and "conv2" in html and "worst" in html
    assert json.loads(rep.to_json())["layers"]
    # saturation is counted at the Q nodes: a too-narrow range saturates
    res2 = quantize_static(m, None, fd, method="percentile", percentile=90.0)
    rep2 = compare_models(m, res2.model, fd)
    assert sum(r.saturated for r in rep2.layers) > 0


def test_mixed_precision_keeps_the_bad_layer_float(bad):
    m, fd = bad
    res = quantize_static(m, None, fd, per_channel=False, target_error=30.0)
    mp = res.mixed_precision
    assert mp.before["sqnr_db"] < 30.0 <= mp.after["sqnr_db"] and mp.met
    assert mp.kept_float[0][0] == "conv2" and "conv2" in res.excluded
    assert "mixed precision" in res.excluded["conv2"]
    _ort(res.model)


def test_cli_quantize_and_compare(tmp_path, capsys):
    from qrt.quantization import cli
    m = cnn()
    onnx.save(m, tmp_path / "f.onnx")
    np.savez(tmp_path / "d.npz", x=np.concatenate([f["x"] for f in feeds(m)]))
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers()
    cli.register(sub)
    a = ap.parse_args(["quantize", str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), "--data",
                       str(tmp_path / "d.npz"), "--method", "percentile", "--per-tensor"])
    assert a.func(a) == 0
    a = ap.parse_args(["compare", str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), "--data",
                       str(tmp_path / "d.npz"), "--html", str(tmp_path / "r.html")])
    assert a.func(a) == 0
    assert "worst layer" in capsys.readouterr().out and (tmp_path / "r.html").exists()
    a = ap.parse_args(["quantize", str(tmp_path / "f.onnx"), str(tmp_path / "q2.onnx")])
    assert a.func(a) == 0
    assert "random" in capsys.readouterr().err
    a = ap.parse_args(["quantize", str(tmp_path / "f.onnx"), str(tmp_path / "q3.onnx"), "--dynamic",
                       "--json"])
    assert a.func(a) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "dynamic"
    a = ap.parse_args(["quantize", str(tmp_path / "nope.onnx"), str(tmp_path / "q4.onnx")])
    assert a.func(a) == 2
