"""Plan shape specialisation (qrt/plan.py): steps that depend only on constants and the feeds'
shapes run once per distinct set of feed shapes; later calls with the same shapes skip them.
Checked against onnx.reference on every call, across shape changes, and against the cases that
must never be cached (values that depend on feed values, graph outputs)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import qrt
from qrt.plan import shape_only_steps


def _out(name, elem):
    """An output whose shape is left unknown (rank too)."""
    vi = onnx.ValueInfoProto()
    vi.name = name
    vi.type.tensor_type.elem_type = elem
    return vi


def _model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _i64(name, v):
    return numpy_helper.from_array(np.asarray(v, np.int64), name)


def reshape_chain_model():
    """The PyTorch-export pattern: y = Reshape(x, [B, S, 2, -1]) with B, S read through Shape ->
    Gather -> Unsqueeze -> Concat, plus z = x + Slice(pos, 0, S) (a constant cut to the feed's
    length), all with dynamic dims."""
    nodes = [
        helper.make_node("Shape", ["x"], ["sh"]),
        helper.make_node("Gather", ["sh", "i0"], ["b"], axis=0),
        helper.make_node("Gather", ["sh", "i1"], ["s"], axis=0),
        helper.make_node("Unsqueeze", ["b", "ax0"], ["b1"]),
        helper.make_node("Unsqueeze", ["s", "ax0"], ["s1"]),
        helper.make_node("Concat", ["b1", "s1", "tail"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
        helper.make_node("Slice", ["pos", "zero1", "s1", "ax0"], ["pos_s"]),
        helper.make_node("Add", ["x", "pos_s"], ["z"]),
    ]
    inits = [_i64("i0", 0), _i64("i1", 1), _i64("ax0", [0]), _i64("tail", [2, -1]),
             _i64("zero1", [0]),
             numpy_helper.from_array(np.arange(40 * 6, dtype=np.float32).reshape(40, 6), "pos")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", 6])],
                  [_out("y", TensorProto.FLOAT),
                   _out("z", TensorProto.FLOAT)], inits)


def test_shape_chain_runs_once_per_shape_and_matches_reference():
    m = reshape_chain_model()
    sess = qrt.InferenceSession(m.SerializeToString())
    plan = sess._plan
    names = [plan.steps[k].node.op_type for k in sorted(plan.shape_only)]
    # every step but the two that read x's values
    assert names == ["Shape", "Gather", "Gather", "Unsqueeze", "Unsqueeze", "Concat", "Slice"]
    ref = ReferenceEvaluator(m)
    rng = np.random.default_rng(0)
    for shape in [(2, 5, 6), (3, 7, 6), (2, 5, 6), (1, 1, 6), (3, 7, 6)]:
        x = rng.standard_normal(shape).astype(np.float32)
        got = sess.run(None, {"x": x})
        want = ref.run(None, {"x": x})
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_array_equal(g, w)
    assert len(plan._by_shapes) == 3  # one specialisation per distinct feed shape
    for _, bound in plan._by_shapes.values():
        assert [plan.steps[b[7]].node.op_type for b in bound] == ["Reshape", "Add"]


def test_values_that_depend_on_feed_values_are_never_cached():
    """Reshape's target is a feed: the reshaped value's shape, and everything computed from its
    Shape, changes with the feed's values while the feed shapes stay the same."""
    nodes = [helper.make_node("Reshape", ["x", "target"], ["r"]),
             helper.make_node("Shape", ["r"], ["sh"]),
             helper.make_node("Gather", ["sh", "i0"], ["d0"], axis=0),
             helper.make_node("Cast", ["d0"], ["n"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["r", "n"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
                       helper.make_tensor_value_info("target", TensorProto.INT64, [2])],
               [_out("y", TensorProto.FLOAT)], [_i64("i0", 0)])
    sess = qrt.InferenceSession(m.SerializeToString())
    assert not sess._plan.shape_only
    ref = ReferenceEvaluator(m)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    for target in ([3, 4], [12, 1], [3, 4], [1, 12]):
        feeds = {"x": x, "target": np.array(target, np.int64)}
        np.testing.assert_array_equal(sess.run(None, feeds)[0], ref.run(None, feeds)[0])


def test_unknown_ops_count_as_value_dependent():
    """An op outside the tables may give a shape that depends on values: a Shape after it is
    not cached (the analysis alone, on a stand-in op type)."""
    class N:
        def __init__(self, op):
            self.domain, self.op_type = "", op

    class S:
        def __init__(self, op, ins, outs):
            self.node, self.ins, self.outs = N(op), ins, outs
    steps = [S("NonZero", (0,), (1,)), S("Shape", (1,), (2,)), S("Shape", (0,), (3,)),
             S("Gather", (3, 4), (5,))]
    assert shape_only_steps(steps, {4}, set()) == [2, 3]


def test_graph_outputs_of_shape_steps_are_fresh_each_call():
    nodes = [helper.make_node("Shape", ["x"], ["sh"]), helper.make_node("Relu", ["x"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
               [_out("sh", TensorProto.INT64),
                _out("y", TensorProto.FLOAT)])
    sess = qrt.InferenceSession(m.SerializeToString())
    assert not sess._plan.shape_only
    x = np.ones((4, 3), np.float32)
    sh = sess.run(["sh"], {"x": x})[0]
    sh[:] = 0  # the caller owns what it got
    np.testing.assert_array_equal(sess.run(["sh"], {"x": x})[0], [4, 3])


def test_profile_and_observer_still_see_every_step():
    m = reshape_chain_model()
    sess = qrt.InferenceSession(m.SerializeToString())
    x = np.ones((2, 5, 6), np.float32)
    sess.run(None, {"x": x})
    sess.run(None, {"x": x})  # specialised now
    prof: dict = {}
    sess._plan.execute({"x": x}, ["y", "z"], profile=prof)
    assert len(prof) == len(sess._plan.steps)


def test_size_and_range_chains_are_shape_only():
    """Size reads only its input's shape; Range and ConstantOfShape get their output shape from
    values that are themselves shape-only here, so the whole chain runs once per shape."""
    nodes = [helper.make_node("Size", ["x"], ["n"]),
             helper.make_node("Range", ["zero", "n", "one"], ["idx"]),
             helper.make_node("Cast", ["idx"], ["idxf"], to=TensorProto.FLOAT),
             helper.make_node("Shape", ["x"], ["sh"]),
             helper.make_node("ConstantOfShape", ["sh"], ["ones"],
                              value=numpy_helper.from_array(np.array([2.0], np.float32))),
             helper.make_node("Reshape", ["idxf", "sh"], ["idx2"]),
             helper.make_node("Mul", ["ones", "idx2"], ["w"]),
             helper.make_node("Add", ["x", "w"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
               [_out("y", TensorProto.FLOAT)], [_i64("zero", 0), _i64("one", 1)])
    sess = qrt.InferenceSession(m.SerializeToString(), optimize=False)
    plan = sess._plan
    assert sorted(plan.steps[k].node.op_type for k in plan.shape_only) == sorted(
        ["Size", "Range", "Cast", "Shape", "ConstantOfShape", "Reshape", "Mul"])
    ref = ReferenceEvaluator(m)
    for n in (2, 5, 2):
        x = np.arange(3 * n, dtype=np.float32).reshape(n, 3)
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], ref.run(None, {"x": x})[0])


def test_nonzero_count_is_recomputed_for_equal_shapes():
    """NonZero's output shape depends on the data: a Shape of it must run on every call, even
    when the feed shapes repeat (same shapes, different values, different counts)."""
    nodes = [helper.make_node("Greater", ["x", "zf"], ["g"]),
             helper.make_node("NonZero", ["g"], ["nz"]),
             helper.make_node("Shape", ["nz"], ["nzs"]),
             helper.make_node("Gather", ["nzs", "i1"], ["cnt"], axis=0),
             helper.make_node("Cast", ["cnt"], ["cntf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["x", "cntf"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
               [_out("y", TensorProto.FLOAT)],
               [numpy_helper.from_array(np.array(0, np.float32), "zf"), _i64("i1", 1)])
    sess = qrt.InferenceSession(m.SerializeToString())
    assert not sess._plan.shape_only
    ref = ReferenceEvaluator(m)
    rng = np.random.default_rng(4)
    for _ in range(4):
        x = rng.standard_normal((3, 4)).astype(np.float32)
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], ref.run(None, {"x": x})[0])
