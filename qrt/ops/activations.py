"""Activations: Relu, Clip, LeakyRelu, Sigmoid, HardSigmoid, HardSwish, Tanh, Erf, Gelu, Softmax,
Softplus, Elu, Selu, PRelu, Mish, ThresholdedRelu, LogSoftmax.

Every op returns its input's element type. float16 transcendental math runs in float32 and rounds
once at the end. Versions that only widened the type lists (Relu 13/14, LeakyRelu 16, HardSigmoid
and HardSwish 22, ...) share one registration.
"""
import math

import numpy as np
from numba import njit, prange

from qrt.ops.registry import REQUIRED, register  # noqa: F401

FLT_MAX = float(np.finfo(np.float32).max)


def _compute_dtype(x):
    """The float type to do transcendental math in (float16 -> float32)."""
    if x.dtype.kind != "f":
        raise ValueError(f"expected a floating-point input, got {x.dtype}")
    return np.float32 if x.dtype.itemsize < 4 else x.dtype.type


def _scalar(v, dtype):
    with np.errstate(over="ignore"):
        return np.asarray(v).astype(dtype).reshape(())


@register("Relu", since=6)  # 13: bfloat16, 14: signed integer types
def relu(x):
    return np.maximum(x, x.dtype.type(0))


def _clamp(x, lo, hi):
    if lo is not None:
        out = np.maximum(x, lo, out=np.empty_like(x))  # an array even for 0-d x
        if hi is not None:
            np.minimum(out, hi, out=out)  # in place: one allocation, same values
        return out
    if hi is not None:
        return np.minimum(x, hi)
    return x.view()


@register("Clip", since=6, attrs={"min": -FLT_MAX, "max": FLT_MAX})
def clip_6(x, *, min, max):  # noqa: A002 (ONNX attribute names)
    return _clamp(x, _scalar(min, x.dtype), _scalar(max, x.dtype))


@register("Clip", since=11)  # min/max became optional scalar inputs; 12 added integer types
def clip_11(x, min=None, max=None):  # noqa: A002
    lo = None if min is None else _bound(min, x, "min")
    hi = None if max is None else _bound(max, x, "max")
    return _clamp(x, lo, hi)


def _bound(v, x, name):
    if v.size != 1:
        raise ValueError(f"Clip: '{name}' must be a scalar, got shape {list(v.shape)}")
    if v.dtype != x.dtype:
        raise ValueError(f"Clip: '{name}' has type {v.dtype}, the input {x.dtype}")
    return v.reshape(())


@register("LeakyRelu", since=6, attrs={"alpha": 0.01})  # 16: bfloat16
def leaky_relu(x, *, alpha):
    a = _scalar(alpha, x.dtype)
    return np.where(x < 0, x * a, x)


@register("Sigmoid", since=6)
def sigmoid(x):
    ct = _compute_dtype(x)
    # 1 / (1 + exp(-x)): exp overflowing to inf for x << 0 correctly gives 0 (the true value is
    # below the smallest normal float there), so the plain formula is accurate everywhere.
    out = np.negative(x, dtype=ct)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += ct(1)
    np.reciprocal(out, out=out)
    return out.astype(x.dtype, copy=False)


@register("HardSigmoid", since=6, attrs={"alpha": 0.2, "beta": 0.5})  # 22: bfloat16
def hard_sigmoid(x, *, alpha, beta):
    a, b = _scalar(alpha, x.dtype), _scalar(beta, x.dtype)
    y = np.multiply(x, a, out=np.empty_like(x))  # an array even for 0-d x
    y += b  # in place from here on: the same operations, one buffer
    np.maximum(y, x.dtype.type(0), out=y)
    np.minimum(y, x.dtype.type(1), out=y)
    return y


@register("HardSwish", since=14)  # 22: bfloat16
def hard_swish(x):
    ct = _compute_dtype(x)
    xf = x.astype(ct, copy=False)
    g = np.minimum(np.maximum(xf * ct(1 / 6) + ct(0.5), ct(0)), ct(1))
    return (xf * g).astype(x.dtype, copy=False)


@register("Tanh", since=6)
def tanh(x):
    ct = _compute_dtype(x)
    return np.tanh(x.astype(ct, copy=False)).astype(x.dtype, copy=False)


_ERF_BLOCK = 16384


@njit(cache=True, nogil=True)
def _erf_serial(x, out):
    for i in range(x.size):
        out[i] = math.erf(x[i])


@njit(cache=True, nogil=True, parallel=True)
def _erf_parallel(x, out):
    n = x.size
    for b in prange((n + _ERF_BLOCK - 1) // _ERF_BLOCK):
        for i in range(b * _ERF_BLOCK, min((b + 1) * _ERF_BLOCK, n)):
            out[i] = math.erf(x[i])


def erf_array(x):
    """math.erf over a float array (float16 via float32); a new array of x's type."""
    ct = _compute_dtype(x)
    xf = np.ascontiguousarray(x, dtype=ct).reshape(-1)
    out = np.empty(xf.size, dtype=ct)
    if xf.size >= 4 * _ERF_BLOCK:  # threads as set by the session (numba.set_num_threads)
        _erf_parallel(xf, out)
    elif xf.size:
        _erf_serial(xf, out)
    return out.reshape(x.shape).astype(x.dtype, copy=False)


@register("Erf", since=9)  # 13: bfloat16
def erf(x):
    if x.dtype.kind in "iu":  # Erf 9 accepts integer tensors; the result keeps the type
        return np.trunc(erf_array(x.astype(np.float64))).astype(x.dtype)
    return erf_array(x)


@register("Gelu", since=20, attrs={"approximate": "none"})
def gelu(x, *, approximate):
    ct = _compute_dtype(x)
    xf = x.astype(ct, copy=False)
    if approximate == "none":
        y = xf * ct(0.5) * (ct(1) + erf_array(xf * ct(1 / math.sqrt(2))))
    elif approximate == "tanh":
        inner = ct(math.sqrt(2 / math.pi)) * (xf + ct(0.044715) * xf * xf * xf)
        y = xf * ct(0.5) * (ct(1) + np.tanh(inner))
    else:
        raise ValueError(f"Gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return y.astype(x.dtype, copy=False)


def _softmax(xf, axis):
    if (xf.dtype == np.float32 and axis == xf.ndim - 1 and xf.size and xf.shape[-1] >= 8
            and _has_avx2()):
        # one Numba pass per row with a vectorised exp (kernels/cpu/float_ops.softmax_rows);
        # NumPy's exp alone took ~1.5 ns a value. Same result within a few ulp.
        from qrt.kernels.cpu import float_ops
        x2 = np.ascontiguousarray(xf).reshape(-1, xf.shape[-1])
        return float_ops.softmax_rows(x2, np.empty(x2.shape, np.float32)).reshape(xf.shape)
    m = np.max(xf, axis=axis, keepdims=True)
    with np.errstate(invalid="ignore"):
        e = np.exp(xf - m)
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


_AVX2 = None


def _has_avx2() -> bool:
    """The vector exp is written for 8 float32 lanes: taken where AVX2 runs them natively."""
    global _AVX2
    if _AVX2 is None:
        from qrt.kernels.cpu import features
        _AVX2 = features.can_run("avx2")
    return _AVX2


def _axis(axis, rank, op):
    if not -rank <= axis < rank:
        raise ValueError(f"{op}: axis {axis} is out of range for a rank-{rank} input")
    return axis + rank if axis < 0 else axis


@register("Softmax", since=1, attrs={"axis": 1})
def softmax_1(x, *, axis):
    # Opset < 13: the input is coerced to 2-D [prod(shape[:axis]), prod(shape[axis:])].
    if x.ndim == 0:
        raise ValueError("Softmax: the input must have rank >= 1")
    a = _axis(axis, x.ndim, "Softmax")
    ct = _compute_dtype(x)
    rows = math.prod(x.shape[:a])
    cols = math.prod(x.shape[a:])
    x2 = x.astype(ct, copy=False).reshape(rows, cols)
    return _softmax(x2, 1).reshape(x.shape).astype(x.dtype, copy=False)


@register("Softmax", since=13, attrs={"axis": -1})
def softmax_13(x, *, axis):
    if x.ndim == 0:
        raise ValueError("Softmax: the input must have rank >= 1")
    a = _axis(axis, x.ndim, "Softmax")
    ct = _compute_dtype(x)
    return _softmax(x.astype(ct, copy=False), a).astype(x.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# Softplus, Elu, Selu, PRelu, Mish, ThresholdedRelu, LogSoftmax

def _softplus(xf):
    # ln(exp(x) + 1) without overflow: logaddexp(0, x) is x for large x, exp(x) for x << 0.
    return np.logaddexp(xf.dtype.type(0), xf)


@register("Softplus", since=1)  # 22: bfloat16
def softplus(x):
    """ln(exp(x) + 1), computed as logaddexp(0, x): no overflow to inf for large x."""
    ct = _compute_dtype(x)
    return _softplus(x.astype(ct, copy=False)).astype(x.dtype, copy=False)


@register("Elu", since=1, attrs={"alpha": 1.0})  # 6: consumed_inputs dropped; 22: bfloat16
def elu(x, *, alpha):
    """x for x >= 0, alpha * (exp(x) - 1) below (expm1: exact near 0)."""
    ct = _compute_dtype(x)
    xf = x.astype(ct, copy=False)
    with np.errstate(over="ignore"):
        y = np.where(xf < 0, ct(alpha) * np.expm1(np.minimum(xf, ct(0))), xf)
    return y.astype(x.dtype, copy=False)


@register("Selu", since=1, attrs={"alpha": 1.67326319217681884765625,
                                  "gamma": 1.05070102214813232421875})
def selu(x, *, alpha, gamma):
    """gamma * x for x > 0, gamma * (alpha * exp(x) - alpha) for x <= 0."""
    ct = _compute_dtype(x)
    xf = x.astype(ct, copy=False)
    a, g = ct(alpha), ct(gamma)
    neg = a * np.exp(np.minimum(xf, ct(0))) - a
    return (g * np.where(xf > 0, xf, neg)).astype(x.dtype, copy=False)


@register("PRelu", since=7)  # 7: slope broadcasts to X; 9: integer types; 16: bfloat16
def prelu(x, slope):
    """slope * x where x < 0, else x. The slope broadcasts unidirectionally to X's shape."""
    if x.dtype != slope.dtype:
        raise ValueError(f"PRelu: X is {x.dtype} but slope is {slope.dtype}")
    try:
        shape = np.broadcast_shapes(x.shape, slope.shape)
    except ValueError:
        shape = None
    if shape != x.shape:
        raise ValueError(f"PRelu: slope of shape {list(slope.shape)} does not broadcast to X's "
                         f"shape {list(x.shape)}")
    with np.errstate(over="ignore"):
        return np.where(x < 0, x * slope, x).astype(x.dtype, copy=False)


@register("Mish", since=18)  # 22: bfloat16
def mish(x):
    """x * tanh(softplus(x))."""
    ct = _compute_dtype(x)
    xf = x.astype(ct, copy=False)
    return (xf * np.tanh(_softplus(xf))).astype(x.dtype, copy=False)


@register("ThresholdedRelu", since=10, attrs={"alpha": 1.0})  # 22: bfloat16
def thresholded_relu(x, *, alpha):
    """x where x > alpha, else 0."""
    _compute_dtype(x)
    return np.where(x > _scalar(alpha, x.dtype), x, x.dtype.type(0))


def _log_softmax(xf, axis):
    m = np.max(xf, axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        d = xf - m
        return d - np.log(np.sum(np.exp(d), axis=axis, keepdims=True))


@register("LogSoftmax", since=1, attrs={"axis": 1})
def log_softmax_1(x, *, axis):
    """Opset < 13: the input is coerced to 2-D [prod(shape[:axis]), prod(shape[axis:])] and
    normalised over each row (the whole trailing block, not just one axis)."""
    if x.ndim == 0:
        raise ValueError("LogSoftmax: the input must have rank >= 1")
    a = _axis(axis, x.ndim, "LogSoftmax")
    ct = _compute_dtype(x)
    x2 = x.astype(ct, copy=False).reshape(math.prod(x.shape[:a]), math.prod(x.shape[a:]))
    return _log_softmax(x2, 1).reshape(x.shape).astype(x.dtype, copy=False)


@register("LogSoftmax", since=13, attrs={"axis": -1})
def log_softmax_13(x, *, axis):
    """Opset 13+: x - max - log(sum(exp(x - max))) along the one axis."""
    if x.ndim == 0:
        raise ValueError("LogSoftmax: the input must have rank >= 1")
    a = _axis(axis, x.ndim, "LogSoftmax")
    ct = _compute_dtype(x)
    return _log_softmax(x.astype(ct, copy=False), a).astype(x.dtype, copy=False)
