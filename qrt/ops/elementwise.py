"""Elementwise math, comparisons and logic: Add, Sub, Mul, Div, Pow, Sqrt, Equal, Where, Neg, Abs,
Exp, Log, Reciprocal, Floor, Ceil, Round, Sign, Sin, Cos, Max, Min, Sum, Mean, Mod, Less,
LessOrEqual, Greater, GreaterOrEqual, And, Or, Xor, Not.

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


# --------------------------------------------------------------------------------------------
# Unary math. Versions 1/6/13 only dropped the legacy `consumed_inputs` attribute (ignored here)
# or widened the type lists, so one registration per op serves every opset. Float math on
# float16 runs in float32 and rounds once at the end, like the activations.

def _float_only(name, x):
    if x.dtype.kind != "f":
        raise ValueError(f"{name}: expected a floating-point input, got {x.dtype}")
    return np.float32 if x.dtype.itemsize < 4 else x.dtype.type


def _numeric(name, x, signed_only=False):
    if x.dtype == np.bool_ or x.dtype.kind not in "iuf":
        raise ValueError(f"{name}: expected a numeric input, got {x.dtype}")
    if signed_only and x.dtype.kind == "u":
        raise ValueError(f"{name}: unsigned input {x.dtype} is not allowed (signed types only)")


def _float_unary(name, ufunc):
    def fn(x):
        ct = _float_only(name, x)
        with np.errstate(all="ignore"):
            return np.asarray(ufunc(x.astype(ct, copy=False))).astype(x.dtype, copy=False)
    fn.__name__ = name.lower()
    fn.__doc__ = f"{name} of a float tensor (float16 computed in float32, rounded once)."
    return fn


exp = register("Exp", since=1)(_float_unary("Exp", np.exp))
log = register("Log", since=1)(_float_unary("Log", np.log))  # log(<0) = NaN, log(0) = -inf
reciprocal = register("Reciprocal", since=1)(_float_unary("Reciprocal", np.reciprocal))
floor = register("Floor", since=1)(_float_unary("Floor", np.floor))
ceil = register("Ceil", since=1)(_float_unary("Ceil", np.ceil))
# np.rint rounds half to even (2.5 -> 2, -0.5 -> -0), as ONNX Round requires.
round_ = register("Round", since=11)(_float_unary("Round", np.rint))
sin = register("Sin", since=7)(_float_unary("Sin", np.sin))
cos = register("Cos", since=7)(_float_unary("Cos", np.cos))
tan = register("Tan", since=7)(_float_unary("Tan", np.tan))
asin = register("Asin", since=7)(_float_unary("Asin", np.arcsin))  # outside [-1, 1]: NaN
acos = register("Acos", since=7)(_float_unary("Acos", np.arccos))
atan = register("Atan", since=7)(_float_unary("Atan", np.arctan))
sinh = register("Sinh", since=9)(_float_unary("Sinh", np.sinh))
cosh = register("Cosh", since=9)(_float_unary("Cosh", np.cosh))
asinh = register("Asinh", since=9)(_float_unary("Asinh", np.arcsinh))
acosh = register("Acosh", since=9)(_float_unary("Acosh", np.arccosh))
atanh = register("Atanh", since=9)(_float_unary("Atanh", np.arctanh))
softsign = register("Softsign", since=1)(_float_unary("Softsign", lambda v: v / (1 + np.abs(v))))


def _bitwise(name, ufunc):
    def fn(a, b=None):
        for v in (a, b):
            if v is not None and v.dtype.kind not in "iu":
                raise ValueError(f"{name}: takes integer tensors, got {v.dtype}")
        if b is not None and a.dtype != b.dtype:
            raise ValueError(f"{name}: A is {a.dtype} and B is {b.dtype}; they must match")
        return np.asarray(ufunc(a) if b is None else ufunc(a, b))
    fn.__name__ = name.lower()
    fn.__doc__ = f"{name} of integer tensors (numpy broadcasting, as ONNX's multidirectional)."
    return fn


bitwise_and = register("BitwiseAnd", since=18)(_bitwise("BitwiseAnd", np.bitwise_and))
bitwise_or = register("BitwiseOr", since=18)(_bitwise("BitwiseOr", np.bitwise_or))
bitwise_xor = register("BitwiseXor", since=18)(_bitwise("BitwiseXor", np.bitwise_xor))
bitwise_not = register("BitwiseNot", since=18)(_bitwise("BitwiseNot", np.invert))


@register("Neg", since=1)
def neg(x):
    """-x; signed integers wrap like C (-INT_MIN == INT_MIN). Unsigned types are not allowed."""
    _numeric("Neg", x, signed_only=True)
    with np.errstate(over="ignore"):
        return np.negative(x)


@register("Abs", since=1)
def abs_(x):
    """|x|; abs(INT_MIN) wraps to INT_MIN like C; unsigned input is returned as a copy."""
    _numeric("Abs", x)
    if x.dtype.kind == "u":
        return x.copy()
    with np.errstate(over="ignore"):
        return np.abs(x)


@register("Sign", since=9)
def sign(x):
    """-1, 0 or 1 in x's type (NaN stays NaN); unsigned: 0 or 1."""
    _numeric("Sign", x)
    return np.sign(x)


# --------------------------------------------------------------------------------------------
# Variadic Max/Min/Sum/Mean: 1 or more inputs of one type, multidirectional broadcasting
# (opset >= 8; before that all inputs had one shape, a special case of broadcasting).

def _variadic(name, inputs):
    arrs = [x for x in inputs if x is not None]
    if not arrs:
        raise ValueError(f"{name}: needs at least one input")
    for x in arrs[1:]:
        if x.dtype != arrs[0].dtype:
            raise ValueError(f"{name}: inputs must share one element type, got {arrs[0].dtype} "
                             f"and {x.dtype}")
    try:
        shape = np.broadcast_shapes(*(x.shape for x in arrs))
    except ValueError:
        raise ValueError(f"{name}: input shapes {[list(x.shape) for x in arrs]} do not "
                         "broadcast") from None
    return arrs, shape


def _fold(name, ufunc, inputs):
    arrs, shape = _variadic(name, inputs)
    out = np.array(np.broadcast_to(arrs[0], shape))  # a fresh array, never an input
    with np.errstate(over="ignore"):
        for x in arrs[1:]:
            ufunc(out, x, out=out)
    return out


@register("Max", since=1)  # 8: broadcasting, 12: integer types, 13: bfloat16
def max_(*inputs):
    """Elementwise maximum of all inputs; NaN propagates."""
    arrs, _ = _variadic("Max", inputs)
    if arrs[0].dtype == np.bool_ or arrs[0].dtype.kind not in "iuf":
        raise ValueError(f"Max: expected numeric inputs, got {arrs[0].dtype}")
    return _fold("Max", np.maximum, inputs)


@register("Min", since=1)
def min_(*inputs):
    """Elementwise minimum of all inputs; NaN propagates."""
    arrs, _ = _variadic("Min", inputs)
    if arrs[0].dtype == np.bool_ or arrs[0].dtype.kind not in "iuf":
        raise ValueError(f"Min: expected numeric inputs, got {arrs[0].dtype}")
    return _fold("Min", np.minimum, inputs)


@register("Sum", since=1)
def sum_(*inputs):
    """Elementwise sum of all inputs (left to right, in the inputs' type)."""
    arrs, _ = _variadic("Sum", inputs)
    _float_only("Sum", arrs[0])
    return _fold("Sum", np.add, inputs)


@register("Mean", since=1)
def mean(*inputs):
    """Elementwise sum of all inputs divided by their count (float16 summed in float32)."""
    arrs, shape = _variadic("Mean", inputs)
    ct = _float_only("Mean", arrs[0])
    out = np.array(np.broadcast_to(arrs[0], shape), dtype=ct)
    for x in arrs[1:]:
        np.add(out, x.astype(ct, copy=False), out=out)
    out /= ct(len(arrs))
    return out.astype(arrs[0].dtype, copy=False)


# --------------------------------------------------------------------------------------------
# Mod

def _mod(a, b, fmod, float_fmod0_ok):
    _same_type("Mod", a, b)
    _numeric("Mod", a)
    if fmod not in (0, 1):
        raise ValueError(f"Mod: fmod must be 0 or 1, got {fmod}")
    if a.dtype.kind == "f" and not fmod and not float_fmod0_ok:
        raise ValueError(f"Mod: floating-point inputs ({a.dtype}) require fmod=1 before opset 28")
    with np.errstate(all="ignore"):
        # fmod=1: C fmod, sign of the dividend; fmod=0: a - floor(a / b) * b, sign of the
        # divisor (numpy's remainder, which also gives the IEEE special cases opset 28 lists:
        # +-0 % y keeps the sign of y, x % +-inf is x or y, inf % y and x % 0 are NaN).
        # Integer x % 0 gives 0 rather than trapping.
        return (np.fmod if fmod else np.remainder)(a, b)


@register("Mod", since=10, attrs={"fmod": 0})  # 13: bfloat16
def mod_10(a, b, *, fmod):
    return _mod(a, b, fmod, False)


@register("Mod", since=28, attrs={"fmod": 0})  # floats may use fmod=0
def mod_28(a, b, *, fmod):
    return _mod(a, b, fmod, True)


# --------------------------------------------------------------------------------------------
# Comparisons and logic: bool results, multidirectional broadcasting (opset >= 7; opset 1's
# legacy `broadcast`/`axis` attributes are not served).

def _compare(name, ufunc):
    def fn(a, b):
        _same_type(name, a, b)
        return ufunc(a, b)
    fn.__name__ = name.lower()
    fn.__doc__ = f"{name}: elementwise comparison, a bool tensor (NaN compares false)."
    return fn


less = register("Less", since=7)(_compare("Less", np.less))
greater = register("Greater", since=7)(_compare("Greater", np.greater))
less_or_equal = register("LessOrEqual", since=12)(_compare("LessOrEqual", np.less_equal))
greater_or_equal = register("GreaterOrEqual", since=12)(_compare("GreaterOrEqual",
                                                                  np.greater_equal))


def _logic(name, ufunc):
    def fn(a, b):
        if a.dtype != np.bool_ or b.dtype != np.bool_:
            raise ValueError(f"{name}: inputs must be bool, got {a.dtype} and {b.dtype}")
        return ufunc(a, b)
    fn.__name__ = name.lower()
    fn.__doc__ = f"{name} of two bool tensors, broadcasting."
    return fn


and_ = register("And", since=7)(_logic("And", np.logical_and))
or_ = register("Or", since=7)(_logic("Or", np.logical_or))
xor = register("Xor", since=7)(_logic("Xor", np.logical_xor))


@register("Not", since=1)
def not_(x):
    if x.dtype != np.bool_:
        raise ValueError(f"Not: input must be bool, got {x.dtype}")
    return np.logical_not(x)
