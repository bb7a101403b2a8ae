"""fold_constants, fold_batchnorm, qdq_passthrough, qdq_elementwise, lower_qoperator, dynamic_quant,
and the int32 overflow guard, each on a small graph: optimised qrt == unoptimised qrt == onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper

from qrt.kernels import ref as kref
from tests.passes._common import assert_within_one_step, model, precision, run_three

N = helper.make_node


def _report(sess):
    return {e["name"]: e for e in sess.lowering_report()}


def test_fold_constants_and_skip_exploding_expand():
    m = model([N("Constant", [], ["c"], name="const", value=helper.make_tensor("v", T.FLOAT, [3], [1, 2, 3])),
               N("Mul", ["c", "two"], ["c2"], name="mul_const"),
               N("Expand", ["c2", "big"], ["e"], name="expand_big"),
               N("Gather", ["e", "idx"], ["s"], name="pick", axis=0),
               N("Add", ["x", "c2"], ["y"], name="add")],
              [("x", T.FLOAT, [2, 3])], [("y", T.FLOAT, None), ("s", T.FLOAT, None)],
              [("two", np.float32(2)), ("big", np.array([4096, 64, 3], np.int64)), ("idx", np.array(5, np.int64))])
    feeds = {"x": np.ones((2, 3), np.float32)}
    opt, noopt, ref, sess = run_three(m, feeds)
    r = _report(sess)
    assert r["const"]["kernel"].startswith("folded") and r["mul_const"]["kernel"].startswith("folded")
    assert not r["expand_big"]["kernel"].startswith("folded")
    for a, b in zip(opt, noopt):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("op", ["Conv", "Gemm"])
def test_fold_batchnorm(op):
    rng = np.random.default_rng(0)
    c = 5
    bn = [("g", rng.uniform(.5, 1.5, c)), ("bb", rng.normal(size=c)), ("mu", rng.normal(size=c)),
          ("var", rng.uniform(.5, 2, c))]
    bn = [(n, a.astype(np.float32)) for n, a in bn]
    if op == "Conv":
        node = N("Conv", ["x", "w", "b"], ["h"], name="lin", pads=[1, 1, 1, 1])
        inits = [("w", rng.normal(size=(c, 3, 3, 3)).astype(np.float32))]
        shape = [2, 3, 6, 6]
    else:
        node = N("Gemm", ["x", "w", "b"], ["h"], name="lin", transB=1, alpha=0.5, beta=2.0)
        inits = [("w", rng.normal(size=(c, 7)).astype(np.float32))]
        shape = [4, 7]
    m = model([node, N("BatchNormalization", ["h", "g", "bb", "mu", "var"], ["y"], name="bn")],
              [("x", T.FLOAT, shape)], [("y", T.FLOAT, None)],
              inits + [("b", rng.normal(size=c).astype(np.float32))] + bn)
    feeds = {"x": rng.normal(size=shape).astype(np.float32)}
    opt, noopt, ref, sess = run_three(m, feeds)
    assert _report(sess)["bn"]["kernel"] == "folded into lin"
    np.testing.assert_allclose(opt[0], noopt[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(opt[0], ref[0], rtol=1e-4, atol=1e-4)


def _q(name, src, s="s", z="z"):
    return N("QuantizeLinear", [src, s, z], [name], name="q_" + name)


def _dq(name, src, s="s", z="z"):
    return N("DequantizeLinear", [src, s, z], [name], name="dq_" + name)


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
def test_int8_through_reshape_transpose_maxpool_concat(dt):
    et = T.UINT8 if dt == np.uint8 else T.INT8
    m = model([_dq("a", "x"), N("MaxPool", ["a"], ["b"], name="pool", kernel_shape=[2, 2], pads=[1, 1, 1, 1]),
               _q("bq", "b"), _dq("bd", "bq"), N("Transpose", ["bd"], ["c"], name="tr", perm=[0, 1, 3, 2]),
               _q("cq", "c"), _dq("cd", "cq"), N("Concat", ["cd", "cd"], ["d"], name="cat", axis=1),
               _q("dq2", "d"), _dq("dd", "dq2"), N("Flatten", ["dd"], ["e"], name="flat"),
               _q("eq", "e"), _dq("ed", "eq"), _q("y", "ed")],
              [("x", et, [1, 2, 5, 5])], [("y", et, None)],
              [("s", np.float32(0.1)), ("z", np.array(7, dt))])
    rng = np.random.default_rng(0)
    x = rng.integers(np.iinfo(dt).min, np.iinfo(dt).max, (1, 2, 5, 5), endpoint=True).astype(dt)
    opt, noopt, ref, sess = run_three(m, {"x": x})
    np.testing.assert_array_equal(opt[0], noopt[0])
    np.testing.assert_array_equal(opt[0], ref[0])
    r = _report(sess)
    for name in ("pool", "tr", "cat", "flat"):
        assert r[name]["precision"] == "int8", r[name]
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in sess._graph.nodes)


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
def test_concat_of_differently_quantized_inputs_runs_int8_exactly(dt):
    """DQ(a, s1) , DQ(b, s2) -> Concat -> Q(s3): Q is elementwise, so each input is requantized
    to (s3, z3) (a table) and the Concat runs on the 8-bit tensors, bit-equal to the float path."""
    et = T.UINT8 if dt == np.uint8 else T.INT8
    z = np.array(7, dt)
    m = model([N("DequantizeLinear", ["a", "s1", "z"], ["ad"]),
               N("DequantizeLinear", ["b", "s2", "z"], ["bd"]),
               N("Concat", ["ad", "bd", "ad"], ["c"], name="cat", axis=1),
               N("QuantizeLinear", ["c", "s3", "z"], ["y"])],
              [("a", et, [1, 2, 16, 16]), ("b", et, [1, 3, 16, 16])], [("y", et, None)],
              [("s1", np.float32(0.05)), ("s2", np.float32(0.11)), ("s3", np.float32(0.08)),
               ("z", z)])
    rng = np.random.default_rng(3)
    info = np.iinfo(dt)
    feeds = {k: rng.integers(info.min, info.max, (1, c, 16, 16), endpoint=True).astype(dt)
             for k, c in (("a", 2), ("b", 3))}
    opt, noopt, ref, sess = run_three(m, feeds)
    np.testing.assert_array_equal(opt[0], noopt[0])
    assert _report(sess)["cat"]["precision"] == "int8"
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in sess._graph.nodes)


@pytest.mark.parametrize("chain", [["Sigmoid"], ["HardSwish"], ["Tanh"], ["LeakyRelu"], ["HardSigmoid"],
                                   ["Mul", "Sigmoid"]])
@pytest.mark.parametrize("dt", [np.uint8, np.int8])
def test_lookup_table_is_exact(chain, dt):
    et = T.UINT8 if dt == np.uint8 else T.INT8
    nodes, cur = [_dq("a", "x")], "a"
    for k, op in enumerate(chain):
        ins = [cur, "half"] if op == "Mul" else [cur]
        nodes.append(N(op, ins, [f"t{k}"], name=f"op{k}"))
        cur = f"t{k}"
    nodes.append(N("QuantizeLinear", [cur, "sy", "zy"], ["y"], name="qy"))
    m = model(nodes, [("x", et, [4, 64])], [("y", et, None)],
              [("s", np.float32(0.05)), ("z", np.array(3, dt)), ("half", np.float32(0.5)),
               ("sy", np.float32(1 / 128)), ("zy", np.array(0 if dt == np.uint8 else -100, dt))])
    x = np.arange(256).astype(np.uint8).view(dt).reshape(4, 64)
    opt, noopt, ref, sess = run_three(m, {"x": x})
    np.testing.assert_array_equal(opt[0], noopt[0])
    assert _report(sess)["op0"]["precision"] == "int8"
    assert [n.op_type for n in sess._graph.nodes] == ["QLut"]
    if ref is not None:
        assert_within_one_step(opt[0], ref[0], what=f"lut {chain} vs onnxruntime")


@pytest.mark.parametrize("op", ["Add", "Mul"])
@pytest.mark.parametrize("dt", [np.uint8, np.int8])
def test_quantized_add_mul_within_one_step(op, dt):
    et = T.UINT8 if dt == np.uint8 else T.INT8
    m = model([_dq("a", "x", "sa", "za"), _dq("b", "x2", "sb", "zb"), N(op, ["a", "b"], ["c"], name="bin"),
               N("QuantizeLinear", ["c", "sy", "zy"], ["y"])],
              [("x", et, [16, 16]), ("x2", et, [16])], [("y", et, None)],
              [("sa", np.float32(0.031)), ("za", np.array(5, dt)), ("sb", np.float32(0.017)),
               ("zb", np.array(-3 if dt == np.int8 else 200, dt)), ("sy", np.float32(0.043)), ("zy", np.array(9, dt))])
    rng = np.random.default_rng(0)
    info = np.iinfo(dt)
    feeds = {"x": rng.integers(info.min, info.max, (16, 16), endpoint=True).astype(dt),
             "x2": rng.integers(info.min, info.max, (16,), endpoint=True).astype(dt)}
    opt, noopt, ref, sess = run_three(m, feeds)
    assert _report(sess)["bin"]["precision"] == "int8"
    assert_within_one_step(opt[0], noopt[0], what=f"Q{op} vs unfused")
    if ref is not None:
        assert_within_one_step(opt[0], ref[0], what=f"Q{op} vs onnxruntime")


def test_qlinearconv_and_qlinearmatmul_lowered():
    rng = np.random.default_rng(3)
    w = rng.integers(-63, 64, (4, 3, 3, 3)).astype(np.int8)  # ORT u8s8 saturates int16 pairs
    b = rng.integers(-500, 500, 4).astype(np.int32)
    wm = rng.integers(-63, 64, (20, 6)).astype(np.int8)
    m = model([N("QLinearConv", ["x", "sx", "zx", "w", "ws", "wz", "sy", "zy", "b"], ["c"], name="qconv",
                 pads=[1, 1, 1, 1]),
               N("Flatten", ["c"], ["f"]),
               N("QLinearMatMul", ["x2", "sx", "zx", "wm", "wms", "wmz", "sy", "zy"], ["m2"], name="qmm")],
              [("x", T.UINT8, [1, 3, 5, 5]), ("x2", T.UINT8, [3, 20])],
              [("f", T.UINT8, None), ("m2", T.UINT8, None)],
              [("sx", np.float32(0.02)), ("zx", np.uint8(128)), ("w", w),
               ("ws", rng.uniform(.005, .02, 4).astype(np.float32)), ("wz", np.zeros(4, np.int8)),
               ("sy", np.float32(0.1)), ("zy", np.uint8(120)), ("b", b), ("wm", wm),
               ("wms", np.float32(0.01)), ("wmz", np.int8(0))], opset=13)
    feeds = {"x": rng.integers(0, 256, (1, 3, 5, 5)).astype(np.uint8),
             "x2": rng.integers(0, 256, (3, 20)).astype(np.uint8)}
    opt, noopt, ref, sess = run_three(m, feeds)
    for k in range(2):
        assert_within_one_step(opt[k], noopt[k], what="QOperator vs unlowered")
        assert_within_one_step(opt[k], ref[k], what="QOperator vs onnxruntime")
    assert precision(sess, "qconv")[1] == "qlinear_conv_u8s8_per_channel"
    assert precision(sess, "qmm")[1] == "qlinear_matmul_u8s8_per_tensor"


def test_convinteger_matmulinteger_bit_exact():
    rng = np.random.default_rng(4)
    m = model([N("ConvInteger", ["x", "w", "zx", "wz"], ["c"], name="ci"),
               N("MatMulInteger", ["x2", "wm", "zx"], ["m2"], name="mi")],
              [("x", T.UINT8, [1, 2, 6, 6]), ("x2", T.UINT8, [4, 9])], [("c", T.INT32, None), ("m2", T.INT32, None)],
              [("w", rng.integers(0, 256, (3, 2, 3, 3)).astype(np.uint8)), ("zx", np.uint8(100)),
               ("wz", np.uint8(128)), ("wm", rng.integers(-63, 64, (9, 5)).astype(np.int8))], opset=13)
    feeds = {"x": rng.integers(0, 256, (1, 2, 6, 6)).astype(np.uint8),
             "x2": rng.integers(0, 256, (4, 9)).astype(np.uint8)}
    opt, noopt, ref, sess = run_three(m, feeds)
    for k in range(2):
        np.testing.assert_array_equal(opt[k], noopt[k])
        np.testing.assert_array_equal(opt[k], ref[k])
    assert precision(sess, "ci")[0] == precision(sess, "mi")[0] == "int8"


@pytest.mark.parametrize("op", ["MatMul", "Gemm", "Conv"])
def test_dynamic_quantization_option(op):
    rng = np.random.default_rng(5)
    if op == "Conv":
        node, w, shape = N("Conv", ["x", "w", "b"], ["y"], name="lin", pads=[1, 1, 1, 1]), (6, 3, 3, 3), [1, 3, 8, 8]
        nb = 6
    elif op == "Gemm":
        node, w, shape = N("Gemm", ["x", "w", "b"], ["y"], name="lin", transB=1), (6, 16), [4, 16]
        nb = 6
    else:
        node, w, shape = N("MatMul", ["x", "w"], ["y"], name="lin"), (16, 6), [2, 4, 16]
        nb = 0
    inits = [("w", rng.normal(size=w).astype(np.float32))]
    if nb:
        inits.append(("b", rng.normal(size=nb).astype(np.float32)))
    m = model([node], [("x", T.FLOAT, shape)], [("y", T.FLOAT, None)], inits)
    feeds = {"x": rng.normal(size=shape).astype(np.float32)}
    opt, noopt, ref, sess = run_three(m, feeds, dynamic_quantization=True)
    p, k, _ = precision(sess, "lin")
    assert p == "int8" and k.endswith("_dynamic_f32out"), k
    from tests.passes._common import cosine
    assert cosine(opt[0], noopt[0]) > 0.999
    assert np.abs(opt[0] - noopt[0]).max() < 0.05 * np.abs(noopt[0]).max()


def test_overflow_guard_splits_large_k():
    k = kref.max_exact_k() + 100
    rng = np.random.default_rng(6)
    m = model([_dq("a", "x", "sx", "zx"), N("DequantizeLinear", ["w", "ws"], ["wd"]),
               N("MatMul", ["a", "wd"], ["y"], name="mm")],
              [("x", T.UINT8, [2, k])], [("y", T.FLOAT, None)],
              [("sx", np.float32(0.01)), ("zx", np.uint8(0)), ("w", np.full((k, 3), 127, np.int8)),
               ("ws", np.float32(0.01))])
    feeds = {"x": np.full((2, k), 255, np.uint8)}
    opt, noopt, ref, sess = run_three(m, feeds)
    node = [n for n in sess._graph.nodes if n.name == "mm"][0]
    assert "split" in node.meta.get("note", "")
    exact = np.float64(255 * 127) * k * 0.01 * 0.01
    np.testing.assert_allclose(opt[0], exact, rtol=1e-6)
    np.testing.assert_allclose(opt[0], noopt[0], rtol=1e-5)
