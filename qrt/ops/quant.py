"""Quantization ops: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, QLinearConv,
QLinearMatMul, ConvInteger, MatMulInteger.

Semantics follow the ONNX spec (opsets 10..28) and the ONNX reference evaluator
(onnx/reference/ops/op_*.py); where the two disagree or the spec is silent, onnxruntime decides, and
the choice is written next to the code. Every function here is vectorised numpy: no per-element
Python loops.

Numerics (DESIGN.md, "Numerics contract"):
- QuantizeLinear: q = saturate(round_half_even(x / scale) + zero_point). The division runs in
  `precision` when set, else in the scale's type (opset 23+; the spec's rule and onnxruntime's;
  before opset 23 float16 divides in float32, as onnxruntime).
- DequantizeLinear: (q - zero_point) * scale, with (q - zero_point) exact in integers and one
  rounding to the output type.
- Integer Conv/MatMul: sum_k (x - zx)(w - zw) accumulated exactly, wrapped to int32 like an int32
  accumulator (ONNX: "the accumulation may overflow if and only if in 32 bits"; onnxruntime wraps).
  The products are summed by a float64 BLAS matmul, which is exact: every partial sum is an integer
  below 2**53 for K < 2**37.
- QLinearConv/QLinearMatMul requantize: saturate(round_half_even(float32(acc) * m) + zy) with the
  multiplier m = sx * sw / sy computed in the scales' type and applied in float32 (onnxruntime and
  kernels/ref.py's `requantize` do the same; the ONNX reference multiplies in float64, which can
  differ by one step on rare near-ties).

Validation raises InvalidQuantParamsError (naming the op and the problem) for non-positive or
non-finite scales, zero points of the wrong dtype or out of range, and scale/zero-point shapes that
do not fit the per-tensor / per-axis / blocked layout. Element types outside qrt's scope (float8,
float4, float6, int2/uint2, bfloat16) raise UnsupportedQuantTypeError naming the type.
"""
from __future__ import annotations

import sys

import numpy as np

from qrt.errors import InvalidQuantParamsError, QrtError
from qrt.kernels import ref
from qrt.ops.registry import register

_INT4 = _UINT4 = None  # ml_dtypes' int4/uint4, set by _load_int4 on first need


class UnsupportedQuantTypeError(QrtError, TypeError):
    """A quantization op met an element type outside qrt's scope (float8, float4, int2...)."""


# ONNX TensorProto element types (numbers are fixed by the ONNX standard).
_ONNX_TYPE_NAMES = {
    1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
    10: "FLOAT16", 11: "DOUBLE", 16: "BFLOAT16", 17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ",
    19: "FLOAT8E5M2",
    20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1", 24: "FLOAT8E8M0", 25: "UINT2",
    26: "INT2", 27: "FLOAT6E2M3", 28: "FLOAT6E3M2",
}
_ONNX_TO_NP = {1: np.dtype(np.float32), 2: np.dtype(np.uint8), 3: np.dtype(np.int8),
               4: np.dtype(np.uint16), 5: np.dtype(np.int16), 6: np.dtype(np.int32),
               10: np.dtype(np.float16), 11: np.dtype(np.float64)}

# Quantized integer types and their saturation ranges.
_QRANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127),
            np.dtype(np.uint16): (0, 65535), np.dtype(np.int16): (-32768, 32767)}
_INT32_RANGE = (-(2 ** 31), 2 ** 31 - 1)


def _load_int4() -> bool:
    """int4/uint4 (ml_dtypes, which onnx depends on) into the tables, on first need: importing
    ml_dtypes takes 0.7-1 s, most of a cold start that never meets a 4-bit tensor. A 4-bit
    tensor is an ml_dtypes array, so ml_dtypes is importable whenever one reaches an op."""
    global _INT4, _UINT4
    if _INT4 is None:
        try:
            import ml_dtypes as _mld
        except ImportError:  # pragma: no cover - without ml_dtypes no int4 tensor can reach us
            return False
        _INT4, _UINT4 = np.dtype(_mld.int4), np.dtype(_mld.uint4)
        _ONNX_TO_NP.update({21: _UINT4, 22: _INT4})
        _QRANGES.update({_UINT4: (0, 15), _INT4: (-8, 7)})
    return True


if "ml_dtypes" in sys.modules:  # already paid for (onnx is loaded): fill the tables now
    _load_int4()

# ml_dtypes names of the element types qrt leaves out (the conformance harness skips them).
_OUT_OF_SCOPE_NAMES = {
    "bfloat16": "BFLOAT16", "float8_e4m3fn": "FLOAT8E4M3FN", "float8_e4m3fnuz": "FLOAT8E4M3FNUZ",
    "float8_e5m2": "FLOAT8E5M2", "float8_e5m2fnuz": "FLOAT8E5M2FNUZ",
    "float8_e8m0fnu": "FLOAT8E8M0",
    "float4_e2m1fn": "FLOAT4E2M1", "float6_e2m3fn": "FLOAT6E2M3", "float6_e3m2fn": "FLOAT6E3M2",
    "int2": "INT2", "uint2": "UINT2",
}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64))

# Rows per block when integer products are summed in float64 (bounds the temporary to ~16 MiB).
_BLOCK_BYTES = 16 << 20


# ---------------------------------------------------------------------------------------------
# type and parameter checks
# ---------------------------------------------------------------------------------------------
def _out_of_scope(dtype, op: str, what: str):
    name = _OUT_OF_SCOPE_NAMES.get(np.dtype(dtype).name, np.dtype(dtype).name)
    return UnsupportedQuantTypeError(
        f"{op}: {what} has element type {name}, which qrt does not support "
        "(float8, float4, float6, int2/uint2 and bfloat16 are out of scope)")


def _dtype_of_onnx(elem: int, op: str, what: str) -> np.dtype:
    if elem in (21, 22):
        _load_int4()
    if elem in _ONNX_TO_NP:
        return _ONNX_TO_NP[elem]
    name = _ONNX_TYPE_NAMES.get(elem, f"#{elem}")
    raise UnsupportedQuantTypeError(
        f"{op}: {what} is element type {name}, which qrt does not support "
        "(float8, float4, float6, int2/uint2 and bfloat16 are out of scope)")


def qrange(dtype, op: str = "quantize", what: str = "the quantized tensor") -> tuple[int, int]:
    """Saturation range of a quantized integer type (uint8/int8/uint16/int16/uint4/int4)."""
    dtype = np.dtype(dtype)
    if dtype in _QRANGES:
        return _QRANGES[dtype]
    if dtype.name in ("int4", "uint4") and _load_int4():
        return _QRANGES[dtype]
    if dtype.name in _OUT_OF_SCOPE_NAMES:
        raise _out_of_scope(dtype, op, what)
    raise InvalidQuantParamsError(
        f"{op}: {what} has type {dtype.name}, which is not a quantized integer type "
        "(uint8, int8, uint16, int16, uint4, int4)")


def _check_float(a: np.ndarray, op: str, what: str, allow_int: bool = False) -> None:
    dt = a.dtype
    if dt in _FLOATS or (allow_int and dt.kind in "iu"):
        return
    if dt.name in _OUT_OF_SCOPE_NAMES:
        raise _out_of_scope(dt, op, what)
    raise InvalidQuantParamsError(
        f"{op}: {what} must be a float tensor (float32 or float16), got {dt.name}")


def check_scale(scale, op: str, name: str = "scale") -> np.ndarray:
    """Scales must be float (float32/float16) and strictly positive and finite."""
    s = np.asarray(scale)
    _check_float(s, op, name, allow_int=True)
    if s.size == 0:
        raise InvalidQuantParamsError(f"{op}: {name} is empty")
    sf = s.astype(np.float64) if s.dtype.kind in "iu" else s
    bad = ~(np.isfinite(sf) & (sf > 0))
    if bad.any():
        idx = np.flatnonzero(bad.reshape(-1))
        v = s.reshape(-1)[idx[0]]
        kind = "NaN" if np.isnan(sf.reshape(-1)[idx[0]]) else (
            "infinite" if not np.isfinite(sf.reshape(-1)[idx[0]]) else
            "zero" if v == 0 else "negative")
        raise InvalidQuantParamsError(
            f"{op}: {name} must be positive and finite; {len(idx)} of {s.size} value(s) are not "
            f"(first at flat index {idx[0]}: {v!r}, {kind})")
    return s


def check_zero_point(zero_point, dtype, op: str, name: str = "zero_point",
                     strict_dtype: bool = True) -> np.ndarray:
    """A zero point must have the quantized type itself (strict_dtype), or at least hold values
    inside that type's range (strict_dtype=False, for callers handing plain integers)."""
    z = np.asarray(zero_point)
    dtype = np.dtype(dtype)
    lo, hi = _INT32_RANGE if dtype == np.int32 else qrange(dtype, op, name)
    if z.dtype != dtype:
        if z.dtype.name in _OUT_OF_SCOPE_NAMES:
            raise _out_of_scope(z.dtype, op, name)
        if strict_dtype or z.dtype.kind not in "iu":
            raise InvalidQuantParamsError(
                f"{op}: {name} has dtype {z.dtype.name}, but the quantized tensor is {dtype.name}; "
                "they must have the same type")
        bad = (z < lo) | (z > hi)
        if bad.any():
            v = z.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]]
            raise InvalidQuantParamsError(
                f"{op}: {name} value {int(v)} is outside the range [{lo}, {hi}] of {dtype.name}")
        z = z.astype(dtype)
    return z


def _norm_axis(axis: int, rank: int, op: str) -> int:
    if not -rank <= axis < rank:
        raise InvalidQuantParamsError(
            f"{op}: axis {axis} is out of range for an input of rank {rank} (accepted [-{rank}, "
            f"{rank - 1}])")
    return axis % rank


def layout_param(p: np.ndarray, x_shape: tuple, axis: int, block_size: int, op: str,
                 name: str) -> np.ndarray:
    """Shape a scale or zero point so that it broadcasts against x: per-tensor (one element),
    per-axis (1-D of length x.shape[axis]) or blocked (x's shape, ceil(D/block_size) at axis)."""
    rank = len(x_shape)
    if block_size < 0:
        raise InvalidQuantParamsError(f"{op}: block_size must be positive, got {block_size}")
    if p.size == 1 and (block_size == 0 or p.ndim != rank):
        return p.reshape(())
    if block_size == 0:
        if p.ndim != 1:
            raise InvalidQuantParamsError(
                f"{op}: {name} has shape {list(p.shape)}; without block_size it must be a scalar "
                f"(per-tensor) or 1-D (per-axis)")
        if rank == 0:
            raise InvalidQuantParamsError(f"{op}: per-axis {name} needs an input of rank >= 1")
        ax = _norm_axis(axis, rank, op)
        if p.shape[0] != x_shape[ax]:
            raise InvalidQuantParamsError(
                f"{op}: per-axis {name} has {p.shape[0]} elements but the input has {x_shape[ax]} "
                f"along axis {axis} (input shape {list(x_shape)})")
        dims = [1] * rank
        dims[ax] = p.shape[0]
        return p.reshape(dims)
    # blocked
    ax = _norm_axis(axis, rank, op)
    want = list(x_shape)
    want[ax] = -(-x_shape[ax] // block_size)
    if list(p.shape) != want:
        raise InvalidQuantParamsError(
            f"{op}: blocked {name} has shape {list(p.shape)}, but input shape {list(x_shape)} with "
            f"axis={axis} and block_size={block_size} needs {want}")
    full = np.repeat(p, block_size, axis=ax)
    if full.shape[ax] != x_shape[ax]:
        full = full.take(np.arange(x_shape[ax]), axis=ax)
    return full


def _same_shape(scale: np.ndarray, zp: np.ndarray, op: str, sname: str, zname: str) -> None:
    if scale.shape != zp.shape and not (scale.size == 1 and zp.size == 1):
        raise InvalidQuantParamsError(
            f"{op}: {zname} shape {list(zp.shape)} must match {sname} shape {list(scale.shape)}")


def check_quant_params(op: str, scale, zero_point, dtype, x_shape=None, axis: int = 1,
                       block_size: int = 0, strict_dtype: bool = True):
    """Validate one (scale, zero_point) pair for a tensor of `x_shape` quantized to `dtype`; returns
    both shaped to broadcast against x (when x_shape is given). For passes and calibration code."""
    s = check_scale(scale, op)
    z = None if zero_point is None else check_zero_point(zero_point, dtype, op,
                                                         strict_dtype=strict_dtype)
    if z is not None:
        _same_shape(s, z, op, "scale", "zero_point")
    if x_shape is not None:
        s = layout_param(s, tuple(x_shape), axis, block_size, op, "scale")
        if z is not None:
            z = layout_param(z, tuple(x_shape), axis, block_size, op, "zero_point")
    return s, z


# ---------------------------------------------------------------------------------------------
# QuantizeLinear / DequantizeLinear
# ---------------------------------------------------------------------------------------------
def _saturate_round(v: np.ndarray, zp, dtype: np.dtype) -> np.ndarray:
    """saturate(round_half_even(v) + zp) -> dtype. NaN goes to the low end of the range (qmin), as
    onnxruntime does (checked with onnxruntime 1.32, opsets 13 and 21, for u8/s8/u16/s16/u4/s4:
    QuantizeLinear(NaN) == qmin whatever the zero point); +inf saturates to qmax, -inf to qmin."""
    lo, hi = qrange(dtype)
    if v.dtype == np.float16:  # f16 cannot hold 65535 or add a zero point exactly; f32 can
        v = v.astype(np.float32)
    y = np.asarray(np.rint(v))  # a 0-d input gives a numpy scalar; out= needs an array
    if zp is not None:
        # |y| >= 2**24 saturates whatever the (at most 16-bit) zero point, so float adds are exact
        # wherever the result is not saturated.
        y += np.asarray(zp).astype(y.dtype)
    np.fmax(y, lo, out=y)  # fmax picks lo over NaN: NaN -> qmin
    np.fmin(y, hi, out=y)
    return y.astype(dtype)


_F32 = np.dtype(np.float32)
_U8, _S8 = np.dtype(np.uint8), np.dtype(np.int8)
_fo = None


def _float_ops():
    global _fo
    if _fo is None:
        from qrt.kernels.cpu import float_ops
        _fo = float_ops
    return _fo


def _scalar_scale(s) -> bool:
    """A one-element float32 scale that is positive and finite (the common, valid case)."""
    if type(s) is not np.ndarray or s.dtype != _F32 or s.size != 1:
        return False
    v = float(s.reshape(-1)[0])
    return 0.0 < v < np.inf


def _q8_params(s, z, output_dtype):
    """(out dtype, scale, zero point, lo, hi) of the one-pass per-tensor float32 -> uint8/int8
    kernel for scale s and zero point z, or None when the general path is needed."""
    if (not _scalar_scale(s) or (z is not None and (type(z) is not np.ndarray or z.size != 1
                                                    or z.dtype not in (_U8, _S8) or z.ndim > 1))
            or (output_dtype and (z is None or output_dtype != (2 if z.dtype == _U8 else 3)))):
        return None
    dt = z.dtype if z is not None else _U8
    lo, hi = (0, 255) if dt == _U8 else (-128, 127)
    return (dt, s.reshape(-1)[0], np.float32(0 if z is None else z.reshape(-1)[0]),
            np.float32(lo), np.float32(hi))


def _q8_run(x, p):
    """Quantize with _q8_params' p, or None when x is not a float32 array. Same arithmetic as the
    general path: float32 x / float32 s, rint, + zp, NaN -> qmin, clamp."""
    if type(x) is not np.ndarray or x.dtype != _F32:
        return None
    out = np.empty(x.shape, p[0])
    _float_ops().quantize_f32(np.ascontiguousarray(x).reshape(-1), p[1], p[2], p[3], p[4],
                              out.reshape(-1).view(np.uint8))
    return out


def _quantize_8bit_fast(x, s, z, output_dtype):
    """Per-tensor float32 -> uint8/int8 in one Numba pass, or None for the general path."""
    p = _q8_params(s, z, output_dtype)
    return None if p is None else _q8_run(x, p)


def _dq8_params(s, z, output_dtype):
    """(zero point's dtype or None, scale, zero point) of the one-pass per-tensor 8-bit -> float32
    kernel, or None when the general path is needed."""
    if (not _scalar_scale(s) or output_dtype not in (0, 1)
            or (z is not None and (type(z) is not np.ndarray or z.size != 1
                                   or z.dtype not in (_U8, _S8) or z.ndim > 1))):
        return None
    return (None if z is None else z.dtype, s.reshape(-1)[0],
            np.int32(0 if z is None else z.reshape(-1)[0]))


def _dq8_run(x, p):
    """Dequantize with _dq8_params' p, or None when x is not 8-bit of the zero point's type."""
    if type(x) is not np.ndarray or x.dtype not in (_U8, _S8) or (p[0] is not None
                                                                   and x.dtype != p[0]):
        return None
    out = np.empty(x.shape, _F32)
    fo = _float_ops()
    kern = fo.dequantize_u8 if x.dtype == _U8 else fo.dequantize_s8
    kern(np.ascontiguousarray(x).reshape(-1), p[2], p[1], out.reshape(-1))
    return out


def _dequantize_8bit_fast(x, s, z, output_dtype):
    p = _dq8_params(s, z, output_dtype)
    return None if p is None else _dq8_run(x, p)


def _quantize_linear(x, y_scale, y_zero_point=None, *, axis=1, block_size=0, output_dtype=0,
                     precision=0, f16_in_f32=True, op="QuantizeLinear"):
    if not precision and not block_size:
        y = _quantize_8bit_fast(x, y_scale, y_zero_point, output_dtype)
        if y is not None:
            return y
    x = np.asarray(x)
    _check_float(x, op, "input x", allow_int=True)
    if x.dtype.kind in "iu" and x.dtype != np.int32:
        raise InvalidQuantParamsError(f"{op}: input x must be float or int32, got {x.dtype.name}")
    out_dt = _dtype_of_onnx(output_dtype, op, "output_dtype") if output_dtype else None
    if y_zero_point is not None:
        zdt = np.asarray(y_zero_point).dtype
        if out_dt is not None and zdt != out_dt:
            raise InvalidQuantParamsError(
                f"{op}: output_dtype {out_dt.name} differs from y_zero_point's type {zdt.name}")
        out_dt = zdt
    if out_dt is None:
        out_dt = np.dtype(np.uint8)  # spec: uint8 when neither zero point nor output_dtype is given
    qrange(out_dt, op, "the output (y_zero_point / output_dtype)")
    s = check_scale(y_scale, op, "y_scale")
    z = None
    if y_zero_point is not None:
        z = check_zero_point(y_zero_point, out_dt, op, "y_zero_point")
        _same_shape(s, z, op, "y_scale", "y_zero_point")
        z = layout_param(z, x.shape, axis, block_size, op, "y_zero_point")
    s = layout_param(s, x.shape, axis, block_size, op, "y_scale")
    # Division precision. Opset 23+ (spec): `precision` when set, else the type of y_scale
    # (onnxruntime: an f32 x with an f16 scale divides in f16). Before opset 23 (x and y_scale share
    # one type) onnxruntime divides float16 in float32, and so does qrt (`f16_in_f32`). The ONNX
    # reference evaluator divides in numpy's promoted type instead (f16/f16 in f16), which can
    # differ by one step on near-ties. An integer scale divides in float64.
    if precision:
        pdt = _dtype_of_onnx(precision, op, "precision")
        if pdt not in _FLOATS:
            raise InvalidQuantParamsError(f"{op}: precision must be a float type, got {pdt.name}")
    elif s.dtype not in _FLOATS:
        pdt = np.dtype(np.float64)
    elif f16_in_f32 and s.dtype == np.float16:
        pdt = np.dtype(np.float32)
    else:
        pdt = s.dtype
    v = np.true_divide(x.astype(pdt, copy=False), s.astype(pdt, copy=False))
    if z is not None and z.ndim == 0 and not z.any():
        z = None
    return _saturate_round(v, z, out_dt)


def _dequantize_linear(x, x_scale, x_zero_point=None, *, axis=1, block_size=0, output_dtype=0,
                       op="DequantizeLinear"):
    if not block_size:
        y = _dequantize_8bit_fast(x, x_scale, x_zero_point, output_dtype)
        if y is not None:
            return y
    x = np.asarray(x)
    if x.dtype != np.int32:
        qrange(x.dtype, op, "input x")  # also names float8/float4/int2 inputs as out of scope
    s = check_scale(x_scale, op, "x_scale")
    _check_float(s, op, "x_scale")
    out_dt = _dtype_of_onnx(output_dtype, op, "output_dtype") if output_dtype else s.dtype
    if out_dt not in _FLOATS:
        raise InvalidQuantParamsError(f"{op}: output_dtype must be a float type, got {out_dt.name}")
    z = None
    if x_zero_point is not None:
        z = check_zero_point(x_zero_point, x.dtype, op, "x_zero_point")
        _same_shape(s, z, op, "x_scale", "x_zero_point")
        z = layout_param(z, x.shape, axis, block_size, op, "x_zero_point")
    s = layout_param(s, x.shape, axis, block_size, op, "x_scale")
    if x.dtype == np.int32:
        d = x.astype(np.int64)
        if z is not None:
            d -= z.astype(np.int64)
        return (d.astype(np.float64) * s.astype(np.float64)).astype(out_dt)
    d = x.astype(np.int32)  # 4/8/16-bit: x - zp is exact in int32 and in float32
    if z is not None:
        d -= z.astype(np.int32)
    if out_dt == np.float32 and s.dtype == np.float32:
        return d.astype(np.float32) * s  # exact operands, one rounding
    # Exact product in float64 (<= 17 + 24 bits), then one rounding to the output type.
    return (d.astype(np.float64) * s.astype(np.float64)).astype(out_dt)


_Q_ATTRS_13 = {"axis": 1}
_Q_ATTRS_19 = {"axis": 1, "saturate": 1}
_Q_ATTRS_21 = {"axis": 1, "block_size": 0, "output_dtype": 0, "saturate": 1}
_Q_ATTRS_23 = {"axis": 1, "block_size": 0, "output_dtype": 0, "precision": 0, "saturate": 1}


@register("QuantizeLinear", since=10)
def quantize_linear_10(x, y_scale, y_zero_point=None):
    return _quantize_linear(x, y_scale, y_zero_point)


@register("QuantizeLinear", since=13, attrs=_Q_ATTRS_13)
def quantize_linear_13(x, y_scale, y_zero_point=None, *, axis):
    return _quantize_linear(x, y_scale, y_zero_point, axis=axis)


# `saturate` only changes float8 conversion (out of scope), so it is accepted and ignored.
@register("QuantizeLinear", since=19, attrs=_Q_ATTRS_19)
def quantize_linear_19(x, y_scale, y_zero_point=None, *, axis, saturate):
    return _quantize_linear(x, y_scale, y_zero_point, axis=axis)


@register("QuantizeLinear", since=21, attrs=_Q_ATTRS_21)
def quantize_linear_21(x, y_scale, y_zero_point=None, *, axis, block_size, output_dtype, saturate):
    return _quantize_linear(x, y_scale, y_zero_point, axis=axis, block_size=block_size,
                            output_dtype=output_dtype)


def quantize_linear_23(x, y_scale, y_zero_point=None, *, axis, block_size, output_dtype, precision,
                       saturate):
    return _quantize_linear(x, y_scale, y_zero_point, axis=axis, block_size=block_size,
                            output_dtype=output_dtype, precision=precision, f16_in_f32=False)


def _bind_qdq(fn, quantize: bool):
    """Plan step of QuantizeLinear/DequantizeLinear: the kernel parameters of the last scale and
    zero point objects seen (a model's are initializers: the same objects every call) are kept,
    so a call is the Numba pass plus an identity check; anything else goes through `fn`."""
    def bind(**kw):
        output_dtype = kw.get("output_dtype", 0)
        if kw.get("block_size") or kw.get("precision"):
            return lambda x, s, z=None: fn(x, s, z, **kw)
        memo = [(None, None, None)]  # one tuple, swapped whole: safe across threads
        params, run = (_q8_params, _q8_run) if quantize else (_dq8_params, _dq8_run)

        def step(x, s, z=None):
            ms, mz, p = memo[0]
            if s is not ms or z is not mz:
                p = params(s, z, output_dtype)
                memo[0] = (s, z, p)
            y = None if p is None else run(x, p)
            return y if y is not None else fn(x, s, z, **kw)
        step.__wrapped__ = fn
        return step
    fn.bind_step = bind
    return fn


for _fn in (quantize_linear_10, quantize_linear_13, quantize_linear_19, quantize_linear_21,
            quantize_linear_23):
    _bind_qdq(_fn, True)


# 24 (float8e8m0 scales), 25 (int2/uint2) and 28 (float6) only add out-of-scope types; registered
# so the registry mirrors the spec's version list.
for _v in (23, 24, 25, 28):
    register("QuantizeLinear", since=_v, attrs=_Q_ATTRS_23)(quantize_linear_23)


@register("DequantizeLinear", since=10)
def dequantize_linear_10(x, x_scale, x_zero_point=None):
    return _dequantize_linear(x, x_scale, x_zero_point)


def dequantize_linear_13(x, x_scale, x_zero_point=None, *, axis):
    return _dequantize_linear(x, x_scale, x_zero_point, axis=axis)


for _v in (13, 19):  # 19: float16 scales and float8 inputs
    register("DequantizeLinear", since=_v, attrs={"axis": 1})(dequantize_linear_13)


@register("DequantizeLinear", since=21, attrs={"axis": 1, "block_size": 0})
def dequantize_linear_21(x, x_scale, x_zero_point=None, *, axis, block_size):
    return _dequantize_linear(x, x_scale, x_zero_point, axis=axis, block_size=block_size)


def dequantize_linear_23(x, x_scale, x_zero_point=None, *, axis, block_size, output_dtype):
    return _dequantize_linear(x, x_scale, x_zero_point, axis=axis, block_size=block_size,
                              output_dtype=output_dtype)


for _v in (23, 24, 25, 28):
    register("DequantizeLinear", since=_v,
             attrs={"axis": 1, "block_size": 0, "output_dtype": 0})(dequantize_linear_23)

for _fn in (dequantize_linear_10, dequantize_linear_13, dequantize_linear_21,
            dequantize_linear_23):
    _bind_qdq(_fn, False)


# ---------------------------------------------------------------------------------------------
# DynamicQuantizeLinear
# ---------------------------------------------------------------------------------------------
@register("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(x):
    """uint8 only (the spec's only type). The range is widened to include 0. When max == min (all
    zeros, or an empty input) the spec's formula divides by zero; qrt uses scale 1.0 and zero point
    0, as onnxruntime does (the ONNX reference evaluator uses 1/255; y is all zeros either way)."""
    op = "DynamicQuantizeLinear"
    x = np.asarray(x)
    if x.dtype != np.float32:
        if x.dtype.name in _OUT_OF_SCOPE_NAMES:
            raise _out_of_scope(x.dtype, op, "input x")
        raise InvalidQuantParamsError(f"{op}: input x must be float32, got {x.dtype.name}")
    qmin, qmax = 0, 255
    # NaN is left out of the range (np.fmax/np.fmin skip it) and quantizes to 0, and an infinite
    # input gives an infinite scale and an all-zero y: both as onnxruntime.
    flat = x.reshape(-1)
    maxx = np.float32(np.fmax(np.float32(0), np.fmax.reduce(flat) if flat.size else 0))
    minx = np.float32(np.fmin(np.float32(0), np.fmin.reduce(flat) if flat.size else 0))
    scale = np.float32(1.0) if maxx == minx else (maxx - minx) / np.float32(qmax - qmin)
    zp0 = np.float32(qmin) - minx / scale
    zp = np.float32(np.rint(np.fmin(np.fmax(zp0, np.float32(qmin)), np.float32(qmax))))  # NaN -> 0
    with np.errstate(invalid="ignore", divide="ignore"):  # inf/inf -> NaN -> 0, as onnxruntime
        y = _saturate_round(x / scale, zp, np.dtype(np.uint8))
    return y, np.array(scale, np.float32), np.array(zp, np.uint8)


# ---------------------------------------------------------------------------------------------
# integer matmul / conv cores (exact, wrapped to int32)
# ---------------------------------------------------------------------------------------------
def _to_i32(acc_f64: np.ndarray) -> np.ndarray:
    # Exact integers in float64 -> int64 -> int32 with two's-complement wrap (an int32 accumulator).
    return acc_f64.astype(np.int64).astype(np.int32)


def _rows_per_block(k: int) -> int:
    return max(1, _BLOCK_BYTES // (8 * max(k, 1)))


def _matmul_i32(a: np.ndarray, za, b: np.ndarray, zb) -> np.ndarray:
    """numpy.matmul of (a - za) and (b - zb), exact, as int32. za/zb broadcast against a/b."""
    za = np.asarray(0 if za is None else za)
    zb = np.asarray(0 if zb is None else zb)
    bc = b.astype(np.float64) - zb.astype(np.float64)
    if a.ndim >= 2 and bc.ndim == 2 and a.shape[-2] * a.shape[-1] > 0:
        # Flatten the batch of rows and go through it in blocks (bounded float64 temporaries).
        k = a.shape[-1]
        lead = a.shape[:-1]
        a2 = a.reshape(-1, k)
        za2 = np.broadcast_to(za, lead + (1,)).reshape(-1, 1) if za.ndim else za
        out = np.empty((a2.shape[0], bc.shape[1]), np.int32)
        step = _rows_per_block(k)
        for i in range(0, a2.shape[0], step):
            zi = za2[i:i + step] if za2.ndim else za2
            out[i:i + step] = _to_i32(
                np.matmul(a2[i:i + step].astype(np.float64) - zi.astype(np.float64), bc))
        return out.reshape(lead[:-1] + (lead[-1], bc.shape[1]))
    return _to_i32(np.matmul(a.astype(np.float64) - za.astype(np.float64), bc))


def _row_param(p, a: np.ndarray, op: str, name: str) -> np.ndarray:
    """Per-tensor, or per-row of a (M,) / a.shape[:-1] + (1,): shaped to broadcast against a."""
    p = np.asarray(p)
    if p.size == 1:
        return p.reshape(())
    if p.ndim == 1 and a.ndim >= 2 and p.shape[0] == a.shape[-2]:
        return p.reshape(-1, 1)
    if p.ndim == a.ndim and p.shape[-1] == 1:
        try:
            np.broadcast_shapes(p.shape, a.shape)
            return p
        except ValueError:
            pass
    raise InvalidQuantParamsError(
        f"{op}: {name} of shape {list(p.shape)} fits neither per-tensor (scalar) nor per-row "
        f"([M] or [..., M, 1]) quantization of an input of shape {list(a.shape)}")


def _col_param(p, b: np.ndarray, op: str, name: str) -> np.ndarray:
    """Per-tensor, or per-column of b (N,) / b.shape[:-2] + (1, N): broadcasts against b."""
    p = np.asarray(p)
    if p.size == 1:
        return p.reshape(())
    if p.ndim == 1 and p.shape[0] == b.shape[-1]:
        return p
    if p.ndim == b.ndim and b.ndim >= 2 and p.shape[-2] == 1:
        try:
            np.broadcast_shapes(p.shape, b.shape)
            return p
        except ValueError:
            pass
    raise InvalidQuantParamsError(
        f"{op}: {name} of shape {list(p.shape)} fits neither per-tensor (scalar) nor per-column "
        f"([N] or [..., 1, N]) quantization of an input of shape {list(b.shape)}")


def _int_input(x: np.ndarray, op: str, name: str) -> None:
    if x.dtype not in (np.uint8, np.int8):
        if x.dtype.name in _OUT_OF_SCOPE_NAMES:
            raise _out_of_scope(x.dtype, op, name)
        raise InvalidQuantParamsError(f"{op}: {name} must be uint8 or int8, got {x.dtype.name}")


def _check_conv_attrs(strides, dilations, pads, op):
    """strides and dilations >= 1, pads >= 0 (what a conv's attributes must hold, shapes aside)."""
    for name, vals, low in (("strides", strides, 1), ("dilations", dilations, 1), ("pads", pads, 0)):
        if any(int(v) < low for v in vals or ()):
            raise InvalidQuantParamsError(f"{op}: {name} {list(vals)} must be >= {low}")


def _conv_geometry(x_shape, w_shape, auto_pad, dilations, group, kernel_shape, pads, strides,
                   op):
    """(kernel, strides, dilations, pads, group) of a conv of x over w, every check of the
    reference conv made: ranks, kernel_shape, channels and group, attribute ranges, and an output
    that is not empty."""
    _check_conv_attrs(strides, dilations, pads, op)
    if len(x_shape) < 3:
        raise InvalidQuantParamsError(f"{op}: x must have rank >= 3 (N, C, spatial...), got shape "
                                      f"{list(x_shape)}")
    nd = len(x_shape) - 2
    if len(w_shape) != nd + 2:
        raise InvalidQuantParamsError(f"{op}: w has shape {list(w_shape)}, expected rank {nd + 2}")
    kernel = tuple(int(k) for k in w_shape[2:])
    if kernel_shape and tuple(kernel_shape) != kernel:
        raise InvalidQuantParamsError(
            f"{op}: kernel_shape {list(kernel_shape)} does not match w's shape {list(w_shape)}")
    strides = tuple(strides) if strides else (1,) * nd
    dilations = tuple(dilations) if dilations else (1,) * nd
    group = int(group)
    c, m = x_shape[1], w_shape[0]
    if group < 1 or c != w_shape[1] * group or m % group:
        raise InvalidQuantParamsError(
            f"{op}: x has {c} channels and w shape {list(w_shape)}, inconsistent with "
            f"group={group}")
    spatial = x_shape[2:]
    ap = auto_pad.decode() if isinstance(auto_pad, bytes) else (auto_pad or "NOTSET")
    if ap in ("SAME_UPPER", "SAME_LOWER"):
        pb, pe = [], []
        for i in range(nd):
            out = -(-spatial[i] // strides[i])
            total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - spatial[i], 0)
            small, big = total // 2, total - total // 2
            pb.append(small if ap == "SAME_UPPER" else big)
            pe.append(big if ap == "SAME_UPPER" else small)
        pads = tuple(pb + pe)
    elif ap == "VALID":
        pads = (0,) * (2 * nd)
    elif ap == "NOTSET":
        pads = tuple(pads) if pads else (0,) * (2 * nd)
    else:
        raise InvalidQuantParamsError(f"{op}: unknown auto_pad '{ap}'")
    if len(pads) != 2 * nd or len(strides) != nd or len(dilations) != nd:
        raise InvalidQuantParamsError(f"{op}: pads/strides/dilations do not fit {nd} spatial dims")
    if any((spatial[i] + pads[i] + pads[i + nd] - (dilations[i] * (kernel[i] - 1) + 1))
           // strides[i] + 1 < 1 for i in range(nd)):
        raise InvalidQuantParamsError(
            f"{op}: a {list(kernel)} kernel (dilations {list(dilations)}, pads {list(pads)}) "
            f"does not fit the input {list(x_shape)}")
    return kernel, strides, dilations, pads, group


def _conv_i32(x, x_zp, w, w_zp, geometry, op):
    """Integer convolution: (N, M, *out) int32 of sum (x - x_zp)(w - w_zp[m]), exact then wrapped.
    x_zp is a scalar; w_zp a scalar or (M,)."""
    kernel, strides, dilations, pads, group = geometry
    n, c = x.shape[:2]
    m = w.shape[0]
    x_zp = int(np.asarray(x_zp).reshape(())) if x_zp is not None else 0
    # Padding with the input zero point makes padded taps contribute exactly zero.
    cols, out_sp = ref.im2col(x, kernel, strides, pads, dilations, pad_value=x_zp)
    p = cols.shape[0]
    kg = cols.shape[1] // group
    mg = m // group
    wz = np.asarray(0 if w_zp is None else w_zp).astype(np.float64)
    wc = w.reshape(m, kg).astype(np.float64) - (wz.reshape(-1, 1) if wz.ndim else wz)
    wc = wc.reshape(group, mg, kg).transpose(0, 2, 1)  # (G, Kg, Mg)
    out = np.empty((p, m), np.int32)
    step = _rows_per_block(cols.shape[1])
    for i in range(0, p, step):
        blk = cols[i:i + step].astype(np.float64)
        if x_zp:
            blk -= x_zp
        if group == 1:
            acc = blk @ wc[0]
        else:
            acc = np.matmul(blk.reshape(-1, group, kg).transpose(1, 0, 2), wc)  # (G, B, Mg)
            acc = acc.transpose(1, 0, 2).reshape(-1, m)
        out[i:i + step] = _to_i32(acc)
    nd = len(kernel)
    out = out.reshape((n,) + tuple(out_sp) + (m,))
    return out.transpose((0, nd + 1) + tuple(range(1, nd + 1)))


def _requantize(acc: np.ndarray, multiplier, y_zp, out_dt) -> np.ndarray:
    """saturate(round_half_even(float32(acc) * multiplier) + y_zp), float32 throughout."""
    y = acc.astype(np.float32)
    y *= np.asarray(multiplier, np.float32)
    return _saturate_round(y, np.asarray(y_zp).astype(np.float32), out_dt)


def _per_channel(p, m: int, op: str, name: str) -> np.ndarray:
    p = np.asarray(p)
    if p.size == 1:
        return p.reshape(())
    if p.ndim == 1 and p.shape[0] == m:
        return p
    raise InvalidQuantParamsError(
        f"{op}: {name} of shape {list(p.shape)} must be a scalar or have one value per output "
        f"channel ({m})")


def _scalar_param(p, op: str, name: str) -> np.ndarray:
    p = np.asarray(p)
    if p.size != 1:
        raise InvalidQuantParamsError(
            f"{op}: {name} must be a scalar (per-tensor), got shape {list(p.shape)}")
    return p.reshape(())


_CONV_ATTRS = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None,
               "pads": None, "strides": None}


@register("ConvInteger", since=10, attrs=_CONV_ATTRS)
def conv_integer(x, w, x_zero_point=None, w_zero_point=None, *, auto_pad, dilations, group,
                 kernel_shape, pads, strides):
    op = "ConvInteger"
    _int_input(x, op, "x")
    _int_input(w, op, "w")
    geo = _conv_geometry(x.shape, w.shape, auto_pad, dilations, group, kernel_shape, pads,
                         strides, op)
    xz = wz = None
    if x_zero_point is not None:
        xz = _scalar_param(check_zero_point(x_zero_point, x.dtype, op, "x_zero_point"), op,
                           "x_zero_point")
    if w_zero_point is not None:
        wz = _per_channel(check_zero_point(w_zero_point, w.dtype, op, "w_zero_point"),
                          w.shape[0], op, "w_zero_point")
    return _conv_i32(x, xz, w, wz, geo, op)


@register("QLinearConv", since=10, attrs=_CONV_ATTRS)
def qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point,
                 B=None, *, auto_pad, dilations, group, kernel_shape, pads, strides):
    op = "QLinearConv"
    _int_input(x, op, "x")
    _int_input(w, op, "w")
    m = w.shape[0] if w.ndim else 0
    geo = _conv_geometry(x.shape, w.shape, auto_pad, dilations, group, kernel_shape, pads,
                         strides, op)
    xs = _scalar_param(check_scale(x_scale, op, "x_scale"), op, "x_scale")
    ws = _per_channel(check_scale(w_scale, op, "w_scale"), m, op, "w_scale")
    ys = _scalar_param(check_scale(y_scale, op, "y_scale"), op, "y_scale")
    if x_zero_point is None or w_zero_point is None or y_zero_point is None:
        raise InvalidQuantParamsError(f"{op}: x_zero_point, w_zero_point and y_zero_point are "
                                      "required")
    out_dt = np.asarray(y_zero_point).dtype
    _int_input(np.asarray(y_zero_point), op, "y_zero_point")
    xz = _scalar_param(check_zero_point(x_zero_point, x.dtype, op, "x_zero_point"), op,
                       "x_zero_point")
    wz = _per_channel(check_zero_point(w_zero_point, w.dtype, op, "w_zero_point"), m, op,
                      "w_zero_point")
    yz = _scalar_param(y_zero_point, op, "y_zero_point")
    acc = _conv_i32(x, xz, w, wz, geo, op)  # (N, M, *out)
    bshape = (1, m) + (1,) * (acc.ndim - 2)
    if B is not None:
        B = np.asarray(B)
        if B.dtype != np.int32 or B.shape != (m,):
            raise InvalidQuantParamsError(
                f"{op}: bias B must be int32 of shape [{m}], got {B.dtype.name}{list(B.shape)}")
        # Bias joins the int32 accumulator and wraps on overflow, as onnxruntime and the ONNX
        # reference do (kernels/ref.py's requantize saturates instead; only pathological biases
        # within K*255*255 of the int32 limits can tell the two apart).
        acc = (acc.astype(np.int64) + B.reshape(bshape)).astype(np.int32)
    # Multiplier in float32 (the scales' type in opset 10), per output channel when w is.
    mult = (xs.astype(np.float32) * ws.astype(np.float32)) / ys.astype(np.float32)
    mult = mult.reshape(bshape) if mult.ndim else mult
    return _requantize(acc, mult, yz, out_dt)


@register("MatMulInteger", since=10)
def matmul_integer(A, B, a_zero_point=None, b_zero_point=None):
    op = "MatMulInteger"
    _int_input(A, op, "A")
    _int_input(B, op, "B")
    za = zb = None
    if a_zero_point is not None:
        za = _row_param(check_zero_point(a_zero_point, A.dtype, op, "a_zero_point"), A, op,
                        "a_zero_point")
    if b_zero_point is not None:
        zb = _col_param(check_zero_point(b_zero_point, B.dtype, op, "b_zero_point"), B, op,
                        "b_zero_point")
    return _matmul_i32(A, za, B, zb)


def _qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point,
                    op="QLinearMatMul", scale_types=(np.float32,)):
    _int_input(a, op, "a")
    _int_input(b, op, "b")
    scales = {"a_scale": a_scale, "b_scale": b_scale, "y_scale": y_scale}
    for name, s in scales.items():
        s = np.asarray(s)
        if s.dtype not in [np.dtype(t) for t in scale_types]:
            if s.dtype.name in _OUT_OF_SCOPE_NAMES:
                raise _out_of_scope(s.dtype, op, name)
            raise InvalidQuantParamsError(
                f"{op}: {name} has type {s.dtype.name}; this opset accepts "
                + ", ".join(np.dtype(t).name for t in scale_types))
        check_scale(s, op, name)
    sdt = {np.asarray(s).dtype for s in scales.values()}
    if len(sdt) != 1:
        raise InvalidQuantParamsError(f"{op}: a_scale, b_scale and y_scale must share one type, "
                                      f"got {sorted(d.name for d in sdt)}")
    for zname, zp in (("a_zero_point", a_zero_point), ("b_zero_point", b_zero_point),
                      ("y_zero_point", y_zero_point)):
        if zp is None:
            raise InvalidQuantParamsError(f"{op}: {zname} is required")
    _int_input(np.asarray(y_zero_point), op, "y_zero_point")
    out_dt = np.asarray(y_zero_point).dtype
    za = _row_param(check_zero_point(a_zero_point, a.dtype, op, "a_zero_point"), a, op,
                    "a_zero_point")
    zb = _col_param(check_zero_point(b_zero_point, b.dtype, op, "b_zero_point"), b, op,
                    "b_zero_point")
    sa = _row_param(np.asarray(a_scale), a, op, "a_scale")
    sb = _col_param(np.asarray(b_scale), b, op, "b_scale")
    acc = _matmul_i32(a, za, b, zb)
    if b.ndim == 1 and sb.ndim:  # matmul drops b's last axis for 1-D b
        sb = sb.reshape(())
    if a.ndim == 1 and sa.ndim:
        sa = sa.reshape(())
    ys = np.asarray(y_scale)
    yz = np.asarray(y_zero_point)
    if ys.size != 1 or yz.size != 1:
        ys = _col_param(ys, acc, op, "y_scale")
        yz = _col_param(yz, acc, op, "y_zero_point")
    else:
        ys, yz = ys.reshape(()), yz.reshape(())
    # Multiplier in the scales' own type (float16 scales: float16 arithmetic, as the ONNX
    # reference), then applied in float32.
    mult = (sa * sb) / ys
    return _requantize(acc, mult, yz, out_dt)


@register("QLinearMatMul", since=10)
def qlinear_matmul_10(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    return _qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale,
                           y_zero_point)


@register("QLinearMatMul", since=21)
def qlinear_matmul_21(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    # Opset 21 adds float16/bfloat16 scales and float8 tensors (bfloat16, float8: out of scope).
    return _qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale,
                           y_zero_point, scale_types=(np.float32, np.float16))
