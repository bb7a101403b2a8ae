"""Elementwise math and comparisons: Add, Sub, Mul, Div, Pow, Sqrt, Equal, Where.

All binary ops broadcast numpy-style (ONNX multidirectional broadcasting, opset >= 7) and return the
input element type exactly: integer arithmetic wraps like C, integer Div truncates toward zero.
Versions 7/13/14 of Add/Sub/Mul/Div only widened the type lists, so one registration covers 10..28.
"""
import numpy as np

from qrt.ops.registry import REQUIRED, register  # noqa: F401


def _same_type(name, a, b):
    if a.dtype != b.dtype:
        raise ValueError(f"{name}: inputs must share one element type, got {a.dtype} and {b.dtype}")


@register("Add", since=7)
def add(a, b):
    _same_type("Add", a, b)
    return np.add(a, b)


@register("Sub", since=7)
def sub(a, b):
    _same_type("Sub", a, b)
    return np.subtract(a, b)


@register("Mul", since=7)
def mul(a, b):
    _same_type("Mul", a, b)
    return np.multiply(a, b)


def int_div_trunc(a, b):
    """Integer division rounding toward zero (C semantics); x / 0 gives 0 instead of trapping."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = np.floor_divide(a, b)
        if a.dtype.kind == "i":
            r = np.remainder(a, b)
            # floor and trunc differ when the division is inexact and the signs differ.
            fix = (r != 0) & ((a < 0) != (b < 0))
            q = q + fix.astype(q.dtype)
    return q


@register("Div", since=7)
def div(a, b):
    _same_type("Div", a, b)
    if a.dtype.kind in "iu":
        return int_div_trunc(a, b)
    if a.dtype == np.bool_:
        raise ValueError("Div: bool inputs are not supported")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(a, b)


@register("Pow", since=7)  # 7: one type T; 12+: base T and exponent T1 may differ (same code path)
def pow_(x, y):
    out_shape = np.broadcast_shapes(x.shape, y.shape)
    if y.size == 1 and out_shape == x.shape and x.dtype.kind == "f":
        e = y.reshape(()).item()
        if e == 2:
            return np.multiply(x, x)
        if e == 1:
            return x.copy()
    with np.errstate(all="ignore"):
        if x.dtype.kind in "iu" and y.dtype.kind in "iu":
            if y.dtype.kind == "i" and np.any(y < 0):
                # numpy refuses negative integer powers; compute like C's pow() then truncate.
                r = np.power(x.astype(np.float64), y.astype(np.float64))
            else:
                r = np.power(x.astype(np.int64) if x.dtype.kind == "i" else x,
                             y.astype(x.dtype if x.dtype.kind == "u" else np.int64))
        elif x.dtype.kind == "f" and y.dtype.kind == "f" and x.dtype.itemsize >= y.dtype.itemsize:
            r = np.power(x, y.astype(x.dtype))
        else:
            r = np.power(x, y)
        return r.astype(x.dtype, copy=False)


@register("Sqrt", since=6)
def sqrt(x):
    with np.errstate(invalid="ignore"):
        return np.sqrt(x)


@register("Equal", since=7)  # 11 added float types, 13 bfloat16, 19 string: same semantics
def equal(a, b):
    _same_type("Equal", a, b)
    return np.equal(a, b)


@register("Where", since=9)  # 16 only widened the types
def where(condition, x, y):
    if condition.dtype != np.bool_:
        raise ValueError(f"Where: condition must be bool, got {condition.dtype}")
    _same_type("Where", x, y)
    return np.where(condition, x, y)
