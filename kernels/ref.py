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
