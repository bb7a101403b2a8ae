"""Float Conv, ConvTranspose, Gemm, MatMul.

Conv lowers to im2col + one BLAS matmul per group (depthwise convs accumulate shifted taps
instead, which is cheaper than K-wide matmuls); ConvTranspose is one BLAS matmul per group followed
by a col2im scatter-add, one strided slice per kernel tap. No Python loop runs over elements.
float16 is computed in float32 and rounded once at the end.
"""
from __future__ import annotations

import numpy as np

from qrt.ops.registry import REQUIRED, register  # noqa: F401

_SPATIAL_ATTRS = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None,
                  "pads": None, "strides": None}


_float_ops = None


def _fo():
    """The Numba kernels, imported on first use (numba's import and JIT cost nothing until then)."""
    global _float_ops
    if _float_ops is None:
        from qrt.kernels.cpu import float_ops
        _float_ops = float_ops
    return _float_ops


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype arithmetic runs in: float16 (no BLAS) is computed in float32."""
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return np.dtype(np.float32)
    return dtype


def conv_pads(auto_pad: str, in_sp, kernel, strides, dilations, pads) -> list[int]:
    """Explicit (begin..., end...) pads of a Conv/pool window for the given auto_pad."""
    nd = len(in_sp)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(nd):
            out = -(-in_sp[i] // strides[i])
            dk = (kernel[i] - 1) * dilations[i] + 1
            total = max(0, (out - 1) * strides[i] + dk - in_sp[i])
            small = total // 2
            if auto_pad == "SAME_UPPER":
                begin.append(small)
                end.append(total - small)
            else:
                begin.append(total - small)
                end.append(small)
        return begin + end
    if auto_pad == "VALID":
        return [0] * (2 * nd)
    if auto_pad not in ("NOTSET", ""):
        raise ValueError(f"unknown auto_pad {auto_pad!r}")
    if pads is None:
        return [0] * (2 * nd)
    pads = [int(p) for p in pads]
    if len(pads) != 2 * nd:
        raise ValueError(f"pads has {len(pads)} values; expected {2 * nd}")
    if min(pads, default=0) < 0:
        raise ValueError(f"pads {pads} must be >= 0")
    return pads


def _padded(x: np.ndarray, pads, nd: int, value=0) -> np.ndarray:
    if not any(pads):
        return x
    if min(pads) < 0:
        # Negative pads crop.
        sl = (slice(None), slice(None)) + tuple(
            slice(max(0, -pads[i]), x.shape[2 + i] - max(0, -pads[i + nd])) for i in range(nd))
        x = x[sl]
        pads = [max(0, p) for p in pads]
    width = [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)]
    return np.pad(x, width, mode="constant", constant_values=value)


def _tap_slices(kidx, dilations, strides, out_sp):
    return tuple(slice(kidx[i] * dilations[i], kidx[i] * dilations[i]
                       + strides[i] * (out_sp[i] - 1) + 1, strides[i])
                 for i in range(len(kidx)))


def _norm_spatial(x, w_shape, kernel_shape, strides, dilations):
    nd = x.ndim - 2
    if nd < 1:
        raise ValueError(f"Conv input must have rank >= 3, got shape {x.shape}")
    kernel = tuple(int(k) for k in (kernel_shape if kernel_shape else w_shape[2:]))
    strides = tuple(int(s) for s in strides) if strides else (1,) * nd
    dilations = tuple(int(d) for d in dilations) if dilations else (1,) * nd
    if len(kernel) != nd or len(strides) != nd or len(dilations) != nd:
        raise ValueError(f"kernel/strides/dilations must have {nd} values")
    if min(strides) < 1 or min(dilations) < 1 or min(kernel) < 1:
        raise ValueError(f"strides {list(strides)}, dilations {list(dilations)} and kernel "
                         f"{list(kernel)} must all be >= 1")
    return nd, kernel, strides, dilations


def conv_nd(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
            pads=None, strides=None):
    out_dtype = x.dtype
    wd = _work_dtype(out_dtype)
    nd, kernel, strides, dilations = _norm_spatial(x, w.shape, kernel_shape, strides, dilations)
    if tuple(w.shape[2:]) != kernel:
        raise ValueError(f"kernel_shape {list(kernel)} does not match W shape {list(w.shape)}")
    n, c = x.shape[:2]
    m = w.shape[0]
    g = int(group)
    if g < 1 or c % g or m % g or w.shape[1] * g != c:
        raise ValueError(f"Conv: X has {c} channels, W {list(w.shape)}, group={g}: mismatch")
    cg, mg = c // g, m // g
    p = conv_pads(auto_pad, x.shape[2:], kernel, strides, dilations, pads)
    xw = x.astype(wd, copy=False)
    ww = w.astype(wd, copy=False)
    xp = _padded(xw, p, nd)
    out_sp = tuple((xp.shape[2 + i] - ((kernel[i] - 1) * dilations[i] + 1)) // strides[i] + 1
                   for i in range(nd))
    if min(out_sp) <= 0:
        raise ValueError(f"Conv output would be empty: input {list(x.shape)}, kernel "
                         f"{list(kernel)}, pads {p}")
    o = int(np.prod(out_sp))
    ksz = int(np.prod(kernel))
    if cg == 1 and ksz > 1:
        # Depthwise (channel multiplier mg): no matmul worth the name; direct accumulation.
        if nd == 2 and wd in (np.float32, np.float64):
            y = np.empty((n, m) + out_sp, dtype=wd)
            _fo().depthwise_conv2d(np.ascontiguousarray(xp), np.ascontiguousarray(
                ww.reshape(m, kernel[0], kernel[1])), y, strides[0], strides[1], dilations[0],
                dilations[1], mg)
        else:
            y = np.zeros((n, g, mg) + out_sp, dtype=wd)
            wr = ww.reshape(g, mg, ksz)
            bshape = (1, g, mg) + (1,) * nd
            for ki, kidx in enumerate(np.ndindex(*kernel)):
                tap = xp[(slice(None), slice(None)) + _tap_slices(kidx, dilations, strides,
                                                                  out_sp)]
                y += tap[:, :, None] * wr[:, :, ki].reshape(bshape)
            y = y.reshape((n, m) + out_sp)
    else:
        if ksz == 1 and all(s == 1 for s in strides):
            cols = np.ascontiguousarray(xp).reshape(n, g, cg, o)  # 1x1, stride 1: no im2col
        else:
            cols = np.empty((n, c) + kernel + out_sp, dtype=wd)
            for kidx in np.ndindex(*kernel):
                cols[(slice(None), slice(None)) + kidx] = xp[
                    (slice(None), slice(None)) + _tap_slices(kidx, dilations, strides, out_sp)]
            cols = cols.reshape(n, g, cg * ksz, o)
        wr = np.ascontiguousarray(ww.reshape(g, mg, cg * ksz))
        y = np.empty((n, g, mg, o), dtype=wd)
        # One 2-D BLAS call per (image, group): numpy's stacked matmul path is much slower.
        for i in range(n):
            for j in range(g):
                np.matmul(wr[j], cols[i, j], out=y[i, j])
        y = y.reshape((n, m) + out_sp)
    if b is not None:
        if b.size != m:
            raise ValueError(f"Conv: bias B has shape {list(b.shape)}; expected [{m}] (one per "
                             "output channel)")
        y += b.astype(wd, copy=False).reshape((1, m) + (1,) * nd)
    return y.astype(out_dtype, copy=False)


register("Conv", since=1, attrs=dict(_SPATIAL_ATTRS))(conv_nd)


def conv_transpose_nd(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1,
                      kernel_shape=None, output_padding=None, output_shape=None, pads=None,
                      strides=None):
    out_dtype = x.dtype
    wd = _work_dtype(out_dtype)
    nd, kernel, strides, dilations = _norm_spatial(x, w.shape, kernel_shape, strides, dilations)
    n, c = x.shape[:2]
    g = int(group)
    if g < 1 or c != w.shape[0] or c % g:
        raise ValueError(f"ConvTranspose: X has {c} channels, W {list(w.shape)}, group={g}")
    cg, mg = c // g, w.shape[1]
    m = mg * g
    in_sp = x.shape[2:]
    outpad = [int(v) for v in output_padding] if output_padding else [0] * nd
    outpad = outpad[:nd]
    natural = [strides[i] * (in_sp[i] - 1) + outpad[i] + (kernel[i] - 1) * dilations[i] + 1
               for i in range(nd)]
    if output_shape is not None and len(output_shape):
        oshape = [int(v) for v in output_shape]
        if len(oshape) == nd + 2:
            oshape = oshape[2:]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        oshape = [in_sp[i] * strides[i] for i in range(nd)]
    else:
        oshape = None
    if oshape is not None:
        begin, end = [], []
        for i in range(nd):
            total = max(0, natural[i] - oshape[i])
            if auto_pad == "SAME_UPPER":
                begin.append(total // 2)
                end.append(total - total // 2)
            else:
                begin.append(total - total // 2)
                end.append(total // 2)
        p = begin + end
    else:
        p = [int(v) for v in pads] if (pads and auto_pad in ("NOTSET", "")) else [0] * (2 * nd)
        oshape = [natural[i] - p[i] - p[i + nd] for i in range(nd)]
    ksz = int(np.prod(kernel))
    ii = int(np.prod(in_sp))
    xw = x.astype(wd, copy=False).reshape(n, g, cg, ii)
    ww = w.astype(wd, copy=False).reshape(g, cg, mg * ksz)
    # cols[n, g, mg*k, i] = sum_c W[g, c, mg*k] * x[n, g, c, i]
    cols = np.empty((n, g, mg * ksz, ii), dtype=wd)
    for j in range(g):
        wt = np.ascontiguousarray(ww[j].T)
        for i in range(n):
            np.matmul(wt, xw[i, j], out=cols[i, j])
    cols = cols.reshape((n, m) + kernel + tuple(in_sp))
    # col2im into a buffer wide enough for every tap and the requested output window.
    full = [max(natural[i], p[i] + oshape[i]) for i in range(nd)]
    buf = np.zeros((n, m) + tuple(full), dtype=wd)
    for kidx in np.ndindex(*kernel):
        sl = _tap_slices(kidx, dilations, strides, in_sp)
        buf[(slice(None), slice(None)) + sl] += cols[(slice(None), slice(None)) + kidx]
    y = buf[(slice(None), slice(None)) + tuple(slice(p[i], p[i] + oshape[i]) for i in range(nd))]
    if b is not None:
        y = y + b.astype(wd, copy=False).reshape((1, m) + (1,) * nd)
    return np.ascontiguousarray(y.astype(out_dtype, copy=False))


register("ConvTranspose", since=1,
         attrs=dict(_SPATIAL_ATTRS, output_padding=None, output_shape=None))(conv_transpose_nd)


def _gemm(a, b, c, alpha, beta, trans_a, trans_b):
    out_dtype = a.dtype
    wd = _work_dtype(out_dtype)
    a2 = a.astype(wd, copy=False)
    b2 = b.astype(wd, copy=False)
    if trans_a:
        a2 = a2.T
    if trans_b:
        b2 = b2.T
    y = a2 @ b2
    if alpha != 1.0:
        y = y * wd.type(alpha)
    if c is not None and beta != 0.0:
        cc = c.astype(wd, copy=False)
        if beta != 1.0:
            cc = cc * wd.type(beta)
        y = y + cc  # unidirectional broadcast of C to (M, N)
    return y.astype(out_dtype, copy=False)


@register("Gemm", since=7, attrs={"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
def gemm(a, b, c=None, *, alpha, beta, transA, transB):
    return _gemm(a, b, c, alpha, beta, transA, transB)


@register("MatMul", since=1)
def matmul(a, b):
    if a.dtype != b.dtype:
        raise TypeError(f"MatMul: A is {a.dtype.name} and B is {b.dtype.name}; they must have "
                        "the same type")
    wd = _work_dtype(a.dtype)
    if wd == a.dtype:
        return np.matmul(a, b)
    return np.matmul(a.astype(wd), b.astype(wd)).astype(a.dtype)
