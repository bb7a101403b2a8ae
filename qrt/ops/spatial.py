"""Spatial ops: LpPool, GlobalLpPool, MaxUnpool, Col2Im, GridSample, AffineGrid, Upsample,
RoiAlign, NonMaxSuppression.

Each is numpy, vectorised over the output positions (GridSample gathers every interpolation tap
at once; RoiAlign loops over regions only). float16 runs in float32 and rounds at the end.
"""
from __future__ import annotations

import itertools
import math

import numba as nb
import numpy as np

from qrt.ops.conv import _tap_slices
from qrt.ops.pool import _geometry, _pad_to
from qrt.ops.registry import REQUIRED, register


def _wd(x, op):
    if x.dtype.kind != "f":
        raise ValueError(f"{op}: input must be a floating-point tensor, got {x.dtype}")
    return np.dtype(np.float32) if x.dtype.itemsize < 4 else x.dtype


def _spatial_input(x, op, min_rank=3):
    if x.ndim < min_rank:
        raise ValueError(f"{op}: input must be [N, C, D1, ...] (rank >= {min_rank}), got shape "
                         f"{list(x.shape)}")


# --------------------------------------------------------------------------------------------
# LpPool, GlobalLpPool

def _lp_pool(x, auto_pad, ceil_mode, dilations, kernel_shape, p, pads, strides):
    op = "LpPool"
    wd = _wd(x, op)
    _spatial_input(x, op)
    if p <= 0:
        raise ValueError(f"{op}: p must be positive, got {p}")
    try:
        kernel, strides, dilations, out, begin, tail, end = _geometry(
            x.shape, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    except ValueError as e:
        raise ValueError(f"{op}: {e}") from None
    xp = _pad_to(np.abs(x.astype(wd, copy=False)) ** wd.type(p), begin, tail, 0)
    acc = np.zeros(x.shape[:2] + tuple(out), dtype=wd)
    for kidx in np.ndindex(*kernel):
        acc += xp[(slice(None), slice(None)) + _tap_slices(kidx, dilations, strides, out)]
    return (acc ** wd.type(1.0 / p)).astype(x.dtype, copy=False)


@register("LpPool", since=2, attrs={"auto_pad": "NOTSET", "kernel_shape": REQUIRED, "p": 2,
                                    "pads": None, "strides": None})  # 11: auto_pad semantics
def lp_pool_2(x, *, auto_pad, kernel_shape, p, pads, strides):
    """(sum over the window of |x|^p)^(1/p); padding adds nothing."""
    return _lp_pool(x, auto_pad, 0, None, kernel_shape, p, pads, strides)


@register("LpPool", since=18, attrs={"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None,
                                     "kernel_shape": REQUIRED, "p": 2, "pads": None,
                                     "strides": None})  # 22: bfloat16
def lp_pool_18(x, *, auto_pad, ceil_mode, dilations, kernel_shape, p, pads, strides):
    return _lp_pool(x, auto_pad, ceil_mode, dilations, kernel_shape, p, pads, strides)


@register("GlobalLpPool", since=2, attrs={"p": 2})  # 22: bfloat16
def global_lp_pool(x, *, p):
    """(sum over every spatial position of |x|^p)^(1/p), spatial axes kept as size 1."""
    op = "GlobalLpPool"
    wd = _wd(x, op)
    _spatial_input(x, op)
    if p <= 0:
        raise ValueError(f"{op}: p must be positive, got {p}")
    xf = np.abs(x.astype(wd, copy=False)) ** wd.type(p)
    s = xf.sum(axis=tuple(range(2, x.ndim)), keepdims=True)
    return (s ** wd.type(1.0 / p)).astype(x.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# MaxUnpool

def _max_unpool(x, indices, output_shape, kernel_shape, pads, strides):
    op = "MaxUnpool"
    _spatial_input(x, op)
    nd = x.ndim - 2
    kernel = [int(k) for k in kernel_shape]
    if len(kernel) != nd:
        raise ValueError(f"{op}: kernel_shape {kernel} does not match the {nd} spatial axes")
    strides = [int(s) for s in strides] if strides else [1] * nd
    pads = [int(p) for p in pads] if pads else [0] * (2 * nd)
    if len(strides) != nd or len(pads) != 2 * nd:
        raise ValueError(f"{op}: strides {strides} / pads {pads} do not match {nd} spatial axes")
    if min(kernel + strides) < 1 or min(pads) < 0:
        raise ValueError(f"{op}: kernel_shape {kernel} and strides {strides} must be >= 1, pads "
                         f"{pads} >= 0")
    if indices.shape != x.shape:
        raise ValueError(f"{op}: indices shape {list(indices.shape)} differs from X's "
                         f"{list(x.shape)}")
    if indices.dtype.kind not in "iu":
        raise ValueError(f"{op}: indices must be integers, got {indices.dtype}")
    inferred = list(x.shape[:2]) + [
        (x.shape[2 + i] - 1) * strides[i] - pads[i] - pads[nd + i] + kernel[i]
        for i in range(nd)]
    if output_shape is None:
        shape = inferred
    else:
        shape = [int(s) for s in np.asarray(output_shape).reshape(-1)]
        if len(shape) != x.ndim:
            raise ValueError(f"{op}: output_shape {shape} must have {x.ndim} entries")
        if shape[:2] != inferred[:2] or any(s < i for s, i in zip(shape[2:], inferred[2:])):
            raise ValueError(f"{op}: output_shape {shape} is smaller than the default "
                             f"{inferred}")
    total = math.prod(inferred)
    flat = indices.reshape(-1).astype(np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= total):
        raise ValueError(f"{op}: an index is outside [0, {total}) (the unpooled tensor of "
                         f"shape {inferred})")
    y = np.zeros(total, dtype=x.dtype)
    y[flat] = x.reshape(-1)
    y = y.reshape(inferred)
    if shape == inferred:
        return y
    out = np.zeros(shape, dtype=x.dtype)
    out[tuple(slice(0, i) for i in inferred)] = y
    return out


@register("MaxUnpool", since=9, attrs={"kernel_shape": REQUIRED, "pads": None,
                                       "strides": None})  # 11: opset-wise same; 22: bfloat16
def max_unpool(x, indices, output_shape=None, *, kernel_shape, pads, strides):
    """X's values scattered to the flat positions `indices` (MaxPool's Indices output) of a
    zero tensor of the default unpooled shape, placed at the start of `output_shape` if given."""
    return _max_unpool(x, indices, output_shape, kernel_shape, pads, strides)


# --------------------------------------------------------------------------------------------
# Col2Im

@register("Col2Im", since=18, attrs={"dilations": None, "pads": None, "strides": None})
def col2im(x, image_shape, block_shape, *, dilations, pads, strides):
    """[N, C * prod(block), L] column blocks summed back into [N, C, *image_shape]."""
    op = "Col2Im"
    if x.ndim != 3:
        raise ValueError(f"{op}: input must be [N, C * prod(block_shape), L], got shape "
                         f"{list(x.shape)}")
    img = [int(v) for v in np.asarray(image_shape).reshape(-1)]
    blk = [int(v) for v in np.asarray(block_shape).reshape(-1)]
    nd = len(img)
    if len(blk) != nd or nd == 0:
        raise ValueError(f"{op}: image_shape {img} and block_shape {blk} must have the same "
                         "non-zero length")
    dil = [int(v) for v in dilations] if dilations else [1] * nd
    st = [int(v) for v in strides] if strides else [1] * nd
    pd = [int(v) for v in pads] if pads else [0] * (2 * nd)
    if len(dil) != nd or len(st) != nd or len(pd) != 2 * nd:
        raise ValueError(f"{op}: dilations/strides/pads do not match {nd} spatial axes")
    if min(dil + st + blk) < 1 or min(pd) < 0 or min(img) < 1:
        raise ValueError(f"{op}: dilations {dil}, strides {st}, block_shape {blk} and "
                         f"image_shape {img} must be >= 1, pads {pd} >= 0")
    kprod = math.prod(blk)
    if kprod <= 0 or x.shape[1] % kprod:
        raise ValueError(f"{op}: dimension 1 ({x.shape[1]}) is not a multiple of "
                         f"prod(block_shape) = {kprod}")
    ncol = [(img[i] + pd[i] + pd[nd + i] - (dil[i] * (blk[i] - 1) + 1)) // st[i] + 1
            for i in range(nd)]
    if min(ncol) <= 0 or math.prod(ncol) != x.shape[2]:
        raise ValueError(f"{op}: input has {x.shape[2]} blocks, but image_shape {img}, "
                         f"block_shape {blk}, pads {pd}, strides {st}, dilations {dil} give "
                         f"{ncol} = {math.prod(ncol)}")
    n, c = x.shape[0], x.shape[1] // kprod
    cols = x.reshape((n, c, *blk, *ncol))
    padded = np.zeros((n, c, *[img[i] + pd[i] + pd[nd + i] for i in range(nd)]), dtype=x.dtype)
    for kidx in np.ndindex(*blk):
        sl = tuple(slice(kidx[i] * dil[i], kidx[i] * dil[i] + st[i] * (ncol[i] - 1) + 1, st[i])
                   for i in range(nd))
        padded[(slice(None), slice(None)) + sl] += cols[(slice(None), slice(None)) + kidx]
    crop = tuple(slice(pd[i], pd[i] + img[i]) for i in range(nd))
    return np.ascontiguousarray(padded[(slice(None), slice(None)) + crop])


# --------------------------------------------------------------------------------------------
# GridSample, AffineGrid

def _reflect(x, lo, hi):
    rng = hi - lo
    if rng <= 0:
        return np.full_like(x, lo)
    out = x.copy()
    below = x < lo
    above = x > hi
    dx = np.where(below, lo - x, x - hi)
    n = np.trunc(dx / rng)
    r = dx - n * rng
    even = (n % 2) == 0
    out = np.where(below, np.where(even, lo + r, hi - r), out)
    out = np.where(above, np.where(even, hi - r, lo + r), out)
    return out


def _cubic_coeffs(t, a=-0.75):
    t = np.abs(t)
    c0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    c1 = ((a + 2) * t - (a + 3)) * t * t + 1
    c2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    c3 = ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a
    return [c0, c1, c2, c3]


def _grid_sample(x, grid, mode, padding_mode, align_corners, op="GridSample"):
    wd = _wd(x, op)
    if grid.dtype.kind != "f":
        raise ValueError(f"{op}: grid must be a floating-point tensor, got {grid.dtype}")
    _spatial_input(x, op)
    nd = x.ndim - 2
    if grid.ndim != nd + 2 or grid.shape[0] != x.shape[0] or grid.shape[-1] != nd:
        raise ValueError(f"{op}: grid must be [N, *out_spatial, {nd}] for X of shape "
                         f"{list(x.shape)}, got {list(grid.shape)}")
    if mode not in ("nearest", "linear", "cubic"):
        raise ValueError(f"{op}: unknown mode {mode!r}")
    if padding_mode not in ("zeros", "border", "reflection"):
        raise ValueError(f"{op}: unknown padding_mode {padding_mode!r}")
    if mode == "cubic" and nd != 2:
        raise ValueError(f"{op}: cubic mode needs a 4-D input, got rank {x.ndim}")
    n, c = x.shape[:2]
    dims = x.shape[2:]
    out_sp = grid.shape[1:-1]
    if any(d == 0 for d in dims):
        raise ValueError(f"{op}: X has an empty spatial axis ({list(x.shape)})")
    g = grid.astype(np.float64)
    taps_i, taps_w = [], []  # per spatial axis: [N, *out, T] indices (may be invalid) and weights
    valid = []
    for d in range(nd):
        L = dims[d]
        v = g[..., nd - 1 - d]  # the grid's last entry is the innermost (x) axis
        if align_corners:
            pos = (v + 1) / 2 * (L - 1)
            lo, hi = 0.0, L - 1.0
        else:
            pos = ((v + 1) * L - 1) / 2
            lo, hi = -0.5, L - 0.5
        if mode == "nearest":
            pos = np.rint(pos)
        # only coordinates outside [lo, hi] move (as onnx.reference and PyTorch do: a cubic
        # tap set just inside the border still straddles it)
        if padding_mode == "border":
            pos = np.where((pos < lo) | (pos > hi), np.clip(pos, 0, L - 1), pos)
        elif padding_mode == "reflection":
            pos = _reflect(pos, lo, hi)
        if mode == "nearest":
            idx = [pos]
            w = [np.ones_like(pos)]
        else:
            f = np.floor(pos)
            t = pos - f
            if mode == "linear":
                idx = [f, f + 1]
                w = [1 - t, t]
            else:
                idx = [f - 1, f, f + 1, f + 2]
                w = _cubic_coeffs(t)
        ii, vv = [], []
        for i in idx:
            i = np.where(np.isfinite(i), i, -1)
            if padding_mode == "zeros":
                ok = (i >= 0) & (i < L)
            elif padding_mode == "border":
                i = np.clip(i, 0, L - 1)
                ok = np.ones(i.shape, bool)
            else:
                i = np.trunc(_reflect(i, lo, hi))
                ok = (i >= 0) & (i < L)
            ii.append(np.clip(i, 0, L - 1).astype(np.int64))
            vv.append(ok)
        taps_i.append(ii)
        taps_w.append(w)
        valid.append(vv)
    xw = np.moveaxis(x.astype(wd, copy=False), 1, -1)  # [N, *dims, C]
    bidx = np.arange(n).reshape((n,) + (1,) * len(out_sp))
    acc = np.zeros((n, *out_sp, c), dtype=np.float64)
    for combo in itertools.product(*[range(len(t)) for t in taps_i]):
        w = np.ones((n, *out_sp))
        ok = np.ones((n, *out_sp), bool)
        index = [bidx]
        for d, k in enumerate(combo):
            w = w * taps_w[d][k]
            ok &= valid[d][k]
            index.append(taps_i[d][k])
        vals = xw[tuple(index)]  # [N, *out, C]
        acc += np.where(ok[..., None], vals * w[..., None], 0)
    return np.moveaxis(acc, -1, 1).astype(x.dtype)


@register("GridSample", since=16, attrs={"align_corners": 0, "mode": "bilinear",
                                         "padding_mode": "zeros"})
def grid_sample_16(x, grid, *, align_corners, mode, padding_mode):
    """Opset 16: 4-D input only, modes bilinear / nearest / bicubic."""
    names = {"bilinear": "linear", "nearest": "nearest", "bicubic": "cubic"}
    if mode not in names:
        raise ValueError(f"GridSample: mode must be 'bilinear', 'nearest' or 'bicubic' at opset "
                         f"16, got {mode!r}")
    if x.ndim != 4:
        raise ValueError(f"GridSample: opset 16 takes a 4-D input, got shape {list(x.shape)}")
    return _grid_sample(x, grid, names[mode], padding_mode, align_corners)


@register("GridSample", since=20, attrs={"align_corners": 0, "mode": "linear",
                                         "padding_mode": "zeros"})  # 22: bfloat16
def grid_sample_20(x, grid, *, align_corners, mode, padding_mode):
    """Opset 20: N-D (linear and nearest; cubic for 4-D), modes linear / nearest / cubic."""
    return _grid_sample(x, grid, mode, padding_mode, align_corners)


def _base_coords(n, align_corners):
    if align_corners:
        if n == 1:
            return np.array([-1.0])
        return np.linspace(-1.0, 1.0, n)
    return (2 * np.arange(n) + 1) / n - 1


@register("AffineGrid", since=20, attrs={"align_corners": 0})
def affine_grid(theta, size, *, align_corners):
    """theta [N, 2, 3] with size [N, C, H, W] -> grid [N, H, W, 2] (x, y); theta [N, 3, 4] with
    size [N, C, D, H, W] -> [N, D, H, W, 3] (x, y, z)."""
    op = "AffineGrid"
    wd = _wd(theta, op)
    sz = [int(v) for v in np.asarray(size).reshape(-1)]
    if len(sz) not in (4, 5):
        raise ValueError(f"{op}: size must have 4 or 5 entries, got {sz}")
    if min(sz) < 0:
        raise ValueError(f"{op}: size {sz} has a negative entry")
    nd = len(sz) - 2
    if theta.shape != (sz[0], nd, nd + 1):
        raise ValueError(f"{op}: theta must have shape [{sz[0]}, {nd}, {nd + 1}] for size {sz}, "
                         f"got {list(theta.shape)}")
    sp = sz[2:]
    axes = [_base_coords(s, align_corners) for s in sp]  # (D,) H, W
    mesh = np.meshgrid(*axes, indexing="ij")
    coords = [m.reshape(-1) for m in mesh[::-1]]  # x, y(, z)
    homo = np.stack(coords + [np.ones_like(coords[0])], axis=0)  # [nd + 1, P]
    out = np.matmul(theta.astype(np.float64), homo)  # [N, nd, P]
    return np.ascontiguousarray(
        np.transpose(out, (0, 2, 1)).reshape(sz[0], *sp, nd)).astype(theta.dtype)


# --------------------------------------------------------------------------------------------
# Upsample (opset 10, deprecated: Resize-10 with the same meaning)

@register("Upsample", since=10, attrs={"mode": "nearest"})
def upsample_10(x, scales, *, mode):
    from qrt.ops.resize import resize_10
    if mode not in ("nearest", "linear"):
        raise ValueError(f"Upsample: mode must be 'nearest' or 'linear', got {mode!r}")
    s = np.asarray(scales)
    if s.size != x.ndim or not np.all(np.isfinite(s)) or np.any(s < 1):
        raise ValueError(f"Upsample: scales {s.tolist()} must have {x.ndim} finite entries >= 1")
    return resize_10(x, s.astype(np.float32), mode=mode)


# --------------------------------------------------------------------------------------------
# RoiAlign

def _roi_align(x, rois, batch_indices, mode, output_height, output_width, sampling_ratio,
               spatial_scale, half_pixel):
    op = "RoiAlign"
    wd = _wd(x, op)
    if sampling_ratio < 0 or output_height < 1 or output_width < 1:
        raise ValueError(f"{op}: sampling_ratio {sampling_ratio} must be >= 0 and output_height/"
                         f"output_width ({output_height}, {output_width}) >= 1")
    if x.ndim != 4:
        raise ValueError(f"{op}: X must be [N, C, H, W], got shape {list(x.shape)}")
    if rois.ndim != 2 or rois.shape[1] != 4:
        raise ValueError(f"{op}: rois must be [num_rois, 4], got shape {list(rois.shape)}")
    if not np.all(np.isfinite(rois)):
        bad = int(np.flatnonzero(~np.isfinite(rois).all(axis=1))[0])
        raise ValueError(f"{op}: roi {bad} has a NaN or infinite coordinate: "
                         f"{rois[bad].tolist()}")
    if batch_indices.ndim != 1 or batch_indices.shape[0] != rois.shape[0]:
        raise ValueError(f"{op}: batch_indices must be [num_rois] = [{rois.shape[0]}], got "
                         f"{list(batch_indices.shape)}")
    if batch_indices.dtype.kind not in "iu":
        raise ValueError(f"{op}: batch_indices must be integers, got {batch_indices.dtype}")
    if mode not in ("avg", "max"):
        raise ValueError(f"{op}: mode must be 'avg' or 'max', got {mode!r}")
    ph_n, pw_n = int(output_height), int(output_width)
    if ph_n <= 0 or pw_n <= 0:
        raise ValueError(f"{op}: output_height/output_width must be positive")
    n, c, h, w = x.shape
    bi = batch_indices.astype(np.int64)
    if bi.size and (bi.min() < 0 or bi.max() >= n):
        raise ValueError(f"{op}: batch_indices must be in [0, {n}), got {bi.tolist()}")
    y = np.zeros((rois.shape[0], c, ph_n, pw_n), dtype=np.float64)
    xd = x.astype(np.float64)
    offset = 0.5 if half_pixel else 0.0
    r64 = rois.astype(np.float64)

    def axis_taps(start, bin_size, grid, pooled, size):
        # sample positions [pooled, grid]; for each, low/high index and weights (0 if outside)
        k = np.arange(pooled)[:, None]
        g = np.arange(grid)[None, :]
        p = start + k * bin_size + (g + 0.5) * bin_size / grid
        bad = (p < -1.0) | (p > size)
        p = np.maximum(p, 0)
        lo = np.floor(p).astype(np.int64)
        at_end = lo >= size - 1
        lo = np.where(at_end, size - 1, lo)
        hi = np.where(at_end, size - 1, lo + 1)
        p = np.where(at_end, lo, p)
        frac = p - lo
        wlo = np.where(bad, 0.0, 1 - frac)
        whi = np.where(bad, 0.0, frac)
        return lo, hi, wlo, whi

    for r in range(rois.shape[0]):
        x0, y0, x1, y1 = (r64[r] * spatial_scale - offset).tolist()
        rw, rh = x1 - x0, y1 - y0
        if not half_pixel:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph_n, rw / pw_n
        gh = int(sampling_ratio) if sampling_ratio > 0 else int(math.ceil(rh / ph_n))
        gw = int(sampling_ratio) if sampling_ratio > 0 else int(math.ceil(rw / pw_n))
        if gh <= 0 or gw <= 0:
            continue  # an empty sampling grid: the bins stay 0
        ylo, yhi, wylo, wyhi = axis_taps(y0, bh, gh, ph_n, h)  # [PH, GH]
        xlo, xhi, wxlo, wxhi = axis_taps(x0, bw, gw, pw_n, w)  # [PW, GW]
        img = xd[bi[r]]  # [C, H, W]
        if mode == "avg":
            # separable: sum over samples of bilinear weights = Wy @ img @ Wx^T
            Wy = np.zeros((ph_n, h))
            Wx = np.zeros((pw_n, w))
            rows = np.repeat(np.arange(ph_n), gh)
            np.add.at(Wy, (rows, ylo.reshape(-1)), wylo.reshape(-1))
            np.add.at(Wy, (rows, yhi.reshape(-1)), wyhi.reshape(-1))
            cols = np.repeat(np.arange(pw_n), gw)
            np.add.at(Wx, (cols, xlo.reshape(-1)), wxlo.reshape(-1))
            np.add.at(Wx, (cols, xhi.reshape(-1)), wxhi.reshape(-1))
            y[r] = np.einsum("ph,chw,qw->cpq", Wy, img, Wx) / max(gh * gw, 1)
        else:
            # max over samples of the largest of the four weighted corner values
            best = None
            for ya, wya in ((ylo, wylo), (yhi, wyhi)):
                for xa, wxa in ((xlo, wxlo), (xhi, wxhi)):
                    v = img[:, ya[:, :, None, None], xa[None, None, :, :]]  # [C, PH, GH, PW, GW]
                    v = v * (wya[:, :, None, None] * wxa[None, None, :, :])
                    best = v if best is None else np.maximum(best, v)
            y[r] = best.max(axis=(2, 4))
    return y.astype(x.dtype)


_ROI_ATTRS = {"mode": "avg", "output_height": 1, "output_width": 1, "sampling_ratio": 0,
              "spatial_scale": 1.0}


@register("RoiAlign", since=10, attrs=dict(_ROI_ATTRS))
def roi_align_10(x, rois, batch_indices, *, mode, output_height, output_width, sampling_ratio,
                 spatial_scale):
    """Opset 10: no half-pixel offset (what opset 16 calls output_half_pixel)."""
    return _roi_align(x, rois, batch_indices, mode, output_height, output_width, sampling_ratio,
                      spatial_scale, False)


@register("RoiAlign", since=16, attrs=dict(_ROI_ATTRS, coordinate_transformation_mode="half_pixel"))
def roi_align_16(x, rois, batch_indices, *, mode, output_height, output_width, sampling_ratio,
                 spatial_scale, coordinate_transformation_mode):  # 22: bfloat16
    ctm = coordinate_transformation_mode
    if ctm not in ("half_pixel", "output_half_pixel"):
        raise ValueError(f"RoiAlign: coordinate_transformation_mode must be 'half_pixel' or "
                         f"'output_half_pixel', got {ctm!r}")
    return _roi_align(x, rois, batch_indices, mode, output_height, output_width, sampling_ratio,
                      spatial_scale, ctm == "half_pixel")


# --------------------------------------------------------------------------------------------
# NonMaxSuppression

def _scalar_input(v, name, kind, default):
    if v is None or v.size == 0:
        return default
    if v.size != 1:
        raise ValueError(f"NonMaxSuppression: {name} must be a single value, got shape "
                         f"{list(v.shape)}")
    if v.dtype.kind not in kind:
        raise ValueError(f"NonMaxSuppression: {name} has type {v.dtype}")
    return v.reshape(-1)[0]



@nb.njit(cache=True, nogil=True)
def _nms_select(order, x1, y1, x2, y2, area, iou_t, max_out):
    """Greedy selection over `order` (descending score): a box is kept unless its IoU with a kept
    one exceeds iou_t; float32 geometry as the reference's. A compiled loop: the Python one took
    seconds for a few thousand boxes."""
    sel = np.empty(min(max_out, order.size), np.int64)
    n = 0
    for k in order:
        if n >= max_out:
            break
        keep = True
        for t in range(n):
            j = sel[t]
            iw = min(x2[k], x2[j]) - max(x1[k], x1[j])
            ih = min(y2[k], y2[j]) - max(y1[k], y1[j])
            if iw <= 0 or ih <= 0:
                continue
            inter = np.float32(iw * ih)
            a1, a2 = area[k], area[j]
            union = np.float32(a1 + a2 - inter)
            if a1 <= 0 or a2 <= 0 or union <= 0:
                continue
            if np.float64(np.float32(inter / union)) > iou_t:
                keep = False
                break
        if keep:
            sel[n] = k
            n += 1
    return sel[:n]


@register("NonMaxSuppression", since=10, attrs={"center_point_box": 0})  # 11: same semantics
def non_max_suppression(boxes, scores, max_output_boxes_per_class=None, iou_threshold=None,
                        score_threshold=None, *, center_point_box):
    """Greedy per-(batch, class) selection by descending score (ties: lower index first); a box
    is dropped when its IoU with a selected one exceeds iou_threshold. Output [K, 3] int64
    (batch, class, box)."""
    op = "NonMaxSuppression"
    if boxes.ndim != 3 or boxes.shape[2] != 4:
        raise ValueError(f"{op}: boxes must be [batch, boxes, 4], got {list(boxes.shape)}")
    if scores.ndim != 3 or scores.shape[0] != boxes.shape[0] or scores.shape[2] != boxes.shape[1]:
        raise ValueError(f"{op}: scores must be [batch, classes, {boxes.shape[1]}] for boxes of "
                         f"shape {list(boxes.shape)}, got {list(scores.shape)}")
    if boxes.dtype.kind != "f" or scores.dtype.kind != "f":
        raise ValueError(f"{op}: boxes and scores must be floating point")
    if center_point_box not in (0, 1):
        raise ValueError(f"{op}: center_point_box must be 0 or 1, got {center_point_box}")
    max_out = int(_scalar_input(max_output_boxes_per_class, "max_output_boxes_per_class", "iu",
                                0))
    iou_t = float(_scalar_input(iou_threshold, "iou_threshold", "f", 0.0))
    if not 0.0 <= iou_t <= 1.0:
        raise ValueError(f"{op}: iou_threshold {iou_t} must be in [0, 1]")
    score_t = _scalar_input(score_threshold, "score_threshold", "f", None)
    b = boxes.astype(np.float32)
    if center_point_box:
        xc, yc, bw, bh = b[..., 0], b[..., 1], b[..., 2] / 2, b[..., 3] / 2
        x1, x2, y1, y2 = xc - bw, xc + bw, yc - bh, yc + bh
    else:
        x1 = np.minimum(b[..., 1], b[..., 3])
        x2 = np.maximum(b[..., 1], b[..., 3])
        y1 = np.minimum(b[..., 0], b[..., 2])
        y2 = np.maximum(b[..., 0], b[..., 2])
    area = (x2 - x1) * (y2 - y1)
    out = []
    if max_out > 0:
        for bi in range(boxes.shape[0]):
            for ci in range(scores.shape[1]):
                s = scores[bi, ci]
                cand = np.arange(s.shape[0])
                if score_t is not None:
                    cand = cand[s > score_t]
                order = cand[np.lexsort((cand, -s[cand].astype(np.float64)))]
                selected = _nms_select(order.astype(np.int64), x1[bi], y1[bi], x2[bi], y2[bi],
                                       area[bi], np.float64(iou_t), np.int64(max_out))
                out.extend((bi, ci, k) for k in selected.tolist())
    return np.array(out, dtype=np.int64).reshape(-1, 3)
