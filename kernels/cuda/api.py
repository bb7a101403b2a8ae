"""Host-side API of the numba.cuda INT8 kernels, mirroring `qrt.kernels.qlinear`.

    cw = upload_weight(packed_weight)                 # or upload_weight(w_int8_nk, zero_point)
    cep = prepare_epilogue(epilogue, cw.n)            # optional: do it once, reuse per call
    y = qlinear_cuda(a, a_zero_point, cw, cep)        # (M, N) device array in ep.out_dtype
    y = qconv_cuda(x, x_zero_point, cw, cep, kernel_shape=(3, 3), pads=(1, 1, 1, 1), group=1)
    q, scale, zp = dynamic_quantize_cuda(x)           # DynamicQuantizeLinear, params stay on device

Inputs may be numpy arrays (uploaded) or device arrays (numba device arrays, or anything with
`__cuda_array_interface__`, e.g. cupy/torch). Results are numba device arrays; `.copy_to_host()`
brings them back. Every function takes `stream=` (default: the default stream) and `out=`.

Importing this module imports numba.cuda; `qrt.kernels.cuda` imports it lazily.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qrt.kernels.cuda import _compat  # noqa: F401  (before numba.cuda)
from numba import cuda

from qrt.kernels import ref
from qrt.kernels.cuda import _kernels as K
from qrt.kernels.qlinear import Epilogue, PackedWeight


@dataclass(frozen=True)
class TileConfig:
    """Tile sizes of the GEMM / implicit-GEMM conv kernels: a block computes bm x bn outputs with
    (bm/tm) * (bn/tn) threads, each owning tm x tn of them, stepping K by bk."""

    bm: int = 64
    bn: int = 64
    bk: int = 32
    tm: int = 4
    tn: int = 4

    def __post_init__(self):
        if self.bm % self.tm or self.bn % self.tn:
            raise ValueError(f"tile {self}: bm must be a multiple of tm and bn of tn")
        if (self.bm // self.tm) * (self.bn // self.tn) > 1024:
            raise ValueError(f"tile {self}: more than 1024 threads per block")


DEFAULT_TILE = TileConfig()
# 16 threads per block: for the CUDA simulator, where each thread is a Python thread
SIM_TILE = TileConfig(bm=8, bn=8, bk=8, tm=2, tn=2)


@dataclass
class CudaWeight:
    """(N, K) int8/uint8 weights and (N,) int32 zero points resident on the device."""

    w: object  # device array (N, K)
    zero_point: object  # device array (N,) int32
    n: int
    k: int
    dtype: np.dtype
    shape: tuple  # the shape as given (e.g. (Cout, C/group, KH, KW) for a conv weight)


@dataclass
class CudaEpilogue:
    """An `Epilogue` as device arrays: what the fused GEMM/conv epilogue reads."""

    out_dtype: np.dtype
    mode: int  # 0 requantize to out_dtype, 1 dequantize to float32
    bias: object  # (N,) int32
    vec: object  # (N,) float32: multiplier (mode 0) or scale (mode 1)
    ip: object  # int64[3]: out zero point, lo, hi
    fclip: int  # bit 1: clamp at lo_f, bit 2: clamp at hi_f
    fp: object  # float32[2]: lo_f, hi_f
    n: int


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def is_device_array(x) -> bool:
    return not isinstance(x, np.ndarray) and (
        hasattr(x, "copy_to_host") or hasattr(x, "__cuda_array_interface__"))


def to_device(x, dtype=None, stream=0):
    """numpy -> device (contiguous, optionally cast); device arrays pass through unchanged."""
    if is_device_array(x):
        if not hasattr(x, "copy_to_host"):
            x = cuda.as_cuda_array(x)
        if dtype is not None and np.dtype(x.dtype) != np.dtype(dtype):
            raise TypeError(f"device array has dtype {x.dtype}, expected {np.dtype(dtype)}")
        return x
    x = np.asarray(x)
    if dtype is not None:
        x = x.astype(dtype, copy=False)
    # (not np.ascontiguousarray: it turns a 0-d array into shape (1,))
    return cuda.to_device(x if x.flags.c_contiguous else x.copy(order="C"), stream=stream)


def to_host(x):
    return x.copy_to_host() if is_device_array(x) else np.asarray(x)


def _ew_grid(n: int) -> int:
    return max(1, min(K.EW_MAX_BLOCKS, (n + K.EW_THREADS - 1) // K.EW_THREADS))


def _vec(v, n: int, dtype, what: str) -> np.ndarray:
    a = np.asarray(v, dtype).reshape(-1)
    if a.size == 1:
        return np.full(n, a[0], dtype)
    if a.size != n:
        raise ValueError(f"{what} has {a.size} values, expected 1 or {n}")
    return np.ascontiguousarray(a)


def _check_int8(dtype, what):
    if np.dtype(dtype) not in (np.dtype(np.uint8), np.dtype(np.int8)):
        raise TypeError(f"{what} must be uint8 or int8, got {np.dtype(dtype)}")


def _check_k(k: int):
    if k > ref.max_exact_k():
        raise ValueError(f"K={k} exceeds {ref.max_exact_k()}, the largest reduction that int32 "
                         "accumulation is guaranteed exact for")


def _scalar_zp(zp, what="zero point") -> int:
    a = np.asarray(zp).reshape(-1)
    if a.size != 1:
        raise ValueError(f"{what} must be a scalar (per-tensor), got {a.size} values")
    return int(a[0])


# ---------------------------------------------------------------------------------------------
# weights and epilogues
# ---------------------------------------------------------------------------------------------

def upload_weight(w, zero_point=0, stream=0) -> CudaWeight:
    """PackedWeight, or an int8/uint8 array (N, K) or conv weight (Cout, C/group, *kernel) with a
    scalar or (N,) zero point -> CudaWeight. A CudaWeight passes through."""
    if isinstance(w, CudaWeight):
        return w
    if isinstance(w, PackedWeight):
        w_host, zero_point, shape = w.w, w.zero_point, tuple(w.w.shape)
    else:
        w_host = np.asarray(w)
        shape = tuple(w_host.shape)
    _check_int8(w_host.dtype, "weight")
    if w_host.ndim < 2:
        raise ValueError(f"weight must be (N, K) or (Cout, C/group, *kernel), got {shape}")
    w2 = np.ascontiguousarray(w_host.reshape(w_host.shape[0], -1))
    n, k = w2.shape
    zp = _vec(zero_point, n, np.int32, "weight zero point")
    return CudaWeight(cuda.to_device(w2, stream=stream), cuda.to_device(zp, stream=stream),
                      n, k, np.dtype(w2.dtype), shape)


def prepare_epilogue(ep, n: int, stream=0) -> CudaEpilogue:
    """Epilogue -> CudaEpilogue (device arrays). A CudaEpilogue passes through (n checked)."""
    if isinstance(ep, CudaEpilogue):
        if ep.n != n:
            raise ValueError(f"epilogue was prepared for N={ep.n}, used with N={n}")
        return ep
    if not isinstance(ep, Epilogue):
        raise TypeError(f"expected an Epilogue, got {type(ep).__name__}")
    dt = np.dtype(ep.out_dtype)
    bias = np.zeros(n, np.int32) if ep.bias is None else _vec(ep.bias, n, np.int32, "bias")
    fp = np.zeros(2, np.float32)
    fclip = 0
    if dt == np.float32:
        if ep.scale is None:
            raise ValueError("float32 output needs Epilogue.scale (sx * sw[n])")
        mode, vec, ip = 1, _vec(ep.scale, n, np.float32, "scale"), np.zeros(3, np.int64)
        if ep.lo_f is not None:
            fclip |= 1
            fp[0] = np.float32(ep.lo_f)
        if ep.hi_f is not None:
            fclip |= 2
            fp[1] = np.float32(ep.hi_f)
    elif dt in (np.dtype(np.uint8), np.dtype(np.int8)):
        if ep.multiplier is None:
            raise ValueError(f"{dt} output needs Epilogue.multiplier (sx * sw[n] / sy)")
        qlo, qhi = ref.qrange(dt)
        lo = qlo if ep.lo is None else max(int(ep.lo), qlo)
        hi = qhi if ep.hi is None else min(int(ep.hi), qhi)
        mode, vec = 0, _vec(ep.multiplier, n, np.float32, "multiplier")
        ip = np.array([int(ep.out_zero_point), lo, hi], np.int64)
    else:
        raise TypeError(f"epilogue out_dtype must be uint8, int8 or float32, got {dt}")
    td = lambda a: cuda.to_device(a, stream=stream)  # noqa: E731
    return CudaEpilogue(dt, mode, td(bias), td(vec), td(ip), fclip, td(fp), n)


def _out(out, shape, dtype):
    if out is None:
        return cuda.device_array(shape, dtype)
    if tuple(out.shape) != tuple(shape) or np.dtype(out.dtype) != np.dtype(dtype):
        raise ValueError(f"out is {tuple(out.shape)} {out.dtype}, expected {shape} {np.dtype(dtype)}")
    return out


# ---------------------------------------------------------------------------------------------
# quantize / dequantize
# ---------------------------------------------------------------------------------------------

@dataclass
class CudaQParams:
    """Quantization parameters resident on the device (uploaded once, e.g. at session build):
    (C,) float32 scales and (C,) int32 zero points; C == 1 is per-tensor."""

    scale: object  # device array (C,) float32
    zero_point: object  # device array (C,) int32
    channels: int


def prepare_qparams(scale, zero_point=None, stream=0) -> CudaQParams:
    """Scale (scalar or 1-D) and zero point (None, scalar or 1-D of the same length) -> device."""
    sc = np.ascontiguousarray(np.asarray(scale, np.float32).reshape(-1))
    zp = np.asarray(zero_point if zero_point is not None else 0).astype(np.int32).reshape(-1)
    if zp.size not in (1, sc.size):
        raise ValueError(f"zero point has {zp.size} values, scale {sc.size}")
    zp = np.ascontiguousarray(np.broadcast_to(zp, sc.shape))
    return CudaQParams(cuda.to_device(sc, stream=stream), cuda.to_device(zp, stream=stream),
                       int(sc.size))


def _device_params(shape, scale, zero_point, axis, stream):
    """(device scale, device zero point, inner) for the elementwise (de)quantize kernels."""
    if isinstance(scale, CudaQParams):
        if scale.channels == 1:
            return scale.scale, scale.zero_point, 1
        if axis is None:
            raise ValueError("per-channel CudaQParams need axis=")
        if not shape:
            raise ValueError("per-channel parameters need an input of rank >= 1")
        ax = axis % len(shape)
        if shape[ax] != scale.channels:
            raise ValueError(f"per-channel params along axis {ax} need {shape[ax]} values, "
                             f"got {scale.channels}")
        return scale.scale, scale.zero_point, int(np.prod(shape[ax + 1:], dtype=np.int64))
    sc, zp, inner = _channel_params(shape, scale, zero_point, axis)
    return cuda.to_device(sc, stream=stream), cuda.to_device(zp, stream=stream), inner


def _channel_params(shape, scale, zero_point, axis):
    scale = np.asarray(scale, np.float32).reshape(-1)
    zp = np.asarray(zero_point if zero_point is not None else 0).reshape(-1)
    if axis is None or scale.size == 1:
        if scale.size != 1 or zp.size != 1:
            raise ValueError("per-tensor scale and zero point must be scalars (or give axis=)")
        return scale, zp.astype(np.int32), 1
    axis = axis % len(shape)
    c = shape[axis]
    if scale.size != c or zp.size not in (1, c):
        raise ValueError(f"per-channel params along axis {axis} need {c} values, "
                         f"got scale {scale.size}, zero point {zp.size}")
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return scale, np.broadcast_to(zp.astype(np.int32), (c,)).copy(), inner


def quantize_cuda(x, scale, zero_point, dtype=np.uint8, axis=None, out=None, stream=0):
    """QuantizeLinear: saturate(round_half_even(x / scale) + zero_point); per-tensor (scalar
    scale/zp) or per-channel along `axis`; NaN -> qmin (as qrt's QuantizeLinear). Equals
    ref.quantize on non-NaN input. `scale` may be a CudaQParams (zero_point is then ignored)."""
    dtype = np.dtype(dtype)
    _check_int8(dtype, "quantize dtype")
    xd = to_device(x, np.float32 if not is_device_array(x) else None, stream)
    if np.dtype(xd.dtype) != np.float32:
        raise TypeError(f"quantize input must be float32, got {xd.dtype}")
    shape = tuple(xd.shape)
    sc, zp, inner = _device_params(shape, scale, zero_point, axis, stream)
    lo, hi = ref.qrange(dtype)
    y = _out(out, shape, dtype)
    n = int(np.prod(shape, dtype=np.int64))
    if n:
        K.quantize_kernel[_ew_grid(n), K.EW_THREADS, stream](xd.reshape(n), sc, zp, inner, lo, hi,
                                                             y.reshape(n))
    return y


def dequantize_cuda(q, scale, zero_point=0, axis=None, out=None, stream=0):
    """DequantizeLinear: (q - zero_point) * scale as float32. Equals ref.dequantize. `scale` may
    be a CudaQParams (zero_point is then ignored)."""
    qd = to_device(q, None, stream)
    _check_int8(qd.dtype, "dequantize input")
    shape = tuple(qd.shape)
    sc, zp, inner = _device_params(shape, scale, zero_point, axis, stream)
    y = _out(out, shape, np.float32)
    n = int(np.prod(shape, dtype=np.int64))
    if n:
        K.dequantize_kernel[_ew_grid(n), K.EW_THREADS, stream](qd.reshape(n), sc, zp, inner,
                                                               y.reshape(n))
    return y


def dynamic_quantize_cuda(x, out=None, stream=0, zero_range_scale=None):
    """ONNX DynamicQuantizeLinear on the device: returns (y uint8, scale float32[1], zp int32[1]),
    all device arrays; nothing is copied to the host. scale = (max(0, max x) - min(0, min x)) / 255,
    zp = round_half_even(clamp(-min / scale, 0, 255)). When that range is 0 (x all zeros or empty)
    the formula divides by zero: scale is then `zero_range_scale`, by default 1/255 (ONNX's
    reference); qrt's CPU op and onnxruntime use 1.0 (y is all zeros either way)."""
    zero_scale = (np.float32(1) / np.float32(255) if zero_range_scale is None
                  else np.float32(zero_range_scale))
    xd = to_device(x, np.float32 if not is_device_array(x) else None, stream)
    if np.dtype(xd.dtype) != np.float32:
        raise TypeError(f"dynamic quantization input must be float32, got {xd.dtype}")
    shape = tuple(xd.shape)
    n = int(np.prod(shape, dtype=np.int64))
    flat = xd.reshape(n)
    nb = max(1, min(K.RED_BLOCKS, (n + K.RED_THREADS - 1) // K.RED_THREADS))
    pmin = cuda.device_array(nb, np.float32, stream=stream)
    pmax = cuda.device_array(nb, np.float32, stream=stream)
    scale = cuda.device_array(1, np.float32, stream=stream)
    zp = cuda.device_array(1, np.int32, stream=stream)
    K.minmax_partial_kernel[nb, K.RED_THREADS, stream](flat, pmin, pmax)
    K.dynamic_params_kernel[1, K.RED_THREADS, stream](pmin, pmax, zero_scale, scale, zp)
    y = _out(out, shape, np.uint8)
    if n:
        K.quantize_kernel[_ew_grid(n), K.EW_THREADS, stream](flat, scale, zp, 1, 0, 255,
                                                             y.reshape(n))
    return y, scale, zp


def channel_bias_cuda(y, bias, axis, lo_f=None, hi_f=None, stream=0):
    """In place on a float32 device array: y += bias along `axis` ((C,) float32, host or device;
    C == y.shape[axis]), then clamp to [lo_f, hi_f] where given. The float32 add and the clamp are
    numpy's `np.clip(y + bias.reshape(bcast), lo_f, hi_f)` bit for bit. Returns y."""
    if np.dtype(y.dtype) != np.float32:
        raise TypeError(f"channel bias needs a float32 array, got {y.dtype}")
    shape = tuple(y.shape)
    ax = axis % len(shape)
    bd = to_device(bias, np.float32 if not is_device_array(bias) else None, stream)
    if bd.ndim != 1 or bd.shape[0] != shape[ax]:
        raise ValueError(f"bias of shape {tuple(bd.shape)} does not match axis {ax} of {shape}")
    fclip = (1 if lo_f is not None else 0) | (2 if hi_f is not None else 0)
    n = int(np.prod(shape, dtype=np.int64))
    if n:
        K.channel_bias_kernel[_ew_grid(n), K.EW_THREADS, stream](
            y.reshape(n), bd, int(np.prod(shape[ax + 1:], dtype=np.int64)), fclip,
            np.float32(0 if lo_f is None else lo_f), np.float32(0 if hi_f is None else hi_f))
    return y


def lut_cuda(x, table, in_lo=0, axis=None, out=None, stream=0):
    """y = table[x - in_lo] for u8/s8 codes (qrt's QLut). table: host or device, (T,) for every
    element or (C, T) per channel along `axis` (C == x.shape[axis]); it must hold every code of
    x's type: in_lo is x's qmin and T >= 256."""
    xd = to_device(x, None, stream)
    _check_int8(xd.dtype, "lookup input")
    td = to_device(table, None, stream)
    if td.ndim == 1:
        td = td.reshape(1, td.shape[0])
    lo, _ = ref.qrange(xd.dtype)
    tshape = tuple(td.shape)
    if td.ndim != 2 or tshape[1] < 256 or int(in_lo) != lo:
        raise ValueError(f"table of shape {tshape} with in_lo={in_lo} does not cover every "
                         f"{np.dtype(xd.dtype)} code (needs (T,) or (C, T), T >= 256, in_lo={lo})")
    shape = tuple(xd.shape)
    inner = 1
    if tshape[0] > 1:
        if axis is None or not shape:
            raise ValueError(f"a per-channel table ({tshape[0]} channels) needs axis=")
        ax = axis % len(shape)
        if shape[ax] != tshape[0]:
            raise ValueError(f"per-channel table for {tshape[0]} channels, input shape {shape} "
                             f"along axis {ax}")
        inner = int(np.prod(shape[ax + 1:], dtype=np.int64))
    y = _out(out, shape, td.dtype)
    n = int(np.prod(shape, dtype=np.int64))
    if n:
        K.lut_kernel[_ew_grid(n), K.EW_THREADS, stream](xd.reshape(n), td, int(in_lo), inner,
                                                        y.reshape(n))
    return y


def maxpool_cuda(x, kernel_shape, strides=None, pads=None, dilations=None, out_spatial=None,
                 out=None, stream=0):
    """MaxPool of u8/s8 NCHW (or NCL) input; pads in ONNX order (begin..., end...), padded taps
    never win. out_spatial: the output's spatial shape (the caller applies ONNX's ceil_mode and
    auto_pad rules); by default floor((in + pads - dilated kernel) / stride) + 1."""
    xd = to_device(x, None, stream)
    _check_int8(xd.dtype, "max pooling input")
    shape = tuple(xd.shape)
    nd = len(shape) - 2
    if nd not in (1, 2):
        raise ValueError(f"CUDA max pooling takes 1-D and 2-D inputs, got {shape}")
    ks = tuple(int(k) for k in kernel_shape)
    st = tuple(int(v) for v in strides) if strides else (1,) * nd
    dl = tuple(int(v) for v in dilations) if dilations else (1,) * nd
    pd = tuple(int(v) for v in pads) if pads else (0,) * (2 * nd)
    if out_spatial is None:
        out_spatial = tuple((shape[2 + i] + pd[i] + pd[i + nd] - (dl[i] * (ks[i] - 1) + 1)) // st[i]
                            + 1 for i in range(nd))
    out_spatial = tuple(int(v) for v in out_spatial)
    if len(ks) != nd or len(st) != nd or len(dl) != nd or len(pd) != 2 * nd or \
            len(out_spatial) != nd or min(out_spatial) <= 0:
        raise ValueError(f"max pooling attributes do not fit input {shape}: kernel {ks}, "
                         f"strides {st}, pads {pd}, dilations {dl}, output {out_spatial}")
    if nd == 1:
        x4 = xd.reshape(shape[0], shape[1], 1, shape[2])
        ks, st, dl, pd, osp = (1,) + ks, (1,) + st, (1,) + dl, (0, pd[0], 0, pd[1]), \
            (1,) + out_spatial
    else:
        x4, osp = xd, out_spatial
    final = shape[:2] + out_spatial
    y = _out(out, final, xd.dtype)
    y4 = y.reshape(*(shape[:2] + osp)) if nd == 1 else y
    geo = (ks[0], ks[1], st[0], st[1], pd[0], pd[1], dl[0], dl[1], osp[0], osp[1])
    total = int(np.prod(final, dtype=np.int64))
    if total:
        K.maxpool_kernel[_ew_grid(total), K.EW_THREADS, stream](
            x4, geo, ref.qrange(xd.dtype)[0], y4)
    return y


def global_avg_cuda(x, x_zero_point, multiplier, y_zero_point, out_dtype, out=None, stream=0):
    """qrt's QGlobalAveragePool on (N, C, *spatial) u8/s8 codes: y[n, c] =
    sat(rint(float64(sum(x[n, c] - zx)) * multiplier) + zy) with multiplier (float64) =
    sx / (sy * prod(spatial)), computed by the caller. Returns (N, C) in out_dtype."""
    xd = to_device(x, None, stream)
    _check_int8(xd.dtype, "global average pooling input")
    out_dtype = np.dtype(out_dtype)
    _check_int8(out_dtype, "global average pooling output")
    shape = tuple(xd.shape)
    if len(shape) < 3:
        raise ValueError(f"global average pooling needs (N, C, ...) input, got {shape}")
    s = int(np.prod(shape[2:], dtype=np.int64))
    x3 = xd.reshape(shape[0], shape[1], s)
    y = _out(out, shape[:2], out_dtype)
    lo, hi = ref.qrange(out_dtype)
    nc = shape[0] * shape[1]
    if nc:
        K.global_avg_kernel[_ew_grid(nc), K.EW_THREADS, stream](
            x3, int(x_zero_point), np.float64(multiplier), int(y_zero_point), lo, hi, y)
    return y


# ---------------------------------------------------------------------------------------------
# GEMM and convolutions
# ---------------------------------------------------------------------------------------------

def qlinear_cuda(a, a_zero_point, weight, ep, out=None, stream=0, tile: TileConfig = DEFAULT_TILE):
    """(M, K) u8/s8 x (N, K) weights -> (M, N) device array in ep.out_dtype, with the epilogue
    fused (bias, per-channel multiplier, rounding half to even, zero point, clamp). Equals
    qrt.kernels.qlinear.qlinear bit for bit."""
    cw = upload_weight(weight, stream=stream) if not isinstance(weight, CudaWeight) else weight
    ad = to_device(a, None, stream)
    _check_int8(ad.dtype, "activation")
    if ad.ndim != 2 or ad.shape[1] != cw.k:
        raise ValueError(f"activation shape {tuple(ad.shape)} does not match weight (N={cw.n}, "
                         f"K={cw.k}): expected (M, {cw.k})")
    _check_k(cw.k)
    cep = prepare_epilogue(ep, cw.n, stream)
    m = ad.shape[0]
    y = _out(out, (m, cw.n), cep.out_dtype)
    if m and cw.n:
        kern = K.make_gemm_kernel(tile.bm, tile.bn, tile.bk, tile.tm, tile.tn)
        grid = ((cw.n + tile.bn - 1) // tile.bn, (m + tile.bm - 1) // tile.bm)
        block = (tile.bn // tile.tn, tile.bm // tile.tm)
        kern[grid, block, stream](ad, _scalar_zp(a_zero_point, "activation zero point"), cw.w,
                                  cw.zero_point, cep.bias, cep.vec, cep.mode, cep.ip, cep.fclip,
                                  cep.fp, y)
    return y


def _conv_geometry(x_shape, kernel_shape, strides, pads, dilations):
    """Normalise 1-D/2-D conv attributes to 2-D; returns (x4 shape, geo: 10 ints passed to the
    kernel by value, out spatial, nd)."""
    nd = len(x_shape) - 2
    if nd not in (1, 2):
        raise ValueError(f"CUDA conv supports 1-D and 2-D convolutions, got input {x_shape}")
    kernel_shape = tuple(int(k) for k in kernel_shape)
    strides = tuple(strides) if strides is not None else (1,) * nd
    dilations = tuple(dilations) if dilations is not None else (1,) * nd
    pads = tuple(pads) if pads is not None else (0,) * (2 * nd)
    if len(kernel_shape) != nd or len(strides) != nd or len(dilations) != nd or len(pads) != 2 * nd:
        raise ValueError(f"conv attributes do not match a {nd}-D input: kernel {kernel_shape}, "
                         f"strides {strides}, pads {pads}, dilations {dilations}")
    if nd == 1:
        x4 = (x_shape[0], x_shape[1], 1, x_shape[2])
        kernel_shape, strides, dilations = (1,) + kernel_shape, (1,) + strides, (1,) + dilations
        pads = (0, pads[0], 0, pads[1])
    else:
        x4 = tuple(x_shape)
    out_sp = tuple((x4[2 + i] + pads[i] + pads[i + 2] - (dilations[i] * (kernel_shape[i] - 1) + 1))
                   // strides[i] + 1 for i in range(2))
    if min(out_sp) <= 0:
        raise ValueError(f"conv output would be empty: input {x_shape}, kernel {kernel_shape}, "
                         f"pads {pads}, strides {strides}, dilations {dilations}")
    geo = tuple(int(v) for v in (kernel_shape[0], kernel_shape[1], strides[0], strides[1], pads[0],
                                 pads[1], dilations[0], dilations[1], out_sp[0], out_sp[1]))
    return x4, geo, out_sp, nd


def qconv_cuda(x, x_zero_point, weight, ep, kernel_shape, strides=None, pads=None, dilations=None,
               group: int = 1, out=None, stream=0, algo: str = "auto",
               tile: TileConfig = DEFAULT_TILE):
    """Integer conv (ONNX ConvInteger / QLinearConv semantics) on NCHW (or NCL) u8/s8 input with
    the epilogue fused; padding reads as the input zero point. weight: CudaWeight (rows = output
    channels, K = C/group * prod(kernel) in im2col order) or a host conv weight. pads: ONNX order
    (begin..., end...). algo: "auto" (depthwise kernel when group == C and C/group == 1),
    "implicit_gemm" or "depthwise". Returns (N, Cout, *out_spatial) in ep.out_dtype."""
    cw = upload_weight(weight, stream=stream) if not isinstance(weight, CudaWeight) else weight
    xd = to_device(x, None, stream)
    _check_int8(xd.dtype, "conv input")
    x4, geo, out_sp, nd = _conv_geometry(tuple(xd.shape), kernel_shape, strides, pads, dilations)
    nb, c = x4[0], x4[1]
    khw = geo[0] * geo[1]
    if group < 1 or c % group or cw.n % group:
        raise ValueError(f"group={group} must divide input channels {c} and output channels {cw.n}")
    if cw.k != (c // group) * khw:
        raise ValueError(f"weight K={cw.k} does not match C/group * kernel = "
                         f"{c // group} * {khw}; weight shape {cw.shape}")
    _check_k(cw.k)
    if algo == "auto":
        algo = "depthwise" if group == c and c > 1 else "implicit_gemm"
    if algo not in ("implicit_gemm", "depthwise"):
        raise ValueError(f"algo must be 'auto', 'implicit_gemm' or 'depthwise', got {algo!r}")
    if algo == "depthwise" and group != c:
        raise ValueError(f"depthwise conv needs group == input channels ({c}), got group={group}")
    cep = prepare_epilogue(ep, cw.n, stream)
    x4d = xd.reshape(*x4) if tuple(xd.shape) != x4 else xd
    out_shape4 = (nb, cw.n) + tuple(out_sp)
    final_shape = out_shape4 if nd == 2 else (nb, cw.n, out_sp[1])
    y = _out(out, final_shape, cep.out_dtype)
    y4 = y.reshape(*out_shape4) if nd == 1 else y
    xzp = _scalar_zp(x_zero_point, "input zero point")
    total = nb * cw.n * out_sp[0] * out_sp[1]
    if total == 0:
        return y
    if algo == "depthwise":
        K.depthwise_kernel[_ew_grid(total), K.EW_THREADS, stream](
            x4d, xzp, cw.w, cw.zero_point, geo, cep.bias, cep.vec, cep.mode, cep.ip, cep.fclip,
            cep.fp, y4)
    else:
        p = nb * out_sp[0] * out_sp[1]
        coutg = cw.n // group
        kern = K.make_conv_kernel(tile.bm, tile.bn, tile.bk, tile.tm, tile.tn)
        grid = ((p + tile.bm - 1) // tile.bm, (coutg + tile.bn - 1) // tile.bn, group)
        block = (tile.bm // tile.tm, tile.bn // tile.tn)
        kern[grid, block, stream](x4d, xzp, cw.w, cw.zero_point, geo, cep.bias, cep.vec,
                                  cep.mode, cep.ip, cep.fclip, cep.fp, y4)
    return y


def depthwise_conv_cuda(x, x_zero_point, weight, ep, kernel_shape, strides=None, pads=None,
                        dilations=None, out=None, stream=0):
    """Depthwise conv (group == input channels; Cout = C * multiplier); see qconv_cuda."""
    xd = to_device(x, None, stream)
    return qconv_cuda(xd, x_zero_point, weight, ep, kernel_shape, strides, pads, dilations,
                      group=int(xd.shape[1]), out=out, stream=stream, algo="depthwise")


# ---------------------------------------------------------------------------------------------
# self-check
# ---------------------------------------------------------------------------------------------

def check_rounding(stream=0) -> None:
    """Quantize ties (+-0.5, +-1.5, +-2.5, ...) on the device and compare with numpy's rint
    (half to even); raise RuntimeError naming the first mismatch. Cheap; run once per process on a
    real GPU before trusting bit-exactness (the simulator uses Python's round)."""
    x = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, -3.5, 126.5, -127.5, 0.49999997,
                  -0.49999997, 1e30, -1e30], np.float32)
    for dtype, zp in ((np.int8, 0), (np.uint8, 128)):
        got = quantize_cuda(x, np.float32(1), zp, dtype, stream=stream).copy_to_host()
        want = ref.quantize(x, np.float32(1), zp, dtype)
        bad = np.nonzero(got != want)[0]
        if bad.size:
            i = int(bad[0])
            raise RuntimeError(f"CUDA rounding differs from round-half-even: quantize({x[i]!r}) "
                               f"to {np.dtype(dtype)} zp {zp} gave {got[i]}, expected {want[i]}")
