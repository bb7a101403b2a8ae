"""onnxruntime's float contrib ops, as its transformer optimizer writes them into BERT/GPT-style
models that are then quantized: Gelu, FastGelu, BiasGelu, QuickGelu, FusedMatMul,
SkipLayerNormalization and SkipSimplifiedLayerNormalization (domain com.microsoft), plus the two
norms onnxruntime registers in the default domain below opset 17, LayerNormalization (opset 1+) and
SimplifiedLayerNormalization (RMS norm). Semantics follow onnxruntime's CPU kernels; the tests
compare against them."""
from __future__ import annotations

import math

import numpy as np

from qrt.ops import activations as A
from qrt.ops import nn
from qrt.ops.registry import NodeContext, register

MS = "com.microsoft"


def _ct(x):
    return A._compute_dtype(x)


def _gelu_erf(x):
    ct = _ct(x)
    xf = x.astype(ct, copy=False)
    return (xf * ct(0.5) * (ct(1) + A.erf_array(xf * ct(1 / math.sqrt(2))))).astype(x.dtype)


def _gelu_tanh(x):
    ct = _ct(x)
    xf = x.astype(ct, copy=False)
    inner = ct(math.sqrt(2 / math.pi)) * (xf + ct(0.044715) * xf * xf * xf)
    return (xf * ct(0.5) * (ct(1) + np.tanh(inner))).astype(x.dtype)


def _add_bias(x, bias, op):
    if bias is None:
        return x
    if bias.ndim != 1 or bias.shape[0] != x.shape[-1]:
        raise ValueError(f"{op}: bias has shape {list(bias.shape)}; expected [{x.shape[-1]}] "
                         "(the input's last dimension)")
    return x + bias


@register("Gelu", since=1, domain=MS)
def gelu(x):
    return _gelu_erf(x)


@register("FastGelu", since=1, domain=MS)
def fast_gelu(x, bias=None):
    return _gelu_tanh(_add_bias(x, bias, "FastGelu"))


@register("BiasGelu", since=1, domain=MS)
def bias_gelu(a, b):
    return _gelu_erf(_add_bias(a, b, "BiasGelu"))


@register("QuickGelu", since=1, domain=MS, attrs={"alpha": 1.702})
def quick_gelu(x, *, alpha):
    ct = _ct(x)
    xf = x.astype(ct, copy=False)
    return (xf / (ct(1) + np.exp(-ct(alpha) * xf))).astype(x.dtype)


@register("FusedMatMul", since=1, domain=MS,
          attrs={"alpha": 1.0, "transA": 0, "transB": 0, "transBatchA": 0, "transBatchB": 0})
def fused_matmul(a, b, *, alpha, transA, transB, transBatchA, transBatchB):
    if transBatchA or transBatchB:
        raise ValueError("FusedMatMul: transBatchA/transBatchB are not supported")
    a2 = np.swapaxes(a, -1, -2) if transA and a.ndim >= 2 else a
    b2 = np.swapaxes(b, -1, -2) if transB and b.ndim >= 2 else b
    y = np.matmul(a2, b2)
    if alpha != 1.0:
        y = y * y.dtype.type(alpha)
    return y.astype(a.dtype, copy=False)


def _rms_norm(x, gamma, epsilon, axis=-1):
    r = x.ndim
    ax = axis + r if axis < 0 else axis
    if not 0 <= ax < r:
        raise ValueError(f"axis {axis} is out of range for an input of rank {r}")
    sd = np.dtype(np.float32) if x.dtype == np.float16 else x.dtype
    xw = x.astype(sd, copy=False)
    axes = tuple(range(ax, r))
    ms = np.mean(xw * xw, axis=axes, keepdims=True)
    inv = (1 / np.sqrt(ms + sd.type(epsilon))).astype(sd)
    return (xw * inv * gamma.astype(sd, copy=False)).astype(x.dtype), inv


def _layer_norm_last(x, gamma, beta, epsilon):
    ctx = NodeContext("", "LayerNormalization", 1)
    return nn.layer_norm(x, gamma, beta, axis=-1, epsilon=epsilon, stash_type=1, ctx=ctx)


def _skip_sum(x, skip, bias, op):
    if x.ndim not in (2, 3):
        raise ValueError(f"{op}: input must be 2-D or 3-D, got shape {list(x.shape)}")
    if skip.shape != x.shape and not (skip.ndim == 2 and skip.shape == x.shape[-2:]):
        raise ValueError(f"{op}: skip has shape {list(skip.shape)}; expected {list(x.shape)}")
    return _add_bias(x + skip, bias, op)


def _norm_outputs(y, s, inv, ctx, mean=None):
    outs = [y]
    if ctx.n_outputs > 1:
        outs.append(mean)
    if ctx.n_outputs > 2:
        outs.append(inv)
    if ctx.n_outputs > 3:
        outs.append(s)
    return tuple(outs) if ctx.n_outputs > 1 else y


@register("SkipLayerNormalization", since=1, domain=MS, ctx=True, attrs={"epsilon": 1e-12})
def skip_layer_norm(x, skip, gamma, beta=None, bias=None, *, epsilon, ctx):
    s = _skip_sum(x, skip, bias, "SkipLayerNormalization")
    y = _layer_norm_last(s, gamma, beta, epsilon)
    if ctx.n_outputs <= 1:
        return y
    sf = s.astype(np.float32)
    mean = sf.mean(axis=-1, keepdims=True)
    inv = 1 / np.sqrt(((sf - mean) ** 2).mean(axis=-1, keepdims=True) + np.float32(epsilon))
    return _norm_outputs(y, s, inv, ctx, mean)


@register("SkipSimplifiedLayerNormalization", since=1, domain=MS, ctx=True,
          attrs={"epsilon": 1e-12})
def skip_simplified_layer_norm(x, skip, gamma, bias=None, *, epsilon, ctx):
    s = _skip_sum(x, skip, bias, "SkipSimplifiedLayerNormalization")
    y, inv = _rms_norm(s, gamma, epsilon)
    if ctx.n_outputs <= 1:
        return y
    return _norm_outputs(y, s, inv, ctx, np.zeros_like(inv))


@register("SimplifiedLayerNormalization", since=1, ctx=True,
          attrs={"axis": -1, "epsilon": 1e-5, "stash_type": 1})
def simplified_layer_norm(x, scale, *, axis, epsilon, stash_type, ctx):
    y, inv = _rms_norm(x, scale, epsilon, axis)
    return (y, inv)[:max(1, ctx.n_outputs)] if ctx.n_outputs > 1 else y


# onnxruntime registers LayerNormalization in the default domain from opset 1 (ONNX added it at
# 17 with the same meaning): models its transformer optimizer wrote at opset 11-16 carry it.
register("LayerNormalization", since=1, ctx=True,
         attrs={"axis": -1, "epsilon": 1e-5, "stash_type": 1})(nn.layer_norm)
