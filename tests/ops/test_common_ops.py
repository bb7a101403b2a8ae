"""The common float/integer ops (elementwise, tensor, reductions, NN) beyond what the ONNX backend
node cases cover: random inputs against onnx.reference across attribute combinations and opset
forms, negative indices, integer semantics, inputs left untouched, and bad inputs failing through
`InferenceSession.run` with an error that names the node and the problem."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import qrt
from tests.ops._one_node import NP2ONNX, one_node_model
from qrt.errors import NodeExecutionError
from qrt.ops import activations, elementwise, nn, pool, reduce, tensor

_NP2ONNX = NP2ONNX


_model = one_node_model


def _run_qrt(model, feeds, optimize=True):
    return qrt.InferenceSession(model, optimize=optimize, threads=1).run(None, feeds)


def _check(model, feeds, rtol=1e-5, atol=1e-6):
    """qrt (with and without the passes) against onnx.reference: same dtype, shape, values."""
    want = ReferenceEvaluator(model).run(None, feeds)
    for optimize in (True, False):
        got = _run_qrt(model, feeds, optimize)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            w = np.asarray(w)
            assert g.dtype == w.dtype, (optimize, g.dtype, w.dtype)
            assert g.shape == w.shape, (optimize, g.shape, w.shape)
            if w.dtype.kind == "f":
                np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
            else:
                np.testing.assert_array_equal(g, w)
    return want


RNG = np.random.default_rng(1234)

# ----------------------------------------------------------------------------------- reductions

REDUCTIONS = ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceSumSquare", "ReduceLogSumExp", "ReduceLogSum", "ReduceMean"]
AXES = [None, [0], [-1], [1, 2], [0, -1], [2, 0, 1]]


def _reduce_data(op, dtype=np.float32, shape=(2, 3, 4)):
    if op in ("ReduceLogSum", "ReduceProd"):
        return RNG.uniform(0.5, 1.5, shape).astype(dtype)
    return RNG.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("op", REDUCTIONS)
@pytest.mark.parametrize("axes", AXES, ids=str)
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduction_attribute_form(op, axes, keepdims):
    # opset 13 (ReduceSum: 11): axes as an attribute
    x = _reduce_data(op)
    attrs = {"keepdims": keepdims} | ({} if axes is None else {"axes": axes})
    _check(_model(op, {"x": x}, attrs=attrs, opset=11 if op == "ReduceSum" else 13), {"x": x})


@pytest.mark.parametrize("op", REDUCTIONS)
@pytest.mark.parametrize("axes", AXES + [[]], ids=str)
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("noop", [0, 1])
def test_reduction_input_form(op, axes, keepdims, noop):
    # opset 18: axes as an optional input; an empty or absent one reduces all or nothing (noop)
    x = _reduce_data(op)
    attrs = {"keepdims": keepdims, "noop_with_empty_axes": noop}
    if axes is None:
        m = _model(op, {"x": x}, attrs=attrs, opset=18)
    else:
        m = _model(op, {"x": x}, {"axes": np.array(axes, np.int64)}, attrs=attrs, opset=18)
    _check(m, {"x": x})


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                                "ReduceSumSquare"])
@pytest.mark.parametrize("axes", [None, [1], [0, 2]], ids=str)
def test_integer_reductions_keep_the_type(op, axes):
    # The output type is the input's (T -> T). onnx.reference widens some integer results to
    # int64 (numpy's sum promotion), so its values are compared, cast back to int32 (small
    # values: no wrapping involved).
    x = RNG.integers(-4, 5, size=(3, 4, 2)).astype(np.int32)
    consts = {} if axes is None else {"axes": np.array(axes, np.int64)}
    m = _model(op, {"x": x}, consts, attrs={"keepdims": 0}, opset=18)
    (want,) = ReferenceEvaluator(m).run(None, {"x": x})
    for optimize in (True, False):
        (got,) = _run_qrt(m, {"x": x}, optimize)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, np.asarray(want).astype(np.int32))


def test_integer_sum_and_prod_wrap_in_the_type():
    x = np.array([[100, 100, 100]], np.int8)
    np.testing.assert_array_equal(reduce.reduce_sum_1(x, axes=None, keepdims=0),
                                  np.array(300, np.int64).astype(np.int8))
    np.testing.assert_array_equal(reduce.reduce_prod_1(x, axes=[1], keepdims=0),
                                  np.array([10 ** 6], np.int64).astype(np.int8))


def test_reduction_opset13_form_of_reduce_sum_with_axes_input():
    x = _reduce_data("ReduceSum", np.float64, (3, 5))
    m = _model("ReduceSum", {"x": x, "axes": np.array([-1], np.int64)}, opset=13,
               attrs={"keepdims": 0})
    _check(m, {"x": x, "axes": np.array([-1], np.int64)})


def test_reduction_of_an_empty_set_gives_the_identity():
    x = np.zeros((2, 0, 3), np.float32)
    ax = np.array([1], np.int64)
    want = {"ReduceSum": 0, "ReduceProd": 1, "ReduceMax": -np.inf, "ReduceMin": np.inf,
            "ReduceL1": 0, "ReduceL2": 0, "ReduceSumSquare": 0, "ReduceLogSum": -np.inf,
            "ReduceLogSumExp": -np.inf}
    for op, v in want.items():
        (got,) = _run_qrt(_model(op, {"x": x}, {"axes": ax}, attrs={"keepdims": 0}), {"x": x})
        assert got.shape == (2, 3) and got.dtype == np.float32
        np.testing.assert_array_equal(got, np.full((2, 3), v, np.float32), err_msg=op)


def test_reduce_log_sum_exp_is_stable_and_handles_infinities():
    x = np.array([[1000.0, 1000.0], [-np.inf, -np.inf], [np.inf, 1.0], [-1000.0, -1000.0]],
                 np.float32)
    got = reduce.reduce_log_sum_exp_18(x, np.array([1]), keepdims=0, noop_with_empty_axes=0)
    want = [1000 + np.log(2), -np.inf, np.inf, -1000 + np.log(2)]
    np.testing.assert_allclose(got, np.array(want, np.float32), rtol=1e-6)


def test_reduce_bad_axis_is_named():
    x = np.zeros((2, 3), np.float32)
    m = _model("ReduceSum", {"x": x}, {"axes": np.array([2], np.int64)})
    with pytest.raises(NodeExecutionError, match=r"the_node.*ReduceSum: axis 2 is out of range"):
        _run_qrt(m, {"x": x}, optimize=False)


# ------------------------------------------------------------------------------------------ TopK

@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8])
def test_topk_with_ties_matches_reference(largest, axis, dtype):
    x = RNG.integers(0, 4, size=(5, 9)).astype(dtype)  # many equal values
    n = x.shape[axis]
    for k in (0, 1, 3, n):
        m = _model("TopK", {"x": x}, {"k": np.array([k], np.int64)},
                   attrs={"axis": axis, "largest": largest, "sorted": 1}, opset=11, n_out=2)
        _check(m, {"x": x})


def test_topk_ties_take_the_lower_index_first():
    x = np.array([[3, 1, 3, 2, 1, 3]], np.float32)
    vals, idx = tensor.top_k_11(x, np.array([4]), axis=1, largest=1, sorted=1)
    np.testing.assert_array_equal(vals, [[3, 3, 3, 2]])
    np.testing.assert_array_equal(idx, [[0, 2, 5, 3]])
    vals, idx = tensor.top_k_11(x, np.array([3]), axis=-1, largest=0, sorted=1)
    np.testing.assert_array_equal(vals, [[1, 1, 2]])
    np.testing.assert_array_equal(idx, [[1, 4, 3]])
    assert idx.dtype == np.int64


def test_topk_unsorted_returns_the_same_set():
    x = RNG.standard_normal((4, 12)).astype(np.float32)
    v, i = tensor.top_k_11(x, np.array([5]), axis=1, largest=1, sorted=0)
    want = -np.sort(-x, axis=1)[:, :5]
    np.testing.assert_array_equal(np.sort(v, axis=1), np.sort(want, axis=1))
    np.testing.assert_array_equal(np.take_along_axis(x, i, axis=1), v)


def test_topk_opset1_and_10_forms():
    x = RNG.standard_normal((3, 6)).astype(np.float32)
    _check(_model("TopK", {"x": x}, {"k": np.array([2], np.int64)}, attrs={"axis": 0},
                  opset=10, n_out=2), {"x": x})
    v, i = tensor.top_k_1(x, k=2, axis=-1)  # qrt loads opset >= 10: the function itself
    np.testing.assert_array_equal(v, -np.sort(-x, axis=1)[:, :2])
    np.testing.assert_array_equal(i, np.argsort(-x, axis=1, kind="stable")[:, :2])


def test_topk_k_larger_than_axis_fails_clearly():
    x = np.zeros((2, 4), np.float32)
    m = _model("TopK", {"x": x}, {"k": np.array([5], np.int64)}, opset=11, n_out=2)
    for optimize in (True, False):
        with pytest.raises(NodeExecutionError,
                           match=r"the_node.*k=5 is larger than axis 1 of size 4"):
            _run_qrt(m, {"x": x}, optimize)


# ------------------------------------------------------------------ gathers and scatters

def test_gather_elements_negative_indices():
    x = RNG.standard_normal((3, 4, 2)).astype(np.float32)
    for axis in (0, 1, -1):
        n = x.shape[axis]
        shape = list(x.shape)
        shape[axis] = 5
        idx = RNG.integers(-n, n, size=shape).astype(np.int64)
        same = RNG.integers(-n, n, size=x.shape).astype(np.int64)
        _check(_model("GatherElements", {"x": x, "i": same}, attrs={"axis": axis}, opset=13),
               {"x": x, "i": same})
        # indices of another size on the axis, and smaller than data on the other axes (which
        # onnx.reference refuses): checked against the definition
        shape[0 if axis else 1] -= 1
        idx = RNG.integers(-n, n, size=shape).astype(np.int64)
        (got,) = _run_qrt(_model("GatherElements", {"x": x, "i": idx}, attrs={"axis": axis},
                                 opset=13), {"x": x, "i": idx})
        assert got.shape == idx.shape
        for pos in np.ndindex(*idx.shape):
            src = list(pos)
            src[axis] = idx[pos] % n
            assert got[pos] == x[tuple(src)]


def test_gather_nd_batch_dims_and_negative_indices():
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    for b, k in ((0, 1), (0, 3), (1, 2), (2, 1), (1, 3)):
        dims = x.shape[b:b + k]
        idx = np.stack([RNG.integers(-d, d, size=x.shape[:b] + (3,)) for d in dims], axis=-1)
        _check(_model("GatherND", {"x": x, "i": idx.astype(np.int64)},
                      attrs={"batch_dims": b}, opset=13), {"x": x, "i": idx.astype(np.int64)})


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd_negative_indices(reduction):
    x = RNG.standard_normal((4, 5, 3)).astype(np.float32)
    # distinct positions given partly by negative indices: [-4, -1] is [0, 4], ...
    idx = np.array([[[-4, -1]], [[1, 2]], [[-1, 0]]], np.int64)  # (3, 1, 2): k=2, slices of 3
    upd = RNG.standard_normal((3, 1, 3)).astype(np.float32)
    m = _model("ScatterND", {"x": x, "i": idx, "u": upd}, attrs={"reduction": reduction})
    _check(m, {"x": x, "i": idx, "u": upd})


@pytest.mark.parametrize("reduction", ["add", "mul", "max", "min"])
def test_scatter_nd_repeated_indices_all_apply(reduction):
    x = np.arange(6, dtype=np.float32) + 1
    idx = np.array([[1], [-5], [3], [1]], np.int64)  # -5 is 1 again
    upd = np.array([2, 3, 4, 5], np.float32)
    got = tensor.scatter_nd_18(x, idx, upd, reduction=reduction)
    want = x.copy()
    f = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}[reduction]
    for i, u in zip([1, 1, 3, 1], upd):
        want[i] = f(want[i], u)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_scatter_elements_negative_indices(reduction, axis):
    x = RNG.standard_normal((4, 5)).astype(np.float32)
    n = x.shape[axis]
    shape = [3, 2]
    if reduction == "none":  # distinct targets per line: a permutation, written negative
        lines = [RNG.permutation(n)[:shape[axis % 2]] - n for _ in range(shape[1 - axis % 2])]
        idx = np.stack(lines, axis=1 - axis % 2).astype(np.int64)
    else:
        idx = RNG.integers(-n, n, size=shape).astype(np.int64)
    upd = RNG.standard_normal(shape).astype(np.float32)
    m = _model("ScatterElements", {"x": x, "i": idx, "u": upd},
               attrs={"axis": axis, "reduction": reduction})
    _check(m, {"x": x, "i": idx, "u": upd})


@pytest.mark.parametrize("op,inputs", [
    ("GatherElements", {"x": np.zeros((2, 3), np.float32), "i": np.array([[0, 3]], np.int64)}),
    ("GatherElements", {"x": np.zeros((2, 3), np.float32), "i": np.array([[-3, 0]], np.int64)}),
    ("GatherND", {"x": np.zeros((2, 3), np.float32), "i": np.array([[1, -4]], np.int64)}),
    ("ScatterND", {"x": np.zeros((2, 3), np.float32), "i": np.array([[2]], np.int64),
                   "u": np.ones((1, 3), np.float32)}),
    ("ScatterElements", {"x": np.zeros((2, 3), np.float32), "i": np.array([[7]], np.int64),
                         "u": np.ones((1, 1), np.float32)}),
])
def test_out_of_range_indices_fail_clearly(op, inputs):
    m = _model(op, inputs)
    for optimize in (True, False):
        with pytest.raises(NodeExecutionError, match=rf"the_node.*{op}: index -?\d+ is out of "
                                                     r"range for axis \d of size \d"):
            _run_qrt(m, inputs, optimize)


# ------------------------------------------------------------------------------------------- Mod

@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
@pytest.mark.parametrize("fmod", [0, 1])
def test_integer_mod_signs(dtype, fmod):
    a = np.array([-7, 7, -7, 7, 0, -6, 5, -128 if dtype == np.int8 else -9], dtype)
    b = np.array([3, -3, -3, 3, -2, 3, 5, -1], dtype)
    _check(_model("Mod", {"a": a, "b": b}, attrs={"fmod": fmod}, opset=13), {"a": a, "b": b})
    (got,) = _run_qrt(_model("Mod", {"a": a, "b": b}, attrs={"fmod": fmod}, opset=13),
                      {"a": a, "b": b})
    if fmod:  # C: the sign of the dividend
        want = [int(np.sign(x)) * (abs(int(x)) % abs(int(y))) for x, y in zip(a, b)]
    else:  # the sign of the divisor
        want = [int(x) % int(y) for x, y in zip(a, b)]
    np.testing.assert_array_equal(got, np.array(want).astype(dtype))
    assert got.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_mod_signs(dtype):
    a = RNG.uniform(-10, 10, 50).astype(dtype)
    b = RNG.uniform(-4, 4, 50).astype(dtype)
    b[np.abs(b) < 0.1] = 1.5
    _check(_model("Mod", {"a": a, "b": b}, attrs={"fmod": 1}, opset=13), {"a": a, "b": b})
    (got,) = _run_qrt(_model("Mod", {"a": a, "b": b}, attrs={"fmod": 1}, opset=13),
                      {"a": a, "b": b})
    assert np.all((got == 0) | (np.sign(got) == np.sign(a)))
    (got0,) = _run_qrt(_model("Mod", {"a": a, "b": b}, attrs={"fmod": 0}, opset=28),
                       {"a": a, "b": b})
    assert np.all((got0 == 0) | (np.sign(got0) == np.sign(b)))
    np.testing.assert_allclose(got0, a - np.floor(a / b) * b, rtol=1e-5, atol=1e-5)


def test_float_mod_with_fmod0_before_opset28_is_refused():
    a = np.ones(3, np.float32)
    m = _model("Mod", {"a": a, "b": a}, attrs={"fmod": 0}, opset=13)
    with pytest.raises(NodeExecutionError, match="the_node.*require fmod=1 before opset 28"):
        _run_qrt(m, {"a": a, "b": a}, optimize=False)


def test_mod_broadcasts():
    a = RNG.integers(-20, 20, size=(3, 4)).astype(np.int32)
    b = np.array([3, -4, 5, -6], np.int32)
    _check(_model("Mod", {"a": a, "b": b}, opset=13), {"a": a, "b": b})


# ---------------------------------------------------------------------------------------- CumSum

@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64, np.float64])
def test_cumsum_exclusive_reverse(exclusive, reverse, axis, dtype):
    x = (RNG.standard_normal((3, 5, 2)) * 10).astype(dtype)
    ax = np.array(axis, np.int32)
    m = _model("CumSum", {"x": x}, {"axis": ax}, attrs={"exclusive": exclusive,
                                                          "reverse": reverse}, opset=14)
    _check(m, {"x": x})
    # and the definition itself, on axis 1
    got = tensor.cumsum(x, np.array(1), exclusive=exclusive, reverse=reverse)
    want = np.zeros_like(x)
    for j in range(x.shape[1]):
        span = (range(j + exclusive, x.shape[1]) if reverse else range(0, j + 1 - exclusive))
        for i in span:
            want[:, j] += x[:, i]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------- other ops vs onnx.reference

def test_log_softmax_opset11_coerces_to_2d():
    # onnx.reference serves every LogSoftmax version with the opset-13 (one axis) semantics, so
    # opset 11 is checked against its definition: [prod(shape[:axis]), prod(shape[axis:])] rows
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    for axis in (0, 1, 2, -1):
        _check(_model("LogSoftmax", {"x": x}, attrs={"axis": axis}, opset=13), {"x": x})
        (got,) = _run_qrt(_model("LogSoftmax", {"x": x}, attrs={"axis": axis}, opset=11),
                          {"x": x})
        a = axis % 3
        x2 = x.astype(np.float64).reshape(int(np.prod(x.shape[:a])), -1)
        want = x2 - np.log(np.exp(x2).sum(axis=1, keepdims=True))
        np.testing.assert_allclose(got, want.reshape(x.shape), rtol=1e-5, atol=1e-6)
    a = activations.log_softmax_1(x, axis=1)
    np.testing.assert_allclose(np.exp(a).reshape(2, -1).sum(axis=1), [1, 1], rtol=1e-5)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_argmax_argmin_forms(op):
    x = RNG.integers(0, 3, size=(3, 4, 5)).astype(np.float32)  # ties
    for axis in (0, 1, -1):
        for keepdims in (0, 1):
            _check(_model(op, {"x": x}, attrs={"axis": axis, "keepdims": keepdims}, opset=11),
                   {"x": x})
            for last in (0, 1):
                _check(_model(op, {"x": x}, attrs={"axis": axis, "keepdims": keepdims,
                                                    "select_last_index": last}, opset=13),
                       {"x": x})


def test_onehot_forms():
    idx = np.array([[0, 3, -1], [-4, 5, 2]], np.int64)
    vals = np.array([-1.0, 2.0], np.float32)
    for axis in (-1, 0, 1, -3):
        got = _check(_model("OneHot", {"i": idx}, {"d": np.array(4, np.int64), "v": vals},
                            attrs={"axis": axis}, opset=11), {"i": idx})
        assert got[0].shape[axis] == 4
    # opset 9: negative indices are out of range (all off_value)
    old = tensor.one_hot_9(idx, np.array(4), vals, axis=-1)
    np.testing.assert_array_equal(old[0, 2], [-1, -1, -1, -1])
    np.testing.assert_array_equal(tensor.one_hot_11(idx, np.array(4), vals, axis=-1)[0, 2],
                                  [-1, -1, -1, 2])


def test_depth_space_round_trip():
    x = RNG.standard_normal((2, 8, 3, 4)).astype(np.float32)
    for mode in ("DCR", "CRD"):
        d2s = _check(_model("DepthToSpace", {"x": x}, attrs={"blocksize": 2, "mode": mode},
                            opset=13), {"x": x})[0]
        back = tensor.space_to_depth_28(d2s, blocksize=2, mode=mode)
        np.testing.assert_array_equal(back, x)
    y = tensor.depth_to_space_11(x, blocksize=1, mode="DCR")
    assert not np.shares_memory(x, y)


def test_range_forms():
    for dt, (s, lim, d) in ((np.int32, (10, -7, -3)), (np.int64, (-5, 9, 4)),
                            (np.float32, (0.5, 3.2, 0.3)), (np.float64, (1.0, -2.0, -0.25)),
                            (np.int64, (3, 3, 1)), (np.int64, (3, 1, 1))):
        arrs = {"s": np.array(s, dt), "l": np.array(lim, dt), "d": np.array(d, dt)}
        _check(_model("Range", {}, arrs, opset=11), {})
    with pytest.raises(ValueError, match="delta is 0"):
        tensor.range_11(np.array(1), np.array(5), np.array(0))


def test_einsum_equations():
    a = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    b = RNG.standard_normal((2, 4, 5)).astype(np.float32)
    for eq, ins in (("bij,bjk->bik", (a, b)), ("bij,bjk", (a, b)), ("...ij->...ji", (a,)),
                    ("b i j -> j", (a,)), ("ij,ij->", (a[0], a[1]))):
        feeds = {f"x{i}": v for i, v in enumerate(ins)}
        _check(_model("Einsum", feeds, attrs={"equation": eq}, opset=12), feeds)
    with pytest.raises(ValueError, match="2 operand terms"):
        nn.einsum(a, equation="ij,jk->ik")


def test_instance_norm_and_lrn_and_global_max_pool():
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    s, b = RNG.standard_normal(3).astype(np.float32), RNG.standard_normal(3).astype(np.float32)
    _check(_model("InstanceNormalization", {"x": x}, {"s": s, "b": b}, attrs={"epsilon": 1e-3},
                  opset=10), {"x": x}, rtol=1e-4, atol=1e-5)
    for size in (1, 2, 3, 4, 5):
        # onnx.reference's LRN loops over the batch axis instead of the channels: the definition
        (got,) = _run_qrt(_model("LRN", {"x": x}, attrs={"size": size, "alpha": 0.01,
                                                          "beta": 0.6, "bias": 2.0}, opset=13),
                          {"x": x})
        sq = np.zeros(x.shape, np.float64)
        for c in range(3):
            lo, hi = max(0, c - (size - 1) // 2), min(3, c + -(-(size - 1) // 2) + 1)
            sq[:, c] = (x[:, lo:hi].astype(np.float64) ** 2).sum(axis=1)
        np.testing.assert_allclose(got, x / (2.0 + 0.01 / size * sq) ** 0.6, rtol=1e-5)
    _check(_model("GlobalMaxPool", {"x": x}, opset=13), {"x": x})
    x16 = x.astype(np.float16)
    y16 = nn.instance_norm(x16, s.astype(np.float16), b.astype(np.float16), epsilon=1e-5)
    assert y16.dtype == np.float16


@pytest.mark.parametrize("op,attrs", [("Elu", {"alpha": 0.7}), ("Selu", {}), ("Softplus", {}),
                                      ("Mish", {}), ("ThresholdedRelu", {"alpha": 0.3}),
                                      ("Neg", {}), ("Abs", {}), ("Exp", {}), ("Reciprocal", {}),
                                      ("Floor", {}), ("Ceil", {}), ("Round", {}), ("Sign", {}),
                                      ("Sin", {}), ("Cos", {})])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_unary_float_ops(op, attrs, dtype):
    x = (RNG.standard_normal((3, 7)) * 4).astype(dtype)
    x[0, :4] = [0.5, 1.5, -2.5, 0.0]  # Round: half to even
    _check(_model(op, {"x": x}, attrs=attrs, opset=18), {"x": x},
           rtol=2e-3 if dtype == np.float16 else 1e-5, atol=1e-3 if dtype == np.float16 else 1e-6)


def test_softplus_does_not_overflow():
    x = np.array([100.0, -100.0, 0.0], np.float32)
    y = activations.softplus(x)
    np.testing.assert_allclose(y, [100.0, np.exp(-100.0), np.log(2.0)], rtol=1e-6, atol=1e-44)
    assert np.all(np.isfinite(y))


def test_integer_unary_ops_wrap():
    x = np.array([-128, -1, 0, 127], np.int8)
    np.testing.assert_array_equal(elementwise.neg(x), np.array([-128, 1, 0, -127], np.int8))
    np.testing.assert_array_equal(elementwise.abs_(x), np.array([-128, 1, 0, 127], np.int8))
    np.testing.assert_array_equal(elementwise.sign(x), np.array([-1, -1, 0, 1], np.int8))
    with pytest.raises(ValueError, match="unsigned"):
        elementwise.neg(np.array([1], np.uint8))


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
def test_variadic_broadcasting(op):
    a = RNG.standard_normal((3, 1, 4)).astype(np.float32)
    b = RNG.standard_normal((2, 1)).astype(np.float32)
    c = RNG.standard_normal((4,)).astype(np.float32)
    for feeds in ({"a": a}, {"a": a, "b": b}, {"a": a, "b": b, "c": c}):
        if op != "Mean":
            _check(_model(op, feeds, opset=13), feeds)
        else:  # onnx.reference's Mean adds in place into the first input: no broadcasting
            (got,) = _run_qrt(_model(op, feeds, opset=13), feeds)
            bc = np.broadcast_arrays(*feeds.values())
            np.testing.assert_allclose(got, sum(bc) / len(bc), rtol=1e-6)
            assert got.dtype == np.float32
    if op in ("Max", "Min"):
        ints = {"a": np.array([[1, -5]], np.int32), "b": np.array([[3], [-7]], np.int32)}
        _check(_model(op, ints, opset=13), ints)


@pytest.mark.parametrize("op", ["Less", "LessOrEqual", "Greater", "GreaterOrEqual"])
def test_comparisons(op):
    a = RNG.integers(0, 3, size=(2, 3)).astype(np.float32)
    b = RNG.integers(0, 3, size=(3,)).astype(np.float32)
    a[0, 0] = np.nan
    _check(_model(op, {"a": a, "b": b}, opset=16), {"a": a, "b": b})


def test_prelu_slope_broadcasts():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    for slope in (np.array([0.2], np.float32), RNG.standard_normal((3, 1)).astype(np.float32),
                  RNG.standard_normal((4,)).astype(np.float32)):
        _check(_model("PRelu", {"x": x}, {"s": slope}, opset=16), {"x": x})
    with pytest.raises(ValueError, match="does not broadcast"):
        activations.prelu(x, np.ones((3,), np.float32))


def test_small_tensor_ops():
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    _check(_model("Size", {"x": x}, opset=13), {"x": x})
    _check(_model("Tile", {"x": x}, {"r": np.array([2, 3], np.int64)}, opset=13), {"x": x})
    _check(_model("Trilu", {"x": x}, {"k": np.array(-1, np.int64)}, attrs={"upper": 0},
                  opset=14), {"x": x})
    _check(_model("EyeLike", {"x": x}, attrs={"k": 1, "dtype": TensorProto.INT32}, opset=10),
           {"x": x})
    _check(_model("NonZero", {"x": np.array([[0, 1], [2, 0]], np.int64)}, opset=13),
           {"x": np.array([[0, 1], [2, 0]], np.int64)})
    c = _check(_model("ConstantOfShape", {}, {"s": np.array([2, 3], np.int64)},
                      attrs={"value": numpy_helper.from_array(np.array([7], np.int32))},
                      opset=10), {})
    assert c[0].dtype == np.int32


@pytest.mark.parametrize("opset", [10, 13, 22])
def test_dropout_is_identity_at_inference(opset):
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    y, mask = _run_qrt(_model("Dropout", {"x": x}, n_out=2, opset=opset), {"x": x})
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == np.bool_ and np.all(mask)
    # opset 7 (qrt loads opset >= 10, so the function itself): the mask has the input's type
    y, mask = tensor.dropout_7(x, ratio=0.5, ctx=type("C", (), {"n_outputs": 2})())
    assert mask.dtype == np.float32 and np.all(mask == 1)


# ------------------------------------------------------------------------ inputs left untouched

def test_ops_never_write_into_their_inputs():
    f = RNG.standard_normal((2, 4, 2, 2)).astype(np.float32)
    i = np.array([[[[0, -1], [1, 0]]]], np.int64)
    calls = [
        (elementwise.neg, (f,), {}), (elementwise.abs_, (f,), {}), (elementwise.max_, (f,), {}),
        (elementwise.sum_, (f, f), {}), (elementwise.mod_10, (f, f + 3), {"fmod": 1}),
        (activations.elu, (f,), {"alpha": 1.0}), (activations.prelu, (f, f), {}),
        (activations.log_softmax_13, (f,), {"axis": 1}),
        (tensor.tile, (f, np.array([1, 1, 1, 1])), {}),
        (tensor.gather_elements, (f, i), {"axis": 3}),
        (tensor.scatter_elements_18, (f, i, np.ones(i.shape, np.float32)),
         {"axis": 3, "reduction": "add"}),
        (tensor.scatter_nd_18, (f, np.array([[1]]), np.ones((1, 4, 2, 2), np.float32)),
         {"reduction": "none"}),
        (tensor.cumsum, (f, np.array(1)), {"exclusive": 1, "reverse": 1}),
        (tensor.trilu, (f,), {"upper": 1}), (tensor.depth_to_space_11, (f,),
                                             {"blocksize": 1, "mode": "DCR"}),
        (tensor.space_to_depth_1, (f,), {"blocksize": 2}),
        (tensor.top_k_11, (f, np.array([2])), {"axis": 1, "largest": 1, "sorted": 1}),
        (tensor.dropout_12, (f,), {"seed": None, "ctx": type("C", (), {"n_outputs": 2})()}),
        (reduce.reduce_max_18, (f, np.array([], np.int64)),
         {"keepdims": 1, "noop_with_empty_axes": 1}),
        (reduce.reduce_sum_13, (f, np.array([], np.int64)),
         {"keepdims": 1, "noop_with_empty_axes": 1}),
        (nn.instance_norm, (f, np.ones(4, np.float32), np.zeros(4, np.float32)),
         {"epsilon": 1e-5}),
        (nn.einsum, (f,), {"equation": "abcd->abcd"}), (pool.global_max_pool, (f,), {}),
    ]
    for fn, args, kw in calls:
        before = [a.copy() for a in args]
        out = fn(*args, **kw)
        for a, b in zip(args, before):
            np.testing.assert_array_equal(a, b, err_msg=fn.__name__)
        for o in out if isinstance(out, tuple) else (out,):
            assert not any(np.shares_memory(o, a) for a in args), fn.__name__


# ---------------------------------------------------------------------------- more bad inputs

@pytest.mark.parametrize("op,feeds,consts,attrs,pattern", [
    ("Tile", {"x": np.zeros((2, 3), np.float32)}, {"r": np.array([2], np.int64)}, {},
     r"Tile: repeats \[2\] has 1 values, the input has rank 2"),
    ("Range", {}, {"s": np.array(0, np.int64), "l": np.array(5, np.int64),
                   "d": np.array(0, np.int64)}, {}, "Range: delta is 0"),
    ("DepthToSpace", {"x": np.zeros((1, 6, 2, 2), np.float32)}, {}, {"blocksize": 2},
     "channels 6 are not divisible"),
    ("ArgMax", {"x": np.zeros((2, 3), np.float32)}, {}, {"axis": 2}, "axis 2 is out of range"),
    ("OneHot", {"i": np.array([1], np.int64)}, {"d": np.array(0, np.int64),
                                                "v": np.array([0, 1], np.float32)}, {},
     "depth must be positive"),
    ("ReduceL2", {"x": np.zeros((3,), np.bool_)}, {}, {}, "unsupported element type bool"),
    ("Less", {"a": np.zeros(2, np.float32), "b": np.zeros(2, np.int32)}, {}, {},
     "share one element type"),
    ("ScatterND", {"x": np.zeros((2, 3), np.float32), "i": np.array([[0]], np.int64),
                   "u": np.ones((1, 2), np.float32)}, {}, {}, "updates shape"),
])
def test_bad_inputs_fail_clearly(op, feeds, consts, attrs, pattern):
    m = _model(op, feeds, consts, attrs=attrs, opset=13)
    with pytest.raises(NodeExecutionError, match=rf"the_node[\s\S]*{pattern}"):
        _run_qrt(m, feeds, optimize=False)


# ------------------------------------------------------------------- registration vs schema

NEW_OPS = sorted(set("""Neg Abs Exp Log Reciprocal Floor Ceil Round Sign Sin Cos Softplus Elu Selu
PRelu Mish ThresholdedRelu Max Min Sum Mean Mod Less LessOrEqual Greater GreaterOrEqual And Or Xor
Not Size Range ConstantOfShape Tile GatherElements GatherND ScatterND ScatterElements TopK ArgMax
ArgMin CumSum Trilu OneHot DepthToSpace SpaceToDepth NonZero EyeLike Dropout ReduceSum ReduceMax
ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceSumSquare ReduceLogSumExp ReduceLogSum LogSoftmax
InstanceNormalization GlobalMaxPool Einsum LRN""".split()))


@pytest.mark.parametrize("op", NEW_OPS)
def test_new_ops_attributes_match_onnx_schema_for_every_opset(op):
    import onnx

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
