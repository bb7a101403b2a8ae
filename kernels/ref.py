"""numpy reference twins of every fast integer kernel: the numerics contract, written plainly.

Every fast kernel (kernels/cpu, kernels/cuda) is tested bit-exact against the function here with the
same name minus the path prefix. Nothing here is optimised; clarity is the point.

Contract (see DESIGN.md):
- quantize: q = saturate(round_half_even(x / scale) + zero_point)
- dequantize: (q - zero_point) * scale
- integer GEMM: sum_k (a[m,k] - za) * (w[n,k] - zw[n]) accumulated exactly (int64 here, int32 in
  the fast kernels; callers guard K so that int32 cannot overflow, see `max_exact_k`)
- requantize: saturate(round_half_even(float32(acc + bias) * float32(multiplier[n])) + zy), with
  an optional clamp [lo, hi] in the quantized domain (fused ReLU/Clip)
"""
from __future__ import annotations

import numpy as np

INT_RANGES = {
    np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127),
    np.dtype(np.uint16): (0, 65535), np.dtype(np.int16): (-32768, 32767),
    np.dtype(np.int32): (-(2 ** 31), 2 ** 31 - 1),
}


def qrange(dtype) -> tuple[int, int]:
    dtype = np.dtype(dtype)
    if dtype in INT_RANGES:
        return INT_RANGES[dtype]
    name = dtype.name
    if name == "int4":
        return (-8, 7)
    if name == "uint4":
        return (0, 15)
    raise TypeError(f"not a quantized integer type: {dtype}")


def max_exact_k(a_dtype=np.uint8, w_dtype=np.int8) -> int:
    """Largest K for which sum_k (a - za)(w - zw) always fits int32 (|a-za|, |w-zw| <= 255)."""
    return (2 ** 31 - 1) // (255 * 255)


def quantize(x: np.ndarray, scale, zero_point, dtype) -> np.ndarray:
    """ONNX QuantizeLinear with broadcastable scale/zero_point (already shaped for x)."""
    lo, hi = qrange(dtype)
    q = np.rint(x.astype(np.float32) / np.asarray(scale, np.float32))  # rint = half to even
    q = q + np.asarray(zero_point).astype(np.float32)
    return np.clip(q, lo, hi).astype(dtype)


def dequantize(q: np.ndarray, scale, zero_point) -> np.ndarray:
    return ((q.astype(np.int32) - np.asarray(zero_point).astype(np.int32)).astype(np.float32)
            * np.asarray(scale, np.float32))


def qgemm_i32(a: np.ndarray, a_zero_point, w: np.ndarray, w_zero_point) -> np.ndarray:
    """a: (M, K) u8/s8, w: (N, K) s8/u8 (rows are output channels), zero points scalar or (N,).
    Returns (M, N) int32 exact accumulators of (a - za)(w - zw)."""
    a64 = a.astype(np.int64) - np.int64(np.asarray(a_zero_point).reshape(()))
    wz = np.asarray(w_zero_point).astype(np.int64).reshape(-1, 1) if np.ndim(w_zero_point) \
        else np.int64(w_zero_point)
    w64 = w.astype(np.int64) - wz
    acc = a64 @ w64.T
    if np.any(acc > 2 ** 31 - 1) or np.any(acc < -(2 ** 31)):
        raise OverflowError("int32 accumulator overflow")
    return acc.astype(np.int32)


def requantize(acc: np.ndarray, bias: np.ndarray | None, multiplier: np.ndarray, out_zero_point,
               out_dtype, lo: int | None = None, hi: int | None = None) -> np.ndarray:
    """acc: (M, N) int32; bias: (N,) int32 or None; multiplier: scalar or (N,) float32."""
    acc = acc.astype(np.int64)
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    acc = np.clip(acc, -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
    y = np.rint(acc.astype(np.float32) * np.asarray(multiplier, np.float32))
    y = y + np.float32(out_zero_point)
    qlo, qhi = qrange(out_dtype)
    lo = qlo if lo is None else max(lo, qlo)
    hi = qhi if hi is None else min(hi, qhi)
    return np.clip(y, lo, hi).astype(out_dtype)


def dequantize_acc(acc: np.ndarray, bias: np.ndarray | None, scale: np.ndarray) -> np.ndarray:
    """Float epilogue: (acc + bias) * (sx * sw[n]) as float32."""
    acc = acc.astype(np.int64)
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    return acc.astype(np.float32) * np.asarray(scale, np.float32)


def im2col(x: np.ndarray, kernel: tuple, strides: tuple, pads: tuple, dilations: tuple,
           pad_value=0) -> tuple[np.ndarray, tuple]:
    """x: (N, C, *spatial). pads: (begin..., end...). Returns cols (N, out_spatial..., C*prod(kernel))
    flattened to (N * prod(out), C * prod(kernel)) and the output spatial shape. Padding uses
    `pad_value` (the input zero point for quantized convs, so padded taps contribute zero)."""
    nd = len(kernel)
    n, c = x.shape[:2]
    pad_width = [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)]
    xp = np.pad(x, pad_width, constant_values=pad_value)
    out_sp = tuple(
        (xp.shape[2 + i] - (dilations[i] * (kernel[i] - 1) + 1)) // strides[i] + 1
        for i in range(nd))
    cols = np.empty((n, c) + tuple(kernel) + out_sp, dtype=x.dtype)
    for kidx in np.ndindex(*kernel):
        sl = tuple(
            slice(kidx[i] * dilations[i],
                  kidx[i] * dilations[i] + strides[i] * (out_sp[i] - 1) + 1, strides[i])
            for i in range(nd))
        cols[(slice(None), slice(None)) + kidx] = xp[(slice(None), slice(None)) + sl]
    # (N, C, k..., o...) -> (N, o..., C, k...)
    perm = (0,) + tuple(range(2 + nd, 2 + 2 * nd)) + (1,) + tuple(range(2, 2 + nd))
    cols = cols.transpose(perm).reshape(n * int(np.prod(out_sp, dtype=np.int64)),
                                        c * int(np.prod(kernel, dtype=np.int64)))
    return cols, out_sp


def epilogue_ref(acc: np.ndarray, ep) -> np.ndarray:
    """Apply an epilogue record (qlinear.Epilogue or anything with the same attributes) to int32 acc:
    requantize for 8-bit outputs, dequantize (+ optional float clamp) for float32 outputs."""
    if np.dtype(ep.out_dtype) == np.float32:
        y = dequantize_acc(acc, ep.bias, ep.scale)
        if ep.lo_f is not None or ep.hi_f is not None:
            y = np.clip(y, ep.lo_f, ep.hi_f)
        return y
    return requantize(acc, ep.bias, ep.multiplier, ep.out_zero_point, ep.out_dtype, ep.lo, ep.hi)


def _conv_geometry(x, kernel, strides, pads, dilations):
    nd = len(kernel)
    strides = tuple(strides) if strides is not None else (1,) * nd
    pads = tuple(pads) if pads is not None else (0,) * (2 * nd)
    dilations = tuple(dilations) if dilations is not None else (1,) * nd
    return strides, pads, dilations


def _per_channel(v, m: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(v).reshape(-1), (m,))


def qconv_ref(x: np.ndarray, x_zero_point, w: np.ndarray, w_zero_point, ep=None, strides=None,
              pads=None, dilations=None, group: int = 1) -> np.ndarray:
    """Integer Conv (ONNX ConvInteger/QLinearConv core): x (N, C, *sp), w (M, C/group, *k); built from
    im2col (zero-point padding) + qgemm_i32 + the epilogue (per output channel). Returns
    (N, M, *out_sp): int32 accumulators if ep is None, else ep applied."""
    kernel = w.shape[2:]
    strides, pads, dilations = _conv_geometry(x, kernel, strides, pads, dilations)
    n, c = x.shape[:2]
    m = w.shape[0]
    cg, mg = c // group, m // group
    zw = _per_channel(w_zero_point, m)
    za = np.asarray(x_zero_point).reshape(())
    parts = []
    for g in range(group):
        cols, out_sp = im2col(x[:, g * cg:(g + 1) * cg], kernel, strides, pads, dilations, za)
        wg = w[g * mg:(g + 1) * mg].reshape(mg, -1)
        parts.append(qgemm_i32(cols, za, wg, zw[g * mg:(g + 1) * mg]))
    acc = np.concatenate(parts, axis=1)  # (N*P, M)
    if ep is not None:
        acc = epilogue_ref(acc, ep)
    p = int(np.prod(out_sp, dtype=np.int64))
    return np.ascontiguousarray(acc.reshape(n, p, m).transpose(0, 2, 1)).reshape((n, m) + out_sp)


def depthwise_conv_ref(x: np.ndarray, x_zero_point, w: np.ndarray, w_zero_point, ep=None,
                       strides=None, pads=None, dilations=None) -> np.ndarray:
    """Depthwise integer conv (group == C == M): x (N, C, *sp), w (C, 1, *k); per channel an im2col +
    qgemm_i32, then the epilogue. Same result as qconv_ref(..., group=C)."""
    kernel = w.shape[2:]
    strides, pads, dilations = _conv_geometry(x, kernel, strides, pads, dilations)
    n, c = x.shape[:2]
    zw = _per_channel(w_zero_point, c)
    za = np.asarray(x_zero_point).reshape(())
    parts = []
    for ch in range(c):
        cols, out_sp = im2col(x[:, ch:ch + 1], kernel, strides, pads, dilations, za)
        parts.append(qgemm_i32(cols, za, w[ch].reshape(1, -1), zw[ch:ch + 1]))
    acc = np.concatenate(parts, axis=1)
    if ep is not None:
        acc = epilogue_ref(acc, ep)
    p = int(np.prod(out_sp, dtype=np.int64))
    return np.ascontiguousarray(acc.reshape(n, p, c).transpose(0, 2, 1)).reshape((n, c) + out_sp)
