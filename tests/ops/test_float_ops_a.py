"""Elementwise, activation, tensor and ReduceMean ops at the opset versions the ONNX backend cases do
not cover (10..18: attribute forms of axes/split/min/max, Softmax's 2-D coercion, ...), compared with
onnxruntime on single-node models; plus error messages, dtype preservation and no-in-place checks.

Tolerances: FLOAT_RTOL/ATOL cover float32 transcendental rounding differences (exp/tanh/erf ulps);
integer and shape results must match exactly."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import qrt
from qrt.errors import NodeExecutionError
from qrt.ops import activations, elementwise, reduce, tensor

ort = pytest.importorskip("onnxruntime")

FLOAT_RTOL, FLOAT_ATOL = 1e-5, 1e-6
F16_RTOL, F16_ATOL = 1e-3, 1e-3  # one float16 rounding of a float32 result

_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
         np.dtype(np.float16): TensorProto.FLOAT16, np.dtype(np.int64): TensorProto.INT64,
         np.dtype(np.int32): TensorProto.INT32, np.dtype(np.int8): TensorProto.INT8,
         np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.bool_): TensorProto.BOOL}

RNG = np.random.default_rng(1234)


def _f32(*shape, scale=2.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _model(op, inputs, n_out, opset, **attrs):
    """inputs: list of (name, array or None, is_initializer)."""
    names, vis, inits = [], [], []
    for name, arr, const in inputs:
        if arr is None:
            names.append("")
            continue
        names.append(name)
        if const:
            inits.append(onnx.numpy_helper.from_array(arr, name))
        else:
            vis.append(helper.make_tensor_value_info(name, _ELEM[arr.dtype], arr.shape))
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph([node], "g", vis, [onnx.ValueInfoProto(name=o) for o in outs],
                              inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _run_both(op, inputs, opset, n_out=1, **attrs):
    m = _model(op, inputs, n_out, opset, **attrs)
    feeds = {name: arr for name, arr, const in inputs if arr is not None and not const}
    copies = {k: v.copy() for k, v in feeds.items()}
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    want = ort.InferenceSession(m.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, feeds)
    got = qrt.InferenceSession(m, optimize=False, threads=1).run(None, feeds)
    for k in feeds:  # ops must never modify their inputs
        np.testing.assert_array_equal(feeds[k], copies[k])
    return got, want


def _check(op, inputs, opset, n_out=1, rtol=FLOAT_RTOL, atol=FLOAT_ATOL, **attrs):
    got, want = _run_both(op, inputs, opset, n_out, **attrs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype, (op, opset, g.dtype, w.dtype)
        assert g.shape == w.shape, (op, opset, g.shape, w.shape)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{op} opset {opset}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{op} opset {opset}")


def X(a):
    return ("x", a, False)


def C(name, a):
    return (name, a, True)


# --------------------------------------------------------------------------------------------
# opset-versioned forms against onnxruntime

CASES = [
    # Clip: attributes (< 11) vs optional inputs (>= 11); integer types from 12
    ("Clip", [X(_f32(3, 4))], 10, {"min": -1.0, "max": 0.5}),
    ("Clip", [X(_f32(3, 4))], 10, {}),
    ("Clip", [X(_f32(3, 4)), C("lo", np.array(-0.3, np.float32))], 11, {}),
    ("Clip", [X(_f32(3, 4)), ("", None, True), C("hi", np.array(0.2, np.float32))], 11, {}),
    ("Clip", [X(np.arange(-6, 6, dtype=np.int8).reshape(3, 4)), C("lo", np.array(-2, np.int8)),
              C("hi", np.array(3, np.int8))], 12, {}),
    # Softmax: 2-D coercion before 13, one axis from 13
    ("Softmax", [X(_f32(2, 3, 4))], 10, {}),
    ("Softmax", [X(_f32(2, 3, 4))], 11, {"axis": 0}),
    ("Softmax", [X(_f32(2, 3, 4))], 12, {"axis": -2}),
    ("Softmax", [X(_f32(2, 3, 4))], 13, {"axis": 1}),
    ("Softmax", [X(_f32(2, 3, 4))], 13, {}),
    # Squeeze / Unsqueeze: axes attribute (< 13) vs input (>= 13)
    ("Squeeze", [X(_f32(1, 3, 1, 2))], 11, {"axes": [0, -2]}),
    ("Squeeze", [X(_f32(1, 3, 1, 2))], 10, {}),
    ("Squeeze", [X(_f32(1, 3, 1, 2)), C("axes", np.array([2], np.int64))], 13, {}),
    ("Squeeze", [X(_f32(1, 3, 1, 2))], 13, {}),
    ("Unsqueeze", [X(_f32(3, 2))], 10, {"axes": [0, 3]}),
    ("Unsqueeze", [X(_f32(3, 2))], 11, {"axes": [-1, 0]}),
    ("Unsqueeze", [X(_f32(3, 2)), C("axes", np.array([1, -1], np.int64))], 13, {}),
    # Split: split attribute (< 13), input (13), num_outputs (18)
    ("Split", [X(_f32(6, 4))], 10, {"axis": 0, "split": [1, 2, 3], "_n": 3}),
    ("Split", [X(_f32(6, 4))], 11, {"axis": -1, "_n": 2}),
    ("Split", [X(_f32(6, 4)), C("split", np.array([4, 2], np.int64))], 13, {"_n": 2}),
    ("Split", [X(_f32(6, 4))], 13, {"_n": 3}),
    ("Split", [X(_f32(7, 4))], 18, {"num_outputs": 3, "_n": 3}),
    ("Split", [X(_f32(6, 4)), C("split", np.array([1, 5], np.int64))], 18, {"_n": 2}),
    # ReduceMean: axes attribute (< 18) vs input (18)
    ("ReduceMean", [X(_f32(2, 3, 4))], 10, {"axes": [1], "keepdims": 0}),
    ("ReduceMean", [X(_f32(2, 3, 4))], 13, {"axes": [-1, 0]}),
    ("ReduceMean", [X(_f32(2, 3, 4))], 11, {}),
    ("ReduceMean", [X(_f32(2, 3, 4)), C("axes", np.array([0, 2], np.int64))], 18,
     {"keepdims": 0}),
    ("ReduceMean", [X(_f32(2, 3, 4))], 18, {}),
    ("ReduceMean", [X(_f32(2, 3, 4))], 18, {"noop_with_empty_axes": 1}),
    ("ReduceMean", [X(_f32(2, 3, 4).astype(np.float16))], 18, {"keepdims": 0}),
    # Shape: start/end from 15
    ("Shape", [X(_f32(2, 3, 4, 5))], 13, {}),
    ("Shape", [X(_f32(2, 3, 4, 5))], 15, {"start": -3, "end": -1}),
    ("Shape", [X(_f32(2, 3, 4, 5))], 15, {"start": 10}),
    # Reshape: allowzero from 14
    ("Reshape", [X(_f32(2, 3, 4)), C("s", np.array([0, -1], np.int64))], 10, {}),
    ("Reshape", [X(_f32(2, 3, 4)), C("s", np.array([4, 0, 2], np.int64))], 13, {}),
    ("Reshape", [X(_f32(2, 0, 4)), C("s", np.array([0, 8], np.int64))], 14, {"allowzero": 1}),
    # Cast: saturate from 19, round_mode from 24 (both only matter to float8)
    ("Cast", [X(_f32(3, 4) * 50)], 10, {"to": TensorProto.INT32}),
    ("Cast", [X(_f32(3, 4))], 10, {"to": TensorProto.BOOL}),
    ("Cast", [X(np.array([-300, -1, 0, 200, 70000], np.int32))], 13, {"to": TensorProto.INT8}),
    ("Cast", [X(np.array([-3, 0, 2], np.int32))], 19, {"to": TensorProto.FLOAT16}),
    ("Cast", [X(np.array([True, False]))], 21, {"to": TensorProto.FLOAT}),
    # Gather, Slice, Flatten, Transpose, Concat, Expand at old opsets
    ("Gather", [X(_f32(5, 4)), C("i", np.array([[0, -1], [3, -5]], np.int64))], 11, {"axis": 0}),
    ("Gather", [X(_f32(5, 4)), C("i", np.array(2, np.int32))], 10, {"axis": 1}),
    ("Slice", [X(_f32(5, 6)), C("s", np.array([-1, 100], np.int64)),
               C("e", np.array([-100, -7], np.int64)), C("a", np.array([0, 1], np.int64)),
               C("st", np.array([-2, -1], np.int64))], 10, {}),
    ("Slice", [X(_f32(5, 6)), C("s", np.array([1], np.int64)), C("e", np.array([1000], np.int64)),
               C("a", np.array([-1], np.int64))], 11, {}),
    ("Flatten", [X(_f32(2, 3, 4))], 10, {"axis": 0}),
    ("Flatten", [X(_f32(2, 3, 4))], 11, {"axis": -1}),
    ("Transpose", [X(_f32(2, 3, 4))], 10, {}),
    ("Transpose", [X(_f32(2, 3, 4))], 10, {"perm": [1, 2, 0]}),
    ("Concat", [X(_f32(2, 3)), C("b", _f32(2, 1))], 10, {"axis": -1}),
    ("Expand", [X(_f32(3, 1)), C("s", np.array([2, 1, 4], np.int64))], 10, {}),
    # Elementwise at old and new opsets, mixed-type Pow from 12
    ("Div", [X(np.array([-7, 7, -7, 7, 5, -1], np.int32)),
             C("b", np.array([2, -2, -2, 2, 7, 3], np.int32))], 10, {}),
    ("Div", [X(np.array([-7, 7, -128, 100], np.int8)), C("b", np.array([2, -2, 3, -7], np.int8))],
     14, {}),
    ("Pow", [X(_f32(3, 4)), C("y", np.array(2.0, np.float32))], 10, {}),
    ("Pow", [X(np.abs(_f32(3, 4))), C("y", np.array([1, 2, 3, 0], np.int64))], 12, {}),
    ("Pow", [X(np.array([1, 2, 3, -4], np.int32)), C("y", np.array([0.5, 2.0, 3.0, 1.0],
                                                                    np.float32))], 15, {}),
    ("Add", [X(np.array([100, 200], np.uint8)), C("b", np.array([100], np.uint8))], 14, {}),
    ("Mul", [X(_f32(2, 3).astype(np.float16)), C("b", _f32(3).astype(np.float16))], 13, {}),
    ("Equal", [X(np.array([1, 2, 3], np.int32)), C("b", np.array([3, 2, 1], np.int32))], 10, {}),
    ("Equal", [X(np.array([1.0, np.nan], np.float32)), C("b", np.array([1.0, np.nan],
                                                                       np.float32))], 11, {}),
    ("Where", [C("c", np.array([[True], [False]])), X(_f32(2, 3)), C("b", _f32(3))], 10, {}),
    ("Sqrt", [X(np.abs(_f32(3, 4)))], 10, {}),
    # Activations
    ("Relu", [X(_f32(3, 4))], 10, {}),
    ("Relu", [X(np.arange(-4, 4, dtype=np.int8))], 14, {}),
    ("LeakyRelu", [X(_f32(3, 4))], 10, {}),
    ("LeakyRelu", [X(_f32(3, 4))], 16, {"alpha": 0.3}),
    ("Sigmoid", [X(_f32(3, 4, scale=30))], 10, {}),
    ("HardSigmoid", [X(_f32(3, 4))], 10, {"alpha": 0.3, "beta": 0.4}),
    ("HardSwish", [X(_f32(3, 4, scale=4))], 14, {}),
    ("Tanh", [X(_f32(3, 4))], 10, {}),
    ("Erf", [X(_f32(3, 4))], 10, {}),
    ("Erf", [X(_f32(3, 4))], 13, {}),
    ("Gelu", [X(_f32(3, 4))], 20, {}),
    ("Gelu", [X(_f32(3, 4))], 20, {"approximate": "tanh"}),
    ("Identity", [X(_f32(3, 4))], 10, {}),
]


@pytest.mark.parametrize("op,inputs,opset,attrs", CASES,
                         ids=[f"{c[0]}-v{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_against_onnxruntime(op, inputs, opset, attrs):
    attrs = dict(attrs)
    n_out = attrs.pop("_n", 1)
    _check(op, inputs, opset, n_out=n_out, **attrs)


@pytest.mark.parametrize("opset,kw", [
    (10, {"value": onnx.numpy_helper.from_array(np.arange(6, dtype=np.float16).reshape(2, 3))}),
    (12, {"value_float": 2.5}),
    (12, {"value_floats": [1.0, -2.0]}),
    (13, {"value_int": 7}),
    (21, {"value_ints": [3, 4, 5]}),
])
def test_constant(opset, kw):
    _check("Constant", [], opset, **kw)


def test_cast_accepts_saturate_and_round_mode():
    # onnxruntime refuses 'saturate' on non-float8 casts; the spec only says it is ignored there.
    x = np.array([-1.5, 0.0, 2.7], np.float32)
    np.testing.assert_array_equal(tensor.cast_19(x, to=TensorProto.INT32, saturate=0), [-1, 0, 2])
    got = tensor.cast_24(x, to=TensorProto.FLOAT16, saturate=1, round_mode="nearest")
    assert got.dtype == np.float16
    m = _model("Cast", [X(x)], 1, 24, to=TensorProto.INT8, saturate=0, round_mode="up")
    y = qrt.InferenceSession(m, optimize=False, threads=1).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, np.array([-1, 0, 2], np.int8))


def test_constant_output_is_not_shared_between_runs():
    m = _model("Constant", [], 1, 13, value_ints=[1, 2, 3])
    sess = qrt.InferenceSession(m, optimize=False, threads=1)
    first = sess.run(None, {})[0]
    first[0] = 99
    np.testing.assert_array_equal(sess.run(None, {})[0], [1, 2, 3])


# --------------------------------------------------------------------------------------------
# errors

def test_gather_out_of_range_raises_naming_axis_and_bound():
    data = np.zeros((4, 3), np.float32)
    with pytest.raises(IndexError, match=r"index 3 .*axis 1 of size 3"):
        tensor.gather(data, np.array([0, 3], np.int64), axis=1)
    with pytest.raises(IndexError, match=r"index -5 .*axis 0 of size 4"):
        tensor.gather(data, np.array([-5], np.int32), axis=0)
    # through a session the node is named and nothing wraps silently
    m = _model("Gather", [X(data), C("i", np.array([4], np.int64))], 1, 13, axis=0)
    sess = qrt.InferenceSession(m, optimize=False, threads=1)
    with pytest.raises(NodeExecutionError, match=r"Gather.*IndexError.*index 4.*axis 0 of size 4"):
        sess.run(None, {"x": data})


@pytest.mark.parametrize("in_shape,shape,allowzero,msg", [
    ((2, 3, 4), [-1, -1], 0, "more than one -1"),
    ((2, 3, 4), [5, -1], 0, "cannot be inferred"),
    ((2, 3, 4), [2, 3, 5], 0, "cannot reshape"),
    ((2, 3), [2, 3, 0], 0, "copies dimension 2"),
    ((2, 3, 4), [0, -1], 1, "both 0 and -1"),
    ((2, 3, 4), [-2, 12], 0, "negative dimension"),
])
def test_reshape_errors(in_shape, shape, allowzero, msg):
    x = np.zeros(in_shape, np.float32)
    with pytest.raises(ValueError, match=msg):
        tensor.reshape_14(x, np.array(shape, np.int64), allowzero=allowzero)


def test_reshape_error_names_node_through_session():
    m = _model("Reshape", [X(np.zeros((2, 3), np.float32)), C("s", np.array([-1, -1], np.int64))],
               1, 14)
    sess = qrt.InferenceSession(m, optimize=False, threads=1)
    with pytest.raises(NodeExecutionError, match=r"Reshape node.*more than one -1"):
        sess.run(None, {"x": np.zeros((2, 3), np.float32)})


def test_attribute_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="permutation"):
        tensor.transpose(x, perm=[0, 0])
    with pytest.raises(ValueError, match="not 1"):
        tensor.squeeze_13(x, np.array([0], np.int64))
    with pytest.raises(ValueError, match="repeat"):
        tensor.unsqueeze_13(x, np.array([0, 0], np.int64))
    with pytest.raises(ValueError, match="step .* is 0"):
        tensor.slice_10(x, np.array([0]), np.array([1]), None, np.array([0]))
    with pytest.raises(ValueError, match="approximate"):
        activations.gelu(x, approximate="fast")
    with pytest.raises(ValueError, match="out of range"):
        activations.softmax_13(x, axis=2)
    with pytest.raises(ValueError, match="out of range"):
        reduce.reduce_mean_1(x, axes=[3], keepdims=1)
    with pytest.raises(ValueError, match="not supported"):
        tensor.cast_6(x, to=8)  # STRING

    class Ctx:
        n_outputs = 4
    with pytest.raises(ValueError, match="equal"):
        tensor.split_13(np.zeros((6,)), None, axis=0, ctx=Ctx())
    with pytest.raises(ValueError, match="not both"):
        tensor.split_18(np.zeros((6,)), np.array([2, 4]), axis=0, num_outputs=2, ctx=Ctx())


# --------------------------------------------------------------------------------------------
# dtype preservation, exact integer semantics, Erf accuracy

F16_UNARY = [
    ("Relu", {}), ("LeakyRelu", {}), ("Sigmoid", {}), ("HardSigmoid", {}), ("HardSwish", {}),
    ("Tanh", {}), ("Erf", {}), ("Gelu", {}), ("Gelu", {"approximate": "tanh"}), ("Softmax", {}),
    ("Sqrt", {}), ("Clip", {}), ("Identity", {}),
]


@pytest.mark.parametrize("op,attrs", F16_UNARY, ids=[f"{o}{'-' if a else ''}{''.join(a.values())}"
                                                     for o, a in F16_UNARY])
def test_float16_in_float16_out(op, attrs):
    x32 = _f32(4, 5)
    if op == "Sqrt":
        x32 = np.abs(x32)
    x16 = x32.astype(np.float16)
    m16 = _model(op, [X(x16)], 1, 22, **attrs)
    m32 = _model(op, [X(x32)], 1, 22, **attrs)
    got = qrt.InferenceSession(m16, optimize=False, threads=1).run(None, {"x": x16})[0]
    ref = qrt.InferenceSession(m32, optimize=False, threads=1).run(
        None, {"x": x16.astype(np.float32)})[0]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), ref, rtol=F16_RTOL, atol=F16_ATOL)


@pytest.mark.parametrize("dtype", [np.float16, np.int8, np.uint8, np.int16, np.int32, np.int64,
                                   np.float64])
def test_binary_ops_keep_dtype(dtype):
    a = np.array([[1, 2, 3], [4, 5, 6]], dtype=dtype)
    b = np.array([3, 2, 1], dtype=dtype)
    for fn in (elementwise.add, elementwise.sub, elementwise.mul, elementwise.div,
               elementwise.pow_):
        assert fn(a, b).dtype == dtype, fn.__name__
    assert elementwise.equal(a, b).dtype == np.bool_
    assert elementwise.where(a > 2, a, b).dtype == dtype
    assert tensor.expand(b, np.array([2, 3])).dtype == dtype
    assert reduce.reduce_mean_18(a, None, keepdims=0, noop_with_empty_axes=0).dtype == dtype


def test_integer_div_truncates_toward_zero():
    a = np.array([-7, 7, -7, 7, -1, 0, np.iinfo(np.int64).max], np.int64)
    b = np.array([2, -2, -2, 2, 3, -5, 2], np.int64)
    want = np.array([int(x / y) if abs(x) < 2**52 else x // y for x, y in zip(a.tolist(),
                                                                            b.tolist())])
    np.testing.assert_array_equal(elementwise.div(a, b), want)
    np.testing.assert_array_equal(elementwise.div(np.array([7], np.uint32),
                                                  np.array([2], np.uint32)), [3])


def test_integer_pow_negative_exponent():
    got = elementwise.pow_(np.array([2, 1, -1, 3], np.int32), np.array([-1, -2, -3, 2], np.int64))
    np.testing.assert_array_equal(got, [0, 1, -1, 9])
    assert got.dtype == np.int32


def test_reduce_mean_empty_axes_attribute_reduces_everything():
    x = _f32(2, 3, 4)
    np.testing.assert_allclose(reduce.reduce_mean_1(x, axes=[], keepdims=0), x.mean(), rtol=1e-6)
    assert reduce.reduce_mean_1(x, axes=[], keepdims=1).shape == (1, 1, 1)
    empty = np.array([], np.int64)
    assert reduce.reduce_mean_18(x, empty, keepdims=0, noop_with_empty_axes=0).shape == ()
    assert reduce.reduce_mean_18(x, empty, keepdims=0, noop_with_empty_axes=1).shape == x.shape


def test_integer_reduce_mean_truncates():
    x = np.array([[-3, -4], [3, 4]], np.int32)
    np.testing.assert_array_equal(reduce.reduce_mean_1(x, axes=[1], keepdims=0), [-3, 3])


def test_erf_matches_math_erf():
    x = np.concatenate([np.linspace(-6, 6, 10001), [0.0, -0.0, np.inf, -np.inf, 1e-30]])
    want = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(activations.erf(x), want, rtol=1e-15, atol=0)
    got32 = activations.erf(x.astype(np.float32))
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, np.array([math.erf(v) for v in x.astype(np.float32)
                                                .astype(np.float64)], np.float32),
                               rtol=1.2e-7, atol=1e-30)
    assert np.isnan(activations.erf(np.array([np.nan], np.float32)))[0]


def test_views_never_alias_writable_inputs_in_place():
    x = _f32(2, 3, 4)
    keep = x.copy()
    outs = [tensor.reshape_14(x, np.array([6, 4]), allowzero=0), tensor.transpose(x, perm=None),
            tensor.flatten(x, axis=2), tensor.squeeze_13(x[None], None),
            tensor.unsqueeze_13(x, np.array([0])), tensor.identity(x),
            *tensor.split_13(x, None, axis=1, ctx=type("C", (), {"n_outputs": 3})()),
            tensor.slice_10(x, np.array([0]), np.array([1]), None, None),
            activations.relu(x), activations.softmax_13(x, axis=-1),
            reduce.reduce_mean_18(x, None, keepdims=1, noop_with_empty_axes=1)]
    for o in outs:
        assert isinstance(o, np.ndarray)
    np.testing.assert_array_equal(x, keep)


OPS_A = ("Add Sub Mul Div Pow Sqrt Equal Where Relu Clip LeakyRelu Sigmoid HardSigmoid "
         "HardSwish Tanh Erf Gelu Softmax Constant Identity Cast Shape Reshape Flatten Transpose "
         "Concat Split Slice Squeeze Unsqueeze Gather Expand ReduceMean").split()


@pytest.mark.parametrize("op", OPS_A)
def test_registered_attributes_match_onnx_schema_for_every_opset(op):
    from qrt.ops import REQUIRED, resolve
    for v in range(10, onnx.defs.onnx_opset_version() + 1):
        try:
            schema = onnx.defs.get_schema(op, max_inclusive_version=v, domain="")
        except onnx.defs.SchemaError:
            schema = None
        opdef = resolve(op, "", v)
        assert (schema is None) == (opdef is None), (op, v)
        if schema is None:
            continue
        assert set(schema.attributes) == set(opdef.attrs), (op, v)
        for name, a in schema.attributes.items():
            assert a.required == (opdef.attrs[name] is REQUIRED), (op, v, name)
