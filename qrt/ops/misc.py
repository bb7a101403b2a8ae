"""Less common ops: CastLike, IsNaN, IsInf, Celu, Shrink, Swish, Hardmax, MeanVarianceNormalization,
GroupNormalization, RMSNormalization, LpNormalization, Compress, Unique, ReverseSequence, BitShift,
Det, CenterCropPad, RotaryEmbedding.

Every op checks its inputs and raises ValueError naming the problem (the plan adds the node).
float16 arithmetic runs in float32 and rounds once at the end.
"""
from __future__ import annotations

import numpy as np

from qrt.ops import tensor as _tensor
from qrt.ops.registry import REQUIRED, register

_axis = _tensor._norm_axis


def _float(x, op, what="input"):
    if x.dtype.kind != "f":
        raise ValueError(f"{op}: {what} must be a floating-point tensor, got {x.dtype}")
    return np.dtype(np.float32) if x.dtype.itemsize < 4 else x.dtype




# --------------------------------------------------------------------------------------------
# CastLike

def _code_of(dtype):
    _tensor._load_ml_dtypes()
    for code, dt in _tensor._ELEM_TYPES.items():
        if dt == dtype:
            return code
    raise ValueError(f"CastLike: target type {dtype} is not supported")


def _cast_like(x, target, saturate=1):
    return _tensor.cast(x, _code_of(target.dtype), saturate)


@register("CastLike", since=15)
def cast_like_15(x, target_type):
    return _cast_like(x, target_type)


@register("CastLike", since=19, attrs={"saturate": 1})  # 21, 23, 25: more types (same code)
def cast_like_19(x, target_type, *, saturate):
    return _cast_like(x, target_type, saturate)


@register("CastLike", since=24, attrs={"saturate": 1, "round_mode": "up"})
def cast_like_24(x, target_type, *, saturate, round_mode):
    if round_mode not in ("up", "down", "nearest"):
        raise ValueError(f"CastLike: round_mode must be 'up', 'down' or 'nearest', got "
                         f"{round_mode!r}")
    return _cast_like(x, target_type, saturate)


# --------------------------------------------------------------------------------------------
# IsNaN, IsInf

@register("IsNaN", since=9)  # 13: bfloat16, 20: float8
def is_nan(x):
    _float(x, "IsNaN")
    return np.isnan(x)


@register("IsInf", since=10, attrs={"detect_negative": 1, "detect_positive": 1})  # 20: float8
def is_inf(x, *, detect_negative, detect_positive):
    _float(x, "IsInf")
    inf = np.isinf(x)
    if not detect_negative:
        inf &= x > 0
    if not detect_positive:
        inf &= x < 0
    return inf


# --------------------------------------------------------------------------------------------
# Celu, Shrink, Swish

@register("Celu", since=12, attrs={"alpha": 1.0})  # 28: more float types
def celu(x, *, alpha):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""
    ct = _float(x, "Celu")
    if alpha == 0:
        raise ValueError("Celu: alpha must not be 0")
    xf = x.astype(ct, copy=False)
    a = ct.type(alpha)
    with np.errstate(over="ignore"):
        neg = a * np.expm1(np.minimum(xf, ct.type(0)) / a)
    return (np.maximum(xf, ct.type(0)) + np.minimum(neg, ct.type(0))).astype(x.dtype, copy=False)


@register("Shrink", since=9, attrs={"bias": 0.0, "lambd": 0.5})
def shrink(x, *, bias, lambd):
    """x + bias where x < -lambd, x - bias where x > lambd, 0 elsewhere (the input's type)."""
    if x.dtype.kind not in "fiu":
        raise ValueError(f"Shrink: input must be numeric, got {x.dtype}")
    ct = np.dtype(np.float64) if x.dtype.kind in "iu" else _float(x, "Shrink")
    xf = x.astype(ct, copy=False)
    b = ct.type(bias)
    y = np.where(xf < -lambd, xf + b, np.where(xf > lambd, xf - b, 0))
    with np.errstate(invalid="ignore", over="ignore"):
        return y.astype(x.dtype)


@register("Swish", since=24, attrs={"alpha": 1.0})
def swish(x, *, alpha):
    """x * sigmoid(alpha * x)."""
    ct = _float(x, "Swish")
    xf = x.astype(ct, copy=False)
    with np.errstate(over="ignore"):
        s = ct.type(1) / (ct.type(1) + np.exp(-ct.type(alpha) * xf))
    return (xf * s).astype(x.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# Hardmax

def _hardmax_last(x2):
    y = np.zeros_like(x2)
    if x2.size:
        idx = np.argmax(x2, axis=-1)  # first of equal maxima
        np.put_along_axis(y, idx[..., None], 1, axis=-1)
    return y


@register("Hardmax", since=1, attrs={"axis": 1})  # 11: negative axis
def hardmax_1(x, *, axis):
    """Opset < 13: 1 at the first maximum of each row of the input coerced to 2-D at `axis`."""
    _float(x, "Hardmax")
    if x.ndim == 0:
        raise ValueError("Hardmax: the input must have rank >= 1")
    a = _axis(axis, x.ndim, "Hardmax")
    rows = int(np.prod(x.shape[:a], dtype=np.int64))
    return _hardmax_last(x.reshape(rows, -1)).reshape(x.shape)


@register("Hardmax", since=13, attrs={"axis": -1})
def hardmax_13(x, *, axis):
    """1 at the first maximum along `axis`, 0 elsewhere."""
    _float(x, "Hardmax")
    if x.ndim == 0:
        raise ValueError("Hardmax: the input must have rank >= 1")
    a = _axis(axis, x.ndim, "Hardmax")
    return np.moveaxis(_hardmax_last(np.moveaxis(x, a, -1)), -1, a)


# --------------------------------------------------------------------------------------------
# MeanVarianceNormalization, GroupNormalization, RMSNormalization, LpNormalization

@register("MeanVarianceNormalization", since=9, attrs={"axes": [0, 2, 3]})  # 13: bfloat16
def mean_variance_normalization(x, *, axes):
    """(X - mean) / (sqrt(mean(X^2) - mean^2) + 1e-9) over `axes` (ONNX's function body)."""
    ct = _float(x, "MeanVarianceNormalization")
    ax = tuple(sorted({_axis(a, x.ndim, "MeanVarianceNormalization", "axes entry")
                       for a in axes}))
    if len(ax) != len(list(axes)):
        raise ValueError(f"MeanVarianceNormalization: axes {list(axes)} repeat an axis")
    xf = x.astype(ct, copy=False)
    mean = xf.mean(axis=ax, keepdims=True)
    var = (xf * xf).mean(axis=ax, keepdims=True) - mean * mean
    std = np.sqrt(np.maximum(var, ct.type(0)))
    return ((xf - mean) / (std + ct.type(1e-9))).astype(x.dtype, copy=False)


def _group_norm(x, scale, bias, epsilon, num_groups, stash_type, per_channel):
    op = "GroupNormalization"
    _float(x, op)
    if x.ndim < 3:
        raise ValueError(f"{op}: X must be [N, C, D1, ...] (rank >= 3), got shape "
                         f"{list(x.shape)}")
    n, c = x.shape[:2]
    g = int(num_groups)
    if g <= 0 or c % g:
        raise ValueError(f"{op}: num_groups {g} must be positive and divide the {c} channels")
    want = c if per_channel else g
    for name, v in (("scale", scale), ("bias", bias)):
        if v.ndim != 1 or v.shape[0] != want:
            raise ValueError(f"{op}: {name} must have shape [{want}] "
                             f"({'C' if per_channel else 'num_groups'}), got {list(v.shape)}")
    sd = np.dtype(np.float32) if (stash_type == 1 or x.dtype == np.float16) else x.dtype
    if stash_type == 1 and x.dtype == np.float64:
        sd = np.dtype(np.float64)
    xg = x.astype(sd, copy=False).reshape(n, g, -1)
    mean = xg.mean(axis=2, keepdims=True)
    d = xg - mean
    var = (d * d).mean(axis=2, keepdims=True)
    y = (d / np.sqrt(var + sd.type(epsilon))).reshape(x.shape)
    nd = x.ndim - 2
    if per_channel:
        s = scale.astype(sd).reshape((1, c) + (1,) * nd)
        b = bias.astype(sd).reshape((1, c) + (1,) * nd)
    else:
        s = np.repeat(scale.astype(sd), c // g).reshape((1, c) + (1,) * nd)
        b = np.repeat(bias.astype(sd), c // g).reshape((1, c) + (1,) * nd)
    return (y * s + b).astype(x.dtype, copy=False)


@register("GroupNormalization", since=18, attrs={"epsilon": 1e-5, "num_groups": REQUIRED})
def group_norm_18(x, scale, bias, *, epsilon, num_groups):
    """Opset 18: scale and bias have one value per group."""
    return _group_norm(x, scale, bias, epsilon, num_groups, 1, per_channel=False)


@register("GroupNormalization", since=21,
          attrs={"epsilon": 1e-5, "num_groups": REQUIRED, "stash_type": 1})
def group_norm_21(x, scale, bias, *, epsilon, num_groups, stash_type):
    """Opset 21: scale and bias have one value per channel; statistics in float32 (stash_type
    1) or in X's type."""
    return _group_norm(x, scale, bias, epsilon, num_groups, stash_type, per_channel=True)


@register("RMSNormalization", since=23, attrs={"axis": -1, "epsilon": 1e-5, "stash_type": 1})
def rms_norm(x, scale, *, axis, epsilon, stash_type):
    """X / sqrt(mean(X^2 over axes axis..rank-1) + epsilon) * scale."""
    op = "RMSNormalization"
    _float(x, op)
    if x.ndim == 0:
        raise ValueError(f"{op}: X must have rank >= 1")
    a = _axis(axis, x.ndim, op)
    try:
        np.broadcast_shapes(scale.shape, x.shape[a:])
    except ValueError:
        raise ValueError(f"{op}: scale of shape {list(scale.shape)} does not broadcast to the "
                         f"normalized shape {list(x.shape[a:])}") from None
    sd = np.dtype(np.float32) if stash_type == 1 and x.dtype != np.float64 else (
        np.dtype(np.float32) if x.dtype == np.float16 else x.dtype)
    xf = x.astype(sd, copy=False)
    ms = np.mean(xf * xf, axis=tuple(range(a, x.ndim)), keepdims=True)
    y = xf / np.sqrt(ms + sd.type(epsilon))
    return (y * scale.astype(sd, copy=False)).astype(x.dtype, copy=False)


@register("LpNormalization", since=1, attrs={"axis": -1, "p": 2})  # 22: bfloat16
def lp_normalization(x, *, axis, p):
    """x / ||x||_p along `axis` (p = 1 or 2); a zero norm gives 0."""
    op = "LpNormalization"
    ct = _float(x, op)
    if p not in (1, 2):
        raise ValueError(f"{op}: p must be 1 or 2, got {p}")
    if x.ndim == 0:
        raise ValueError(f"{op}: the input must have rank >= 1")
    a = _axis(axis, x.ndim, op)
    xf = x.astype(ct, copy=False)
    if p == 1:
        norm = np.abs(xf).sum(axis=a, keepdims=True)
    else:
        norm = np.sqrt((xf * xf).sum(axis=a, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.where(norm == 0, ct.type(0), xf / norm)
    return y.astype(x.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# Compress, Unique, ReverseSequence, CenterCropPad

def _compress(x, condition, axis, allow_negative):
    op = "Compress"
    if condition.ndim != 1:
        raise ValueError(f"{op}: condition must be 1-D, got shape {list(condition.shape)}")
    if condition.dtype != np.bool_:
        raise ValueError(f"{op}: condition must be a bool tensor, got {condition.dtype}")
    if axis is None:
        flat = x.reshape(-1)
        if condition.shape[0] > flat.shape[0]:
            raise ValueError(f"{op}: condition has {condition.shape[0]} entries, more than the "
                             f"{flat.shape[0]} elements of the flattened input")
        return np.compress(condition, flat)
    if not allow_negative and axis < 0:
        raise ValueError(f"{op}: axis {axis} must be non-negative at opset < 11")
    a = _axis(axis, x.ndim, op)
    if condition.shape[0] > x.shape[a]:
        raise ValueError(f"{op}: condition has {condition.shape[0]} entries, more than the "
                         f"{x.shape[a]} of axis {a}")
    return np.compress(condition, x, axis=a)


@register("Compress", since=9, attrs={"axis": None})
def compress_9(x, condition, *, axis):
    return _compress(x, condition, axis, False)


@register("Compress", since=11, attrs={"axis": None})  # 28: more types
def compress_11(x, condition, *, axis):
    return _compress(x, condition, axis, True)


@register("Unique", since=11, attrs={"axis": None, "sorted": 1}, ctx=True)  # 28: more types
def unique(x, *, axis, sorted, ctx):  # noqa: A002 (ONNX attribute name)
    """Y, first-occurrence indices, inverse indices and counts (int64). sorted=0 keeps the order
    of first occurrence."""
    op = "Unique"
    if axis is None:
        data = x.reshape(-1)
        y, idx, inv, counts = np.unique(data, return_index=True, return_inverse=True,
                                        return_counts=True)
        a = 0
    else:
        a = _axis(axis, x.ndim, op)
        if x.shape[a] == 0:
            raise ValueError(f"{op}: axis {a} is empty")
        y, idx, inv, counts = np.unique(x, return_index=True, return_inverse=True,
                                        return_counts=True, axis=a)
        data = x
    inv = inv.reshape(-1)
    if not sorted:
        order = np.argsort(idx, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        idx = idx[order]
        counts = counts[order]
        inv = rank[inv]
        y = np.take(data, idx, axis=a)
    out = (y, idx.astype(np.int64), inv.astype(np.int64), counts.astype(np.int64))
    return out[:max(1, ctx.n_outputs)]


@register("ReverseSequence", since=10, attrs={"batch_axis": 1, "time_axis": 0})  # 28: types
def reverse_sequence(x, sequence_lens, *, batch_axis, time_axis):
    """Reverses the first sequence_lens[b] entries along time_axis of each batch entry b."""
    op = "ReverseSequence"
    if x.ndim < 2:
        raise ValueError(f"{op}: input must have rank >= 2, got shape {list(x.shape)}")
    if sorted((batch_axis, time_axis)) != [0, 1]:
        raise ValueError(f"{op}: batch_axis ({batch_axis}) and time_axis ({time_axis}) must be "
                         "0 and 1")
    if sequence_lens.dtype.kind not in "iu" or sequence_lens.ndim != 1:
        raise ValueError(f"{op}: sequence_lens must be a 1-D integer tensor, got "
                         f"{sequence_lens.dtype} of shape {list(sequence_lens.shape)}")
    nb, nt = x.shape[batch_axis], x.shape[time_axis]
    if sequence_lens.shape[0] != nb:
        raise ValueError(f"{op}: sequence_lens has {sequence_lens.shape[0]} entries, the batch "
                         f"axis {nb}")
    y = x.copy()
    for b, n in enumerate(sequence_lens.tolist()):
        if not 0 <= n <= nt:
            raise ValueError(f"{op}: sequence_lens[{b}] = {n} is outside [0, {nt}]")
        if batch_axis == 0:
            y[b, :n] = x[b, :n][::-1]
        else:
            y[:n, b] = x[:n, b][::-1]
    return y


def _center_crop_pad(x, shape, axes):
    op = "CenterCropPad"
    if shape.dtype.kind not in "iu" or shape.ndim != 1:
        raise ValueError(f"{op}: shape must be a 1-D integer tensor, got {shape.dtype} of shape "
                         f"{list(shape.shape)}")
    r = x.ndim
    ax = list(range(r)) if axes is None else [_axis(a, r, op, "axes entry") for a in axes]
    if len(set(ax)) != len(ax):
        raise ValueError(f"{op}: axes {list(axes)} repeat an axis")
    target = [int(s) for s in shape]
    if len(target) != len(ax):
        raise ValueError(f"{op}: shape has {len(target)} entries but there are {len(ax)} axes")
    out_shape = list(x.shape)
    src = [slice(None)] * r
    dst = [slice(None)] * r
    for a, t in zip(ax, target):
        if t < 0:
            raise ValueError(f"{op}: target size {t} is negative")
        d = x.shape[a]
        out_shape[a] = t
        if t < d:
            s = (d - t) // 2
            src[a] = slice(s, s + t)
        elif t > d:
            s = (t - d) // 2
            dst[a] = slice(s, s + d)
    y = np.zeros(out_shape, dtype=x.dtype)
    y[tuple(dst)] = x[tuple(src)]
    return y


@register("CenterCropPad", since=18, attrs={"axes": None})
def center_crop_pad(x, shape, *, axes):
    """Center crop or zero-pad each axis to `shape`; the extra element of an odd difference goes
    to the end."""
    return _center_crop_pad(x, shape, axes)


# --------------------------------------------------------------------------------------------
# BitShift, Det

def _bitshift(x, y, direction, op="BitShift"):
    if direction not in ("LEFT", "RIGHT"):
        raise ValueError(f"{op}: direction must be 'LEFT' or 'RIGHT', got {direction!r}")
    if x.dtype.kind not in "iu" or x.dtype != y.dtype:
        raise ValueError(f"{op}: inputs must be integer tensors of one type, got {x.dtype} and "
                         f"{y.dtype}")
    a, b = np.broadcast_arrays(x, y)
    bits = x.dtype.itemsize * 8
    out_of_range = (b < 0) | (b >= bits)
    bs = np.where(out_of_range, 0, b)
    if direction == "RIGHT":
        r = np.right_shift(a, bs.astype(a.dtype))  # arithmetic for signed types
        if x.dtype.kind == "i":
            fill = np.where(a < 0, -1, 0).astype(a.dtype)
        else:
            fill = np.zeros(a.shape, a.dtype)
    else:
        u = np.dtype(f"u{x.dtype.itemsize}")
        r = np.left_shift(a.view(u) if a.flags.c_contiguous else a.astype(u, copy=True).view(u),
                          bs.astype(u)).view(a.dtype)
        fill = np.zeros(a.shape, a.dtype)
    return np.where(out_of_range, fill, r).astype(x.dtype, copy=False)


@register("BitShift", since=11, attrs={"direction": REQUIRED})
def bitshift_11(x, y, *, direction):
    if x.dtype.kind != "u":
        raise ValueError(f"BitShift: opset < 28 takes unsigned integers only, got {x.dtype}")
    return _bitshift(np.ascontiguousarray(x), np.ascontiguousarray(y), direction)


@register("BitShift", since=28, attrs={"direction": REQUIRED})
def bitshift_28(x, y, *, direction):
    """Signed types too: RIGHT is arithmetic; a shift < 0 or >= the bit width gives 0 (or -1
    for RIGHT of a negative value); LEFT keeps the low bits (two's complement)."""
    return _bitshift(np.ascontiguousarray(x), np.ascontiguousarray(y), direction)


@register("Det", since=11)  # 22: bfloat16
def det(x):
    """Determinant of each [..., M, M] matrix."""
    ct = _float(x, "Det")
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"Det: input must be [..., M, M], got shape {list(x.shape)}")
    return np.asarray(np.linalg.det(x.astype(ct, copy=False))).astype(x.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# RotaryEmbedding

@register("RotaryEmbedding", since=23,
          attrs={"interleaved": 0, "num_heads": 0, "rotary_embedding_dim": 0})
def rotary_embedding(x, cos_cache, sin_cache, position_ids=None, *, interleaved, num_heads,
                     rotary_embedding_dim):
    """Rotates the first rotary_embedding_dim (default: head size) features of each head by the
    cached angles: halves (x1, x2) -> (cos x1 - sin x2, sin x1 + cos x2), the pairs being the two
    halves or, interleaved, the even and odd features. X is [B, heads, S, D] or [B, S, heads * D]
    (num_heads given); the caches are [B, S, rd / 2], or [max_position, rd / 2] indexed by
    position_ids [B, S]."""
    op = "RotaryEmbedding"
    ct = _float(x, op)
    if x.ndim == 4:
        xs = np.transpose(x, (0, 2, 1, 3))  # [B, S, heads, D]
    elif x.ndim == 3:
        if num_heads <= 0 or x.shape[2] % num_heads:
            raise ValueError(f"{op}: a 3-D input needs num_heads dividing its hidden size "
                             f"{x.shape[2]}, got num_heads={num_heads}")
        xs = x.reshape(x.shape[0], x.shape[1], num_heads, x.shape[2] // num_heads)
    else:
        raise ValueError(f"{op}: input must be [B, heads, S, D] or [B, S, hidden], got shape "
                         f"{list(x.shape)}")
    b, s, _, d = xs.shape
    rd = d if not rotary_embedding_dim else int(rotary_embedding_dim)
    if rd <= 0 or rd > d or rd % 2:
        raise ValueError(f"{op}: rotary_embedding_dim {rd} must be even and at most the head "
                         f"size {d}")
    if position_ids is not None:
        if position_ids.dtype.kind not in "iu" or position_ids.shape != (b, s):
            raise ValueError(f"{op}: position_ids must be integers of shape [{b}, {s}], got "
                             f"{position_ids.dtype} {list(position_ids.shape)}")
        for name, c in (("cos_cache", cos_cache), ("sin_cache", sin_cache)):
            if c.ndim != 2:
                raise ValueError(f"{op}: with position_ids, {name} must be [max_position, "
                                 f"{rd // 2}], got {list(c.shape)}")
        if position_ids.size and (position_ids.min() < 0
                                  or position_ids.max() >= cos_cache.shape[0]):
            raise ValueError(f"{op}: position_ids must be in [0, {cos_cache.shape[0]})")
        cos_c, sin_c = cos_cache[position_ids], sin_cache[position_ids]
    else:
        cos_c, sin_c = cos_cache, sin_cache
    for name, c in (("cos_cache", cos_c), ("sin_cache", sin_c)):
        if c.shape != (b, s, rd // 2):
            raise ValueError(f"{op}: {name} gives shape {list(c.shape)}; expected "
                             f"{[b, s, rd // 2]}")
    cos_c = cos_c.astype(ct)[:, :, None, :]
    sin_c = sin_c.astype(ct)[:, :, None, :]
    xf = xs.astype(ct)
    rot = xf[..., :rd]
    if interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
    else:
        x1, x2 = rot[..., :rd // 2], rot[..., rd // 2:]
    real = cos_c * x1 - sin_c * x2
    imag = sin_c * x1 + cos_c * x2
    out = xf.copy()
    if interleaved:
        out[..., 0:rd:2] = real
        out[..., 1:rd:2] = imag
    else:
        out[..., :rd // 2] = real
        out[..., rd // 2:rd] = imag
    out = out.reshape(x.shape) if x.ndim == 3 else np.transpose(out, (0, 2, 1, 3))
    return np.ascontiguousarray(out).astype(x.dtype, copy=False)
