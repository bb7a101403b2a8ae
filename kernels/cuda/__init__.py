"""numba.cuda INT8 kernels (optional). Importing this package does NOT import numba.cuda: the
public names below load `qrt.kernels.cuda.api` (and numba.cuda) on first access.

    from qrt.kernels.cuda import upload_weight, qlinear_cuda
"""
from __future__ import annotations

import importlib

__all__ = [
    "CudaEpilogue", "CudaQParams", "CudaWeight", "TileConfig", "DEFAULT_TILE", "channel_bias_cuda",
    "check_rounding", "depthwise_conv_cuda", "dequantize_cuda", "dynamic_quantize_cuda",
    "global_avg_cuda",
    "is_device_array", "lut_cuda", "maxpool_cuda", "prepare_epilogue", "prepare_qparams",
    "qconv_cuda", "qlinear_cuda", "quantize_cuda", "to_device", "to_host", "upload_weight",
]


def __getattr__(name):
    if name in __all__:
        return getattr(importlib.import_module("qrt.kernels.cuda.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
