"""Scale / zero point from a real range, and weight quantization (per-tensor, per-axis, blocked).

One function, `qparams`, turns (rmin, rmax) into (scale, zero_point) for every observer and every
weight, so symmetric/affine and the type's integer range are handled in exactly one place.
"""
from __future__ import annotations

import numpy as np

# name -> (numpy dtype, qmin, qmax, onnx element type)
_TYPES = {
    "uint8": (np.uint8, 0, 255, 2),
    "int8": (np.int8, -128, 127, 3),
    "uint16": (np.uint16, 0, 65535, 4),
    "int16": (np.int16, -32768, 32767, 5),
    "int32": (np.int32, -(2 ** 31), 2 ** 31 - 1, 6),
    "uint4": (None, 0, 15, 21),
    "int4": (None, -8, 7, 22),
}


def qtype_names() -> list[str]:
    return [k for k in _TYPES if k != "int32"]


def qrange(qtype: str) -> tuple[int, int]:
    try:
        return _TYPES[qtype][1], _TYPES[qtype][2]
    except KeyError:
        raise ValueError(f"unknown quantized type {qtype!r}; expected one of {qtype_names()}") from None


def onnx_elem_type(qtype: str) -> int:
    return _TYPES[qtype][3]


def np_dtype(qtype: str):
    dt = _TYPES[qtype][0]
    if dt is None:
        import ml_dtypes
        dt = ml_dtypes.int4 if qtype == "int4" else ml_dtypes.uint4
    return np.dtype(dt)


def qparams(rmin, rmax, qtype: str, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """(scale float32, zero_point int64) for real range [rmin, rmax] (scalars or arrays).

    The range is first widened to contain 0 (so that 0 is exactly representable, as ONNX padding
    and ReLU need). Symmetric: zero point at the middle of the type (0 for signed, 128 for uint8)
    and scale = max|r| / (qmax - zp), so +max|r| is exactly representable. Affine: the range maps
    onto [qmin, qmax]. A zero range gives scale 1 (any scale represents a constant 0 exactly).
    """
    qmin, qmax = qrange(qtype)
    rmin = np.minimum(np.asarray(rmin, np.float64), 0.0)
    rmax = np.maximum(np.asarray(rmax, np.float64), 0.0)
    if symmetric:
        zp = np.full(rmin.shape, 0 if qmin < 0 else (qmax + 1) // 2, np.int64)
        absmax = np.maximum(-rmin, rmax)
        scale = absmax / float(qmax - (0 if qmin < 0 else (qmax + 1) // 2))
    else:
        scale = (rmax - rmin) / float(qmax - qmin)
        safe = np.where(scale > 0, scale, 1.0)
        zp = np.clip(np.rint(qmin - rmin / safe), qmin, qmax).astype(np.int64)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    # float32 rounding can make a tiny scale 0 or denormal: keep it a normal float32.
    scale = np.maximum(scale, np.float32(np.finfo(np.float32).tiny * 2 ** 24))
    return scale, zp


def quantize(x: np.ndarray, scale, zero_point, qtype: str) -> np.ndarray:
    """ONNX QuantizeLinear semantics (round half to even, saturate); returns int64 values."""
    qmin, qmax = qrange(qtype)
    q = np.rint(np.asarray(x, np.float32) / np.asarray(scale, np.float32)) + np.asarray(zero_point)
    return np.clip(q, qmin, qmax).astype(np.int64)


def fake_quant(x: np.ndarray, scale, zero_point, qtype: str) -> np.ndarray:
    q = quantize(x, scale, zero_point, qtype)
    return ((q - np.asarray(zero_point)) * np.asarray(scale, np.float32)).astype(np.float32)


def _bshape(ndim: int, axis: int, n: int) -> tuple:
    s = [1] * ndim
    s[axis] = n
    return tuple(s)


# u8 activations (at most 255) times s8 weights, two products summed in int16 (x86 `vpmaddubsw`, which
# onnxruntime's u8 x s8 kernels use on CPUs without AVX-512 VNNI / AVX-VNNI) saturate unless the two
# weights of a pair sum to at most 32767 // 255 = 128 in magnitude.
PAIR_LIMIT = 32767 // 255


def pairs_overflow_int16(q: np.ndarray, out_axis: int, limit: int = PAIR_LIMIT) -> bool:
    """True when some output channel (along `out_axis`) of the int8 weight `q` has two positive
    values, or two negative ones, whose magnitudes sum past `limit`: whichever two weights a kernel
    pairs, u8 x s8 products summed pairwise in int16 could then saturate."""
    q = np.asarray(q, np.int64)
    if q.ndim < 2:
        return False
    qm = np.moveaxis(q, out_axis % q.ndim, 0).reshape(q.shape[out_axis % q.ndim], -1)
    if qm.shape[1] < 2:
        return False
    pos = -np.sort(-np.maximum(qm, 0), axis=1)[:, :2].sum(axis=1)
    neg = -np.sort(-np.maximum(-qm, 0), axis=1)[:, :2].sum(axis=1)
    return bool(np.any(np.maximum(pos, neg) > limit))


def quantize_weight(w: np.ndarray, qtype: str, symmetric: bool = True, axis: int | None = None,
                    block_size: int | None = None):
    """Quantize a float weight. Returns (q int64 array, scale, zero_point) where scale/zero_point
    are scalars (axis None), 1-D along `axis`, or blocked (shape of w with dimension `axis`
    replaced by ceil(D / block_size)), exactly the layouts DequantizeLinear takes."""
    w = np.asarray(w, np.float32)
    if axis is None:
        s, z = qparams(w.min(initial=0.0), w.max(initial=0.0), qtype, symmetric)
        return quantize(w, s, z, qtype), s.reshape(()), z.reshape(())
    axis = axis % w.ndim
    if block_size is None:
        red = tuple(i for i in range(w.ndim) if i != axis)
        s, z = qparams(w.min(axis=red, initial=0.0), w.max(axis=red, initial=0.0), qtype,
                       symmetric)
        shp = _bshape(w.ndim, axis, w.shape[axis])
        return quantize(w, s.reshape(shp), z.reshape(shp), qtype), s, z
    d = w.shape[axis]
    nb = -(-d // block_size)
    pad = nb * block_size - d
    wm = np.moveaxis(w, axis, 0)
    if pad:
        wm = np.concatenate([wm, np.zeros((pad,) + wm.shape[1:], np.float32)], axis=0)
    blocks = wm.reshape((nb, block_size) + wm.shape[1:])
    s, z = qparams(blocks.min(axis=1, initial=0.0), blocks.max(axis=1, initial=0.0), qtype,
                   symmetric)  # (nb, ...rest)
    rep_s = np.repeat(s, block_size, axis=0)[:d]
    rep_z = np.repeat(z, block_size, axis=0)[:d]
    q = quantize(np.moveaxis(w, axis, 0), rep_s, rep_z, qtype)
    return np.moveaxis(q, 0, axis), np.moveaxis(s, 0, axis), np.moveaxis(z, 0, axis)


def dequantize_weight(q, scale, zero_point, axis=None, block_size=None) -> np.ndarray:
    q = np.asarray(q, np.int64)
    s = np.asarray(scale, np.float32)
    z = np.asarray(zero_point, np.int64)
    if axis is None or s.ndim == 0:
        return ((q - z) * s).astype(np.float32)
    axis = axis % q.ndim
    if block_size is None:
        shp = _bshape(q.ndim, axis, q.shape[axis])
        return ((q - z.reshape(shp)) * s.reshape(shp)).astype(np.float32)
    d = q.shape[axis]
    s = np.repeat(s, block_size, axis=axis).take(np.arange(d), axis=axis)
    z = np.repeat(z, block_size, axis=axis).take(np.arange(d), axis=axis)
    return ((q - z) * s).astype(np.float32)
