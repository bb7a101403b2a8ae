"""Resize: nearest, linear (n-linear) and cubic, all coordinate transformation modes, antialias.

Resize is separable: the output is computed one resized axis at a time. Along an axis every output
position reads `n` input positions (n = 1 for nearest, 2 for linear, 4 for cubic, more with
antialias) with per-position weights; the per-axis index and weight tables are built vectorised in
float64 (exactly as the ONNX reference does; onnxruntime computes them in float32, so
with a float32 scale such as 1.6 a coordinate that is an exact tie in float32 may land on the
other side of it here), then applied as `n` gathers (`np.take`) and weighted
sums over the whole tensor. Nearest is a pure gather, so it is exact for every dtype.
"""
from __future__ import annotations

import numpy as np

from qrt.ops.registry import register

_COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


# pytorch_half_pixel maps every index to this when the output length is 1: the spec says 0 (and
# onnxruntime agrees); the ONNX reference uses -0.5. Only cubic can tell them apart.
PYTORCH_HALF_PIXEL_SINGLE = 0.0


def _present(a):
    return a is not None and np.size(a) > 0


def _source_coords(mode, out_n, in_n, scale, roi_pair):
    """Source coordinate of each output index (float64) and the tf_crop_and_resize mask."""
    y = np.arange(out_n, dtype=np.float64)
    out_w = scale * in_n  # the (possibly fractional) resized length the spec's formulas use
    extrap = None
    if mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        adjustment = out_n / out_w
        offset = in_n / 2 * (1 - adjustment)
        x = offset + (y + 0.5) / scale - 0.5
    elif mode == "pytorch_half_pixel":
        x = np.full(out_n, PYTORCH_HALF_PIXEL_SINGLE) if out_n == 1 else (y + 0.5) / scale - 0.5
    elif mode == "align_corners":
        # The resized length is the fractional `scale * in` here, as in the ONNX reference (its
        # conformance data depend on it); onnxruntime uses the integer output length instead.
        x = np.zeros(out_n) if out_w == 1 else y * (in_n - 1) / (out_w - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_half_pixel_for_nn":
        x = (y + 0.5) / scale
    elif mode == "tf_crop_and_resize":
        start, end = roi_pair
        if out_w == 1:
            x = np.full(out_n, (end - start) * (in_n - 1) / 2)
        else:
            x = y * (end - start) * (in_n - 1) / (out_w - 1)
        x = x + start * (in_n - 1)
        extrap = (x < 0) | (x > in_n - 1)
    else:
        raise ValueError(f"Resize: unknown coordinate_transformation_mode {mode!r}")
    return x, extrap


def _nearest_index(x, nearest_mode, in_n):
    fl = np.floor(x)
    frac = x - fl
    if nearest_mode == "round_prefer_floor":
        idx = np.where(frac <= 0.5, fl, fl + 1)
    elif nearest_mode == "round_prefer_ceil":
        idx = np.where(frac < 0.5, fl, fl + 1)
    elif nearest_mode == "floor":
        idx = fl
    elif nearest_mode == "ceil":
        idx = np.ceil(x)
    elif nearest_mode == "simple":  # Resize-10 (as onnxruntime): floor, ceil when downsampling
        idx = fl
    else:
        raise ValueError(f"Resize: unknown nearest_mode {nearest_mode!r}")
    return np.clip(idx, 0, in_n - 1).astype(np.intp)[:, None], None


def _taps(mode, x, scale, cubic_a, antialias):
    """Integer tap offsets (relative to the left neighbour) and weights, shape (out, n).
    The left neighbour of an integer coordinate is the pixel before it (ratio 1), as in the
    ONNX reference, so that ties and exclude_outside behave identically."""
    i0 = np.floor(x)
    ratio = x - i0
    whole = ratio == 0
    i0 = np.where(whole, i0 - 1, i0)
    ratio = np.where(whole, 1.0, ratio)[:, None]
    s = min(scale, 1.0) if antialias else 1.0
    if mode == "linear":
        start = int(np.floor(-1 / s) + 1)
        offs = np.arange(start, 2 - start)
        w = np.clip(1 - np.abs((offs[None, :] - ratio) * s), 0, 1)
        if antialias:
            w = w / w.sum(axis=1, keepdims=True)
    elif mode == "cubic":
        a = cubic_a
        if antialias:
            start = int(np.floor(-2 / s) + 1)
            offs = np.arange(start, 2 - start)
            t = np.abs(s * (offs[None, :] - ratio))
            t2, t3 = t * t, t * t * t
            w = np.where(t <= 1, (a + 2) * t3 - (a + 3) * t2 + 1,
                         np.where(t < 2, a * t3 - 5 * a * t2 + 8 * a * t - 4 * a, 0.0))
            w = w / w.sum(axis=1, keepdims=True)
        else:
            offs = np.arange(-1, 3)
            r = ratio[:, 0]
            q = 1 - r
            w = np.stack([
                ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
                ((a + 2) * r - (a + 3)) * r * r + 1,
                ((a + 2) * q - (a + 3)) * q * q + 1,
                ((a * (q + 1) - 5 * a) * (q + 1) + 8 * a) * (q + 1) - 4 * a,
            ], axis=1)
    else:
        raise ValueError(f"Resize: unknown mode {mode!r}")
    return i0.astype(np.int64)[:, None] + offs[None, :], w


def _resize_axis(data, axis, out_n, scale, roi_pair, *, mode, coord_mode, nearest_mode,
                 cubic_a, exclude_outside, extrapolation_value, antialias, work):
    in_n = data.shape[axis]
    if out_n == 0:
        shape = list(data.shape)
        shape[axis] = 0
        return np.empty(shape, dtype=data.dtype)
    x, extrap = _source_coords(coord_mode, out_n, in_n, scale, roi_pair)
    if mode == "nearest":
        if nearest_mode == "simple":
            x_idx = np.ceil(x) if scale < 1 else np.floor(x)
            idx = np.clip(x_idx, 0, in_n - 1).astype(np.intp)[:, None]
        else:
            idx, _ = _nearest_index(x, nearest_mode, in_n)
        out = np.take(data, idx[:, 0], axis=axis)
    else:
        idx, w = _taps(mode, x, scale, cubic_a, antialias)
        if exclude_outside:
            w = np.where((idx < 0) | (idx >= in_n), 0.0, w)
            tot = w.sum(axis=1, keepdims=True)
            w = w / np.where(tot == 0, 1.0, tot)
        idx = np.clip(idx, 0, in_n - 1).astype(np.intp)
        wshape = (1,) * axis + (out_n,) + (1,) * (data.ndim - axis - 1)
        src = data.astype(work, copy=False)
        w = w.astype(work)
        out = None
        for j in range(idx.shape[1]):
            term = np.take(src, idx[:, j], axis=axis)
            term *= w[:, j].reshape(wshape)
            if out is None:
                out = term
            else:
                out += term
    if extrap is not None and extrap.any():
        mshape = (1,) * axis + (out_n,) + (1,) * (data.ndim - axis - 1)
        out = np.where(extrap.reshape(mshape), np.asarray(extrapolation_value, dtype=out.dtype),
                       out)
    return out


def resize_core(x, roi=None, scales=None, sizes=None, *, mode="nearest",
                coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_floor",
                cubic_coeff_a=-0.75, exclude_outside=0, extrapolation_value=0.0, antialias=0,
                axes=None, keep_aspect_ratio_policy="stretch"):
    r = x.ndim
    if mode not in ("nearest", "linear", "cubic"):
        raise ValueError(f"Resize: unknown mode {mode!r}")
    if coordinate_transformation_mode not in _COORD_MODES:
        raise ValueError(f"Resize: unknown coordinate_transformation_mode "
                         f"{coordinate_transformation_mode!r}")
    if mode == "nearest" and antialias:
        raise ValueError("Resize: antialias is not defined for mode 'nearest'")
    if axes is None or len(axes) == 0:
        axes = list(range(r))
    else:
        axes = [int(a) + r if int(a) < 0 else int(a) for a in axes]
        if any(not 0 <= a < r for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"Resize: bad axes {axes} for rank {r}")
    na = len(axes)
    has_scales, has_sizes = _present(scales), _present(sizes)
    if has_scales == has_sizes:
        raise ValueError("Resize: exactly one of 'scales' and 'sizes' must be given")
    in_shape = x.shape
    scale = [1.0] * r
    out_shape = list(in_shape)
    if has_sizes:
        sz = [int(v) for v in np.asarray(sizes).reshape(-1)]
        if len(sz) != na:
            raise ValueError(f"Resize: sizes has {len(sz)} values for {na} axes")
        for i, a in enumerate(axes):
            scale[a] = sz[i] / in_shape[a] if in_shape[a] else 1.0
            out_shape[a] = sz[i]
        if keep_aspect_ratio_policy != "stretch":
            picked = [scale[a] for a in axes]
            if keep_aspect_ratio_policy == "not_larger":
                s = min(picked)
            elif keep_aspect_ratio_policy == "not_smaller":
                s = max(picked)
            else:
                raise ValueError(f"Resize: unknown keep_aspect_ratio_policy "
                                 f"{keep_aspect_ratio_policy!r}")
            for a in axes:
                scale[a] = s
                out_shape[a] = int(s * in_shape[a] + 0.5)  # round half up
    else:
        sc = [float(v) for v in np.asarray(scales).reshape(-1)]
        if len(sc) != na:
            raise ValueError(f"Resize: scales has {len(sc)} values for {na} axes")
        for i, a in enumerate(axes):
            if sc[i] <= 0:
                raise ValueError(f"Resize: scales must be positive, got {sc}")
            scale[a] = sc[i]
            out_shape[a] = int(np.floor(sc[i] * in_shape[a]))
    roi_pairs = [(0.0, 1.0)] * r
    if coordinate_transformation_mode == "tf_crop_and_resize":
        if not _present(roi):
            raise ValueError("Resize: tf_crop_and_resize needs 'roi'")
        rv = [float(v) for v in np.asarray(roi).reshape(-1)]
        if len(rv) == 2 * na:
            for i, a in enumerate(axes):
                roi_pairs[a] = (rv[i], rv[na + i])
        elif len(rv) == 2 * r:
            roi_pairs = [(rv[i], rv[r + i]) for i in range(r)]
        else:
            raise ValueError(f"Resize: roi has {len(rv)} values; expected {2 * na}")
    dtype = x.dtype
    work = np.float32 if dtype.kind != "f" or dtype == np.float16 else dtype
    if dtype == np.float64:
        work = np.float64
    out = x
    for a in axes:
        crop = coordinate_transformation_mode == "tf_crop_and_resize" and \
            roi_pairs[a] != (0.0, 1.0)
        if scale[a] == 1.0 and out_shape[a] == in_shape[a] and not crop:
            continue
        out = _resize_axis(out, a, out_shape[a], scale[a], roi_pairs[a], mode=mode,
                           coord_mode=coordinate_transformation_mode, nearest_mode=nearest_mode,
                           cubic_a=cubic_coeff_a, exclude_outside=exclude_outside,
                           extrapolation_value=extrapolation_value, antialias=antialias,
                           work=work)
    if out is x:
        return x.copy()
    if out.dtype != dtype:
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        elif dtype.kind == "b":
            out = out != 0
        out = out.astype(dtype)
    return out


@register("Resize", since=10, attrs={"mode": "nearest"})
def resize_10(x, scales, *, mode):
    # Resize-10 is Upsample generalised: asymmetric coordinates; nearest picks as onnxruntime.
    return resize_core(x, None, scales, None, mode=mode, coordinate_transformation_mode="asymmetric",
                       nearest_mode="simple")


_ATTRS_11 = {"coordinate_transformation_mode": "half_pixel", "cubic_coeff_a": -0.75,
             "exclude_outside": 0, "extrapolation_value": 0.0, "mode": "nearest",
             "nearest_mode": "round_prefer_floor"}


@register("Resize", since=11, attrs=dict(_ATTRS_11))
def resize_11(x, roi=None, scales=None, sizes=None, **attrs):
    # Opset 13 only made roi and scales optional: same code.
    return resize_core(x, roi, scales, sizes, **attrs)


@register("Resize", since=18, attrs=dict(_ATTRS_11, antialias=0, axes=None,
                                         keep_aspect_ratio_policy="stretch"))
def resize_18(x, roi=None, scales=None, sizes=None, **attrs):
    # Opset 19 only adds coordinate_transformation_mode 'half_pixel_symmetric': same code.
    return resize_core(x, roi, scales, sizes, **attrs)
