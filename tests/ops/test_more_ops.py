"""The less common ONNX ops (qrt/ops/misc.py, spatial.py, recurrent.py, signal.py, rand.py):
random inputs against onnx.reference across attribute combinations, opset forms and shapes;
RNN/GRU/LSTM also against onnxruntime with random weights; random ops by shape, type, range,
statistics and seeding; bad inputs failing through `InferenceSession.run` with an error that
names the node and the problem."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import qrt
from tests.ops._one_node import NP2ONNX, one_node_model
from qrt.errors import NodeExecutionError

_NP2ONNX = NP2ONNX

RNG = np.random.default_rng(20240611)


_model = one_node_model


def _run(model, feeds, optimize=True):
    return qrt.InferenceSession(model, optimize=optimize, threads=1).run(None, feeds)


def _compare(got, want, rtol, atol, what=""):
    assert len(got) == len(want), what
    for g, w in zip(got, want):
        w = np.asarray(w)
        assert g.dtype == w.dtype, (what, g.dtype, w.dtype)
        assert g.shape == w.shape, (what, g.shape, w.shape)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=what)
        else:
            np.testing.assert_array_equal(g, w, err_msg=what)


def _check(model, feeds, rtol=1e-5, atol=1e-6, want=None):
    """qrt (with and without the passes) against onnx.reference (or `want`)."""
    if want is None:
        want = ReferenceEvaluator(model).run(None, feeds)
    for optimize in (True, False):
        _compare(_run(model, feeds, optimize), want, rtol, atol, f"optimize={optimize}")
    return want


def _fails(model, feeds, *words):
    with pytest.raises(NodeExecutionError) as e:
        _run(model, feeds)
    msg = str(e.value)
    assert "the_node" in msg, msg
    for w in words:
        assert w in msg, msg


def f32(*shape, lo=None, hi=None):
    if lo is not None:
        return RNG.uniform(lo, hi, shape).astype(np.float32)
    return RNG.standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------------- elementwise & casts

@pytest.mark.parametrize("src,dst", [(np.float32, np.int32), (np.int64, np.float32),
                                     (np.float32, np.float16), (np.uint8, np.bool_),
                                     (np.float64, np.uint8)])
@pytest.mark.parametrize("opset", [15, 19, 24])
def test_cast_like(src, dst, opset):
    x = (RNG.uniform(0, 100, (3, 4))).astype(src)
    like = np.zeros((1,), dst)
    _check(_model("CastLike", {"x": x}, {"like": like}, opset=opset), {"x": x})


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_isnan_isinf(dtype):
    x = np.array([1.0, np.nan, np.inf, -np.inf, 0.0, -2.5], dtype)
    _check(_model("IsNaN", {"x": x}, opset=13), {"x": x})
    for neg in (0, 1):
        for pos in (0, 1):
            m = _model("IsInf", {"x": x}, attrs={"detect_negative": neg, "detect_positive": pos},
                       opset=10)
            _check(m, {"x": x})


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
def test_celu(alpha):
    x = f32(3, 5) * 3
    _check(_model("Celu", {"x": x}, attrs={"alpha": alpha}, opset=12), {"x": x})


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int8])
@pytest.mark.parametrize("bias,lambd", [(0.0, 0.5), (1.5, 1.0), (0.0, 0.0)])
def test_shrink(dtype, bias, lambd):
    x = (RNG.uniform(-4, 4, (4, 5))).astype(dtype)
    _check(_model("Shrink", {"x": x}, attrs={"bias": bias, "lambd": lambd}, opset=10), {"x": x})


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_swish(alpha):
    x = f32(2, 7) * 4
    # spec: x * sigmoid(alpha * x)
    want = [(x / (1 + np.exp(-alpha * x.astype(np.float64)))).astype(np.float32)]
    _check(_model("Swish", {"x": x}, attrs={"alpha": alpha}, opset=24), {"x": x}, want=want)


@pytest.mark.parametrize("opset,axis", [(11, 1), (11, 0), (11, -1), (13, -1), (13, 0), (13, 1)])
def test_hardmax(opset, axis):
    x = RNG.integers(0, 3, (3, 4, 5)).astype(np.float32)  # ties: the first maximum wins
    m = _model("Hardmax", {"x": x}, attrs={"axis": axis}, opset=opset)
    if opset >= 13 or axis in (-1, 2):
        _check(m, {"x": x})
        return
    # Before opset 13 the input is coerced to 2-D [prod(shape[:axis]), prod(shape[axis:])] and
    # each row gets one 1. onnx.reference applies the opset-13 per-axis rule at every version,
    # so the spec's rule is computed here.
    x2 = x.reshape(int(np.prod(x.shape[:axis])), -1)
    want = np.zeros_like(x2)
    want[np.arange(x2.shape[0]), x2.argmax(axis=1)] = 1
    _check(m, {"x": x}, want=[want.reshape(x.shape)])


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
def test_bitshift_unsigned(direction, dtype):
    x = RNG.integers(0, 200, (3, 4)).astype(dtype)
    y = RNG.integers(0, 5, (4,)).astype(dtype)
    _check(_model("BitShift", {"x": x, "y": y}, attrs={"direction": direction}, opset=11),
           {"x": x, "y": y})


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
def test_bitshift_signed_28(direction, dtype):
    bits = np.dtype(dtype).itemsize * 8
    x = RNG.integers(-100, 100, (5, 6)).astype(dtype)
    y = RNG.integers(-2, bits + 3, (5, 6)).astype(dtype)  # negative and too-wide shifts too
    _check(_model("BitShift", {"x": x, "y": y}, attrs={"direction": direction}, opset=28),
           {"x": x, "y": y})


# ------------------------------------------------------------------------------ normalizations

@pytest.mark.parametrize("axes", [[0, 2, 3], [1], [2, 3], [0, 1, 2, 3]], ids=str)
def test_mean_variance_normalization(axes):
    x = f32(2, 3, 4, 5)
    _check(_model("MeanVarianceNormalization", {"x": x}, attrs={"axes": axes}, opset=13),
           {"x": x}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape,groups", [((2, 6, 4), 3), ((1, 4, 3, 3), 2), ((2, 4, 5), 4),
                                          ((3, 6, 2, 2, 2), 1)])
@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_group_normalization_18_and_21(shape, groups, eps):
    x = f32(*shape)
    c = shape[1]
    # opset 18: one scale/bias per group
    sg, bg = f32(groups), f32(groups)
    m = _model("GroupNormalization", {"x": x}, {"s": sg, "b": bg},
               attrs={"num_groups": groups, "epsilon": eps}, opset=18)
    _check(m, {"x": x}, rtol=1e-4, atol=1e-5)
    # opset 21: one per channel
    sc, bc = f32(c), f32(c)
    m = _model("GroupNormalization", {"x": x}, {"s": sc, "b": bc},
               attrs={"num_groups": groups, "epsilon": eps}, opset=21)
    _check(m, {"x": x}, rtol=1e-4, atol=1e-5)


def test_group_normalization_float16_stash_type():
    x = f32(2, 4, 6).astype(np.float16)
    s, b = f32(4).astype(np.float16), f32(4).astype(np.float16)
    for stash in (0, 1):
        m = _model("GroupNormalization", {"x": x}, {"s": s, "b": b},
                   attrs={"num_groups": 2, "stash_type": stash}, opset=21)
        # onnx.reference cannot run this (it falls back to the function body and fails): the
        # spec's formula in float32
        xg = x.astype(np.float32).reshape(2, 2, -1)
        y = (xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + 1e-5)
        want = y.reshape(x.shape) * s.astype(np.float32)[:, None] + b.astype(np.float32)[:, None]
        _check(m, {"x": x}, rtol=5e-3, atol=5e-3, want=[want.astype(np.float16)])


@pytest.mark.parametrize("axis", [-1, -2, 0, 1, 2])
@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_rms_normalization(axis, eps):
    x = f32(2, 3, 4)
    a = axis % 3
    scale = f32(*x.shape[a:])
    m = _model("RMSNormalization", {"x": x}, {"s": scale}, attrs={"axis": axis, "epsilon": eps},
               opset=23)
    _check(m, {"x": x}, rtol=1e-5, atol=1e-6)


def test_rms_normalization_broadcast_scale_float16():
    x = f32(2, 3, 8).astype(np.float16)
    scale = f32(8).astype(np.float16)
    m = _model("RMSNormalization", {"x": x}, {"s": scale}, attrs={"axis": 1}, opset=23)
    _check(m, {"x": x}, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("axis,p", [(-1, 2), (0, 2), (1, 1), (-1, 1)])
def test_lp_normalization(axis, p):
    x = f32(3, 4, 5)
    x[0, 0] = 0  # a zero row
    m = _model("LpNormalization", {"x": x}, attrs={"axis": axis, "p": p}, opset=22)
    if p == 2:
        _check(m, {"x": x}, rtol=1e-5, atol=1e-6)
        return
    # onnx.reference's L1 norm sums x itself, not |x| (only right for non-negative inputs):
    # the spec's x / sum(|x|) here
    norm = np.abs(x).sum(axis=axis, keepdims=True)
    want = np.where(norm == 0, 0, x / np.where(norm == 0, 1, norm)).astype(np.float32)
    _check(m, {"x": x}, rtol=1e-5, atol=1e-6, want=[want])


# --------------------------------------------------------------------------- tensor reshaping

@pytest.mark.parametrize("opset", [9, 11])
@pytest.mark.parametrize("axis", [None, 0, 1, 2, -1])
def test_compress(opset, axis):
    if opset == 9 and axis is not None and axis < 0:
        return
    x = f32(3, 4, 5)
    n = x.size if axis is None else x.shape[axis]
    cond = RNG.integers(0, 2, max(1, n - 1)).astype(bool)  # shorter than the axis is allowed
    attrs = {} if axis is None else {"axis": axis}
    m = _model("Compress", {"x": x}, {"c": cond}, attrs=attrs, opset=opset)
    _check(m, {"x": x})


@pytest.mark.parametrize("sorted_", [0, 1])
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_unique(sorted_, axis):
    x = RNG.integers(0, 3, (6, 3)).astype(np.float32)
    x[3] = x[1]  # repeated rows for the axis form
    attrs = {"sorted": sorted_} | ({} if axis is None else {"axis": axis})
    for n_out in (1, 4):
        m = _model("Unique", {"x": x}, attrs=attrs, opset=11, n_out=n_out)
        # onnx.reference's sorted=0 path takes the unique entries along axis 0 of the original
        # input (wrong without an axis or with axis != 0): onnxruntime is the reference here
        _check(m, {"x": x}, want=_ort(m, {"x": x}))


def test_unique_int_and_partial_outputs():
    x = np.array([2, 1, 1, 3, 4, 3, 2], np.int64)
    m = _model("Unique", {"x": x}, attrs={"sorted": 0}, opset=11, n_out=3)
    _check(m, {"x": x})
    _check(m, {"x": x}, want=_ort(m, {"x": x}))


@pytest.mark.parametrize("batch_axis,time_axis", [(1, 0), (0, 1)])
def test_reverse_sequence(batch_axis, time_axis):
    x = f32(4, 5, 2) if batch_axis == 1 else f32(5, 4, 2)  # batch of 5 either way... see below
    nb = x.shape[batch_axis]
    nt = x.shape[time_axis]
    lens = RNG.integers(0, nt + 1, nb).astype(np.int64)
    m = _model("ReverseSequence", {"x": x}, {"lens": lens},
               attrs={"batch_axis": batch_axis, "time_axis": time_axis}, opset=10)
    _check(m, {"x": x})


@pytest.mark.parametrize("shape,axes", [([3, 7, 3], None), ([2, 9, 3], None), ([5, 4, 1], None),
                                        ([6, 3], [0, -1]), ([5], [1]), ([7, 8], [-1, 0])],
                         ids=str)
def test_center_crop_pad(shape, axes):
    x = f32(4, 6, 3)  # crops and pads, even and odd differences
    attrs = {} if axes is None else {"axes": axes}
    m = _model("CenterCropPad", {"x": x}, {"shape": np.array(shape, np.int64)}, attrs=attrs,
               opset=18)
    _check(m, {"x": x})


@pytest.mark.parametrize("shape", [(3, 3), (2, 4, 4), (2, 2, 3, 3)])
def test_det(shape):
    x = f32(*shape)
    _check(_model("Det", {"x": x}, opset=11), {"x": x}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rank", [3, 4])
@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rd", [0, 4])
@pytest.mark.parametrize("with_pos", [False, True])
def test_rotary_embedding(rank, interleaved, rd, with_pos):
    B, heads, S, D = 2, 3, 5, 8
    x = f32(B, heads, S, D) if rank == 4 else f32(B, S, heads * D)
    half = (rd or D) // 2
    consts, order = {}, ["x", "cos", "sin"]
    if with_pos:
        angles = f32(12, half)
        consts["pos"] = RNG.integers(0, 12, (B, S)).astype(np.int64)
        order.append("pos")
    else:
        angles = f32(B, S, half)
    consts = {"cos": np.cos(angles), "sin": np.sin(angles)} | consts
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rd}
    if rank == 3:
        attrs["num_heads"] = heads
    m = _model("RotaryEmbedding", {"x": x}, consts, attrs=attrs, opset=23, input_order=order)
    _check(m, {"x": x}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode,scales", [("nearest", [1, 1, 2, 3]), ("linear", [1, 1, 2, 2]),
                                         ("nearest", [1, 2, 1.5, 2])], ids=str)
def test_upsample_10(mode, scales):
    x = f32(1, 2, 3, 4)
    m = _model("Upsample", {"x": x}, {"s": np.array(scales, np.float32)}, attrs={"mode": mode},
               opset=10)
    # Upsample-10 is Resize-10 (deprecated). onnx.reference's Upsample only runs nearest with
    # integer scales (checked there) and its Resize-10 does not run: elsewhere qrt's Resize-10
    # (checked by the backend cases) is the reference
    if mode == "nearest" and all(float(v).is_integer() for v in scales):
        _check(m, {"x": x}, rtol=1e-5, atol=1e-6)
    want = _run(_model("Resize", {"x": x}, {"s": np.array(scales, np.float32)},
                       attrs={"mode": mode}, opset=10), {"x": x})
    _check(m, {"x": x}, rtol=1e-6, atol=1e-7, want=want)
    assert want[0].shape == tuple(int(d * f) for d, f in zip(x.shape, scales))


# ------------------------------------------------------------------------------------ pooling

@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2]},
    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "p": 1},
    {"kernel_shape": [2, 3], "strides": [2, 1], "p": 3},
    {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER"},
    {"kernel_shape": [2, 2], "auto_pad": "SAME_LOWER", "strides": [2, 2]},
], ids=str)
def test_lp_pool_11(attrs):
    x = f32(1, 2, 6, 7)
    # onnx.reference builds LpPool on AveragePool without count_include_pad, which is wrong
    # where the window covers padding; the spec's (sum |x|^p)^(1/p) is computed here instead.
    m = _model("LpPool", {"x": x}, attrs=attrs, opset=11)
    want = _lp_pool_spec(x, attrs)
    _check(m, {"x": x}, rtol=1e-4, atol=1e-5, want=[want])


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3], "dilations": [2]},
    {"kernel_shape": [2], "ceil_mode": 1, "strides": [2]},
    {"kernel_shape": [3], "pads": [1, 2], "p": 1},
], ids=str)
def test_lp_pool_18(attrs):
    x = f32(2, 3, 9)
    m = _model("LpPool", {"x": x}, attrs=attrs, opset=18)
    _check(m, {"x": x}, rtol=1e-4, atol=1e-5, want=[_lp_pool_spec(x, attrs)])


def _lp_pool_spec(x, attrs):
    """(sum over each window of |x|^p)^(1/p), zero padding, straight loops."""
    p = attrs.get("p", 2)
    k = attrs["kernel_shape"]
    nd = len(k)
    s = attrs.get("strides", [1] * nd)
    d = attrs.get("dilations", [1] * nd)
    sp = x.shape[2:]
    dk = [(k[i] - 1) * d[i] + 1 for i in range(nd)]
    ap = attrs.get("auto_pad", "NOTSET")
    if ap in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-sp[i] // s[i]) for i in range(nd)]
        tot = [max(0, (out[i] - 1) * s[i] + dk[i] - sp[i]) for i in range(nd)]
        begin = [t // 2 if ap == "SAME_UPPER" else t - t // 2 for t in tot]
    else:
        pads = attrs.get("pads", [0] * 2 * nd)
        begin = pads[:nd]
        out = []
        for i in range(nd):
            span = sp[i] + pads[i] + pads[nd + i] - dk[i]
            o = (-(-span // s[i]) if attrs.get("ceil_mode") else span // s[i]) + 1
            if attrs.get("ceil_mode") and (o - 1) * s[i] >= sp[i] + pads[i]:
                o -= 1
            out.append(o)
    y = np.zeros(x.shape[:2] + tuple(out), np.float64)
    for o in np.ndindex(*out):
        acc = np.zeros(x.shape[:2])
        for t in np.ndindex(*k):
            pos = [o[i] * s[i] + t[i] * d[i] - begin[i] for i in range(nd)]
            if all(0 <= pos[i] < sp[i] for i in range(nd)):
                acc += np.abs(x[(slice(None), slice(None)) + tuple(pos)]) ** p
        y[(slice(None), slice(None)) + o] = acc ** (1.0 / p)
    return y.astype(x.dtype)


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("shape", [(2, 3, 4), (1, 2, 3, 4)])
def test_global_lp_pool(p, shape):
    x = f32(*shape)
    want = (np.abs(x.astype(np.float64)) ** p).sum(axis=tuple(range(2, x.ndim)),
                                                   keepdims=True) ** (1 / p)
    _check(_model("GlobalLpPool", {"x": x}, attrs={"p": p}, opset=10 if p < 3 else 22), {"x": x},
           rtol=1e-5, want=[want.astype(np.float32)])


@pytest.mark.parametrize("with_shape", [False, True])
@pytest.mark.parametrize("kernel,strides,pads,size", [([2, 2], [2, 2], [0, 0, 0, 0], 6),
                                                      ([3, 3], [2, 2], [1, 1, 1, 1], 5)])
def test_max_unpool_of_max_pool(with_shape, kernel, strides, pads, size):
    x = f32(1, 2, size, size)
    pool = ReferenceEvaluator(_model("MaxPool", {"x": x}, attrs={
        "kernel_shape": kernel, "strides": strides, "pads": pads}, opset=12, n_out=2))
    y, idx = pool.run(None, {"x": x})
    consts = {"i": idx}
    if with_shape:
        consts["s"] = np.array([1, 2, 7, 7], np.int64)
    m = _model("MaxUnpool", {"y": y}, consts,
               attrs={"kernel_shape": kernel, "strides": strides, "pads": pads}, opset=11)
    _check(m, {"y": y})


@pytest.mark.parametrize("attrs,image,block", [
    ({}, [5, 5], [1, 5]),
    ({"strides": [2, 2]}, [5, 5], [3, 3]),
    ({"pads": [1, 0, 1, 0], "dilations": [1, 2]}, [4, 6], [2, 2]),
    ({"strides": [1, 2, 1]}, [3, 4, 3], [2, 2, 1]),
], ids=str)
def test_col2im(attrs, image, block):
    nd = len(image)
    st = attrs.get("strides", [1] * nd)
    dl = attrs.get("dilations", [1] * nd)
    pd = attrs.get("pads", [0] * 2 * nd)
    L = int(np.prod([(image[i] + pd[i] + pd[nd + i] - dl[i] * (block[i] - 1) - 1) // st[i] + 1
                     for i in range(nd)]))
    x = f32(2, 3 * int(np.prod(block)), L)
    m = _model("Col2Im", {"x": x}, {"img": np.array(image, np.int64),
                                    "blk": np.array(block, np.int64)}, attrs=attrs, opset=18)
    _check(m, {"x": x}, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------- GridSample, AffineGrid

@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_16(mode, padding, align):
    x = f32(2, 2, 4, 5)
    grid = f32(2, 3, 6, 2, lo=-1.4, hi=1.4)
    m = _model("GridSample", {"x": x, "g": grid},
               attrs={"mode": mode, "padding_mode": padding, "align_corners": align}, opset=16)
    # onnx.reference only knows the opset-20 mode names: the same node at 20 is the reference
    new = {"bilinear": "linear", "bicubic": "cubic", "nearest": "nearest"}[mode]
    want = ReferenceEvaluator(_model(
        "GridSample", {"x": x, "g": grid},
        attrs={"mode": new, "padding_mode": padding, "align_corners": align}, opset=20)).run(
        None, {"x": x, "g": grid})
    _check(m, {"x": x, "g": grid}, rtol=1e-4, atol=1e-5, want=want)


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_grid_sample_20(mode, padding):
    x = f32(1, 2, 5, 4)
    grid = f32(1, 4, 3, 2, lo=-1.3, hi=1.3)
    m = _model("GridSample", {"x": x, "g": grid},
               attrs={"mode": mode, "padding_mode": padding, "align_corners": 0}, opset=20)
    _check(m, {"x": x, "g": grid}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_volumetric_22(mode, padding, align):
    x = f32(1, 2, 3, 4, 3)
    grid = f32(1, 2, 3, 2, 3, lo=-1.2, hi=1.2)
    m = _model("GridSample", {"x": x, "g": grid},
               attrs={"mode": mode, "padding_mode": padding, "align_corners": align}, opset=22)
    _check(m, {"x": x, "g": grid}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [[2, 3, 4, 5], [1, 1, 3, 2, 4], [2, 1, 1, 3]], ids=str)
@pytest.mark.parametrize("align", [0, 1])
def test_affine_grid(size, align):
    nd = len(size) - 2
    theta = f32(size[0], nd, nd + 1)
    m = _model("AffineGrid", {"t": theta}, {"size": np.array(size, np.int64)},
               attrs={"align_corners": align}, opset=20)
    _check(m, {"t": theta}, rtol=1e-5, atol=1e-6)


def test_affine_grid_into_grid_sample_identity():
    # the identity transform samples the image back exactly (align_corners 0, bilinear)
    x = f32(1, 2, 4, 6)
    theta = np.array([[[1, 0, 0], [0, 1, 0]]], np.float32)
    ag = helper.make_node("AffineGrid", ["t", "size"], ["grid"], name="ag")
    gs = helper.make_node("GridSample", ["x", "grid"], ["y"], name="gs")
    g = helper.make_graph([ag, gs], "g", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 6])],
        [helper.make_empty_tensor_value_info("y")],
        [numpy_helper.from_array(theta, "t"),
         numpy_helper.from_array(np.array([1, 2, 4, 6], np.int64), "size")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    m.ir_version = 8
    (y,) = _run(m, {"x": x})
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------ RoiAlign, NMS

@pytest.mark.parametrize("opset,ctm", [(10, None), (16, "half_pixel"),
                                       (16, "output_half_pixel"), (22, "half_pixel")])
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("sr,scale,oh,ow", [(0, 1.0, 3, 3), (2, 0.5, 2, 4)])
def test_roi_align(opset, ctm, mode, sr, scale, oh, ow):
    x = f32(2, 3, 10, 8)
    rois = np.array([[0, 0, 7, 7], [1.5, 2.2, 6.1, 9.3], [-2, -1, 3, 4], [4, 4, 4.2, 4.5],
                     [0, 0, 20, 20]], np.float32) * (1 / scale) * 0.9
    bi = np.array([0, 1, 0, 1, 1], np.int64)
    attrs = {"mode": mode, "sampling_ratio": sr, "spatial_scale": scale, "output_height": oh,
             "output_width": ow}
    if ctm is not None:
        attrs["coordinate_transformation_mode"] = ctm
    m = _model("RoiAlign", {"x": x}, {"rois": rois, "bi": bi}, attrs=attrs, opset=opset)
    want = None
    if opset == 10:
        # RoiAlign-10 has no half-pixel offset; onnx.reference applies opset 16's default
        # (half_pixel) at every version, so opset 16's output_half_pixel is the reference
        want = ReferenceEvaluator(_model(
            "RoiAlign", {"x": x}, {"rois": rois, "bi": bi},
            attrs=dict(attrs, coordinate_transformation_mode="output_half_pixel"),
            opset=16)).run(None, {"x": x})
    _check(m, {"x": x}, rtol=1e-4, atol=1e-5, want=want)


@pytest.mark.parametrize("center", [0, 1])
@pytest.mark.parametrize("max_out,iou,score", [(3, 0.5, None), (10, 0.3, 0.2), (2, 0.0, 0.5),
                                               (0, 0.5, None), (None, None, None)])
def test_non_max_suppression(center, max_out, iou, score):
    nb, nbox, ncls = 2, 12, 3
    xy = RNG.uniform(0, 10, (nb, nbox, 2))
    wh = RNG.uniform(1, 5, (nb, nbox, 2))
    if center:
        boxes = np.concatenate([xy, wh], -1)
    else:
        boxes = np.concatenate([xy, xy + wh * RNG.choice([-1, 1], (nb, nbox, 2))], -1)
    boxes = boxes.astype(np.float32)
    scores = RNG.uniform(0, 1, (nb, ncls, nbox)).astype(np.float32)
    scores[0, 0, 3] = scores[0, 0, 5]  # a tie: the lower index goes first
    consts, order = {}, ["boxes", "scores"]
    for name, v, dt in (("mo", max_out, np.int64), ("iou", iou, np.float32),
                        ("st", score, np.float32)):
        if v is None:
            order.append("")
        else:
            consts[name] = np.array([v], dt)
            order.append(name)
    while order[-1] == "":
        order.pop()
    m = _model("NonMaxSuppression", {"boxes": boxes, "scores": scores}, consts,
               attrs={"center_point_box": center}, opset=11, input_order=order)
    feeds = {"boxes": boxes, "scores": scores}
    if max_out is None:
        # no max_output_boxes_per_class: no output, [0, 3] (onnx.reference returns shape [0])
        _check(m, feeds, want=_ort(m, feeds))
        assert _run(m, feeds)[0].shape == (0, 3)
    else:
        _check(m, feeds)
        _check(m, feeds, want=_ort(m, feeds))


# ------------------------------------------------------------------------- recurrent

def _rnn_inputs(op, T, B, I, H, dirs, layout, bias, seq, init, peep):
    g = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    x = f32(T, B, I) if layout == 0 else f32(B, T, I)
    consts = {"W": f32(dirs, g * H, I) * 0.5, "R": f32(dirs, g * H, H) * 0.5}
    order = ["x", "W", "R"]

    def opt(name, v):
        if v is None:
            order.append("")
        else:
            consts[name] = v
            order.append(name)

    opt("B", f32(dirs, 2 * g * H) if bias else None)
    opt("sl", RNG.integers(1, T + 1, B).astype(np.int32) if seq else None)
    st = (dirs, B, H) if layout == 0 else (B, dirs, H)
    opt("h0", f32(*st) if init else None)
    if op == "LSTM":
        opt("c0", f32(*st) if init else None)
        opt("P", f32(dirs, 3 * H) if peep else None)
    while order[-1] == "":
        order.pop()
    return x, consts, order


RNN_CASES = [
    # direction, bias, seq lens, initial state, peepholes, extra attributes
    ("forward", False, False, False, False, {}),
    ("reverse", True, True, True, True, {}),
    ("bidirectional", True, True, True, True, {}),
    ("forward", True, True, False, True, {"clip": 0.7}),
    ("bidirectional", True, False, True, False, {"clip": 2.0}),
]


def _ort(model, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("case", RNN_CASES, ids=lambda c: f"{c[0]}-{c[5]}")
def test_recurrent_vs_onnxruntime(op, case):
    direction, bias, seq, init, peep, extra = case
    T, B, I, H = 5, 3, 4, 6
    dirs = 2 if direction == "bidirectional" else 1
    x, consts, order = _rnn_inputs(op, T, B, I, H, dirs, 0, bias, seq, init, peep)
    attrs = {"hidden_size": H, "direction": direction, **extra}
    n_out = 3 if op == "LSTM" else 2
    m = _model(op, {"x": x}, consts, attrs=attrs, opset=14, n_out=n_out, input_order=order)
    _check(m, {"x": x}, rtol=1e-4, atol=1e-5, want=_ort(m, {"x": x}))


@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_gru_linear_before_reset_vs_onnxruntime(lbr, direction):
    T, B, I, H = 4, 2, 3, 5
    dirs = 2 if direction == "bidirectional" else 1
    x, consts, order = _rnn_inputs("GRU", T, B, I, H, dirs, 0, True, True, True, False)
    m = _model("GRU", {"x": x}, consts, attrs={"hidden_size": H, "direction": direction,
                                               "linear_before_reset": lbr},
               opset=14, n_out=2, input_order=order)
    _check(m, {"x": x}, rtol=1e-4, atol=1e-5, want=_ort(m, {"x": x}))


@pytest.mark.parametrize("op,acts,alpha,beta", [
    ("RNN", ["Relu"], None, None),
    ("RNN", ["LeakyRelu", "ScaledTanh"], [0.2, 0.8], [1.3]),
    ("GRU", ["HardSigmoid", "Softsign"], [0.3], [0.6]),
    ("GRU", ["Sigmoid", "Elu", "HardSigmoid", "Tanh"], [0.7, 0.25], [0.4]),
    ("LSTM", ["HardSigmoid", "LeakyRelu", "Affine"], [0.3, 0.2, 0.9], [0.4, 0.1]),
    ("LSTM", ["Sigmoid", "Softplus", "ThresholdedRelu"], [0.1], None),
], ids=str)
def test_recurrent_activations_vs_onnxruntime(op, acts, alpha, beta):
    T, B, I, H = 4, 2, 3, 4
    per = {"RNN": 1, "GRU": 2, "LSTM": 3}[op]
    dirs = len(acts) // per
    x, consts, order = _rnn_inputs(op, T, B, I, H, dirs, 0, True, False, True, False)
    attrs = {"hidden_size": H, "activations": acts,
             "direction": "bidirectional" if dirs == 2 else "forward"}
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    m = _model(op, {"x": x}, consts, attrs=attrs, opset=14, n_out=3 if op == "LSTM" else 2,
               input_order=order)
    _check(m, {"x": x}, rtol=2e-4, atol=1e-4, want=_ort(m, {"x": x}))


def test_lstm_input_forget_vs_onnxruntime():
    x, consts, order = _rnn_inputs("LSTM", 5, 3, 4, 6, 1, 0, True, True, True, True)
    m = _model("LSTM", {"x": x}, consts, attrs={"hidden_size": 6, "input_forget": 1},
               opset=14, n_out=3, input_order=order)
    _check(m, {"x": x}, rtol=1e-4, atol=1e-5, want=_ort(m, {"x": x}))


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_recurrent_vs_reference(op):
    x, consts, order = _rnn_inputs(op, 4, 2, 3, 5, 1, 0, True, False, True, False)
    m = _model(op, {"x": x}, consts, attrs={"hidden_size": 5}, opset=14,
               n_out=3 if op == "LSTM" else 2, input_order=order)
    _check(m, {"x": x}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_recurrent_layout_1_is_layout_0_transposed(op, direction):
    # onnxruntime refuses layout=1 on CPU: compare with qrt's own layout 0 on the same data
    # (layout 0 itself is checked against onnxruntime above)
    T, B, I, H = 4, 3, 2, 3
    dirs = 2 if direction == "bidirectional" else 1
    x1, consts1, order = _rnn_inputs(op, T, B, I, H, dirs, 1, True, True, True, op == "LSTM")
    attrs = {"hidden_size": H, "direction": direction}
    n_out = 3 if op == "LSTM" else 2
    m1 = _model(op, {"x": x1}, consts1, attrs=dict(attrs, layout=1), opset=14, n_out=n_out,
                input_order=order)
    consts0 = dict(consts1)
    for k in ("h0", "c0"):
        if k in consts0:
            consts0[k] = np.ascontiguousarray(np.swapaxes(consts0[k], 0, 1))
    x0 = np.ascontiguousarray(np.swapaxes(x1, 0, 1))
    m0 = _model(op, {"x": x0}, consts0, attrs=attrs, opset=14, n_out=n_out, input_order=order)
    y0 = _run(m0, {"x": x0})
    want = [np.ascontiguousarray(np.transpose(y0[0], (2, 0, 1, 3)))] + [
        np.ascontiguousarray(np.swapaxes(s, 0, 1)) for s in y0[1:]]
    _check(m1, {"x": x1}, rtol=1e-6, atol=1e-7, want=want)


@pytest.mark.parametrize("outputs", [["y"], ["", "yh"], ["y", "", "yc"], ["", "", "yc"]],
                         ids=str)
def test_lstm_optional_outputs(outputs):
    x, consts, order = _rnn_inputs("LSTM", 3, 2, 3, 4, 1, 0, True, True, True, True)
    node = helper.make_node("LSTM", order, outputs, name="the_node", hidden_size=4)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      list(x.shape))],
                          [helper.make_empty_tensor_value_info(o) for o in outputs if o],
                          [numpy_helper.from_array(v, k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    _check(m, {"x": x}, rtol=1e-4, atol=1e-5, want=_ort(m, {"x": x}))


def test_recurrent_opset_7_form():
    x, consts, order = _rnn_inputs("GRU", 3, 2, 3, 4, 1, 0, True, True, True, False)
    m = _model("GRU", {"x": x}, consts, attrs={"hidden_size": 4}, opset=10, n_out=2,
               input_order=order)
    _check(m, {"x": x}, rtol=1e-4, atol=1e-5, want=_ort(m, {"x": x}))


# ------------------------------------------------------------------------------ signal

@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("size,dtype", [(10, 1), (7, 11), (1, 1)])
def test_windows(op, periodic, size, dtype):
    if size == 1 and not periodic:
        return  # 0/0 in the spec's formula
    m = _model(op, {}, {"n": np.array(size, np.int64)},
               attrs={"periodic": periodic, "output_datatype": dtype}, opset=17)
    _check(m, {}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("inverse,onesided,complex_in", [(0, 0, False), (0, 0, True),
                                                         (0, 1, False), (1, 0, True),
                                                         (1, 1, True)])
@pytest.mark.parametrize("length", [None, 6, 12])
def test_dft_17_and_20(inverse, onesided, complex_in, length):
    x = f32(2, 8, 3, 2 if complex_in else 1)
    for opset in (17, 20):
        for axis in (1, 2):
            if opset == 17:
                consts = {} if length is None else {"len": np.array(length, np.int64)}
                attrs = {"axis": axis, "inverse": inverse, "onesided": onesided}
                order = None
            else:
                consts = {"ax": np.array(axis, np.int64)}
                if length is not None:
                    consts["len"] = np.array(length, np.int64)
                attrs = {"inverse": inverse, "onesided": onesided}
                order = ["x", "len" if length is not None else "", "ax"]
            m = _model("DFT", {"x": x}, consts, attrs=attrs, opset=opset, input_order=order)
            _check(m, {"x": x}, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("onesided", [0, 1])
@pytest.mark.parametrize("window,flen,step", [(True, None, 4), (False, 8, 3), (True, 8, 5)])
def test_stft(onesided, window, flen, step):
    x = f32(2, 30, 1)
    consts = {"step": np.array(step, np.int64)}
    order = ["x", "step"]
    if window:
        consts["w"] = f32(8, lo=0, hi=1)
        order.append("w")
    else:
        order.append("")
    if flen is not None:
        consts["fl"] = np.array(flen, np.int64)
        order.append("fl")
    m = _model("STFT", {"x": x}, consts, attrs={"onesided": onesided}, opset=17,
               input_order=order)
    _check(m, {"x": x}, rtol=1e-4, atol=1e-4)


def test_stft_complex_signal():
    x = f32(1, 20, 2)
    m = _model("STFT", {"x": x}, {"step": np.array(4, np.int64), "fl": np.array(6, np.int64)},
               attrs={"onesided": 0}, opset=17, input_order=["x", "step", "", "fl"])
    _check(m, {"x": x}, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mel,dft,rate,lo,hi,dtype", [(8, 16, 8192, 0.0, 4096.0, 1),
                                                      (10, 64, 16000, 20.0, 7000.0, 1),
                                                      (5, 32, 4000, 100.0, 1500.0, 11)])
def test_mel_weight_matrix(mel, dft, rate, lo, hi, dtype):
    consts = {"m": np.array(mel, np.int64), "d": np.array(dft, np.int64),
              "r": np.array(rate, np.int64), "lo": np.array(lo, np.float32),
              "hi": np.array(hi, np.float32)}
    m = _model("MelWeightMatrix", {}, consts, attrs={"output_datatype": dtype}, opset=17)
    _check(m, {}, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- random ops

def _random_model(op, feeds=None, attrs=None):
    return _model(op, feeds or {}, attrs=attrs, opset=22)


@pytest.mark.parametrize("dtype", [1, 11, 10])
def test_random_uniform_and_normal(dtype):
    np_dt = {1: np.float32, 11: np.float64, 10: np.float16}[dtype]
    m = _random_model("RandomUniform", attrs={"shape": [200, 50], "low": -2.0, "high": 3.0,
                                              "dtype": dtype})
    (u,) = _run(m, {})
    assert u.dtype == np_dt and u.shape == (200, 50)
    assert u.min() >= -2 and u.max() <= 3
    assert abs(float(u.mean()) - 0.5) < 0.1 and abs(float(u.std()) - 5 / np.sqrt(12)) < 0.1
    m = _random_model("RandomNormal", attrs={"shape": [100, 100], "mean": 1.5, "scale": 0.5,
                                             "dtype": dtype})
    (n,) = _run(m, {})
    assert n.dtype == np_dt and n.shape == (100, 100)
    assert abs(float(n.mean()) - 1.5) < 0.03 and abs(float(n.std()) - 0.5) < 0.03


def test_random_like_ops_take_shape_and_type():
    x = np.zeros((30, 40), np.float64)
    (u,) = _run(_random_model("RandomUniformLike", {"x": x}, {"low": 5.0, "high": 6.0}), {"x": x})
    assert u.dtype == np.float64 and u.shape == x.shape and 5 <= u.min() and u.max() <= 6
    (n,) = _run(_random_model("RandomNormalLike", {"x": x}, {"dtype": 1, "scale": 2.0}),
                {"x": x})
    assert n.dtype == np.float32 and n.shape == x.shape
    assert abs(float(n.std()) - 2) < 0.2


def test_seeded_random_ops_repeat_and_unseeded_differ():
    m = _random_model("RandomNormal", attrs={"shape": [64], "seed": 3.0})
    sess = qrt.InferenceSession(m)
    a, b = sess.run(None, {})[0], sess.run(None, {})[0]
    np.testing.assert_array_equal(a, b)
    (c,) = _run(_random_model("RandomNormal", attrs={"shape": [64], "seed": 4.0}), {})
    assert not np.array_equal(a, c)
    sess = qrt.InferenceSession(_random_model("RandomUniform", attrs={"shape": [64]}))
    assert not np.array_equal(sess.run(None, {})[0], sess.run(None, {})[0])  # not folded


@pytest.mark.parametrize("dtype", [None, 11, 9, 6])
def test_bernoulli(dtype):
    p = np.tile(np.array([0.0, 1.0, 0.25, 0.8], np.float32), (2000, 1))
    attrs = {"seed": 1.0} | ({} if dtype is None else {"dtype": dtype})
    (y,) = _run(_model("Bernoulli", {"p": p}, attrs=attrs, opset=15), {"p": p})
    want = {None: np.float32, 11: np.float64, 9: np.bool_, 6: np.int32}[dtype]
    assert y.dtype == want and y.shape == p.shape
    yf = y.astype(np.float64)
    assert set(np.unique(yf).tolist()) <= {0.0, 1.0}
    np.testing.assert_allclose(yf.mean(axis=0), [0, 1, 0.25, 0.8], atol=0.03)


@pytest.mark.parametrize("dtype", [6, 7])
def test_multinomial(dtype):
    probs = np.array([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    with np.errstate(divide="ignore"):
        logits = np.log(probs).astype(np.float32)
    m = _model("Multinomial", {"x": logits}, attrs={"sample_size": 4000, "dtype": dtype,
                                                    "seed": 7.0}, opset=10)
    (y,) = _run(m, {"x": logits})
    assert y.dtype == (np.int32 if dtype == 6 else np.int64) and y.shape == (3, 4000)
    for b in range(3):
        freq = np.bincount(y[b], minlength=3) / 4000
        np.testing.assert_allclose(freq, probs[b], atol=0.03)


# ----------------------------------------------------------------------------- bad inputs

def test_bad_inputs_name_the_node_and_problem():
    x = f32(2, 6, 4)
    _fails(_model("GroupNormalization", {"x": x}, {"s": f32(6), "b": f32(6)},
                  attrs={"num_groups": 4}, opset=21), {"x": x}, "num_groups 4")
    _fails(_model("GroupNormalization", {"x": x}, {"s": f32(6), "b": f32(6)},
                  attrs={"num_groups": 3}, opset=18), {"x": x}, "scale must have shape [3]")
    _fails(_model("RMSNormalization", {"x": x}, {"s": f32(5)}, opset=23), {"x": x},
           "does not broadcast")
    _fails(_model("Hardmax", {"x": x}, attrs={"axis": 3}, opset=13), {"x": x}, "axis 3")
    _fails(_model("Compress", {"x": x}, {"c": np.ones(9, bool)}, attrs={"axis": 1}, opset=11),
           {"x": x}, "condition has 9 entries")
    _fails(_model("ReverseSequence", {"x": x}, {"l": np.array([7] * 6, np.int64)}, opset=10),
           {"x": x}, "sequence_lens[0] = 7")
    _fails(_model("Det", {"x": x}, opset=11), {"x": x}, "[..., M, M]")
    xi = np.array([1, 2], np.int32)
    _fails(_model("BitShift", {"x": xi, "y": xi}, attrs={"direction": "LEFT"}, opset=11),
           {"x": xi, "y": xi}, "unsigned")
    _fails(_model("IsNaN", {"x": xi}, opset=13), {"x": xi}, "floating-point")
    _fails(_model("CenterCropPad", {"x": x}, {"s": np.array([1, 2], np.int64)}, opset=18),
           {"x": x}, "shape has 2 entries")
    x4 = f32(1, 2, 4, 4)
    _fails(_model("GridSample", {"x": x4, "g": f32(1, 3, 3, 3)}, opset=20),
           {"x": x4, "g": f32(1, 3, 3, 3)}, "grid must be")
    _fails(_model("GridSample", {"x": x4, "g": f32(1, 3, 3, 2)}, attrs={"mode": "linear"},
                  opset=16), {"x": x4, "g": f32(1, 3, 3, 2)}, "bilinear")
    _fails(_model("RoiAlign", {"x": x4}, {"r": f32(2, 4), "b": np.array([0, 3], np.int64)},
                  opset=16), {"x": x4}, "batch_indices must be in")
    _fails(_model("Col2Im", {"x": f32(1, 4, 5)}, {"i": np.array([3, 3], np.int64),
                                                  "b": np.array([2, 2], np.int64)}, opset=18),
           {"x": f32(1, 4, 5)}, "blocks")
    _fails(_model("MaxUnpool", {"x": x4}, {"i": np.full(x4.shape, 999, np.int64)},
                  attrs={"kernel_shape": [2, 2], "strides": [2, 2]}, opset=11), {"x": x4},
           "index is outside")
    b = f32(1, 3, 4)
    _fails(_model("NonMaxSuppression", {"b": b, "s": f32(1, 2, 4)}, opset=11),
           {"b": b, "s": f32(1, 2, 4)}, "scores must be")
    _fails(_model("DFT", {"x": f32(2, 5, 3)}, opset=20), {"x": f32(2, 5, 3)}, "last axis")
    _fails(_model("STFT", {"x": f32(1, 10, 1)}, {"s": np.array(2, np.int64),
                                                 "w": f32(4), "l": np.array(5, np.int64)},
                  opset=17), {"x": f32(1, 10, 1)}, "frame_length is 5")
    _fails(_model("Bernoulli", {"p": np.array([1.5], np.float32)}, opset=15),
           {"p": np.array([1.5], np.float32)}, "[0, 1]")
    _fails(_model("LpPool", {"x": x4}, attrs={"kernel_shape": [2]}, opset=18), {"x": x4},
           "kernel_shape")
    cs = np.ones((2, 6, 2), np.float32)
    _fails(_model("RotaryEmbedding", {"x": x}, {"c": cs, "s": cs}, opset=23), {"x": x},
           "num_heads")
    _fails(_model("RotaryEmbedding", {"x": x4}, {"c": cs, "s": cs}, opset=23), {"x": x4},
           "cos_cache gives shape")


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_recurrent_bad_inputs(op):
    x, consts, order = _rnn_inputs(op, 3, 2, 3, 4, 1, 0, True, True, False, False)
    m = _model(op, {"x": x}, consts, attrs={"hidden_size": 5}, opset=14, input_order=order)
    _fails(m, {"x": x}, "hidden_size 5")
    m = _model(op, {"x": x}, consts, attrs={"hidden_size": 4, "direction": "bidirectional"},
               opset=14, input_order=order)
    _fails(m, {"x": x}, "2 direction(s)")
    m = _model(op, {"x": x}, consts, attrs={"hidden_size": 4, "activations": ["Foo"] * 3},
               opset=14, input_order=order)
    _fails(m, {"x": x}, "activation")
    bad = dict(consts, sl=np.array([9, 1], np.int32))
    m = _model(op, {"x": x}, bad, attrs={"hidden_size": 4}, opset=14, input_order=order)
    _fails(m, {"x": x}, "sequence_lens")
    x2 = f32(3, 2, 5)
    m = _model(op, {"x": x2}, consts, attrs={"hidden_size": 4}, opset=14, input_order=order)
    _fails(m, {"x": x2}, "input size 5")


@pytest.mark.parametrize("op,feeds,consts,attrs,opset,match", [
    ("Col2Im", {"x": np.zeros((1, 8, 2), np.float32)},
     {"img": np.array([3, 3], np.int64), "blk": np.array([2, 2], np.int64)},
     {"pads": [-1, -1, -1, -1]}, 18, "pads"),
    ("Col2Im", {"x": np.zeros((1, 8, 20), np.float32)},
     {"img": np.array([4, 5], np.int64), "blk": np.array([2, 2], np.int64)},
     {"dilations": [0, 0]}, 18, "dilations"),
    ("AffineGrid", {"t": np.zeros((1, 2, 3), np.float32)},
     {"size": np.array([1, 2, -3, 4], np.int64)}, {}, 20, "negative"),
    ("MaxUnpool", {"x": np.ones((1, 1, 2, 2), np.float32), "i": np.zeros((1, 1, 2, 2), np.int64)},
     {}, {"kernel_shape": [2, 2], "strides": [0, 0]}, 18, "strides"),
    ("RoiAlign", {"x": np.ones((2, 3, 8, 8), np.float32), "r": np.array([[0, 0, 4, 4]], np.float32),
                  "b": np.array([0], np.int64)}, {}, {"sampling_ratio": -2}, 16, "sampling_ratio"),
], ids=["col2im_pads", "col2im_dilations", "affine_grid_size", "max_unpool_strides",
        "roi_align_sampling_ratio"])
def test_invalid_attributes_are_refused(op, feeds, consts, attrs, opset, match):
    with pytest.raises(NodeExecutionError, match=f"the_node.*{match}"):
        _run(_model(op, feeds, consts, attrs, opset=opset), feeds)


def test_loss_target_outside_the_classes_is_named():
    feeds = {"x": np.zeros((2, 3), np.float32), "t": np.array([0, 5], np.int64)}
    with pytest.raises(NodeExecutionError, match="the_node.*target value 5 is outside"):
        _run(_model("NegativeLogLikelihoodLoss", feeds, opset=13), feeds)


def test_non_finite_rois_and_scales_are_named():
    feeds = {"x": np.ones((1, 1, 4, 4), np.float32),
             "r": np.array([[0, 0, np.nan, 2]], np.float32), "b": np.array([0], np.int64)}
    with pytest.raises(NodeExecutionError, match="the_node.*roi 0 has a NaN"):
        _run(_model("RoiAlign", feeds, opset=16), feeds)
    feeds = {"x": np.ones((1, 1, 2, 2), np.float32)}
    m = _model("Upsample", feeds, {"s": np.array([1, 1, np.nan, 2], np.float32)}, opset=9)
    with pytest.raises(NodeExecutionError, match="the_node.*finite"):
        _run(m, feeds)
