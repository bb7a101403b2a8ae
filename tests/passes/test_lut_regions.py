"""passes/lut_regions.py: elementwise regions of one 8-bit tensor become one (per-channel) table.

Truth: the same graph run with the pass switched off (every node as its own op: the tables must be
bit-identical to it), and onnx.reference / the unoptimised session for the float semantics.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

import qrt
import qrt.passes as P
from tests.passes._common import assert_within_one_step, model

U8, I8, F = TP.UINT8, TP.INT8, TP.FLOAT


def _without_pass(m, name="lut_regions"):
    saved = list(P.PIPELINE)
    P.PIPELINE[:] = [p for p in saved if p != name]
    try:
        return qrt.InferenceSession(m, threads=1)
    finally:
        P.PIPELINE[:] = saved


def _ops(sess):
    return [st.node.op_type for st in sess._plan.steps]


def _bn_chain(c=6, dtype=np.uint8, extra=True, const_shape=None):
    """Q(x) -> Conv(int8) -> DQ -> BatchNorm -> Q -> DQ -> (x + 3) * x -> Q: a quantizer's leftovers."""
    rng = np.random.default_rng(0)
    elem = U8 if dtype == np.uint8 else I8
    zp = np.array(128 if dtype == np.uint8 else 0, dtype)
    w = rng.integers(-100, 100, (c, 3, 3, 3)).astype(np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "sw"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["conv", "sc", "zx"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "sc", "zx"], ["cd"]),
        helper.make_node("BatchNormalization", ["cd", "g", "b", "mu", "var"], ["bn"]),
        helper.make_node("QuantizeLinear", ["bn", "sb", "zx"], ["bq"]),
    ]
    inits = [("sx", np.array(0.02, np.float32)), ("zx", zp), ("w", w),
             ("sw", rng.uniform(0.001, 0.01, c).astype(np.float32)),
             ("sc", np.array(0.05, np.float32)),
             ("g", rng.uniform(0.5, 2, c).astype(np.float32)),
             ("b", rng.uniform(-1, 1, c).astype(np.float32)),
             ("mu", rng.uniform(-0.5, 0.5, c).astype(np.float32)),
             ("var", rng.uniform(0.5, 2, c).astype(np.float32)),
             ("sb", np.array(0.04, np.float32))]
    out = "bq"
    if extra:
        nodes += [helper.make_node("DequantizeLinear", ["bq", "sb", "zx"], ["bd"]),
                  helper.make_node("Add", ["bd", "three"], ["p3"]),
                  helper.make_node("Mul", ["p3", "bd"], ["hs"]),
                  helper.make_node("QuantizeLinear", ["hs", "sh", "zx"], ["y"])]
        cshape = const_shape or ()
        inits += [("three", np.full(cshape, 3.0, np.float32)), ("sh", np.array(0.1, np.float32))]
        out = "y"
    m = model(nodes, [("x", F, [1, 3, 7, 9])], [(out, elem, None)], inits)
    x = rng.uniform(-2, 2, (1, 3, 7, 9)).astype(np.float32)
    return m, {"x": x}


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_region_becomes_one_table_bit_identical(dtype):
    m, feeds = _bn_chain(dtype=dtype)
    fast = qrt.InferenceSession(m, threads=1)
    slow = _without_pass(m)
    got, want = fast.run(None, feeds)[0], slow.run(None, feeds)[0]
    np.testing.assert_array_equal(got, want)
    assert _ops(fast) == ["QuantizeLinear", "QConv"], _ops(fast)  # table folded into the conv
    assert len(_ops(slow)) > 4
    # float semantics: within one step of the graph run node by node without any pass
    ref = qrt.InferenceSession(m, threads=1, optimize=False).run(None, feeds)[0]
    assert_within_one_step(got, ref, max_frac=0.05, what=f"lut region {np.dtype(dtype).name}")
    rep = {e["name"]: e for e in fast.lowering_report()}
    rep.pop("QuantizeLinear_0")  # quantizing the float graph input
    assert all(e["precision"] == "int8" for e in rep.values()), rep
    assert rep["BatchNormalization_6"]["kernel"].endswith("+table")


def test_per_channel_table_without_a_conv_to_host_it():
    """The region's input is a graph input (no fused op before it): a standalone QLut per channel."""
    rng = np.random.default_rng(1)
    c = 5
    nodes = [helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("Mul", ["xd", "k"], ["m"]),
             helper.make_node("Sigmoid", ["m"], ["sg"]),
             helper.make_node("QuantizeLinear", ["sg", "s2", "z2"], ["y"])]
    inits = [("s", np.array(0.03, np.float32)), ("z", np.array(-3, np.int8)),
             ("k", rng.uniform(-2, 2, (c, 1, 1)).astype(np.float32)),
             ("s2", np.array(1 / 255, np.float32)), ("z2", np.array(0, np.uint8))]
    m = model(nodes, [("xq", I8, [2, c, 4, 6])], [("y", U8, None)], inits)
    xq = rng.integers(-128, 128, (2, c, 4, 6)).astype(np.int8)
    fast = qrt.InferenceSession(m, threads=1)
    assert _ops(fast) == ["QLut"]
    table = fast._plan.steps[0].node.attrs["table"]
    assert table.shape == (c, 256)
    want = qrt.InferenceSession(m, threads=1, optimize=False).run(None, {"xq": xq})[0]
    np.testing.assert_array_equal(fast.run(None, {"xq": xq})[0], want)


@pytest.mark.parametrize("const_shape", [(1, 1, 1, 9), (9,), (1, 1, 1, 1, 1)])
def test_constants_off_the_channel_axis_are_left_alone(const_shape):
    """A constant varying along width (or raising the rank) is not a function of the code alone."""
    m, feeds = _bn_chain(const_shape=const_shape)
    fast = qrt.InferenceSession(m, threads=1)
    ref = qrt.InferenceSession(m, threads=1, optimize=False).run(None, feeds)[0]
    got = fast.run(None, feeds)[0]
    assert got.shape == ref.shape
    assert_within_one_step(got, ref, max_frac=0.05, what=f"const {const_shape}")
    assert "QMul" in _ops(fast) or "Mul" in _ops(fast), _ops(fast)


def test_value_read_outside_the_region_stays_computed():
    m, feeds = _bn_chain()
    g = m.graph
    g.output.append(helper.make_tensor_value_info("bq", U8, None))  # the BN output is also returned
    fast = qrt.InferenceSession(m, threads=1)
    slow = _without_pass(m)
    for a, b in zip(fast.run(None, feeds), slow.run(None, feeds)):
        np.testing.assert_array_equal(a, b)
    assert len(fast._plan.steps) < len(slow._plan.steps)


def test_two_inputs_are_not_a_table():
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("DequantizeLinear", ["a", "s", "z"], ["ad"]),
             helper.make_node("DequantizeLinear", ["b", "s", "z"], ["bd"]),
             helper.make_node("Mul", ["ad", "bd"], ["m"]),
             helper.make_node("QuantizeLinear", ["m", "s", "z"], ["y"])]
    inits = [("s", np.array(0.05, np.float32)), ("z", np.array(128, np.uint8))]
    m = model(nodes, [("a", U8, [1, 4]), ("b", U8, [1, 4])], [("y", U8, None)], inits)
    fast = qrt.InferenceSession(m, threads=1)
    assert _ops(fast) == ["QMul"]
    feeds = {"a": rng.integers(0, 256, (1, 4), dtype=np.uint8),
             "b": rng.integers(0, 256, (1, 4), dtype=np.uint8)}
    ref = qrt.InferenceSession(m, threads=1, optimize=False).run(None, feeds)[0]
    assert_within_one_step(fast.run(None, feeds)[0], ref, what="QMul")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlut_per_channel_op_matches_fancy_indexing(dtype):
    from qrt.ops.fused import qlut
    rng = np.random.default_rng(3)
    lo = 0 if dtype == np.uint8 else -128
    table = rng.integers(0, 256, (3, 256)).astype(np.uint8)
    x = rng.integers(lo, lo + 256, (2, 3, 5, 4)).astype(dtype)
    want = table[np.arange(3).reshape(1, 3, 1, 1), x.astype(np.int32) - lo]
    np.testing.assert_array_equal(qlut(x, table=table, in_lo=lo, kernel=""), want)
    with pytest.raises(ValueError, match="per-channel table for 3 channels"):
        qlut(x[:, :2], table=table, in_lo=lo, kernel="")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_global_average_pool_stays_integer(dtype):
    """DQ -> GlobalAveragePool -> Q (squeeze-excitation heads): one integer op, within one step of
    the float path and of onnxruntime."""
    rng = np.random.default_rng(4)
    elem = U8 if dtype == np.uint8 else I8
    lo = 0 if dtype == np.uint8 else -128
    nodes = [helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("GlobalAveragePool", ["xd"], ["g"]),
             helper.make_node("QuantizeLinear", ["g", "s2", "z2"], ["y"])]
    inits = [("s", np.array(0.07, np.float32)), ("z", np.array(lo + 9, dtype)),
             ("s2", np.array(0.03, np.float32)), ("z2", np.array(lo + 100, dtype))]
    m = model(nodes, [("xq", elem, [2, 6, 5, 7])], [("y", elem, None)], inits)
    xq = rng.integers(lo, lo + 256, (2, 6, 5, 7)).astype(dtype)
    fast = qrt.InferenceSession(m, threads=1)
    assert _ops(fast) == ["QGlobalAveragePool"]
    got = fast.run(None, {"xq": xq})[0]
    ref = qrt.InferenceSession(m, threads=1, optimize=False).run(None, {"xq": xq})[0]
    assert_within_one_step(got, ref, max_frac=0.1, what=f"QGlobalAveragePool {np.dtype(dtype).name}")
    import onnxruntime as ort
    o = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    assert_within_one_step(got, o.run(None, {"xq": xq})[0], max_frac=0.1, what="vs onnxruntime")
