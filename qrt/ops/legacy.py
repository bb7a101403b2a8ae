"""Old (opset 7-9) versions of ops whose signature or meaning changed at or before opset 10.

qrt loads default-domain opsets >= 7 (onnx_import.MIN_OPSET). Ops whose newest registration at or
below a model's opset already has the old meaning need nothing here (Pad-2, Squeeze-1, Unsqueeze-1,
Split-2, TopK-1, Clip-6, Dropout-7, Gemm-7, Concat-4, Reshape-5, Flatten-1, Cast-6, MaxPool-8,
Sum/Max/Min/Mean-1, Where-9, ConstantOfShape-9, Shape-1, Gather-1, Scan-9 are in their families'
modules). This module adds the versions that were missing:

- Slice-1: starts/ends/axes are attributes (Slice-10 moved them to inputs and added steps).
- Upsample-7 (scales attribute) and Upsample-9 (scales input, as Upsample-10).
- BatchNormalization-7: the `spatial` attribute (removed at 9); spatial=0 means per-activation
  statistics of shape [C, D1, ..., Dn].
- MaxPool-1 (opset 7: no Indices output, no storage_order), AveragePool-7 (no ceil_mode).
- Scatter-9: the deprecated name of ScatterElements (no reduction).

Scan-8 (batch axis, sequence_lens) is not implemented: a model importing opset 8 with a Scan node
is reported unsupported by the loader (no registration at or below 8).
"""
from __future__ import annotations

import numpy as np

from qrt.ops.registry import REQUIRED, register


# --------------------------------------------------------------------------------------------
# Slice-1

@register("Slice", since=1, attrs={"starts": REQUIRED, "ends": REQUIRED, "axes": None})
def slice_1(data, *, starts, ends, axes):
    from qrt.ops.tensor import slice_index
    return data[slice_index(data.shape, list(starts), list(ends),
                            None if axes is None else list(axes), None)]


# --------------------------------------------------------------------------------------------
# Upsample-7 / -9

@register("Upsample", since=7, attrs={"mode": "nearest", "scales": REQUIRED})
def upsample_7(x, *, mode, scales):
    from qrt.ops.spatial import upsample_10
    return upsample_10(x, np.asarray(list(scales), dtype=np.float32), mode=mode)


@register("Upsample", since=9, attrs={"mode": "nearest"})
def upsample_9(x, scales, *, mode):
    # Opset 9 moved scales to an input; Upsample-10 only deprecated the op: same meaning.
    from qrt.ops.spatial import upsample_10
    return upsample_10(x, scales, mode=mode)


# --------------------------------------------------------------------------------------------
# BatchNormalization-7 (spatial)

@register("BatchNormalization", since=7, ctx=True,
          attrs={"epsilon": 1e-5, "momentum": 0.9, "spatial": 1})
def batch_norm_7(x, scale, bias, mean, var, *, epsilon, momentum, spatial, ctx):
    from qrt.ops.nn import batch_norm_9
    if spatial not in (0, 1):
        raise ValueError(f"BatchNormalization: spatial must be 0 or 1, got {spatial}")
    if spatial or x.ndim <= 2:
        # spatial=1 is BatchNormalization-9; on [N, C] input both forms are the same.
        return batch_norm_9(x, scale, bias, mean, var, epsilon=epsilon, momentum=momentum, ctx=ctx)
    if ctx.n_outputs > 1:
        raise ValueError("BatchNormalization-7 with spatial=0 in training mode (more than one "
                         "output) is not supported")
    inner = x.shape[1:]
    size = int(np.prod(inner))
    params = []
    for nm, p in (("scale", scale), ("B", bias), ("mean", mean), ("var", var)):
        if p.size != size:
            raise ValueError(f"BatchNormalization: spatial=0 needs {nm} of shape {list(inner)} "
                             f"(one value per activation), got {list(p.shape)}")
        params.append(p.reshape((1,) + inner))
    scale, bias, mean, var = params
    wd = np.dtype(np.float32) if x.dtype == np.float16 else x.dtype
    a = scale.astype(wd) / np.sqrt(var.astype(wd) + wd.type(epsilon))
    b = bias.astype(wd) - mean.astype(wd) * a
    y = x.astype(wd, copy=False) * a + b
    return y.astype(x.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# Pooling: MaxPool-1 (opset 7), AveragePool-7

@register("MaxPool", since=1,
          attrs={"auto_pad": "NOTSET", "kernel_shape": REQUIRED, "pads": None, "strides": None})
def max_pool_1(x, *, auto_pad, kernel_shape, pads, strides):
    from qrt.ops.pool import max_pool
    return max_pool(x, auto_pad=auto_pad, kernel_shape=kernel_shape, pads=pads, strides=strides)


@register("AveragePool", since=7,
          attrs={"auto_pad": "NOTSET", "count_include_pad": 0, "kernel_shape": REQUIRED,
                 "pads": None, "strides": None})
def average_pool_7(x, *, auto_pad, count_include_pad, kernel_shape, pads, strides):
    from qrt.ops.pool import average_pool
    return average_pool(x, auto_pad=auto_pad, count_include_pad=count_include_pad,
                        kernel_shape=kernel_shape, pads=pads, strides=strides)


# --------------------------------------------------------------------------------------------
# Scatter-9 (deprecated at 11 in favour of ScatterElements, same meaning)

@register("Scatter", since=9, attrs={"axis": 0})
def scatter_9(data, indices, updates, *, axis):
    from qrt.ops.tensor import _scatter_elements
    return _scatter_elements(data, indices, updates, axis, "none", ("none",))
