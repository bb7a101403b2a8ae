"""Normalization: BatchNormalization, LayerNormalization, InstanceNormalization, LRN; Pad;
Einsum."""
from __future__ import annotations

import math

import numpy as np

from qrt.ops.registry import REQUIRED, register


def _wd(dtype):
    """Arithmetic dtype: float16 is computed in float32 and rounded once at the end."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _chan(v, nd):
    return v.reshape((1, -1) + (1,) * nd)


def _bn_apply(x, scale, bias, mean, var, epsilon):
    wd = _wd(x.dtype)
    nd = x.ndim - 2
    # y = x * a + b with a = scale / sqrt(var + eps), b = B - mean * a (per channel).
    a = scale.astype(wd) / np.sqrt(var.astype(wd) + wd.type(epsilon))
    b = bias.astype(wd) - mean.astype(wd) * a
    y = x.astype(wd, copy=False) * _chan(a, nd)
    y += _chan(b, nd)
    return y.astype(x.dtype, copy=False)


def _batch_stats(x):
    wd = _wd(x.dtype)
    axes = (0,) + tuple(range(2, x.ndim))
    xw = x.astype(wd, copy=False)
    mean = xw.mean(axis=axes)
    var = xw.var(axis=axes)
    return mean, var


@register("BatchNormalization", since=9, ctx=True, attrs={"epsilon": 1e-5, "momentum": 0.9})
def batch_norm_9(x, scale, bias, mean, var, *, epsilon, momentum, ctx):
    # Opset 9-13: training mode when the node asks for more than one output.
    if ctx.n_outputs <= 1:
        return _bn_apply(x, scale, bias, mean, var, epsilon)
    bmean, bvar = _batch_stats(x)
    y = _bn_apply(x, scale, bias, bmean, bvar, epsilon)
    run_mean = (mean * momentum + bmean * (1 - momentum)).astype(mean.dtype)
    run_var = (var * momentum + bvar * (1 - momentum)).astype(var.dtype)
    outs = (y, run_mean, run_var, bmean.astype(mean.dtype), bvar.astype(var.dtype))
    return outs[:ctx.n_outputs]


@register("BatchNormalization", since=14, ctx=True,
          attrs={"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0})
def batch_norm_14(x, scale, bias, mean, var, *, epsilon, momentum, training_mode, ctx):
    # Opset 15 only widens the types (scale/B and mean/var may differ from X): same code.
    if not training_mode:
        y = _bn_apply(x, scale, bias, mean, var, epsilon)
        if ctx.n_outputs > 1:  # running stats pass through unchanged outside training
            return (y, mean.copy(), var.copy())[:ctx.n_outputs]
        return y
    bmean, bvar = _batch_stats(x)
    y = _bn_apply(x, scale, bias, bmean, bvar, epsilon)
    run_mean = (mean * momentum + bmean * (1 - momentum)).astype(mean.dtype)
    run_var = (var * momentum + bvar * (1 - momentum)).astype(var.dtype)
    return (y, run_mean, run_var)[:max(1, ctx.n_outputs)]


@register("LayerNormalization", since=17, ctx=True,
          attrs={"axis": -1, "epsilon": 1e-5, "stash_type": 1})
def layer_norm(x, scale, bias=None, *, axis, epsilon, stash_type, ctx):
    r = x.ndim
    ax = axis + r if axis < 0 else axis
    if not 0 <= ax < r:
        raise ValueError(f"LayerNormalization axis {axis} out of range for rank {r}")
    if (ctx.n_outputs <= 1 and x.dtype == np.float32 and scale.dtype == np.float32
            and (bias is None or bias.dtype == np.float32)):
        cols = math.prod(x.shape[ax:])
        if cols and scale.size == cols and (bias is None or bias.size == cols):
            # One Numba pass per row (float64 statistics: at least numpy's float32 precision);
            # the numpy form below costs ~10 array passes, 50+ us on a transformer's rows.
            from qrt.kernels.cpu import float_ops
            xc = np.ascontiguousarray(x).reshape(-1, cols)
            y = np.empty(xc.shape, np.float32)
            sc = np.ascontiguousarray(np.broadcast_to(scale, x.shape[ax:])).reshape(-1)
            bs = (np.zeros(cols, np.float32) if bias is None else
                  np.ascontiguousarray(np.broadcast_to(bias, x.shape[ax:])).reshape(-1))
            float_ops.layer_norm_rows(xc, sc, bs, np.float64(epsilon), y)
            return y.reshape(x.shape)
    # stash_type 1 = float32 statistics; otherwise statistics in X's own precision.
    sd = np.dtype(np.float32) if stash_type == 1 and x.dtype == np.float16 else _wd(x.dtype)
    axes = tuple(range(ax, r))
    xw = x.astype(sd, copy=False)
    mean = xw.mean(axis=axes, keepdims=True)
    d = xw - mean
    var = np.mean(d * d, axis=axes, keepdims=True)
    inv = (sd.type(1) / np.sqrt(var + sd.type(epsilon))).astype(sd, copy=False)
    y = d * inv
    y *= scale.astype(sd, copy=False)
    if bias is not None:
        y += bias.astype(sd, copy=False)
    y = y.astype(x.dtype, copy=False)
    if ctx.n_outputs <= 1:
        return y
    stat_dtype = np.float32 if stash_type == 1 else x.dtype
    return (y, mean.astype(stat_dtype), inv.astype(stat_dtype))[:ctx.n_outputs]


def _bind_layer_norm(*, axis, epsilon, stash_type, ctx):
    """Plan step of LayerNormalization: the contiguous scale and bias of the Numba row kernel are
    made once per input shape while the scale/bias objects stay the same (constant weights, as a
    rule; their broadcasts and copies were most of a small call: ~14 us on (1, 16, 32)). Anything
    else goes through the op."""
    from qrt.kernels.cpu import float_ops
    cache: dict = {}
    eps = np.float64(epsilon)

    def step(x, scale, bias=None):
        e = cache.get((x.shape, x.dtype))
        if e is None or e[0] is not scale or e[1] is not bias:
            y = layer_norm(x, scale, bias, axis=axis, epsilon=epsilon, stash_type=stash_type,
                           ctx=ctx)
            r = x.ndim
            ax = axis + r if axis < 0 else axis
            cols = math.prod(x.shape[ax:])
            if (ctx.n_outputs <= 1 and x.dtype == np.float32 and scale.dtype == np.float32
                    and (bias is None or bias.dtype == np.float32) and cols
                    and scale.size == cols and (bias is None or bias.size == cols)
                    and len(cache) < 64):
                sc = np.ascontiguousarray(np.broadcast_to(scale, x.shape[ax:])).reshape(-1)
                bs = (np.zeros(cols, np.float32) if bias is None else
                      np.ascontiguousarray(np.broadcast_to(bias, x.shape[ax:])).reshape(-1))
                cache[(x.shape, x.dtype)] = (scale, bias, (-1, cols), sc, bs)
            return y
        _, _, s2, sc, bs = e
        xc = np.ascontiguousarray(x).reshape(s2)
        y = np.empty(xc.shape, np.float32)
        float_ops.layer_norm_rows(xc, sc, bs, eps, y)
        return y.reshape(x.shape)
    step.__wrapped__ = layer_norm
    return step


layer_norm.bind_step = _bind_layer_norm


# ---------------------------------------------------------------------------------------- Pad

_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def pad_array(data, pads, mode="constant", value=None, axes=None):
    r = data.ndim
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if axes is None:
        axes = list(range(r))
    else:
        axes = [int(a) + r if int(a) < 0 else int(a) for a in np.asarray(axes).reshape(-1)]
    if len(pads) != 2 * len(axes):
        raise ValueError(f"Pad: {len(pads)} pad values for {len(axes)} axes")
    if mode not in _PAD_MODES:
        raise ValueError(f"Pad: unknown mode {mode!r}")
    begin = [0] * r
    end = [0] * r
    for i, a in enumerate(axes):
        if not 0 <= a < r:
            raise ValueError(f"Pad: axis {a} out of range for rank {r}")
        begin[a] = pads[i]
        end[a] = pads[len(axes) + i]
    # Negative pads remove elements.
    if min(begin + end, default=0) < 0:
        data = data[tuple(slice(max(0, -begin[i]), data.shape[i] - max(0, -end[i]))
                          for i in range(r))]
    width = [(max(0, begin[i]), max(0, end[i])) for i in range(r)]
    if not any(b or e for b, e in width):
        return data.copy()
    if mode == "constant":
        v = 0 if value is None else np.asarray(value).reshape(-1)[0] if np.size(value) else 0
        return np.pad(data, width, mode="constant", constant_values=np.asarray(v).astype(
            data.dtype))
    if mode == "edge" or mode == "reflect":
        for i, (b, e) in enumerate(width):
            if (b or e) and data.shape[i] == 0:
                raise ValueError(f"Pad: mode {mode!r} cannot pad an empty axis {i}")
    return np.pad(data, width, mode=_PAD_MODES[mode])


@register("Pad", since=2, attrs={"mode": "constant", "pads": REQUIRED, "value": 0.0})
def pad_2(data, *, mode, pads, value):
    return pad_array(data, pads, mode, value)


@register("Pad", since=11, attrs={"mode": "constant"})
def pad_11(data, pads, constant_value=None, *, mode):
    return pad_array(data, pads, mode, constant_value)


@register("Pad", since=18, attrs={"mode": "constant"})
def pad_18(data, pads, constant_value=None, axes=None, *, mode):
    return pad_array(data, pads, mode, constant_value, axes)


# -------------------------------------------------------------- InstanceNormalization, LRN, Einsum

@register("InstanceNormalization", since=1, attrs={"epsilon": 1e-5})  # 6: consumed_inputs gone
def instance_norm(x, scale, bias, *, epsilon):
    """y = scale * (x - mean) / sqrt(var + epsilon) + B, mean and (population) variance taken per
    instance and channel over the spatial axes of [N, C, D1, ...]."""
    if x.ndim < 3:
        raise ValueError(f"InstanceNormalization: input must be [N, C, D1, ...] (rank >= 3), got "
                         f"shape {list(x.shape)}")
    c = x.shape[1]
    for name, v in (("scale", scale), ("B", bias)):
        if v.shape != (c,):
            raise ValueError(f"InstanceNormalization: {name} must have shape [{c}] (the channel "
                             f"count), got {list(v.shape)}")
    wd = _wd(x.dtype)
    nd = x.ndim - 2
    axes = tuple(range(2, x.ndim))
    xw = x.astype(wd, copy=False)
    mean = xw.mean(axis=axes, keepdims=True)
    d = xw - mean
    var = np.mean(d * d, axis=axes, keepdims=True)
    y = d / np.sqrt(var + wd.type(epsilon))
    y *= _chan(scale.astype(wd, copy=False), nd)
    y += _chan(bias.astype(wd, copy=False), nd)
    return y.astype(x.dtype, copy=False)


@register("LRN", since=1, attrs={"alpha": 0.0001, "beta": 0.75, "bias": 1.0, "size": REQUIRED})
def lrn(x, *, alpha, beta, bias, size):
    """Local response normalisation across channels: y = x / (bias + alpha / size * sum of x^2
    over channels c - floor((size - 1) / 2) .. c + ceil((size - 1) / 2)) ^ beta."""
    if x.ndim < 3:
        raise ValueError(f"LRN: input must be [N, C, D1, ...] (rank >= 3), got shape "
                         f"{list(x.shape)}")
    size = int(size)
    if size < 1:
        raise ValueError(f"LRN: size must be >= 1, got {size}")
    wd = _wd(x.dtype)
    xw = x.astype(wd, copy=False)
    sq = xw * xw
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
    c = x.shape[1]
    pad = [(0, 0)] * x.ndim
    pad[1] = (lo, hi)
    sp = np.pad(sq, pad)
    acc = np.zeros_like(sq)
    for off in range(size):
        acc += sp[:, off:off + c]
    base = wd.type(bias) + wd.type(alpha / size) * acc
    return (xw / np.power(base, wd.type(beta))).astype(x.dtype, copy=False)


@register("Einsum", since=12, attrs={"equation": REQUIRED})  # 28: more types
def einsum(*inputs, equation):
    """numpy.einsum on the equation with spaces removed (numpy's implicit output order, sorted
    ASCII letters appearing once with '...' first, is the ONNX one). float16 is computed in
    float32; integer types stay in their own type (wrapping)."""
    eq = (equation.decode() if isinstance(equation, bytes) else str(equation)).replace(" ", "")
    ops = [x for x in inputs if x is not None]
    if not ops:
        raise ValueError("Einsum: needs at least one input")
    lhs = eq.split("->")[0]
    terms = lhs.split(",")
    if len(terms) != len(ops):
        raise ValueError(f"Einsum: equation {equation!r} has {len(terms)} operand terms, the node "
                         f"has {len(ops)} inputs")
    for x in ops[1:]:
        if x.dtype != ops[0].dtype:
            raise ValueError(f"Einsum: inputs must share one element type, got {ops[0].dtype} "
                             f"and {x.dtype}")
    dt = ops[0].dtype
    wd = _wd(dt) if dt.kind == "f" else dt
    try:
        r = np.einsum(eq, *[x.astype(wd, copy=False) for x in ops])
    except ValueError as e:
        raise ValueError(f"Einsum: equation {equation!r} does not fit input shapes "
                         f"{[list(x.shape) for x in ops]}: {e}") from None
    return np.array(r).astype(dt, copy=False)
