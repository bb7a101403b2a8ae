"""Bad models get a clear error that names the problem, never a crash, a hang or a wrong answer."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qrt
from qrt.errors import ModelLoadError, UnsupportedOpError


def relu_model(opset=17, ir_version=None):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    if ir_version is not None:
        m.ir_version = ir_version
    return m


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nope.onnx"
    with pytest.raises(ModelLoadError, match="nope.onnx: no such file"):
        qrt.InferenceSession(str(path))


def test_directory_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="is a directory"):
        qrt.InferenceSession(str(tmp_path))


def test_empty_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty file"):
        qrt.InferenceSession(str(p))


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.7, 0.9, 0.97])
def test_truncated_file(tmp_path, fraction):
    data = relu_model().SerializeToString()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelLoadError, match="cut.onnx"):
        qrt.InferenceSession(str(p))


def test_garbage_bytes():
    rng = np.random.default_rng(0)
    for _ in range(20):
        junk = rng.integers(0, 256, size=int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
        with pytest.raises(ModelLoadError):
            qrt.InferenceSession(junk)


def test_wrong_argument_type():
    with pytest.raises(TypeError, match="path, bytes or onnx.ModelProto"):
        qrt.InferenceSession(12345)


@pytest.mark.parametrize("opset", [5, 6])  # qrt loads opsets >= 7
def test_opset_too_old(opset):
    with pytest.raises(ModelLoadError, match=f"opset {opset} is outside"):
        qrt.InferenceSession(relu_model(opset))


def test_opset_too_new():
    with pytest.raises(ModelLoadError, match="opset 999 is outside"):
        qrt.InferenceSession(relu_model(999))


def test_ir_version_too_new():
    with pytest.raises(ModelLoadError, match="IR version 999"):
        qrt.InferenceSession(relu_model(ir_version=999))


def test_every_unsupported_op_listed_at_once():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])
    nodes = [
        helper.make_node("TfIdfVectorizer", ["x"], ["a"], name="hm1"),
        helper.make_node("Relu", ["a"], ["b"], name="ok"),
        helper.make_node("TfIdfVectorizer", ["b"], ["c"], name="hm2"),
        helper.make_node("FancyOp", ["c"], ["y"], name="custom", domain="com.example"),
    ]
    g = helper.make_graph(nodes, "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("com.example", 1)])
    with pytest.raises(UnsupportedOpError) as ei:
        qrt.InferenceSession(m)
    msg = str(ei.value)
    assert "TfIdfVectorizer" in msg and "'hm1'" in msg and "'hm2'" in msg
    assert "FancyOp" in msg and "com.example" in msg and "'custom'" in msg
    assert "Relu" not in msg
    assert {op for op, _, _ in ei.value.ops} == {"TfIdfVectorizer", "FancyOp"}


def test_undefined_input_names_node():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    g = helper.make_graph([helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")], "g",
                          [x], [y])
    with pytest.raises(ModelLoadError, match="adder.*'ghost'"):
        qrt.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_cycle_is_reported_not_hung():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
             helper.make_node("Relu", ["a"], ["b"], name="n2"),
             helper.make_node("Identity", ["b"], ["y"], name="n3")]
    g = helper.make_graph(nodes, "g", [x], [y])
    with pytest.raises(ModelLoadError, match="cycle"):
        qrt.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_value_produced_twice():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="a"),
             helper.make_node("Relu", ["x"], ["y"], name="b")]
    g = helper.make_graph(nodes, "g", [x], [y])
    with pytest.raises(ModelLoadError, match="'y' is produced more than once"):
        qrt.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_missing_graph_output():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("nothing", TensorProto.FLOAT, [2])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    with pytest.raises(ModelLoadError, match="'nothing' is never computed"):
        qrt.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def _external_model(tmp_path, location):
    w = np.arange(8, dtype=np.float32).reshape(2, 4)
    t = numpy_helper.from_array(w, "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [t])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(m, str(tmp_path / "m.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    m = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    for e in m.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = location
    onnx.save_model(m, str(tmp_path / "m.onnx"))
    return w


def test_external_data_relative_to_model_folder(tmp_path, monkeypatch):
    w = _external_model(tmp_path, "weights.bin")
    monkeypatch.chdir(os.path.dirname(tmp_path))  # load from elsewhere: the folder still counts
    sess = qrt.InferenceSession(str(tmp_path / "m.onnx"))
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x + w)


@pytest.mark.parametrize("location", ["../weights.bin", "sub/../../weights.bin", "/etc/passwd"])
def test_external_data_escaping_folder_is_refused(tmp_path, location):
    inner = tmp_path / "model"
    inner.mkdir()
    _external_model(inner, location)
    with pytest.raises(ModelLoadError, match="escapes the model's folder|is absolute"):
        qrt.InferenceSession(str(inner / "m.onnx"))


def test_external_data_missing_file(tmp_path):
    _external_model(tmp_path, "other.bin")
    with pytest.raises(ModelLoadError, match="'other.bin' not found"):
        qrt.InferenceSession(str(tmp_path / "m.onnx"))


def test_external_data_from_bytes_explains(tmp_path):
    _external_model(tmp_path, "weights.bin")
    data = (tmp_path / "m.onnx").read_bytes()
    with pytest.raises(ModelLoadError, match="loaded from a path"):
        qrt.InferenceSession(data)


def test_missing_required_attribute():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], name="c")], "g", [x], [y])
    with pytest.raises(ModelLoadError, match="Cast node 'c' is missing required attribute 'to'"):
        qrt.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def _add_model(inits=(), inputs=None, domain_ops=(), opsets=(("", 17),)):
    x = inputs if inputs is not None else [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = list(domain_ops) or [helper.make_node("Add", ["x", "w"], ["y"], name="add")]
    g = helper.make_graph(nodes, "g", x, [y], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


def test_duplicate_initializer_names_refused():
    m = _add_model([numpy_helper.from_array(np.ones(2, np.float32), "w"),
                    numpy_helper.from_array(np.full(2, 5, np.float32), "w")])
    with pytest.raises(ModelLoadError, match="two initializers are named 'w'"):
        qrt.InferenceSession(m)


def test_duplicate_graph_inputs_refused():
    xs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
          helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])]
    m = _add_model([numpy_helper.from_array(np.ones(2, np.float32), "w")], inputs=xs)
    with pytest.raises(ModelLoadError, match="two graph inputs are named 'x'"):
        qrt.InferenceSession(m)


@pytest.mark.parametrize("elem", [0, 99])
def test_input_of_no_known_element_type_refused(elem):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    x.type.tensor_type.elem_type = elem
    m = _add_model([numpy_helper.from_array(np.ones(2, np.float32), "w")], inputs=[x])
    with pytest.raises(ModelLoadError, match="input 'x' has element type"):
        qrt.InferenceSession(m)


def test_initializer_with_negative_dimension_refused():
    t = numpy_helper.from_array(np.ones(2, np.float32), "w")
    t.dims[0] = -2
    with pytest.raises(ModelLoadError, match="negative dimension"):
        qrt.InferenceSession(_add_model([t]))


def test_external_data_offset_not_an_integer(tmp_path):
    _external_model(tmp_path, "weights.bin")
    m = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    m.graph.initializer[0].external_data.add(key="offset", value="abc")
    onnx.save_model(m, str(tmp_path / "m.onnx"))
    with pytest.raises(ModelLoadError, match="not integers"):
        qrt.InferenceSession(str(tmp_path / "m.onnx"))


def test_qrt_internal_domain_cannot_be_used_by_a_model():
    """qrt's fused ops read their attributes unchecked: only the passes may create them."""
    node = helper.make_node("QAdd", ["x", "x"], ["y"], name="qa", domain="qrt")
    m = _add_model(domain_ops=[node], opsets=(("", 17), ("qrt", 1)))
    with pytest.raises(UnsupportedOpError, match="QAdd"):
        qrt.InferenceSession(m)


@pytest.mark.parametrize("op,ins,outs,match", [
    ("Relu", ["x"], ["y", "z"], "has 2 output"),
    ("Add", ["x"], ["y"], "has 1 input"),
    ("Relu", ["x", "x"], ["y"], "has 2 input"),
])
def test_input_and_output_counts_follow_the_schema(op, ins, outs, match):
    """An extra output would be filled with whatever the op returns; a missing input read as
    another one. The counts are checked against the op's ONNX schema at load."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    g = helper.make_graph([helper.make_node(op, ins, outs, name="n")], "g", [x],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelLoadError, match=f"'n'.*{match}"):
        qrt.InferenceSession(m)


def test_if_branch_that_is_not_a_graph():
    x = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    node = helper.make_node("If", ["c"], ["y"], name="cond", then_branch=3,
                            else_branch=helper.make_graph([], "e", [], []))
    g = helper.make_graph([node], "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelLoadError, match="'cond'.*then_branch.*must be a graph"):
        qrt.InferenceSession(m)


def test_com_microsoft_ops_without_the_domain_import_run_as_version_1():
    """onnxruntime's transformer optimizer can write com.microsoft nodes without importing the
    domain; onnxruntime assumes version 1, and so does qrt."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    g = helper.make_graph([helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")], "g", [x],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    xv = np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3)
    y = qrt.InferenceSession(m).run(None, {"x": xv})[0]
    import math
    want = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in xv.reshape(-1)]).reshape(2, 3)
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-7)


def test_constant_without_value_that_is_a_graph_output_fails_at_load():
    g = helper.make_graph([helper.make_node("Constant", [], ["y"], name="k")], "g", [],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelLoadError, match="'k'.*bad value"):
        qrt.InferenceSession(m)


def test_a_required_input_or_output_given_as_empty_is_refused():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    k = numpy_helper.from_array(np.array([1], np.int64), "k")
    g = helper.make_graph([helper.make_node("TopK", ["x", "k"], ["", "i"], name="tk")], "g", [x],
                          [helper.make_tensor_value_info("i", TensorProto.INT64, None)], [k])
    with pytest.raises(ModelLoadError, match="'tk'.*output 0 .*required"):
        qrt.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
