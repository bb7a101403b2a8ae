"""Opsets 7-9: the old versions of ops whose signature or meaning changed before opset 10
(qrt/ops/legacy.py and the low registrations in the family modules), each against
onnx.reference.ReferenceEvaluator and onnxruntime where they run it, with and without qrt's passes;
plus a small opset-7 CNN end to end and through qrt's quantizer."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

import qrt
from qrt.errors import ModelLoadError

ort = pytest.importorskip("onnxruntime")

RNG = np.random.default_rng(7)


def _f(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, shape).astype(np.float32)


def _model(nodes, feeds, opset, consts=None, n_out=None, outputs=None):
    consts = consts or {}
    outs = outputs or [o for o in nodes[-1].output if o][: n_out or None]
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
         for k, v in feeds.items()],
        [helper.make_empty_tensor_value_info(o) for o in outs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    return m


def _qrt(m, feeds, optimize):
    return qrt.InferenceSession(m, optimize=optimize, threads=1).run(None, feeds)


def _ref(m, feeds):
    from onnx.reference import ReferenceEvaluator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ReferenceEvaluator(m).run(None, feeds)


def _ort(m, feeds):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _same(got, want, name, atol=1e-5, check_dtype=True):
    assert len(got) == len(want), name
    for i, (g, w) in enumerate(zip(got, want)):
        w = np.asarray(w)
        assert g.shape == w.shape, f"{name}[{i}]: shape {g.shape} != {w.shape}"
        if check_dtype:
            assert g.dtype == w.dtype, f"{name}[{i}]: dtype {g.dtype} != {w.dtype}"
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=atol, err_msg=f"{name}[{i}]")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{name}[{i}]")


def _node(op, ins, outs, **attrs):
    return helper.make_node(op, ins, outs, name="the_node", **attrs)


X4 = _f(2, 3, 5, 6)
X2 = _f(4, 6)

# name -> (opset, node, feeds, consts, engines). engines: "ref", "ort" (which references run it).
CASES = {
    # Slice-1: starts/ends/axes attributes (clamped ends, negative starts/ends, axes omitted)
    "slice1_axes": (7, _node("Slice", ["x"], ["y"], starts=[0, 1, -4], ends=[1000, -1, 5],
                             axes=[1, 2, 3]), {"x": X4}, {}, "ref ort"),
    "slice1_no_axes": (9, _node("Slice", ["x"], ["y"], starts=[1, 0], ends=[2, 2]),
                       {"x": X4}, {}, "ref ort"),
    # Pad-2: pads/mode/value attributes
    "pad2_constant": (7, _node("Pad", ["x"], ["y"], pads=[0, 0, 1, 2, 0, 1, 0, 1], value=1.5),
                      {"x": X4}, {}, "ref ort"),
    "pad2_reflect": (8, _node("Pad", ["x"], ["y"], pads=[0, 0, 2, 1, 0, 0, 1, 2], mode="reflect"),
                     {"x": X4}, {}, "ref ort"),
    "pad2_edge": (9, _node("Pad", ["x"], ["y"], pads=[0, 0, 2, 1, 0, 0, 1, 2], mode="edge"),
                  {"x": X4}, {}, "ref ort"),
    # Upsample-7 (scales attribute; the reference evaluator does not run it) and -9 (input)
    "upsample7_nearest": (7, _node("Upsample", ["x"], ["y"], scales=[1.0, 1.0, 2.0, 3.0]),
                          {"x": X4}, {}, "ort"),
    "upsample7_linear": (8, _node("Upsample", ["x"], ["y"], scales=[1.0, 1.0, 2.0, 1.5],
                                  mode="linear"), {"x": X4}, {}, "ort"),
    "upsample9_nearest": (9, _node("Upsample", ["x", "s"], ["y"]), {"x": X4},
                          {"s": np.array([1, 1, 2, 2], np.float32)}, "ref ort"),
    "upsample9_linear": (9, _node("Upsample", ["x", "s"], ["y"], mode="linear"), {"x": X4},
                         {"s": np.array([1, 1, 2.5, 2], np.float32)}, "ort"),  # reference: 2x only
    # Dropout-7: the input; the mask (of the input's type) is checked separately below
    "dropout7": (7, _node("Dropout", ["x"], ["y"], ratio=0.3), {"x": X4}, {}, "ref ort"),
    # BatchNormalization-7 (spatial; the reference evaluator runs BN-7 as BN-6 in training mode,
    # so only onnxruntime) and -9
    "bn7_spatial": (7, _node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"], epsilon=1e-3),
                    {"x": X4}, {"g": _f(3), "b": _f(3), "m": _f(3), "v": _f(3, lo=0.5, hi=2)},
                    "ort"),
    "bn7_spatial0": (8, _node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"], spatial=0),
                     {"x": X4}, {"g": _f(3, 5, 6), "b": _f(3, 5, 6), "m": _f(3, 5, 6),
                                 "v": _f(3, 5, 6, lo=0.5, hi=2)}, "ort"),
    "bn7_spatial0_2d": (7, _node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"],
                                 spatial=0), {"x": X2},
                        {"g": _f(6), "b": _f(6), "m": _f(6), "v": _f(6, lo=0.5, hi=2)}, "ort"),
    "bn9": (9, _node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"]), {"x": X4},
            {"g": _f(3), "b": _f(3), "m": _f(3), "v": _f(3, lo=0.5, hi=2)},
            "ort"),  # the reference evaluator's BN-9 applies its default momentum (training)
    # Squeeze-1 / Unsqueeze-1: axes attribute
    "squeeze1": (7, _node("Squeeze", ["x"], ["y"], axes=[0, 2]), {"x": _f(1, 3, 1, 4)}, {},
                 "ref ort"),
    "squeeze1_all": (8, _node("Squeeze", ["x"], ["y"]), {"x": _f(1, 3, 1, 4)}, {}, "ref ort"),
    "unsqueeze1": (9, _node("Unsqueeze", ["x"], ["y"], axes=[0, 3]), {"x": _f(3, 4)}, {},
                   "ref ort"),
    # Split-2: split attribute, or equal parts
    "split2": (7, _node("Split", ["x"], ["a", "b"], axis=3, split=[2, 4]), {"x": X4}, {},
               "ref ort"),
    "split2_equal": (9, _node("Split", ["x"], ["a", "b", "c"], axis=1), {"x": X4}, {}, "ref ort"),
    # TopK-1: k attribute
    "topk1": (7, _node("TopK", ["x"], ["v", "i"], k=3), {"x": X4}, {}, "ref ort"),
    "topk1_axis": (9, _node("TopK", ["x"], ["v", "i"], k=2, axis=1), {"x": X4}, {}, "ref ort"),
    # Clip-6: min/max attributes (and their defaults)
    "clip6": (7, _node("Clip", ["x"], ["y"], min=-0.25, max=0.5), {"x": X4}, {}, "ref ort"),
    "clip6_max_only": (9, _node("Clip", ["x"], ["y"], max=0.1), {"x": X4}, {}, "ref ort"),
    # Gemm-7 / -9: C broadcasts unidirectionally
    "gemm7_c_row": (7, _node("Gemm", ["a", "b", "c"], ["y"], alpha=0.5, beta=2.0, transB=1),
                    {"a": X2}, {"b": _f(5, 6), "c": _f(5)}, "ref ort"),
    "gemm7_c_scalar": (8, _node("Gemm", ["a", "b", "c"], ["y"], transA=1), {"a": _f(6, 4)},
                       {"b": _f(6, 5), "c": _f(1)}, "ref ort"),
    "gemm9_c_col": (9, _node("Gemm", ["a", "b", "c"], ["y"]), {"a": X2},
                    {"b": _f(6, 5), "c": _f(4, 1)}, "ref ort"),
    # Concat-4, Reshape-5, Flatten-9, Cast-9
    "concat4": (7, _node("Concat", ["x", "z"], ["y"], axis=1), {"x": X4},
                {"z": _f(2, 1, 5, 6)}, "ref ort"),
    "reshape5": (7, _node("Reshape", ["x", "s"], ["y"]), {"x": X4},
                 {"s": np.array([0, -1, 6], np.int64)}, "ref ort"),
    "flatten9": (9, _node("Flatten", ["x"], ["y"], axis=2), {"x": X4}, {}, "ref ort"),
    "flatten1_axis0": (7, _node("Flatten", ["x"], ["y"], axis=0), {"x": X4}, {}, "ref ort"),
    "cast9": (9, _node("Cast", ["x"], ["y"], to=T.INT32), {"x": X4 * 10}, {}, "ref ort"),
    "cast6": (7, _node("Cast", ["x"], ["y"], to=T.DOUBLE), {"x": X4}, {}, "ref ort"),
    # Pooling: MaxPool-1 (opset 7), MaxPool-8 (Indices, storage_order), AveragePool-7
    "maxpool1": (7, _node("MaxPool", ["x"], ["y"], kernel_shape=[2, 3], pads=[1, 1, 0, 1],
                          strides=[2, 1]), {"x": X4}, {}, "ref ort"),
    "maxpool1_same": (7, _node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3],
                               auto_pad="SAME_UPPER"), {"x": X4}, {}, "ref ort"),
    "maxpool8_indices": (8, _node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2],
                                  strides=[2, 2]), {"x": X4}, {}, "ref ort"),
    "maxpool8_storage": (9, _node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2],
                                  storage_order=1), {"x": X4}, {}, "ort"),
    "avgpool7": (7, _node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                 {"x": X4}, {}, "ref ort"),
    "avgpool7_include_pad": (9, _node("AveragePool", ["x"], ["y"], kernel_shape=[3, 2],
                                      pads=[1, 0, 1, 1], strides=[2, 2], count_include_pad=1),
                             {"x": X4}, {}, "ref ort"),
    # Sum/Max/Min/Mean: -6 at opset 7 (same shapes), -8 (broadcasting)
    "sum6": (7, _node("Sum", ["x", "z"], ["y"]), {"x": X4}, {"z": _f(2, 3, 5, 6)}, "ref ort"),
    "max6": (7, _node("Max", ["x", "z"], ["y"]), {"x": X4}, {"z": _f(2, 3, 5, 6)}, "ref ort"),
    "sum8": (8, _node("Sum", ["x", "z", "w"], ["y"]), {"x": X4},
             {"z": _f(6), "w": _f(3, 1, 1)}, "ref ort"),
    "max8": (8, _node("Max", ["x", "z"], ["y"]), {"x": X4}, {"z": _f(5, 1)}, "ref ort"),
    "min8": (9, _node("Min", ["x", "z"], ["y"]), {"x": X4}, {"z": _f(1, 6)}, "ref ort"),
    "mean8": (9, _node("Mean", ["x", "z"], ["y"]), {"x": X4}, {"z": _f(3, 5, 1)}, "ref ort"),
    # Scatter-9 (ScatterElements' deprecated form), Where-9, ConstantOfShape-9, Shape-1, Gather-1
    "scatter9": (9, _node("Scatter", ["x", "i", "u"], ["y"], axis=1), {"x": _f(3, 4)},
                 {"i": np.array([[1, 3], [0, 2], [3, 0]], np.int64), "u": _f(3, 2)},
                 "ort"),  # the reference evaluator has no Scatter
    "scatter9_axis0": (9, _node("Scatter", ["x", "i", "u"], ["y"]), {"x": _f(3, 4)},
                       {"i": np.array([[2, 0, 1, 1]], np.int64), "u": _f(1, 4)}, "ort"),
    "where9": (9, _node("Where", ["c", "x", "z"], ["y"]), {"x": X4},
               {"c": RNG.random((5, 6)) > 0.5, "z": _f(3, 1, 1)}, "ref ort"),
    "constantofshape9": (9, _node("ConstantOfShape", ["s"], ["y"],
                                  value=numpy_helper.from_array(np.array([2.5], np.float32))),
                         {"s": np.array([2, 3], np.int64)}, {}, "ref ort"),
    "shape1": (7, _node("Shape", ["x"], ["y"]), {"x": X4}, {}, "ref ort"),
    "gather1": (7, _node("Gather", ["x", "i"], ["y"], axis=2), {"x": X4},
                {"i": np.array([[4, 0], [2, 2]], np.int64)}, "ref ort"),
}


@pytest.mark.parametrize("optimize", [True, False], ids=["opt", "noopt"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_old_op_version(name, optimize):
    opset, node, feeds, consts, engines = CASES[name]
    m = _model([node], feeds, opset, consts)
    got = _qrt(m, feeds, optimize)
    checked = 0
    if "ref" in engines:
        _same(got, _ref(m, feeds), f"{name} vs reference")
        checked += 1
    if "ort" in engines:
        _same(got, _ort(m, feeds), f"{name} vs onnxruntime")
        checked += 1
    assert checked


def test_bn7_spatial0_matches_formula():
    # The per-activation form written out, independent of either reference.
    opset, node, feeds, consts, _ = CASES["bn7_spatial0"]
    got = _qrt(_model([node], feeds, opset, consts), feeds, True)[0]
    c = {k: v[None].astype(np.float64) for k, v in consts.items()}
    want = (feeds["x"] - c["m"]) / np.sqrt(c["v"] + 1e-5) * c["g"] + c["b"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_bn7_spatial0_after_conv_is_not_folded_wrongly():
    # Conv -> BatchNormalization-7 spatial=0: the fold pass (per-channel) must leave it alone.
    x = _f(1, 2, 4, 4)
    consts = {"w": _f(3, 2, 3, 3), "cb": _f(3), "g": _f(3, 4, 4), "b": _f(3, 4, 4),
              "m": _f(3, 4, 4), "v": _f(3, 4, 4, lo=0.5, hi=2)}
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], spatial=0)]
    m = _model(nodes, {"x": x}, 7, consts)
    want = _ort(m, {"x": x})
    for optimize in (True, False):
        sess = qrt.InferenceSession(m, optimize=optimize, threads=1)
        assert "BatchNormalization" in [n.op_type for n in sess._graph.nodes]
        _same(sess.run(None, {"x": x}), want, f"optimize={optimize}", atol=1e-5)


def test_bn7_spatial_after_conv_is_folded():
    x = _f(1, 2, 4, 4)
    consts = {"w": _f(3, 2, 3, 3), "g": _f(3), "b": _f(3), "m": _f(3), "v": _f(3, lo=0.5, hi=2)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"])]
    m = _model(nodes, {"x": x}, 7, consts)
    sess = qrt.InferenceSession(m, optimize=True, threads=1)
    assert [n.op_type for n in sess._graph.nodes] == ["Conv"]
    _same(sess.run(None, {"x": x}), _ort(m, {"x": x}), "folded", atol=1e-5)


def test_bn7_spatial0_training_mode_is_refused():
    x = X4
    consts = {"g": _f(3, 5, 6), "b": _f(3, 5, 6), "m": _f(3, 5, 6), "v": _f(3, 5, 6, lo=0.5)}
    node = _node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y", "rm", "rv"], spatial=0)
    m = _model([node], {"x": x}, 7, consts)
    with pytest.raises(Exception, match="spatial=0 in training mode"):
        _qrt(m, {"x": x}, False)


def test_bn7_spatial_training_mode_matches_bn9():
    consts = {"g": _f(3), "b": _f(3), "m": _f(3), "v": _f(3, lo=0.5, hi=2)}
    outs = ["y", "rm", "rv", "sm", "sv"]
    n7 = _node("BatchNormalization", ["x", "g", "b", "m", "v"], outs, spatial=1)
    n9 = _node("BatchNormalization", ["x", "g", "b", "m", "v"], outs)
    got7 = _qrt(_model([n7], {"x": X4}, 7, consts), {"x": X4}, False)
    got9 = _qrt(_model([n9], {"x": X4}, 9, consts), {"x": X4}, False)
    _same(got7, got9, "bn7 training vs bn9")


def test_dropout7_mask():
    # Inference: nothing is dropped, so the mask (the input's type at opsets 7-9) is all ones.
    # The reference evaluator agrees on the values (it returns a bool mask); onnxruntime's
    # opset-7 kernel fills the mask with zeros instead, so it is not compared.
    m = _model([_node("Dropout", ["x"], ["y", "mask"])], {"x": X4}, 7)
    for optimize in (True, False):
        y, mask = _qrt(m, {"x": X4}, optimize)
        np.testing.assert_array_equal(y, X4)
        assert mask.dtype == np.float32 and mask.shape == X4.shape and np.all(mask == 1)
        ref = _ref(m, {"x": X4})
        np.testing.assert_array_equal(mask, np.asarray(ref[1]).astype(np.float32))


def test_scan9_runs_at_opset_9():
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_in"], ["s_out"]),
         helper.make_node("Identity", ["s_out"], ["y_out"])], "body",
        [helper.make_tensor_value_info("s_in", T.FLOAT, [2]),
         helper.make_tensor_value_info("x_in", T.FLOAT, [2])],
        [helper.make_tensor_value_info("s_out", T.FLOAT, [2]),
         helper.make_tensor_value_info("y_out", T.FLOAT, [2])])
    node = helper.make_node("Scan", ["s", "xs"], ["s_final", "ys"], num_scan_inputs=1, body=body)
    feeds = {"s": _f(2), "xs": _f(3, 2)}
    m = _model([node], feeds, 9)
    for optimize in (True, False):
        _same(_qrt(m, feeds, optimize), _ref(m, feeds), "scan9 vs reference")
        _same(_qrt(m, feeds, optimize), _ort(m, feeds), "scan9 vs onnxruntime")


def test_scan8_is_reported_unsupported():
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_in"], ["s_out"]),
         helper.make_node("Identity", ["s_out"], ["y_out"])], "body",
        [helper.make_tensor_value_info("s_in", T.FLOAT, [2]),
         helper.make_tensor_value_info("x_in", T.FLOAT, [2])],
        [helper.make_tensor_value_info("s_out", T.FLOAT, [2]),
         helper.make_tensor_value_info("y_out", T.FLOAT, [2])])
    node = helper.make_node("Scan", ["", "s", "xs"], ["s_final", "ys"], num_scan_inputs=1,
                            body=body)
    m = _model([node], {"s": _f(1, 2), "xs": _f(1, 3, 2)}, 8)
    from qrt.errors import UnsupportedOpError
    with pytest.raises(UnsupportedOpError, match=r"unsupported op type\(s\): Scan \(opset 8"):
        qrt.InferenceSession(m)


@pytest.mark.parametrize("opset", [1, 6])
def test_below_opset_7_is_refused(opset):
    m = _model([_node("Relu", ["x"], ["y"])], {"x": X4}, opset)
    with pytest.raises(ModelLoadError, match=f"opset {opset} is outside the supported range 7"):
        qrt.InferenceSession(m)


# --------------------------------------------------------------------------------------------
# A small opset-7 CNN: Conv, BatchNormalization-7, Relu, MaxPool, Upsample-7, Concat, Dropout-7,
# Reshape-5, Gemm-7, Softmax-1.

def _cnn7():
    r = np.random.default_rng(3)

    def w(*s, scale=0.3):
        return (r.standard_normal(s) * scale).astype(np.float32)

    consts = {
        "w1": w(4, 3, 3, 3), "b1": w(4),
        "g": (1 + w(4, scale=0.1)), "beta": w(4), "mu": w(4, scale=0.1),
        "var": (0.5 + r.random(4)).astype(np.float32),
        "shape": np.array([1, -1], np.int64),
        "wf": w(128, 10, scale=0.1), "bf": w(10),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("BatchNormalization", ["c1", "g", "beta", "mu", "var"], ["bn"],
                         epsilon=1e-5, spatial=1, name="bn"),
        helper.make_node("Relu", ["bn"], ["r1"], name="relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2],
                         name="pool1"),
        helper.make_node("Upsample", ["p1"], ["u1"], scales=[1.0, 1.0, 2.0, 2.0], name="up"),
        helper.make_node("Concat", ["r1", "u1"], ["cat"], axis=1, name="cat"),
        helper.make_node("MaxPool", ["cat"], ["p2"], kernel_shape=[2, 2], strides=[2, 2],
                         name="pool2"),
        helper.make_node("Dropout", ["p2"], ["d"], ratio=0.5, name="drop"),
        helper.make_node("Reshape", ["d", "shape"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1, name="softmax"),
    ]
    g = helper.make_graph(
        nodes, "cnn7", [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("prob", T.FLOAT, [1, 10])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 7)])
    m.ir_version = 4  # initializers need not be graph inputs
    onnx.checker.check_model(m)
    return m


@pytest.mark.parametrize("optimize", [True, False], ids=["opt", "noopt"])
def test_cnn_opset7_vs_onnxruntime(optimize):
    m = _cnn7()
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((1, 3, 8, 8)).astype(np.float32)
        got = _qrt(m, {"x": x}, optimize)
        want = _ort(m, {"x": x})
        _same(got, want, f"cnn7 seed {seed}", atol=1e-6)


def test_cnn_opset7_quantize_static(tmp_path):
    # qrt's quantizer upgrades the model in memory (onnx.version_converter, to opset 13 by
    # default) before placing Q/DQ; the result must load and run in qrt and onnxruntime alike.
    from qrt.quantization import quantize_static
    m = _cnn7()
    src = tmp_path / "cnn7.onnx"
    onnx.save(m, src)
    rng = np.random.default_rng(11)
    calib = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
    res = quantize_static(str(src), str(tmp_path / "cnn7_int8.onnx"), calib)
    q = onnx.load(tmp_path / "cnn7_int8.onnx")
    opset = next(o.version for o in q.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 13, opset
    ops = {n.op_type for n in q.graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops, ops
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    fp = _ort(m, {"x": x})[0]
    got_q = _qrt(q, {"x": x}, True)[0]
    got_o = _ort(q, {"x": x})[0]
    np.testing.assert_allclose(got_q, got_o, atol=2e-2)  # both engines on the same INT8 model
    np.testing.assert_allclose(got_q, fp, atol=5e-2)  # and close to the FP32 model
    assert res is not None


def test_contrib_qlinear_op_below_opset_10_is_refused_clearly():
    # onnxruntime's com.microsoft QLinear ops run as DequantizeLinear -> op -> QuantizeLinear,
    # which opsets 7-9 do not have: a clear load error, not a crash.
    from qrt.errors import UnsupportedOpError
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(128, np.uint8), "z")]
    n = helper.make_node("QLinearAdd", ["a", "s", "z", "b", "s", "z", "s", "z"], ["y"],
                         domain="com.microsoft")
    g = helper.make_graph([n], "g", [helper.make_tensor_value_info(k, T.UINT8, [2, 3])
                                     for k in "ab"],
                          [helper.make_tensor_value_info("y", T.UINT8, [2, 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 9),
                                            helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 7
    with pytest.raises(UnsupportedOpError, match="QuantizeLinear|DequantizeLinear"):
        qrt.InferenceSession(m)
