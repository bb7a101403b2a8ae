"""Pooling: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.

Windows are visited one kernel tap at a time: each tap is one strided view of the padded input
covering every output position, so the Python loop runs over kernel taps only (9 for a 3x3).
Output shapes follow ONNX: floor/ceil of (in + pads - dilated_kernel) / stride + 1, where a
ceil-mode window that would start past the input and its begin padding is dropped.
"""
from __future__ import annotations

import numpy as np

from qrt.ops.conv import _tap_slices
from qrt.ops.registry import REQUIRED, register


def _tup(v):
    return None if v is None else tuple(int(a) for a in v)


def _geometry(x_shape, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode):
    """(kernel, strides, dilations, out_spatial, begin_pads, tail_pads_needed, declared_end_pads),
    worked out once per input shape and attributes (it cost more than a small pool itself)."""
    try:
        key = (tuple(x_shape), _tup(kernel_shape), _tup(strides) if strides else None,
               _tup(dilations) if dilations else None, _tup(pads) if pads else None, auto_pad,
               int(ceil_mode))
    except (TypeError, ValueError):  # a malformed attribute: let the full check name it
        return _geometry_uncached(x_shape, kernel_shape, strides, dilations, pads, auto_pad,
                                  ceil_mode)
    g = _GEOMETRY.get(key)
    if g is None:
        g = _geometry_uncached(x_shape, kernel_shape, strides, dilations, pads, auto_pad,
                               ceil_mode)
        if len(_GEOMETRY) > 4096:
            _GEOMETRY.clear()
        _GEOMETRY[key] = g
    kernel, strides, dilations, out, begin, tail, end = g
    return kernel, strides, dilations, out, list(begin), list(tail), list(end)


_GEOMETRY: dict = {}


def _geometry_uncached(x_shape, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode):
    in_sp = tuple(x_shape[2:])
    nd = len(in_sp)
    kernel = tuple(int(k) for k in kernel_shape)
    if len(kernel) != nd:
        raise ValueError(f"kernel_shape {list(kernel)} does not match input rank {len(x_shape)}")
    strides = tuple(int(s) for s in strides) if strides else (1,) * nd
    dilations = tuple(int(d) for d in dilations) if dilations else (1,) * nd
    if len(strides) != nd or len(dilations) != nd:
        raise ValueError(f"strides {list(strides)} / dilations {list(dilations)} must have {nd} "
                         "values")
    if min(kernel + strides + dilations, default=1) < 1:
        raise ValueError(f"kernel_shape {list(kernel)}, strides {list(strides)} and dilations "
                         f"{list(dilations)} must all be >= 1")
    dk = [(kernel[i] - 1) * dilations[i] + 1 for i in range(nd)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-in_sp[i] // strides[i]) for i in range(nd)]
        begin, end = [], []
        for i in range(nd):
            total = max(0, (out[i] - 1) * strides[i] + dk[i] - in_sp[i])
            small = total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
    elif auto_pad == "VALID":
        begin, end = [0] * nd, [0] * nd
        out = [(in_sp[i] - dk[i]) // strides[i] + 1 for i in range(nd)]
    elif auto_pad in ("NOTSET", ""):
        p = [int(v) for v in pads] if pads else [0] * (2 * nd)
        if len(p) != 2 * nd:
            raise ValueError(f"pads has {len(p)} values; expected {2 * nd}")
        if any(v < 0 or v >= dk[i % nd] for i, v in enumerate(p)):
            raise ValueError(f"pads {p} must be >= 0 and smaller than the (dilated) kernel "
                             f"{dk}")
        begin, end = p[:nd], p[nd:]
        out = []
        for i in range(nd):
            span = in_sp[i] + begin[i] + end[i] - dk[i]
            o = (-(-span // strides[i]) if ceil_mode else span // strides[i]) + 1
            if ceil_mode and (o - 1) * strides[i] >= in_sp[i] + begin[i]:
                o -= 1
            out.append(o)
    else:
        raise ValueError(f"unknown auto_pad {auto_pad!r}")
    if min(out) <= 0:
        raise ValueError(f"pooling output would be empty: input {list(x_shape)}, kernel "
                         f"{list(kernel)}, pads {begin + end}")
    tail = [max(0, (out[i] - 1) * strides[i] + dk[i] - in_sp[i] - begin[i]) for i in range(nd)]
    return kernel, strides, dilations, tuple(out), begin, tail, end


def _pad_to(x, begin, tail, value):
    nd = x.ndim - 2
    if not any(begin) and not any(tail):
        return x
    width = [(0, 0), (0, 0)] + [(begin[i], tail[i]) for i in range(nd)]
    return np.pad(x, width, mode="constant", constant_values=value)


_FAST_POOL_TYPES = (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.float32))


def _lowest(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return -np.inf
    return np.iinfo(dtype).min


def max_pool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=REQUIRED,
             pads=None, storage_order=0, strides=None, ctx=None):
    kernel, strides, dilations, out, begin, tail, _ = _geometry(
        x.shape, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    nd = len(kernel)
    want_idx = ctx is not None and ctx.n_outputs > 1
    if nd == 2 and not want_idx and x.dtype in _FAST_POOL_TYPES:
        from qrt.kernels.cpu import float_ops
        y = np.empty(x.shape[:2] + tuple(out), x.dtype)
        return float_ops.maxpool2d(np.ascontiguousarray(x), kernel[0], kernel[1], strides[0],
                                   strides[1], begin[0], begin[1], dilations[0], dilations[1],
                                   x.dtype.type(_lowest(x.dtype)), y)
    xp = _pad_to(x, begin, tail, _lowest(x.dtype))
    y = None
    idx = None
    in_sp = x.shape[2:]
    for kidx in np.ndindex(*kernel):
        tap = xp[(slice(None), slice(None)) + _tap_slices(kidx, dilations, strides, out)]
        if y is None:
            y = tap.copy()
            if want_idx:
                idx = np.zeros(y.shape, dtype=np.int64)
                best = _tap_positions(kidx, strides, dilations, begin, out, in_sp, storage_order)
                idx[...] = best
            continue
        if want_idx:
            better = tap > y
            pos = _tap_positions(kidx, strides, dilations, begin, out, in_sp, storage_order)
            np.copyto(idx, np.broadcast_to(pos, idx.shape), where=better)
        np.maximum(y, tap, out=y)
    if not want_idx:
        return y
    # Flattened index into X: (n * C + c) * prod(spatial) + spatial offset.
    n, c = x.shape[:2]
    base = (np.arange(n * c, dtype=np.int64) * int(np.prod(in_sp))).reshape((n, c) + (1,) * nd)
    return y, idx + base


def _tap_positions(kidx, strides, dilations, begin, out, in_sp, storage_order):
    """Spatial flat offsets (row-major, or column-major when storage_order=1) of one kernel tap at
    every output position; positions in the padding are clipped (they never win a max)."""
    nd = len(kidx)
    flat = np.zeros(out, dtype=np.int64)
    if storage_order:
        mult = np.cumprod((1,) + tuple(in_sp[:-1]), dtype=np.int64)
    else:
        mult = np.cumprod((1,) + tuple(in_sp[::-1][:-1]), dtype=np.int64)[::-1]
    for i in range(nd):
        coord = np.arange(out[i], dtype=np.int64) * strides[i] + kidx[i] * dilations[i] - begin[i]
        coord = np.clip(coord, 0, in_sp[i] - 1)
        shape = [1] * nd
        shape[i] = out[i]
        flat = flat + (coord * mult[i]).reshape(shape)
    return flat


register("MaxPool", since=8, ctx=True,
         attrs={"auto_pad": "NOTSET", "kernel_shape": REQUIRED, "pads": None,
                "storage_order": 0, "strides": None})(
    lambda x, *, auto_pad, kernel_shape, pads, storage_order, strides, ctx: max_pool(
        x, auto_pad=auto_pad, kernel_shape=kernel_shape, pads=pads,
        storage_order=storage_order, strides=strides, ctx=ctx))
def _bind_max_pool(**kw):
    """Plan step of a 2-D MaxPool without indices: per input shape and dtype the geometry, the
    output shape and the kernel's compiled entry point are worked out once (argument handling
    and Numba's type dispatch of 11 arguments cost ~10 us, several times a small pool's work).
    Any other input (3-D, indices wanted, a strided view) takes the op itself."""
    calls: dict = {}
    ctx = kw.get("ctx")
    want_idx = ctx is not None and ctx.n_outputs > 1

    def step(x):
        key = (x.shape, x.dtype)
        call = calls.get(key)
        if call is None:
            if (want_idx or x.ndim != 4 or x.dtype not in _FAST_POOL_TYPES or len(calls) > 64
                    or not x.flags.c_contiguous):
                return max_pool(x, **kw)
            kernel, strides, dilations, out, begin, _, _ = _geometry(
                x.shape, kw["kernel_shape"], kw["strides"], kw["dilations"], kw["pads"],
                kw["auto_pad"], kw["ceil_mode"])
            from qrt.kernels import cpu as _cpu
            from qrt.kernels.cpu import float_ops
            oshape = x.shape[:2] + tuple(out)
            args = (np.int64(kernel[0]), np.int64(kernel[1]), np.int64(strides[0]),
                    np.int64(strides[1]), np.int64(begin[0]), np.int64(begin[1]),
                    np.int64(dilations[0]), np.int64(dilations[1]),
                    x.dtype.type(_lowest(x.dtype)))
            fn = _cpu.compiled_entry(float_ops.maxpool2d,
                                     (x,) + args + (np.empty(oshape, x.dtype),))
            call = calls[key] = (fn, args, oshape)
        if not x.flags.c_contiguous:
            return max_pool(x, **kw)
        fn, args, oshape = call
        y = np.empty(oshape, x.dtype)
        fn(x, *args, y)
        return y
    step.__wrapped__ = max_pool
    return step


max_pool.bind_step = _bind_max_pool
register("MaxPool", since=10, ctx=True,
         attrs={"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None,
                "kernel_shape": REQUIRED, "pads": None, "storage_order": 0,
                "strides": None})(max_pool)


def _counts(n_out, stride, dil, k, begin, lo, hi):
    """How many taps of each 1-D window land inside [lo, hi) (input coordinates)."""
    pos = (np.arange(n_out)[:, None] * stride + np.arange(k)[None, :] * dil - begin)
    return ((pos >= lo) & (pos < hi)).sum(axis=1)


def average_pool(x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                 kernel_shape=REQUIRED, pads=None, strides=None):
    kernel, strides, dilations, out, begin, tail, end = _geometry(
        x.shape, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    nd = len(kernel)
    wd = np.float32 if x.dtype == np.float16 else x.dtype
    xp = _pad_to(x.astype(wd, copy=False), begin, tail, 0)
    acc = np.zeros(x.shape[:2] + out, dtype=wd)
    for kidx in np.ndindex(*kernel):
        acc += xp[(slice(None), slice(None)) + _tap_slices(kidx, dilations, strides, out)]
    in_sp = x.shape[2:]
    count = np.ones((), dtype=np.int64)
    for i in range(nd):
        if count_include_pad:
            ci = _counts(out[i], strides[i], dilations[i], kernel[i], begin[i], -begin[i],
                         in_sp[i] + end[i])
        else:
            ci = _counts(out[i], strides[i], dilations[i], kernel[i], begin[i], 0, in_sp[i])
        shape = [1] * nd
        shape[i] = out[i]
        count = count * ci.reshape(shape)
    acc /= np.maximum(count, 1).astype(wd)
    return acc.astype(x.dtype, copy=False)


register("AveragePool", since=10,
         attrs={"auto_pad": "NOTSET", "ceil_mode": 0, "count_include_pad": 0,
                "kernel_shape": REQUIRED, "pads": None, "strides": None})(
    lambda x, **kw: average_pool(x, **kw))
register("AveragePool", since=19,
         attrs={"auto_pad": "NOTSET", "ceil_mode": 0, "count_include_pad": 0,
                "dilations": None, "kernel_shape": REQUIRED, "pads": None,
                "strides": None})(average_pool)


@register("GlobalAveragePool", since=1)
def global_average_pool(x):
    if x.ndim < 3:
        raise ValueError(f"GlobalAveragePool: input must be [N, C, D1, ...] (rank >= 3), got "
                         f"shape {list(x.shape)}")
    axes = tuple(range(2, x.ndim))
    if x.dtype == np.float16:
        return x.mean(axis=axes, keepdims=True, dtype=np.float32).astype(np.float16)
    return x.mean(axis=axes, keepdims=True)


@register("GlobalMaxPool", since=1)  # 22: bfloat16
def global_max_pool(x):
    """Max over every spatial axis of [N, C, D1, ...], kept as size-1 axes; NaN propagates."""
    if x.ndim < 2:
        raise ValueError(f"GlobalMaxPool: input must be [N, C, ...] (rank >= 2), got shape "
                         f"{list(x.shape)}")
    axes = tuple(range(2, x.ndim))
    if any(x.shape[a] == 0 for a in axes):
        raise ValueError(f"GlobalMaxPool: empty spatial axis in input shape {list(x.shape)}")
    return np.array(np.max(x, axis=axes, keepdims=True))
