"""Integer linear algebra entry points used by qrt's fused ops: the stable API between the graph side
(qrt/ops/fused.py) and the kernels. Which implementation runs (vnni, avx2, portable, ref) is chosen in
kernels/cpu from the host CPU features (override: QRT_KERNEL_PATH, or `path=` here); callers never need
to know, and every path is bit-exact with the reference twins in ref.py.

Shapes: activations a are (M, K) row-major; weights are (N, K) (one row per output channel).
Activations may be uint8 or int8, weights int8 or uint8, zero points per tensor (activations) and per
tensor or per output channel (weights).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qrt.kernels import ref, threading_ctl
from qrt.kernels import cpu as _cpu

_D8 = np.zeros((1, 1), np.uint8)
_DF = np.zeros((1, 1), np.float32)
_DI = np.zeros((1, 1), np.int32)
_D8_3 = np.zeros((1, 1, 1), np.uint8)
_DF_3 = np.zeros((1, 1, 1), np.float32)
_DI_3 = np.zeros((1, 1, 1), np.int32)


@dataclass
class PackedWeight:
    """Weights prepared once at load time for the kernel that will run them."""

    w: np.ndarray  # (N, K) int8/uint8 as given
    zero_point: np.ndarray  # (N,) int32
    n: int
    k: int
    kernel: str = "ref"  # which implementation packed it (a cpu path name)
    data: dict = field(default_factory=dict)  # kernel-specific packed arrays


@dataclass
class Epilogue:
    """What happens to the int32 accumulators: data, not code variants.

    out_dtype uint8/int8: requantize with `multiplier` (sx*sw[n]/sy), add `out_zero_point`,
    clamp to [lo, hi] (fused ReLU/Clip in the quantized domain) and saturate.
    out_dtype float32: dequantize with `scale` (sx*sw[n]) and clamp to [lo_f, hi_f] if given.
    """

    out_dtype: type
    bias: np.ndarray | None = None  # (N,) int32 at scale sx*sw
    multiplier: np.ndarray | None = None  # (N,) float32
    out_zero_point: int = 0
    lo: int | None = None
    hi: int | None = None
    scale: np.ndarray | None = None  # (N,) float32, float output only
    lo_f: float | None = None
    hi_f: float | None = None


# ------------------------------------------------------------------------------------- weights
def pack_weight(w: np.ndarray, zero_point=0, path: str | None = None) -> PackedWeight:
    """Pack (N, K) int8/uint8 weights once for `path` (default: the chosen CPU path).
    K beyond ref.max_exact_k() is split into chunks whose int32 sums are added in int64."""
    w = np.ascontiguousarray(w)
    if w.dtype not in (np.int8, np.uint8):
        raise TypeError(f"weights must be int8 or uint8, got {w.dtype}")
    n, k = w.shape
    zp = np.broadcast_to(np.asarray(zero_point, np.int32).reshape(-1), (n,)).copy()
    path = _cpu.resolve(path)
    pw = PackedWeight(w, zp, n, k, path)
    kmax = ref.max_exact_k() // 4 * 4
    if k > kmax:
        pw.data["chunks"] = [(k0, min(k, k0 + kmax), pack_weight(w[:, k0:k0 + kmax], zp, path))
                             for k0 in range(0, k, kmax)]
        return pw
    if path == "avx2":
        from qrt.kernels.cpu import common
        pw.data["b"] = common.pack_b_i16(w, zp)
    elif path == "portable":
        from qrt.kernels.cpu import portable
        pw.data["b"] = portable.pack_b(w, zp)
    elif path == "vnni":
        from qrt.kernels.cpu import vnni
        pw.data["b"], pw.data["zw"], pw.data["colsum"] = vnni.pack_b(w, zp)
    return pw


# ------------------------------------------------------------------------------------- epilogue
def _ep_args(ep: Epilogue | None, n: int):
    """Epilogue record -> (mode, bias int32 (n,), mult float32 (n,), zpf, lof, hif) for the kernels."""
    from qrt.kernels.cpu import common
    if ep is None:
        return (common.MODE_I32, np.zeros(n, np.int32), np.ones(n, np.float32), np.float32(0),
                np.float32(-np.inf), np.float32(np.inf))
    # Own, writable copies: broadcast views are read-only, and Numba compiles a separate
    # specialisation of every kernel for read-only arrays.
    bias = common.padded(np.zeros(n, np.int32) if ep.bias is None else
                         np.broadcast_to(np.asarray(ep.bias).reshape(-1), (n,)), np.int32)
    if np.dtype(ep.out_dtype) == np.float32:
        mult = common.padded(
            np.broadcast_to(np.asarray(ep.scale, np.float32).reshape(-1), (n,)), np.float32)
        lof = np.float32(-np.inf if ep.lo_f is None else ep.lo_f)
        hif = np.float32(np.inf if ep.hi_f is None else ep.hi_f)
        return common.MODE_F32, bias, mult, np.float32(0), lof, hif
    qlo, qhi = ref.qrange(ep.out_dtype)
    if np.dtype(ep.out_dtype) not in (np.uint8, np.int8):
        raise TypeError(f"fast epilogue stores uint8/int8/float32, not {ep.out_dtype}")
    lo = qlo if ep.lo is None else max(ep.lo, qlo)
    hi = qhi if ep.hi is None else min(ep.hi, qhi)
    mult = common.padded(
        np.broadcast_to(np.asarray(ep.multiplier, np.float32).reshape(-1), (n,)), np.float32)
    return (common.MODE_Q, bias, mult, np.float32(ep.out_zero_point), np.float32(lo),
            np.float32(hi))


def _alloc_out(ep: Epilogue | None, shape):
    """-> (result array, out_q, out_f, out_i) with dummies for the unused outputs."""
    nd = len(shape)
    d8, df, di = (_D8, _DF, _DI) if nd == 2 else (_D8_3, _DF_3, _DI_3)
    if ep is None:
        r = np.empty(shape, np.int32)
        return r, d8, df, r
    dt = np.dtype(ep.out_dtype)
    if dt == np.float32:
        r = np.empty(shape, np.float32)
        return r, d8, r, di
    r = np.empty(shape, dt)
    return r, r.view(np.uint8), df, di


def apply_epilogue(acc: np.ndarray, ep: Epilogue, path: str | None = None) -> np.ndarray:
    """(M, N) int32 accumulators -> ep.out_dtype, bit-exact with ref.epilogue_ref."""
    path = _cpu.resolve(path)
    if path == "ref" or acc.ndim != 2 or np.dtype(ep.out_dtype) not in (
            np.uint8, np.int8, np.float32):
        return ref.epilogue_ref(acc, ep)
    from qrt.kernels.cpu import common
    acc = np.ascontiguousarray(acc, np.int32)
    m, n = acc.shape
    mode, bias, mult, zpf, lof, hif = _ep_args(ep, n)
    out, oq, of, oi = _alloc_out(ep, (m, n))
    common.apply_epilogue(acc, mode, bias, mult, zpf, lof, hif, oq, of, oi)
    return out


# ------------------------------------------------------------------------------------- GEMM
def _blocking(path: str, m: int, npanels: int, threads: int):
    """(row block, panels per task, K chunk) for the packed GEMMs."""
    mb = 48 if m > 48 else max(6, (m + 5) // 6 * 6)
    small = m <= 6
    if path == "vnni":
        npb, kc = 4, (1 << 30 if small else 64)
    elif path == "portable":
        npb, kc = 16, (1 << 30 if small else 128)  # npb counts 16-column groups
    else:
        npb, kc = 16, (1 << 30 if small else 128)
    nmb = (m + mb - 1) // mb
    while npb > 1 and nmb * ((npanels + npb - 1) // npb) < 2 * threads:
        npb //= 2
    return mb, npb, kc


def register_epilogue_mode(mode: int, bias: np.ndarray, k: int) -> int:
    """The avx2/vnni GEMM's epilogue mode: an 8-bit epilogue (mode 1) whose bias could overflow
    int32 together with the sums (|bias| + K*255*255 >= 2**31; operands are |a - za|,
    |w - zw| <= 255) runs as common.MODE_Q_WIDE_BIAS, through the saturating epilogue; the
    register epilogues add the bias with plain (wrapping) int32 adds."""
    from qrt.kernels.cpu import common
    if mode != common.MODE_Q or bias.size == 0:
        return mode
    if int(np.abs(bias.astype(np.int64)).max()) + max(k, 1) * 255 * 255 >= 2 ** 31:
        return common.MODE_Q_WIDE_BIAS
    return mode


def _gemm_prepared(path, pw, a_prep, m, ep, threads):
    """Run the packed GEMM of `path` on already prepared activations; returns the (M, N) output."""
    n = pw.n
    mode, bias, mult, zpf, lof, hif = _ep_args(ep, n)
    out, oq, of, oi = _alloc_out(ep, (m, n))
    mod = _cpu.backend(path)
    with threading_ctl.num_threads(threads):
        if path == "avx2":
            b = pw.data["b"]
            mb, npb, kc = _blocking(path, m, b.shape[0], threads)
            mod.gemm(a_prep, np.int64(m), b, np.int64(n), np.int64(mb), np.int64(npb),
                     np.int64(kc), np.int64(register_epilogue_mode(mode, bias, pw.k)), bias,
                     mult, zpf, lof, hif, oq, of, oi)
        elif path == "portable":
            b = pw.data["b"]
            mb, npb, kc = _blocking(path, m, b.shape[2] // 16, threads)
            mod.gemm(a_prep, np.int64(m), b, np.int64(n), np.int64(mb), np.int64(npb * 16),
                     np.int64(kc), np.int64(mode), bias, mult, zpf, lof, hif, oq, of, oi)
        else:  # vnni
            a_u8, rowsum, za = a_prep
            b = pw.data["b"]
            colcorr = mod.column_correction(pw.data["colsum"], pw.data["zw"], za, pw.k)
            mb, npb, kc = _blocking(path, m, b.shape[0], threads)
            mod.gemm(a_u8, rowsum, np.int64(m), b, pw.data["zw"], colcorr, np.int64(n),
                     np.int64(mb), np.int64(npb), np.int64(kc),
                     np.int64(register_epilogue_mode(mode, bias, pw.k)), bias, mult, zpf, lof,
                     hif, oq, of, oi)
    return out


def _kp(pw: PackedWeight) -> int:
    from qrt.kernels.cpu.common import KALIGN, round_up
    return round_up(max(pw.k, 1), KALIGN)


def _prep_a(path, a, za, pw):
    """Activations (M, K) u8/s8 -> the path's packed A."""
    from qrt.kernels.cpu import common
    signed = a.dtype == np.int8
    a8 = np.ascontiguousarray(a).view(np.uint8)
    if path == "vnni":
        mod = _cpu.backend("vnni")
        a_u8, rowsum = mod.prep_a(a8, signed, np.int64(_kp(pw)), np.int64(mod.MR))
        return a_u8, rowsum, int(za) + (128 if signed else 0)
    return common.prep_a_i16(a8, signed, np.int64(za), np.int64(_kp(pw)), np.int64(6))


def _check_a(a, pw):
    if a.ndim != 2 or a.shape[1] != pw.k:
        raise ValueError(f"activations must be (M, {pw.k}), got {a.shape}")
    if a.dtype not in (np.uint8, np.int8):
        raise TypeError(f"activations must be uint8 or int8, got {a.dtype}")


def _chunked(a, a_zero_point, pw, threads):
    """K > ref.max_exact_k(): int32 partial sums per chunk, added in int64; the result must fit int32."""
    acc = np.zeros((a.shape[0], pw.n), np.int64)
    for k0, k1, sub in pw.data["chunks"]:
        acc += qgemm_i32(np.ascontiguousarray(a[:, k0:k1]), a_zero_point, sub, threads)
    if acc.size and (acc.max() > 2 ** 31 - 1 or acc.min() < -(2 ** 31)):
        raise OverflowError(
            f"int32 accumulator overflow: K={pw.k} exceeds ref.max_exact_k()={ref.max_exact_k()} "
            f"and the exact sums do not fit int32")
    return acc.astype(np.int32)


def qgemm_i32(a: np.ndarray, a_zero_point: int, pw: PackedWeight, threads: int = 1) -> np.ndarray:
    """(M, K) x packed (N, K) -> exact (M, N) int32 sums of (a - za)(w - zw)."""
    _check_a(a, pw)
    if "chunks" in pw.data:
        return _chunked(a, a_zero_point, pw, threads)
    if pw.kernel == "ref":
        return ref.qgemm_i32(a, a_zero_point, pw.w, pw.zero_point)
    za = int(np.asarray(a_zero_point).reshape(()))
    return _gemm_prepared(pw.kernel, pw, _prep_a(pw.kernel, a, za, pw), a.shape[0], None, threads)


def qlinear(a: np.ndarray, a_zero_point: int, pw: PackedWeight, ep: Epilogue,
            threads: int = 1) -> np.ndarray:
    """(M, K) x packed (N, K) -> (M, N) in ep.out_dtype, exactly as the reference twins compute;
    the epilogue runs on each block right after its accumulation (same parallel task)."""
    _check_a(a, pw)
    if "chunks" in pw.data:
        return apply_epilogue(_chunked(a, a_zero_point, pw, threads), ep, pw.kernel)
    if pw.kernel == "ref" or np.dtype(ep.out_dtype) not in (np.uint8, np.int8, np.float32):
        return ref.epilogue_ref(qgemm_i32(a, a_zero_point, pw, threads), ep)
    za = int(np.asarray(a_zero_point).reshape(()))
    return _gemm_prepared(pw.kernel, pw, _prep_a(pw.kernel, a, za, pw), a.shape[0], ep, threads)


# ------------------------------------------------------------------------------------- conv
@dataclass
class PackedConvWeight:
    """Conv weights (M, C/group, *kernel) packed once: one PackedWeight per group (im2col + GEMM), or
    for depthwise convs (group == C == M, one input channel per group) int16 taps for the dedicated
    depthwise kernel."""

    w: np.ndarray
    zero_point: np.ndarray  # (M,) int32
    group: int
    kernel_shape: tuple
    kernel: str
    groups: list = field(default_factory=list)
    dw: np.ndarray | None = None  # depthwise: (C, prod(kernel)) int16 of w - zw

    @property
    def depthwise(self) -> bool:
        return self.dw is not None


def pack_conv_weight(w: np.ndarray, zero_point=0, group: int = 1,
                     path: str | None = None) -> PackedConvWeight:
    w = np.ascontiguousarray(w)
    m = w.shape[0]
    zp = np.broadcast_to(np.asarray(zero_point, np.int32).reshape(-1), (m,)).copy()
    path = _cpu.resolve(path)
    pcw = PackedConvWeight(w, zp, group, tuple(w.shape[2:]), path)
    if group > 1 and w.shape[1] == 1 and group == m:
        pcw.dw = np.ascontiguousarray(
            (w.reshape(m, -1).astype(np.int16) - zp.astype(np.int16).reshape(-1, 1)))
        return pcw
    mg = m // group
    pcw.groups = [pack_weight(w[g * mg:(g + 1) * mg].reshape(mg, -1), zp[g * mg:(g + 1) * mg], path)
                  for g in range(group)]
    return pcw


def _geometry(sp, kernel, strides, pads, dilations):
    nd = len(kernel)
    strides = tuple(strides) if strides is not None else (1,) * nd
    pads = tuple(pads) if pads is not None else (0,) * (2 * nd)
    dilations = tuple(dilations) if dilations is not None else (1,) * nd
    out = tuple((sp[i] + pads[i] + pads[i + nd] - (dilations[i] * (kernel[i] - 1) + 1)) // strides[i]
                + 1 for i in range(nd))
    return strides, pads, dilations, out


def _as_2d(kernel, strides, pads, dilations, sp):
    """1-D conv geometry as 2-D with H = 1."""
    if len(kernel) == 2:
        return kernel, strides, pads, dilations, sp
    return ((1,) + kernel, (1,) + strides, (0, pads[0], 0, pads[1]), (1,) + dilations, (1,) + sp)


def qconv(x: np.ndarray, x_zero_point: int, pcw: PackedConvWeight, ep: Epilogue | None = None,
          strides=None, pads=None, dilations=None, threads: int = 1) -> np.ndarray:
    """Integer conv: x (N, C, *sp) u8/s8 -> (N, M, *out_sp) in ep.out_dtype (int32 if ep is None).
    im2col with zero-point padding onto the packed GEMM (per group), or the depthwise kernel.
    Bit-exact with ref.qconv_ref."""
    if pcw.depthwise:
        return depthwise_conv(x, x_zero_point, pcw, ep, strides, pads, dilations, threads)
    kernel = pcw.kernel_shape
    strides, pads, dilations, out_sp = _geometry(x.shape[2:], kernel, strides, pads, dilations)
    if pcw.kernel == "ref":
        return ref.qconv_ref(x, x_zero_point, pcw.w, pcw.zero_point, ep, strides, pads, dilations,
                             pcw.group)
    n, c = x.shape[:2]
    m = pcw.w.shape[0]
    g_ = pcw.group
    cg, mg = c // g_, m // g_
    p = int(np.prod(out_sp, dtype=np.int64))
    za = int(np.asarray(x_zero_point).reshape(()))
    signed = x.dtype == np.int8
    fast_cols = pcw.kernel in ("avx2", "portable") and len(kernel) in (1, 2)
    res = None
    for g in range(g_):
        pw = pcw.groups[g]
        xg = np.ascontiguousarray(x[:, g * cg:(g + 1) * cg])
        if fast_cols:
            from qrt.kernels.cpu import common
            k2, s2, p2, d2, sp2 = _as_2d(kernel, strides, pads, dilations, xg.shape[2:])
            x4 = xg.reshape((n, cg) + sp2).view(np.uint8)
            o2 = _geometry(sp2, k2, s2, p2, d2)[3]
            with threading_ctl.num_threads(threads):
                a_prep = common.im2col_i16(
                    x4, signed, np.int64(za), np.int64(k2[0]), np.int64(k2[1]), np.int64(s2[0]),
                    np.int64(s2[1]), np.int64(p2[0]), np.int64(p2[1]), np.int64(d2[0]),
                    np.int64(d2[1]), np.int64(o2[0]), np.int64(o2[1]), np.int64(_kp(pw)),
                    np.int64(6))
        else:
            cols, _ = ref.im2col(xg, kernel, strides, pads, dilations, x_zero_point)
            a_prep = _prep_a(pcw.kernel, cols, za, pw)
        epg = ep
        if ep is not None:
            epg = _slice_ep(ep, g * mg, (g + 1) * mg, m)
        yg = _gemm_prepared(pcw.kernel, pw, a_prep, n * p, epg, threads)  # (N*P, Mg)
        if res is None:
            res = np.empty((n, m, p), yg.dtype)
        res[:, g * mg:(g + 1) * mg, :] = yg.reshape(n, p, mg).transpose(0, 2, 1)
    return res.reshape((n, m) + out_sp)


def _slice_ep(ep: Epilogue, a: int, b: int, m: int) -> Epilogue:
    def sl(v):
        if v is None:
            return None
        v = np.asarray(v)
        return np.broadcast_to(v.reshape(-1), (m,))[a:b] if v.size in (1, m) else v
    return Epilogue(ep.out_dtype, sl(ep.bias), sl(ep.multiplier), ep.out_zero_point, ep.lo, ep.hi,
                    sl(ep.scale), ep.lo_f, ep.hi_f)


def depthwise_prepared(x: np.ndarray, x_zero_point: int, pcw: PackedConvWeight,
                       ep: Epilogue | None, strides=None, pads=None, dilations=None):
    """(geometry entry, epilogue entry, za) of `depthwise_conv`, from the caches on `pcw` (built
    on a miss); the geometry entry is False where the reference twin runs."""
    d = pcw.__dict__
    za = x_zero_point if type(x_zero_point) is int else int(np.asarray(x_zero_point).reshape(()))
    hit = d.get("_dw_ep")
    f = None if hit is None else hit[0]
    if hit is not None and (f is None if ep is None else (
            f is not None and f[0] is ep.out_dtype and f[1] is ep.bias and f[2] is ep.multiplier
            and f[3] is ep.out_zero_point and f[4] is ep.lo and f[5] is ep.hi and f[6] is ep.scale
            and f[7] is ep.lo_f and f[8] is ep.hi_f)):
        e = hit[1]
    else:  # (mode, bias, mult, epf, out dtype); mode -1: an output the kernels do not store
        fields = None if ep is None else (ep.out_dtype, ep.bias, ep.multiplier, ep.out_zero_point,
                                          ep.lo, ep.hi, ep.scale, ep.lo_f, ep.hi_f)
        c = pcw.w.shape[0]
        if ep is not None and np.dtype(ep.out_dtype) not in (np.uint8, np.int8, np.float32):
            e = (-1, None, None, None, None)
        else:
            from qrt.kernels.cpu import depthwise as dwk
            mode, bias, mult, zpf, lof, hif = _ep_args(ep, c)
            safe = pcw.dw is not None and dwk.bias_is_safe(bias, pcw.dw.shape[1])
            # writable copies: a read-only array (broadcast_to) is another Numba type, so
            # another compilation of every kernel
            e = (mode, bias.copy(), mult.copy(), np.array([zpf, lof, hif, safe], np.float32),
                 np.int32 if ep is None else np.dtype(ep.out_dtype).type)
        d["_dw_ep"] = (fields, e)  # one entry: per-call epilogues (dynamic quantization)
    mode = e[0]
    key = (x.shape, x.dtype.char, za, mode,
           None if strides is None else tuple(strides), None if pads is None else tuple(pads),
           None if dilations is None else tuple(dilations))
    cache = d.get("_dw_geo")
    if cache is None:
        cache = d["_dw_geo"] = {}
    g = cache.get(key)
    if g is None:
        if len(cache) >= 64:  # a dynamic-shape model or changing zero points: stay bounded
            cache.clear()
        kernel = pcw.kernel_shape
        g = False  # the reference twin
        if pcw.kernel != "ref" and pcw.dw is not None and len(kernel) in (1, 2) and \
                x.dtype in (np.uint8, np.int8) and mode >= 0 and \
                pcw.dw.shape[1] <= ref.max_exact_k():
            from qrt.kernels.cpu import depthwise as dwk
            n, c = x.shape[:2]
            st, pd, dl, out_sp = _geometry(x.shape[2:], kernel, strides, pads, dilations)
            k2, s2, p2, d2, sp2 = _as_2d(kernel, st, pd, dl, x.shape[2:])
            o2 = _geometry(sp2, k2, s2, p2, d2)[3]
            geo = dwk.make_geo(k2[0], k2[1], s2[0], s2[1], p2[0], p2[1], p2[3], d2[0], d2[1],
                               o2[0], o2[1], sp2[1], mode, x.dtype == np.int8, za)
            if pcw.kernel in ("avx2", "vnni") and not _cpu.missing_features("avx2"):
                wk = d.get("_dw_wpair")
                if wk is None:
                    wk = d["_dw_wpair"] = dwk.pair_weights(pcw.dw, k2[0], k2[1])
                fns = dwk.depthwise_avx2, dwk.depthwise_avx2_parallel
            else:
                wk, fns = pcw.dw, (dwk.depthwise, dwk.depthwise_parallel)
            par_ok = n * c >= 2 and n * c * o2[0] * o2[1] * k2[0] * k2[1] >= dwk.PAR_MIN_MACS
            g = (fns[0], fns[1] if par_ok else None, wk, geo,
                 None if len(kernel) == 2 else (n, c) + sp2, (n, c) + o2,
                 None if len(kernel) == 2 else (n, c) + out_sp,
                 np.zeros((1, 1, 1, 1), np.uint8), np.zeros((1, 1, 1, 1), np.float32),
                 np.zeros((1, 1, 1, 1), np.int32))  # the unused outputs (one kernel signature)
        cache[key] = g
    return g, e, za


def depthwise_conv(x: np.ndarray, x_zero_point: int, pcw: PackedConvWeight,
                   ep: Epilogue | None = None, strides=None, pads=None, dilations=None,
                   threads: int = 1) -> np.ndarray:
    """Depthwise integer conv (group == C == M), any kernel/stride/pad/dilation (1-D or 2-D),
    same epilogue; bit-exact with ref.depthwise_conv_ref. Kernels: kernels/cpu/depthwise.py.

    A MobileNet-sized call runs for microseconds, so Python work per call matters: what does not
    change between calls is prepared once and kept on `pcw` (per input shape, dtype, zero point,
    strides, pads, dilations and mode: the geometry and the kernel; per `ep`: the epilogue arrays).
    The epilogue entry is reused only while every field of `ep` is the very object it was built
    from (identity: an edited or rebuilt Epilogue is never served stale; arrays inside it are taken
    as immutable, like packed weights)."""
    g, e, za = depthwise_prepared(x, x_zero_point, pcw, ep, strides, pads, dilations)
    mode = e[0]
    if g is False:
        st, pd, dl = _geometry(x.shape[2:], pcw.kernel_shape, strides, pads, dilations)[:3]
        return ref.depthwise_conv_ref(x, x_zero_point, pcw.w, pcw.zero_point, ep, st, pd, dl)
    fn, fn_par, wk, geo, shape4, shape_k, shape_out, oq, of, oi = g
    _, bias, mult, epf, out_dt = e
    out = np.empty(shape_k, out_dt)
    if mode == 1:
        oq = out if out_dt is np.uint8 else out.view(np.uint8)
    elif mode == 2:
        of = out
    else:
        oi = out
    x4 = np.ascontiguousarray(x)
    if shape4 is not None:
        x4 = x4.reshape(shape4)
    if x.dtype != np.uint8:
        x4 = x4.view(np.uint8)
    nc = shape_k[0] * shape_k[1]
    if threads > 1 and fn_par is not None:
        with threading_ctl.num_threads(threads):
            fn_par(x4, wk, geo, bias, mult, epf, oq, of, oi, min(nc, threads))
    else:
        fn(x4, wk, geo, bias, mult, epf, oq, of, oi, 0, nc)
    return out if shape_out is None else out.reshape(shape_out)
