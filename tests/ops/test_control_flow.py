"""Control flow (If, Loop, Scan, SequenceMap), sequences and optionals, checked against
onnx.reference.ReferenceEvaluator and onnxruntime, with and without qrt's passes: outer-scope
reads (also of values nothing else reads, which passes, shape specialisation and buffer frees must
keep), nesting, loop-carried state and scan outputs, changing shapes between calls, a QDQ conv
that still runs int8 before an If, and bad models and inputs failing with errors naming the node.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import qrt
from qrt.errors import ModelLoadError, NodeExecutionError, UnsupportedOpError

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
mk = helper.make_node


def vi(name, t=F, shape=None):
    return helper.make_tensor_value_info(name, t, shape)


def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def graph(nodes, inputs, outputs, inits=(), name="g"):
    return helper.make_graph(nodes, name, inputs, outputs, list(inits))


def model(nodes, inputs, outputs, inits=(), opset=17):
    m = helper.make_model(graph(nodes, inputs, outputs, inits),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def run_qrt(m, feeds, optimize=True):
    return qrt.InferenceSession(m, optimize=optimize, threads=1).run(None, feeds)


def run_ort(m, feeds):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def run_ref(m, feeds):
    return ReferenceEvaluator(m).run(None, feeds)


def same(got, want, tol=1e-6):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, list):
            assert isinstance(g, list) and len(g) == len(w)
            same(g, w, tol)
            continue
        w = np.asarray(w)
        assert isinstance(g, np.ndarray), type(g)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def check(m, feeds, ref=True, ortrt=True):
    """qrt with and without passes against onnxruntime and the reference evaluator."""
    wants = ([run_ort(m, feeds)] if ortrt else []) + ([run_ref(m, feeds)] if ref else [])
    for optimize in (True, False):
        got = run_qrt(m, feeds, optimize)
        for want in wants:
            same(got, want)


# ------------------------------------------------------------------------------------------- If


def _if_outer_model():
    """`a` and `b` are read only inside the branches (and `c` is a constant expression read only
    by else_branch: constant folding turns it into an initializer, which must stay)."""
    then_g = graph([mk("Add", ["a", "one"], ["t"])], [], [vi("t", F, [2, 3])],
                   [init("one", np.float32(1.0))], "then")
    else_g = graph([mk("Mul", ["b", "a"], ["e"]),
                    mk("Constant", [], ["k"], value=init("kv", np.float32(0.5))),
                    mk("Sub", ["e", "k"], ["e2"]), mk("Add", ["e2", "c"], ["e3"])],
                   [], [vi("e3", F, [2, 3])], name="else")
    nodes = [mk("Relu", ["x"], ["a"]), mk("Mul", ["x", "two"], ["b"]),
             mk("Add", ["c1", "c2"], ["c"]),
             mk("If", ["cond"], ["y"], name="the_if", then_branch=then_g, else_branch=else_g),
             mk("Neg", ["y"], ["z"])]
    return model(nodes, [vi("x", F, [2, 3]), vi("cond", B, [])],
                 [vi("y", F, [2, 3]), vi("z", F, [2, 3])],
                 [init("two", np.float32(2.0)), init("c1", np.float32(3.0)),
                  init("c2", np.float32(4.0))])


@pytest.mark.parametrize("cond", [True, False])
def test_if_reads_outer_values(cond):
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    check(_if_outer_model(), {"x": x, "cond": np.array(cond)})


def test_values_read_only_by_subgraphs_stay_in_the_graph():
    sess = qrt.InferenceSession(_if_outer_model(), threads=1)
    g = sess._graph
    node = next(n for n in g.nodes if n.op_type == "If")
    assert set(node.inputs[1:]) == {"a", "b", "c"}
    produced = {o for n in g.nodes for o in n.outputs} | set(g.initializers)
    assert {"a", "b", "c"} <= produced
    assert "c" in g.initializers  # folded, kept because the If reads it
    plan = sess._plan
    k = next(i for i, st in enumerate(plan.steps) if st.node is node)
    for st in plan.steps[:k]:  # nothing the If reads is freed before it runs
        assert not {plan.slot[n] for n in ("a", "b")} & set(st.frees)


def _shape_in_subgraph_model():
    """A Reshape target computed from Shape(x) in the outer graph and read only by a Loop body (a
    shape-only value: the plan specialises such steps per feed shapes), and `w`, read only by the
    body too."""
    body = graph([mk("Reshape", ["w", "target"], ["r"]), mk("Add", ["acc", "r"], ["acc2"]),
                  mk("Identity", ["c"], ["c2"])],
                 [vi("i", I64, []), vi("c", B, []), vi("acc", F, None)],
                 [vi("c2", B, []), vi("acc2", F, None)], name="body")
    nodes = [mk("Shape", ["x"], ["sh"]), mk("ReduceProd", ["sh"], ["n"], keepdims=1),
             mk("Mul", ["x", "two"], ["w"]),
             mk("Concat", ["n", "one"], ["target"], axis=0),
             mk("Loop", ["trip", "", "acc0"], ["out"], body=body, name="the_loop")]
    return model(nodes, [vi("x", F, ["a", "b"]), vi("acc0", F, ["n", 1])], [vi("out", F, None)],
                 [init("two", np.float32(2.0)), init("one", np.array([1], np.int64)),
                  init("trip", np.array(3, np.int64))])


def test_shape_only_value_read_by_subgraph_across_shape_changes():
    m = _shape_in_subgraph_model()
    rng = np.random.default_rng(1)
    for optimize in (True, False):
        sess = qrt.InferenceSession(m, optimize=optimize, threads=1)
        for shape in [(2, 3), (4, 5), (2, 3), (1, 7), (4, 5)]:
            x = rng.standard_normal(shape).astype(np.float32)
            acc0 = rng.standard_normal((x.size, 1)).astype(np.float32)
            feeds = {"x": x, "acc0": acc0}
            same(sess.run(None, feeds), run_ort(m, feeds), 1e-5)


# ----------------------------------------------------------------------------------------- Loop


def _nested_if_in_loop_model():
    """Loop over M iterations; the body's If reads `x` (two scopes out) and `half` (the body's own
    constant); the carried value is also a scan output."""
    then_g = graph([mk("Add", ["v_in", "x"], ["t"])], [], [vi("t", F, [3])], name="then")
    else_g = graph([mk("Mul", ["v_in", "half"], ["e"])], [], [vi("e", F, [3])], name="else")
    body = graph([mk("Mod", ["i", "two"], ["r"]), mk("Equal", ["r", "zero"], ["even"]),
                  mk("If", ["even"], ["v_out"], then_branch=then_g, else_branch=else_g,
                     name="inner_if"),
                  mk("Identity", ["c_in"], ["c_out"]), mk("Identity", ["v_out"], ["s"])],
                 [vi("i", I64, []), vi("c_in", B, []), vi("v_in", F, [3])],
                 [vi("c_out", B, []), vi("v_out", F, [3]), vi("s", F, [3])],
                 [init("two", np.array(2, np.int64)), init("zero", np.array(0, np.int64)),
                  init("half", np.float32(0.5))], name="body")
    nodes = [mk("Loop", ["M", "true", "v0"], ["v", "scan"], body=body, name="the_loop")]
    return model(nodes, [vi("x", F, [3]), vi("M", I64, [])],
                 [vi("v", F, [3]), vi("scan", F, [None, 3])],
                 [init("true", np.array(True)), init("v0", np.zeros(3, np.float32))])


@pytest.mark.parametrize("trips", [0, 1, 5])
def test_nested_if_inside_loop(trips):
    x = np.array([1.0, -2.0, 3.0], np.float32)
    feeds = {"x": x, "M": np.array(trips, np.int64)}
    if trips == 0:  # onnxruntime and the reference disagree on an empty scan output's shape
        v, scan = run_qrt(_nested_if_in_loop_model(), feeds)
        np.testing.assert_array_equal(v, np.zeros(3, np.float32))
        assert scan.shape == (0, 3) and scan.dtype == np.float32
        return
    check(_nested_if_in_loop_model(), feeds)


def _loop_state_model(with_m=True):
    """Loop-carried `acc` and a counter, a scan output, and a condition computed by the body:
    stops when sum(acc) reaches `limit` (or after M iterations)."""
    body = graph([mk("Add", ["acc", "x"], ["acc2"]), mk("Add", ["cnt", "one"], ["cnt2"]),
                  mk("ReduceSum", ["acc2"], ["s"], keepdims=0),
                  mk("Less", ["s", "limit"], ["c_out"]), mk("Cast", ["cnt2"], ["cnt2f"], to=F),
                  mk("Mul", ["acc2", "cnt2f"], ["scaled"])],
                 [vi("i", I64, []), vi("c_in", B, []), vi("acc", F, [4]), vi("cnt", I64, [])],
                 [vi("c_out", B, []), vi("acc2", F, [4]), vi("cnt2", I64, []),
                  vi("scaled", F, [4])],
                 [init("one", np.array(1, np.int64))], name="body")
    loop = mk("Loop", ["M" if with_m else "", "c0", "acc0", "cnt0"], ["acc", "cnt", "scan"],
              body=body, name="the_loop")
    ins = [vi("x", F, [4]), vi("limit", F, []), vi("c0", B, [])]
    if with_m:
        ins.append(vi("M", I64, []))
    return model([loop], ins, [vi("acc", F, [4]), vi("cnt", I64, []), vi("scan", F, [None, 4])],
                 [init("acc0", np.zeros(4, np.float32)), init("cnt0", np.array(0, np.int64))])


@pytest.mark.parametrize("limit,M", [(100.0, 3), (10.0, 20), (-1.0, 5)])
def test_loop_state_scan_outputs_and_condition(limit, M):
    feeds = {"x": np.array([0.5, 1.0, 1.5, 2.0], np.float32), "limit": np.array(limit, np.float32),
             "c0": np.array(True), "M": np.array(M, np.int64)}
    check(_loop_state_model(), feeds)


def test_loop_with_only_cond():
    m = _loop_state_model(with_m=False)
    feeds = {"x": np.array([0.5, 1.0, 1.5, 2.0], np.float32), "limit": np.array(30.0, np.float32),
             "c0": np.array(True)}
    check(m, feeds)
    acc, cnt, scan = run_qrt(m, feeds)
    assert int(cnt) == 6 and scan.shape == (6, 4)
    feeds["c0"] = np.array(False)  # never enters the body
    acc, cnt, scan = run_qrt(m, feeds)
    assert int(cnt) == 0 and scan.shape == (0, 4)


def test_loop_without_trip_count_or_cond_stops_on_false_condition():
    """Neither M nor cond: the body's condition output is the only way out (as in onnxruntime)."""
    body = graph([mk("Add", ["v", "one"], ["v2"]), mk("Less", ["v2", "limit"], ["c_out"])],
                 [vi("i", I64, []), vi("c_in", B, []), vi("v", F, [])],
                 [vi("c_out", B, []), vi("v2", F, [])], [init("one", np.float32(1.0))])
    m = model([mk("Loop", ["", "", "v0"], ["v"], body=body)], [vi("limit", F, []),
              vi("v0", F, [])], [vi("v", F, [])])
    feeds = {"limit": np.array(7.0, np.float32), "v0": np.array(0.0, np.float32)}
    same(run_qrt(m, feeds), run_ort(m, feeds))
    assert float(run_qrt(m, feeds)[0]) == 7.0


def test_loop_with_sequence_state():
    """A sequence as loop-carried value (opset 13+), filled by SequenceInsert per iteration."""
    body = graph([mk("Cast", ["i"], ["fi"], to=F), mk("Mul", ["x", "fi"], ["xi"]),
                  mk("SequenceInsert", ["seq", "xi"], ["seq2"]), mk("Identity", ["c"], ["c2"])],
                 [vi("i", I64, []), vi("c", B, []),
                  helper.make_tensor_sequence_value_info("seq", F, None)],
                 [vi("c2", B, []), helper.make_tensor_sequence_value_info("seq2", F, None)])
    nodes = [mk("SequenceEmpty", [], ["empty"], dtype=F),
             mk("Loop", ["M", "", "empty"], ["seq"], body=body),
             mk("ConcatFromSequence", ["seq"], ["cat"], axis=0)]
    m = model(nodes, [vi("x", F, [2]), vi("M", I64, [])],
              [helper.make_tensor_sequence_value_info("seq", F, None), vi("cat", F, None)])
    feeds = {"x": np.array([1.0, 2.0], np.float32), "M": np.array(4, np.int64)}
    got = run_qrt(m, feeds)
    same(got, run_ort(m, feeds))
    assert len(got[0]) == 4


# ----------------------------------------------------------------------------------------- Scan


def _scan_model(in_axes, in_dirs, out_axes, out_dirs):
    """Two scan inputs with their own axes and directions; a state and two scan outputs."""
    body = graph([mk("Mul", ["xi", "yi"], ["p"]), mk("Add", ["s", "p"], ["s2"]),
                  mk("Identity", ["s2"], ["o1"]), mk("Sub", ["xi", "yi"], ["o2"]),
                  mk("Mul", ["o2", "k"], ["o3"])],
                 [vi("s", F, [2]), vi("xi", F, [2]), vi("yi", F, [2])],
                 [vi("s2", F, [2]), vi("o1", F, [2]), vi("o3", F, [2])], name="body")
    node = mk("Scan", ["s0", "X", "Y"], ["s", "out1", "out2"], body=body, num_scan_inputs=2,
              scan_input_axes=in_axes, scan_input_directions=in_dirs,
              scan_output_axes=out_axes, scan_output_directions=out_dirs, name="the_scan")
    xs = [2, 2]
    xs[in_axes[0] % 2] = 5
    ys = [2, 2]
    ys[in_axes[1] % 2] = 5
    return model([node], [vi("s0", F, [2]), vi("X", F, xs), vi("Y", F, ys), vi("k", F, [])],
                 [vi("s", F, [2]), vi("out1", F, None), vi("out2", F, None)]), xs, ys


@pytest.mark.parametrize("in_axes,in_dirs,out_axes,out_dirs", [
    ([0, 0], [0, 0], [0, 0], [0, 0]),
    ([1, 0], [0, 1], [0, 1], [1, 0]),
    ([-1, -2], [1, 1], [-1, 0], [0, 1]),
])
def test_scan_axes_and_directions(in_axes, in_dirs, out_axes, out_dirs):
    m, xs, ys = _scan_model(in_axes, in_dirs, out_axes, out_dirs)
    rng = np.random.default_rng(2)
    feeds = {"s0": rng.standard_normal(2).astype(np.float32),
             "X": rng.standard_normal(xs).astype(np.float32),
             "Y": rng.standard_normal(ys).astype(np.float32), "k": np.array(3.0, np.float32)}
    check(m, feeds, ref=False)
    # plain numpy: the scan written out
    X = np.moveaxis(feeds["X"], in_axes[0], 0)
    Y = np.moveaxis(feeds["Y"], in_axes[1], 0)
    X, Y = (X[::-1] if in_dirs[0] else X), (Y[::-1] if in_dirs[1] else Y)
    s, o1, o2 = feeds["s0"], [], []
    for xi, yi in zip(X, Y):
        s = s + xi * yi
        o1.append(s)
        o2.append((xi - yi) * 3.0)
    o1, o2 = (o1[::-1] if out_dirs[0] else o1), (o2[::-1] if out_dirs[1] else o2)
    got = run_qrt(m, feeds)
    np.testing.assert_allclose(got[0], s, rtol=1e-6)
    np.testing.assert_allclose(got[1], np.stack(o1, axis=out_axes[0]), rtol=1e-6)
    np.testing.assert_allclose(got[2], np.stack(o2, axis=out_axes[1]), rtol=1e-6)


def test_scan_shape_changes_across_calls():
    m, _, _ = _scan_model([0, 0], [0, 0], [0, 0], [0, 0])
    sess = qrt.InferenceSession(m, threads=1)
    m.graph.input[1].type.tensor_type.shape.dim[0].dim_param = "n"
    m.graph.input[2].type.tensor_type.shape.dim[0].dim_param = "n"
    sess = qrt.InferenceSession(m, threads=1)
    rng = np.random.default_rng(3)
    for n in (5, 1, 7, 5):
        feeds = {"s0": np.ones(2, np.float32), "X": rng.standard_normal((n, 2)).astype(np.float32),
                 "Y": rng.standard_normal((n, 2)).astype(np.float32), "k": np.array(1.0, np.float32)}
        same(sess.run(None, feeds), run_ort(m, feeds), 1e-5)


# ------------------------------------------------------------------------- sequences, optionals


def test_sequence_ops():
    S = helper.make_tensor_sequence_value_info
    nodes = [mk("SplitToSequence", ["x", "split"], ["seq"], axis=0),
             mk("SequenceInsert", ["seq", "y", "pos1"], ["seq2"]),
             mk("SequenceErase", ["seq2", "neg1"], ["seq3"]),
             mk("SequenceLength", ["seq3"], ["n"]),
             mk("SequenceAt", ["seq3", "pos1"], ["at"]),
             mk("ConcatFromSequence", ["seq3"], ["cat"], axis=0),
             mk("SequenceEmpty", [], ["e"], dtype=F),
             mk("SequenceInsert", ["e", "y"], ["e2"]),
             mk("SequenceLength", ["e2"], ["n2"]),
             mk("SequenceConstruct", ["y", "y"], ["pair"]),
             mk("ConcatFromSequence", ["pair"], ["stk"], axis=-1, new_axis=1),
             mk("SplitToSequence", ["x"], ["rows"], axis=1, keepdims=0),
             mk("SequenceAt", ["rows", "neg1"], ["last_row"])]
    m = model(nodes, [vi("x", F, [6, 2]), vi("y", F, [2, 2])],
              [vi("n", I64, []), vi("at", F, None), vi("cat", F, None), vi("n2", I64, []),
               vi("stk", F, None), S("seq3", F, None), vi("last_row", F, None)],
              [init("split", np.array([1, 2, 3], np.int64)), init("pos1", np.array(1, np.int64)),
               init("neg1", np.array(-1, np.int64))])
    rng = np.random.default_rng(4)
    feeds = {"x": rng.standard_normal((6, 2)).astype(np.float32),
             "y": rng.standard_normal((2, 2)).astype(np.float32)}
    check(m, feeds)


def test_sequence_map_reads_outer_value():
    S = helper.make_tensor_sequence_value_info
    body = graph([mk("Add", ["el", "bias"], ["o"]), mk("Shape", ["el"], ["sh"])],
                 [vi("el", F, None)], [vi("o", F, None), vi("sh", I64, None)])
    nodes = [mk("Relu", ["b"], ["bias"]),
             mk("SplitToSequence", ["x", "split"], ["seq"], axis=0),
             mk("SequenceMap", ["seq"], ["mapped", "shapes"], body=body, name="the_map"),
             mk("ConcatFromSequence", ["mapped"], ["cat"], axis=0)]
    m = model(nodes, [vi("x", F, [5, 3]), vi("b", F, [3])],
              [vi("cat", F, None), S("shapes", I64, None)],
              [init("split", np.array([2, 3], np.int64))])
    rng = np.random.default_rng(5)
    feeds = {"x": rng.standard_normal((5, 3)).astype(np.float32),
             "b": rng.standard_normal(3).astype(np.float32)}
    check(m, feeds, ref=False)  # the reference evaluator's SequenceMap sees no outer values


def test_optional_ops():
    opt_type = helper.make_tensor_type_proto(F, None)
    nodes = [mk("Optional", ["x"], ["ox"]), mk("Optional", [], ["none"], type=opt_type),
             mk("OptionalHasElement", ["ox"], ["has"]),
             mk("OptionalHasElement", ["none"], ["has_none"]),
             mk("OptionalGetElement", ["ox"], ["back"]),
             mk("If", ["has_none"], ["picked"],
                then_branch=graph([mk("Identity", ["x"], ["a"])], [], [vi("a", F, None)]),
                else_branch=graph([mk("Neg", ["back"], ["b"])], [], [vi("b", F, None)]))]
    m = model(nodes, [vi("x", F, [3])], [vi("has", B, []), vi("has_none", B, []),
                                         vi("back", F, None), vi("picked", F, None)], opset=18)
    feeds = {"x": np.array([1.0, -2.0, 3.0], np.float32)}
    check(m, feeds, ref=False)  # the reference evaluator says an empty Optional has an element
    assert not run_qrt(m, feeds)[1]


# ------------------------------------------------------------------------- QDQ before an If


def test_qdq_conv_before_if_still_fuses_to_int8():
    rng = np.random.default_rng(6)
    w = rng.integers(-60, 60, (4, 2, 3, 3)).astype(np.int8)
    then_g = graph([mk("Relu", ["y"], ["t"])], [], [vi("t", F, None)], name="then")
    else_g = graph([mk("Neg", ["y"], ["e"])], [], [vi("e", F, None)], name="else")
    nodes = [mk("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             mk("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             mk("DequantizeLinear", ["w", "ws"], ["wd"], axis=0),
             mk("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1], name="the_conv"),
             mk("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
             mk("DequantizeLinear", ["cq", "ys", "yz"], ["y"]),
             mk("If", ["cond"], ["out"], then_branch=then_g, else_branch=else_g, name="the_if")]
    m = model(nodes, [vi("x", F, [1, 2, 6, 6]), vi("cond", B, [])], [vi("out", F, None)],
              [init("w", w), init("ws", np.full(4, 0.01, np.float32)),
               init("xs", np.float32(0.02)), init("xz", np.uint8(128)),
               init("ys", np.float32(0.05)), init("yz", np.uint8(120))])
    sess = qrt.InferenceSession(m, threads=1)
    report = {e["name"]: e for e in sess.lowering_report()}
    assert report["the_conv"]["precision"] == "int8", report["the_conv"]
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond)}
        got = sess.run(None, feeds)[0]
        plain = run_qrt(m, feeds, optimize=False)[0]
        np.testing.assert_allclose(got, plain, atol=0.05 + 1e-6)  # within one output step
        np.testing.assert_allclose(got, run_ort(m, feeds)[0], atol=0.05 + 1e-6)


# ----------------------------------------------------------------------------------- bad input


def _if_model(then_g, else_g, cond_shape=()):
    return model([mk("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g,
                     name="bad_if")], [vi("x", F, [2]), vi("cond", B, list(cond_shape))],
                 [vi("y", F, None)])


def _branch(*outs, inputs=()):
    nodes = [mk("Neg", ["x"], [o]) for o in outs]
    return graph(nodes, list(inputs), [vi(o, F, None) for o in outs])


def test_if_branches_with_different_output_counts_refused():
    with pytest.raises(ModelLoadError, match="bad_if.*different output counts"):
        qrt.InferenceSession(_if_model(_branch("a"), _branch("b", "c")))


def test_if_branch_with_inputs_refused():
    with pytest.raises(ModelLoadError, match="bad_if.*then_branch.*no inputs"):
        qrt.InferenceSession(_if_model(_branch("a", inputs=[vi("q", F, [2])]), _branch("b")))


def test_subgraph_reading_an_undefined_value_refused():
    g = graph([mk("Add", ["x", "nowhere"], ["a"], name="reader")], [], [vi("a", F, None)])
    with pytest.raises(ModelLoadError, match="bad_if.*else_branch.*reader.*'nowhere'"):
        qrt.InferenceSession(_if_model(_branch("b"), g))


def test_unsupported_op_inside_subgraph_reported():
    g = graph([mk("NoSuchOp", ["x"], ["a"], name="odd")], [], [vi("a", F, None)])
    with pytest.raises(UnsupportedOpError, match="NoSuchOp.*bad_if/odd"):
        qrt.InferenceSession(_if_model(_branch("b"), g))


def test_if_condition_not_a_scalar():
    sess = qrt.InferenceSession(_if_model(_branch("a"), _branch("b"), cond_shape=(2,)))
    with pytest.raises(NodeExecutionError, match="bad_if.*condition must be a scalar"):
        sess.run(None, {"x": np.ones(2, np.float32), "cond": np.array([True, False])})


def _loop_body(n_in=3, n_out=2):
    ins = [vi("i", I64, []), vi("c", B, []), vi("v", F, None)][:n_in]
    nodes = [mk("Identity", ["c"], ["c2"]), mk("Neg", ["v"], ["v2"]), mk("Abs", ["v"], ["v3"])]
    outs = [vi("c2", B, []), vi("v2", F, None), vi("v3", F, None)][:n_out]
    return graph(nodes, ins, outs)


def test_loop_body_with_wrong_input_count_refused():
    m = model([mk("Loop", ["M", "", "v0"], ["v"], body=_loop_body(n_in=2), name="bad_loop")],
              [vi("M", I64, None), vi("v0", F, [2])], [vi("v", F, None)])
    with pytest.raises(ModelLoadError, match="bad_loop.*'body'.*2 \\+ 1 inputs"):
        qrt.InferenceSession(m)


def test_loop_body_with_wrong_output_count_refused():
    m = model([mk("Loop", ["M", "", "v0"], ["v"], body=_loop_body(n_out=3), name="bad_loop")],
              [vi("M", I64, None), vi("v0", F, [2])], [vi("v", F, None)])
    with pytest.raises(ModelLoadError, match="bad_loop.*'body'.*returns 3"):
        qrt.InferenceSession(m)


def test_scan_body_with_wrong_input_count_refused():
    body = graph([mk("Identity", ["s"], ["s2"])], [vi("s", F, None)], [vi("s2", F, None)])
    m = model([mk("Scan", ["s0", "X"], ["s"], body=body, num_scan_inputs=1, name="bad_scan")],
              [vi("s0", F, [2]), vi("X", F, [3, 2])], [vi("s", F, None)])
    with pytest.raises(ModelLoadError, match="bad_scan.*'body'.*1 state \\+ 1 scan input"):
        qrt.InferenceSession(m)


def test_loop_trip_count_not_a_scalar():
    m = model([mk("Loop", ["M", "", "v0"], ["v"], body=_loop_body(), name="bad_loop")],
              [vi("M", I64, None), vi("v0", F, [2])], [vi("v", F, None)])
    sess = qrt.InferenceSession(m)
    with pytest.raises(NodeExecutionError, match="bad_loop.*trip count M must be a scalar"):
        sess.run(None, {"M": np.array([2, 3], np.int64), "v0": np.ones(2, np.float32)})
    np.testing.assert_array_equal(  # one element is fine (onnxruntime takes [1] too)
        sess.run(None, {"M": np.array([3], np.int64), "v0": np.ones(2, np.float32)})[0],
        -np.ones(2, np.float32))


def test_error_inside_loop_body_names_loop_iteration_and_node():
    body = graph([mk("Identity", ["c"], ["c2"]), mk("Reshape", ["v", "shp"], ["r"], name="rs"),
                  mk("Concat", ["v", "extra"], ["v2"], axis=0)],
                 [vi("i", I64, []), vi("c", B, []), vi("v", F, None)],
                 [vi("c2", B, []), vi("v2", F, None), vi("r", F, None)],
                 [init("shp", np.array([2, -1], np.int64)), init("extra", np.ones(1, np.float32))])
    m = model([mk("Loop", ["M", "", "v0"], ["v", "rs_out"], body=body, name="the_loop")],
              [vi("M", I64, []), vi("v0", F, [2])], [vi("v", F, None), vi("rs_out", F, None)])
    sess = qrt.InferenceSession(m)
    with pytest.raises(NodeExecutionError, match="the_loop.*iteration 1.*Reshape node 'rs'"):
        sess.run(None, {"M": np.array(3, np.int64), "v0": np.ones(2, np.float32)})


def test_sequence_op_on_a_tensor_names_the_node():
    m = model([mk("SequenceLength", ["x"], ["n"], name="len_of_tensor")], [vi("x", F, [2])],
              [vi("n", I64, [])])
    sess = qrt.InferenceSession(m)
    with pytest.raises(NodeExecutionError, match="len_of_tensor.*must be a sequence"):
        sess.run(None, {"x": np.ones(2, np.float32)})


def test_sequence_map_over_a_tensor_names_the_node():
    body = graph([mk("Neg", ["el"], ["o"])], [vi("el", F, None)], [vi("o", F, None)])
    m = model([mk("SequenceMap", ["x"], ["o"], body=body, name="map_tensor")],
              [vi("x", F, [2])], [helper.make_tensor_sequence_value_info("o", F, None)])
    with pytest.raises(NodeExecutionError, match="map_tensor.*must be a sequence"):
        qrt.InferenceSession(m).run(None, {"x": np.ones(2, np.float32)})


def test_sequence_at_out_of_range_names_the_node():
    m = model([mk("SplitToSequence", ["x"], ["s"]),
               mk("SequenceAt", ["s", "p"], ["y"], name="at_node")],
              [vi("x", F, [2, 2]), vi("p", I64, [])], [vi("y", F, None)])
    with pytest.raises(NodeExecutionError, match="at_node.*out of range"):
        qrt.InferenceSession(m).run(None, {"x": np.ones((2, 2), np.float32),
                                           "p": np.array(2, np.int64)})


def test_subgraph_constants_are_not_handed_out():
    """A branch returning its own initializer: the caller's copy can be written freely."""
    then_g = graph([], [], [vi("k", F, [2])], [init("k", np.array([1.0, 2.0], np.float32))])
    m = _if_model(then_g, _branch("b"))
    sess = qrt.InferenceSession(m)
    feeds = {"x": np.ones(2, np.float32), "cond": np.array(True)}
    y = sess.run(None, feeds)[0]
    y[:] = 0
    np.testing.assert_array_equal(sess.run(None, feeds)[0], [1.0, 2.0])


def _deep_model(direct):
    """Scan inside If inside Loop, and an If inside the Loop's else path whose then_branch returns
    the outer `x` itself (`direct`; onnxruntime wants an Identity there)."""
    then_g = graph([], [], [vi("x", F, [2])]) if direct else graph(
        [mk("Identity", ["x"], ["xx"])], [], [vi("xx", F, [2])])
    else_g = graph([mk("Neg", ["x"], ["n"])], [], [vi("n", F, [2])])
    sbody = graph([mk("Add", ["s", "xi"], ["s2"]), mk("Mul", ["s2", "w"], ["o"])],
                  [vi("s", F, [2]), vi("xi", F, [2])], [vi("s2", F, [2]), vi("o", F, [2])])
    then2 = graph([mk("Scan", ["v", "X"], ["sf", "so"], body=sbody, num_scan_inputs=1)], [],
                  [vi("sf", F, [2])])
    else2 = graph([mk("If", ["c2"], ["y"], then_branch=then_g, else_branch=else_g)], [],
                  [vi("y", F, [2])])
    body = graph([mk("If", ["c_in"], ["v2"], then_branch=then2, else_branch=else2),
                  mk("Identity", ["c_in"], ["c_out"])],
                 [vi("i", I64, []), vi("c_in", B, []), vi("v", F, [2])],
                 [vi("c_out", B, []), vi("v2", F, [2])])
    return model([mk("Loop", ["M", "c", "x"], ["out"], body=body, name="outer_loop")],
                 [vi("x", F, [2]), vi("X", F, [3, 2]), vi("w", F, [2]), vi("c", B, []),
                  vi("c2", B, []), vi("M", I64, [])], [vi("out", F, [2])])


@pytest.mark.parametrize("c,c2", [(True, True), (False, True), (False, False)])
def test_three_levels_of_nesting(c, c2):
    rng = np.random.default_rng(7)
    feeds = {"x": rng.standard_normal(2).astype(np.float32),
             "X": rng.standard_normal((3, 2)).astype(np.float32),
             "w": rng.standard_normal(2).astype(np.float32), "c": np.array(c),
             "c2": np.array(c2), "M": np.array(3, np.int64)}
    check(_deep_model(False), feeds, ref=False)
    same(run_qrt(_deep_model(True), feeds), run_ort(_deep_model(False), feeds))
    loop = qrt.InferenceSession(_deep_model(True))._graph.nodes[0]
    assert loop.inputs[3:] == ["c2", "x", "X", "w"]  # every level's outer reads, on the Loop


def test_conditions_must_be_bool_and_trip_counts_int64():
    """A float condition would count NaN as true; a float trip count 2.7 would run 2 times."""
    then_g = graph([mk("Identity", ["x"], ["t"])], [], [vi("t", F, [3])], name="then")
    else_g = graph([mk("Neg", ["x"], ["e"])], [], [vi("e", F, [3])], name="else")
    m = model([mk("If", ["c"], ["y"], name="the_if", then_branch=then_g, else_branch=else_g)],
              [vi("x", F, [3]), vi("c", F, [])], [vi("y", F, [3])])
    with pytest.raises(NodeExecutionError, match="the_if.*condition must be bool"):
        run_qrt(m, {"x": np.ones(3, np.float32), "c": np.float32(np.nan)})
    body = graph([mk("Identity", ["cin"], ["cout"]), mk("Add", ["v", "one"], ["v2"])],
                 [vi("i", TensorProto.INT64, []), vi("cin", B, []), vi("v", F, [3])],
                 [vi("cout", B, []), vi("v2", F, [3])], [init("one", np.float32(1.0))], "body")
    m = model([mk("Loop", ["M", "", "x"], ["y"], name="the_loop", body=body)],
              [vi("x", F, [3]), vi("M", F, [])], [vi("y", F, [3])])
    with pytest.raises(NodeExecutionError, match="the_loop.*trip count M must be int64"):
        run_qrt(m, {"x": np.ones(3, np.float32), "M": np.float32(2.7)})
