"""InferenceSession mirrors onnxruntime's API: inputs/outputs, feed checks, threads, no aliasing."""
from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import qrt
from qrt.errors import InvalidFeedError


def two_input_model():
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 3])
    s = helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 3])
    r = helper.make_tensor_value_info("relu", TensorProto.FLOAT, ["batch", 3])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [3])
    nodes = [helper.make_node("Add", ["a", "b"], ["sum"]),
             helper.make_node("Relu", ["sum"], ["relu"]),
             helper.make_node("Identity", ["wc"], ["w"])]
    init = [numpy_helper.from_array(np.array([1, 2, 3], np.float32), "wc")]
    g = helper.make_graph(nodes, "g", [a, b], [s, r, w], init)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def sess():
    return qrt.InferenceSession(two_input_model(), threads=1)


def test_inputs_outputs_mirror_onnxruntime(sess):
    peer = ort.InferenceSession(two_input_model().SerializeToString(),
                                providers=["CPUExecutionProvider"])
    for mine, theirs in [(sess.get_inputs(), peer.get_inputs()),
                         (sess.get_outputs(), peer.get_outputs())]:
        assert [(a.name, a.shape, a.type) for a in mine] == \
               [(a.name, a.shape, a.type) for a in theirs]


def test_run_all_and_selected_outputs(sess):
    a = np.array([[-1, 0, 2]], np.float32)
    b = np.array([[0.5, -3, 1]], np.float32)
    s, r, w = sess.run(None, {"a": a, "b": b})
    np.testing.assert_array_equal(s, a + b)
    np.testing.assert_array_equal(r, np.maximum(a + b, 0))
    (r2,) = sess.run(["relu"], {"a": a, "b": b})
    np.testing.assert_array_equal(r2, r)


def test_outputs_do_not_alias_weights(sess):
    a = np.zeros((1, 3), np.float32)
    w = sess.run(["w"], {"a": a, "b": a})[0]
    w[:] = 100
    np.testing.assert_array_equal(sess.run(["w"], {"a": a, "b": a})[0], [1, 2, 3])


def test_missing_and_unknown_feeds_named(sess):
    a = np.zeros((1, 3), np.float32)
    with pytest.raises(InvalidFeedError, match=r"missing input\(s\) \['b'\]"):
        sess.run(None, {"a": a})
    with pytest.raises(InvalidFeedError, match=r"unknown input\(s\) \['c'\]"):
        sess.run(None, {"a": a, "b": a, "c": a})


def test_wrong_dtype_named(sess):
    a = np.zeros((1, 3), np.float32)
    with pytest.raises(InvalidFeedError, match="input 'b': expected dtype float32.*got float64"):
        sess.run(None, {"a": a, "b": a.astype(np.float64)})


def test_wrong_rank_named(sess):
    a = np.zeros((1, 3), np.float32)
    with pytest.raises(InvalidFeedError, match="input 'a': expected rank 2"):
        sess.run(None, {"a": a[0], "b": a})


def test_wrong_fixed_dim_named(sess):
    with pytest.raises(InvalidFeedError, match="input 'a': dimension 1 must be 3"):
        sess.run(None, {"a": np.zeros((1, 4), np.float32), "b": np.zeros((1, 3), np.float32)})


def test_symbolic_dim_must_agree(sess):
    with pytest.raises(InvalidFeedError, match="'batch'"):
        sess.run(None, {"a": np.zeros((2, 3), np.float32), "b": np.zeros((5, 3), np.float32)})


def test_symbolic_dims_resolved_per_run(sess):
    for n in (1, 7, 0):
        a = np.ones((n, 3), np.float32)
        assert sess.run(["sum"], {"a": a, "b": a})[0].shape == (n, 3)


def test_feed_checks_hold_after_the_shapes_were_seen():
    """Valid calls remember their input shapes (a cheaper check next time); every bad feed is
    still refused with the same message after them, and odd but valid feeds still run."""
    s = qrt.InferenceSession(two_input_model(), threads=1)
    a = np.ones((2, 3), np.float32)
    for _ in range(2):
        np.testing.assert_array_equal(s.run(["sum"], {"a": a, "b": a})[0], a + a)
    with pytest.raises(InvalidFeedError, match="input 'b': expected dtype float32"):
        s.run(None, {"a": a, "b": a.astype(np.float64)})
    with pytest.raises(InvalidFeedError, match=r"missing input\(s\) \['b'\]"):
        s.run(None, {"a": a})
    with pytest.raises(InvalidFeedError, match=r"unknown input\(s\) \['c'\]"):
        s.run(None, {"a": a, "c": a})
    with pytest.raises(InvalidFeedError, match="'batch'"):
        s.run(None, {"a": a, "b": np.ones((3, 3), np.float32)})
    with pytest.raises(InvalidFeedError, match="expected a numpy array"):
        s.run(None, {"a": a, "b": object()})
    strided = np.ones((2, 6), np.float32)[:, ::2]
    np.testing.assert_array_equal(s.run(["sum"], {"a": a, "b": strided})[0], a + 1)
    as_list = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    np.testing.assert_array_equal(s.run(["sum"], {"a": a, "b": as_list})[0],
                                  a + np.array(as_list, np.float32))


def test_feed_must_be_dict(sess):
    with pytest.raises(InvalidFeedError, match="must be a dict"):
        sess.run(None, [np.zeros((1, 3), np.float32)])


def test_unknown_output_name(sess):
    a = np.zeros((1, 3), np.float32)
    with pytest.raises(InvalidFeedError, match="unknown output name"):
        sess.run(["nope"], {"a": a, "b": a})


def test_non_contiguous_feed(sess):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)[:, :3]
    np.testing.assert_array_equal(sess.run(["sum"], {"a": a, "b": a})[0], a + a)


def test_bad_thread_count():
    with pytest.raises(ValueError, match="threads"):
        qrt.InferenceSession(two_input_model(), threads=0)


def test_concurrent_runs_from_many_threads(sess):
    rng = np.random.default_rng(0)
    feeds = [{"a": rng.standard_normal((4, 3)).astype(np.float32),
              "b": rng.standard_normal((4, 3)).astype(np.float32)} for _ in range(16)]
    want = [sess.run(None, f) for f in feeds]
    got = [None] * len(feeds)
    errors = []

    def work(i):
        try:
            for _ in range(20):
                got[i] = sess.run(None, feeds[i])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(feeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for g, w in zip(got, want):
        for x, y in zip(g, w):
            np.testing.assert_array_equal(x, y)


def test_model_from_path_bytes_and_proto(tmp_path):
    m = two_input_model()
    p = tmp_path / "m.onnx"
    p.write_bytes(m.SerializeToString())
    a = np.ones((2, 3), np.float32)
    outs = [qrt.InferenceSession(src).run(["sum"], {"a": a, "b": a})[0]
            for src in (str(p), p, m.SerializeToString(), m)]
    for o in outs:
        np.testing.assert_array_equal(o, 2 * a)


def test_cuda_device_is_refused_clearly_without_gpu_support(monkeypatch):
    # No usable GPU (the simulator switched off): a clear QrtError, never a silent run on the CPU.
    # (device="cuda" itself is tested in tests/cuda, on the simulator.)
    import qrt.cuda_device as cd
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    try:
        cd.require_cuda()
    except qrt.QrtError:
        pass
    else:
        pytest.skip("a CUDA GPU is usable here; the refusal path cannot be exercised")
    with pytest.raises(qrt.QrtError, match="CUDA|cuda"):
        qrt.InferenceSession(two_input_model(), device="cuda")


def test_unknown_device():
    with pytest.raises(ValueError, match="device"):
        qrt.InferenceSession(two_input_model(), device="tpu")


def _typed_identity(elem):
    x = helper.make_tensor_value_info("a", elem, [2])
    y = helper.make_tensor_value_info("y", elem, [2])
    g = helper.make_graph([helper.make_node("Identity", ["a"], ["y"])], "g", [x], [y])
    return qrt.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


@pytest.mark.parametrize("elem,value,match", [
    (TensorProto.INT64, [1.7, 2.9], "not representable as int64"),
    (TensorProto.UINT8, [1.5, 255.9], "not representable as uint8"),
    (TensorProto.UINT8, [-1, 300], "not representable as uint8"),
    (TensorProto.INT64, [2 ** 70, 1], "not a numeric tensor"),
    (TensorProto.FLOAT, [[1.0], [2.0, 3.0]], "cannot make an array"),
    (TensorProto.FLOAT, ["a", "b"], "not a numeric tensor"),
])
def test_python_list_feeds_that_do_not_convert_exactly_are_refused(elem, value, match):
    with pytest.raises(InvalidFeedError, match=match):
        _typed_identity(elem).run(None, {"a": value})


@pytest.mark.parametrize("elem,value,want", [
    (TensorProto.INT64, [1, 2], np.array([1, 2], np.int64)),
    (TensorProto.UINT8, [0, 255], np.array([0, 255], np.uint8)),
    (TensorProto.FLOAT, [1, 2.5], np.array([1, 2.5], np.float32)),
    (TensorProto.BOOL, [True, False], np.array([True, False])),
])
def test_python_list_feeds_that_convert_exactly_run(elem, value, want):
    got = _typed_identity(elem).run(None, {"a": value})[0]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_big_endian_feed_is_named_as_such():
    with pytest.raises(InvalidFeedError, match="big-endian"):
        _typed_identity(TensorProto.FLOAT).run(None, {"a": np.ones(2, ">f4")})


def _seq_concat_model():
    s = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0)], "g", [s],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return qrt.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


@pytest.mark.parametrize("seq,match", [
    ([np.ones((2, 3), np.float32), np.zeros((2, 3), np.int64)], "element 1: expected dtype float32"),
    ([np.ones(2, np.float64)], "element 0: expected dtype float32"),
    ([np.array(["a", "b"])], "element 0"),
    ([object()], "expected a numpy array"),
])
def test_sequence_feed_elements_have_the_declared_type(seq, match):
    with pytest.raises(InvalidFeedError, match=match):
        _seq_concat_model().run(None, {"s": seq})


def test_sequence_feed_of_the_declared_type_runs():
    y = _seq_concat_model().run(None, {"s": [np.ones((1, 2), np.float32), [[2.0, 3.0]]]})[0]
    np.testing.assert_array_equal(y, np.array([[1, 1], [2, 3]], np.float32))


def test_an_output_of_another_type_than_declared_is_refused():
    """A model whose output is declared float but computes int64 (onnxruntime refuses it at
    load): the run names the output instead of handing out the other type."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    g = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT64)], "g", [x],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    s = qrt.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(qrt.errors.NodeExecutionError, match="output 'y'.*int64.*declares it float32"):
        s.run(None, {"x": np.ones(2, np.float32)})
