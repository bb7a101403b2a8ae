"""Random ops: RandomUniform, RandomNormal, RandomUniformLike, RandomNormalLike, Bernoulli,
Multinomial.

With a `seed` attribute each call draws from a generator seeded by it, so a seeded node gives
the same values on every run (ONNX leaves the sequence to the implementation; onnxruntime's
values differ). Without one each call draws fresh values. These ops are never constant-folded
or cached by shape (qrt/passes/fold_constants.py, qrt/plan.py).
"""
from __future__ import annotations

import struct

import numpy as np

from qrt.ops.registry import REQUIRED, register
from qrt.ops.tensor import elem_dtype


def _rng(seed):
    if seed is None:
        return np.random.default_rng()
    # the float's bits: distinct seeds (0.5, 1.5, ...) give distinct streams
    return np.random.default_rng(struct.unpack("<Q", struct.pack("<d", float(seed)))[0])


def _float_dtype(op, dtype, like=None):
    if dtype is None:
        if like is None:
            raise ValueError(f"{op}: no dtype")
        dt = like.dtype
    else:
        try:
            dt = elem_dtype(dtype)
        except ValueError as e:
            raise ValueError(f"{op}: {e}") from None
    if dt.kind != "f":
        raise ValueError(f"{op}: output type must be floating point, got {dt}")
    return dt


def _shape(op, shape):
    s = [int(v) for v in shape]
    if any(v < 0 for v in s):
        raise ValueError(f"{op}: shape {s} has a negative dimension")
    return tuple(s)


def _uniform(op, shape, dt, low, high, seed):
    if not high >= low:
        raise ValueError(f"{op}: high ({high}) must be >= low ({low})")
    return _rng(seed).uniform(low, high, size=shape).astype(dt)


def _normal(op, shape, dt, mean, scale, seed):
    if not scale >= 0:
        raise ValueError(f"{op}: scale must be >= 0, got {scale}")
    return _rng(seed).normal(mean, scale, size=shape).astype(dt)


@register("RandomUniform", since=1, attrs={"dtype": 1, "high": 1.0, "low": 0.0, "seed": None,
                                           "shape": REQUIRED})  # 22: bfloat16
def random_uniform(*, dtype, high, low, seed, shape):
    op = "RandomUniform"
    return _uniform(op, _shape(op, shape), _float_dtype(op, dtype), low, high, seed)


@register("RandomNormal", since=1, attrs={"dtype": 1, "mean": 0.0, "scale": 1.0, "seed": None,
                                          "shape": REQUIRED})  # 22: bfloat16
def random_normal(*, dtype, mean, scale, seed, shape):
    op = "RandomNormal"
    return _normal(op, _shape(op, shape), _float_dtype(op, dtype), mean, scale, seed)


@register("RandomUniformLike", since=1, attrs={"dtype": None, "high": 1.0, "low": 0.0,
                                               "seed": None})  # 22: bfloat16
def random_uniform_like(x, *, dtype, high, low, seed):
    op = "RandomUniformLike"
    return _uniform(op, x.shape, _float_dtype(op, dtype, x), low, high, seed)


@register("RandomNormalLike", since=1, attrs={"dtype": None, "mean": 0.0, "scale": 1.0,
                                              "seed": None})  # 22: bfloat16
def random_normal_like(x, *, dtype, mean, scale, seed):
    op = "RandomNormalLike"
    return _normal(op, x.shape, _float_dtype(op, dtype, x), mean, scale, seed)


@register("Bernoulli", since=15, attrs={"dtype": None, "seed": None})  # 22: bfloat16
def bernoulli(x, *, dtype, seed):
    """1 with probability x, else 0, in `dtype` (default: the input's type)."""
    op = "Bernoulli"
    if x.dtype.kind != "f":
        raise ValueError(f"{op}: input must hold probabilities (floating point), got {x.dtype}")
    if x.size and (np.isnan(x).any() or x.min() < 0 or x.max() > 1):
        raise ValueError(f"{op}: probabilities must be in [0, 1]")
    if dtype is None:
        dt = x.dtype
    else:
        try:
            dt = elem_dtype(dtype)
        except ValueError as e:
            raise ValueError(f"{op}: {e}") from None
    return (_rng(seed).random(x.shape) < x).astype(dt)


@register("Multinomial", since=7, attrs={"dtype": 6, "sample_size": 1, "seed": None})
def multinomial(x, *, dtype, sample_size, seed):
    """[batch, classes] unnormalised log-probabilities -> [batch, sample_size] class indices
    (int32 or int64), drawn independently with replacement."""
    op = "Multinomial"
    if x.ndim != 2 or x.dtype.kind != "f":
        raise ValueError(f"{op}: input must be a 2-D float tensor [batch, classes], got "
                         f"{x.dtype} of shape {list(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"{op}: there are no classes to draw from")
    if int(dtype) not in (6, 7):
        raise ValueError(f"{op}: dtype must be INT32 (6) or INT64 (7), got {dtype}")
    n = int(sample_size)
    if n < 1:
        raise ValueError(f"{op}: sample_size must be >= 1, got {n}")
    logits = x.astype(np.float64)
    m = np.max(logits, axis=1, keepdims=True)
    p = np.exp(logits - m)
    p /= p.sum(axis=1, keepdims=True)
    cdf = np.cumsum(p, axis=1)
    cdf[:, -1] = 1.0
    u = _rng(seed).random((x.shape[0], n))
    out = np.empty((x.shape[0], n), dtype=np.int64)
    for b in range(x.shape[0]):
        out[b] = np.searchsorted(cdf[b], u[b], side="right")
    np.minimum(out, x.shape[1] - 1, out=out)
    return out.astype(np.int32 if int(dtype) == 6 else np.int64)
