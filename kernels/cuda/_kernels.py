"""numba.cuda INT8 kernels. Importing this module imports numba.cuda: only `qrt.kernels.cuda.api`
imports it, and only when a CUDA function is first called.

Numerics are the contract of `qrt.kernels.ref`, bit for bit:
- products of (a - za) and (w - zw) accumulate exactly in int32 (host guards K, see ref.max_exact_k);
- requantize: clamp(acc + bias to int32) -> float32 -> * float32 multiplier (one rounding) ->
  round half to even -> + zero point -> clamp [lo, hi];
- rounding is `round(float)`, which numba.cuda lowers to libdevice `__nv_llrint` (PTX cvt.rni:
  nearest, ties to even) and which the simulator runs as Python's `round` (ties to even). A product
  is never added to anything before it is rounded, so FMA contraction (NVPTX fuses fmul+fadd even
  without fastmath) cannot change a result. `api.check_rounding()` verifies ties on the device.
- every value is clamped into the target range before it is stored into a narrow integer array
  (the simulator raises on out-of-range int8 stores where a GPU would wrap).
"""
from __future__ import annotations

import functools

from qrt.kernels.cuda import _compat  # noqa: F401  (before numba.cuda)
from numba import cuda, float32, float64, int32, int64

INT32_MAX = 2147483647
INT32_MIN = -2147483648

# True under NUMBA_ENABLE_CUDASIM=1 (kernels run as Python threads: far fewer threads per block
# keep the tests fast; the kernels are written for any block size, so the logic tested is the same)
SIMULATOR = cuda.is_available.__module__.endswith("simulator_init")

# 1-D elementwise launches: threads per block and the most blocks (grid-stride loops cover the rest)
EW_THREADS = 64 if SIMULATOR else 256
EW_MAX_BLOCKS = 2 if SIMULATOR else 4096
# reduction (dynamic quantization): threads per block (a power of two) and partial-result blocks
RED_THREADS = 16 if SIMULATOR else 256
RED_BLOCKS = 2 if SIMULATOR else 256


# ---------------------------------------------------------------------------------------------
# device helpers
# ---------------------------------------------------------------------------------------------

@cuda.jit(device=True)
def _round_sat(v, zp, lo, hi):
    """saturate(round_half_even(v) + zp) into [lo, hi] for a float32 v. v is first clamped to a
    range just wider than [lo - zp, hi - zp] so that rounding never sees inf or a huge value (same
    result as clamping afterwards). NaN maps to the zero point."""
    flo = float32(lo - zp - 1)
    fhi = float32(hi - zp + 1)
    if v < flo:
        v = flo
    elif v > fhi:
        v = fhi
    elif not (v == v):
        v = float32(0)
    r = int64(round(v)) + zp
    if r < lo:
        r = lo
    elif r > hi:
        r = hi
    return r


@cuda.jit(device=True)
def _requant(acc, b, mult, ozp, lo, hi):
    """int32 accumulator + int32 bias -> quantized value (as int64, already within [lo, hi])."""
    s = int64(acc) + int64(b)
    if s > INT32_MAX:
        s = int64(INT32_MAX)
    elif s < INT32_MIN:
        s = int64(INT32_MIN)
    v = float32(s) * mult
    return _round_sat(v, ozp, lo, hi)


@cuda.jit(device=True)
def _dequant_acc(acc, b, scale, fclip, fp):
    """int32 accumulator + bias -> float32 * scale, then np.clip-style [lo_f, hi_f] if asked.
    fclip: 0 none, bit 1 lo, bit 2 hi; fp: float32[2] (lo_f, hi_f)."""
    v = float32(int64(acc) + int64(b)) * scale
    if fclip & 1:
        if v < fp[0]:
            v = fp[0]
    if fclip & 2:
        if v > fp[1]:
            v = fp[1]
    return v


@functools.lru_cache(maxsize=None)
def _make_mma(bk: int, tm: int, tn: int):
    """Device function: acc[i, j] += sum_kk As[kk, rbase + i*rstride] * Ws[kk, cbase + j*cstride]
    in int32. Tile sizes are closure constants so the loops unroll and acc stays in registers."""

    @cuda.jit(device=True)
    def mma(As, Ws, acc, ar, wr, rbase, rstride, cbase, cstride):
        for kk in range(bk):
            for i in range(tm):
                ar[i] = As[kk, rbase + i * rstride]
            for j in range(tn):
                wr[j] = Ws[kk, cbase + j * cstride]
            for i in range(tm):
                for j in range(tn):
                    acc[i, j] = int32(acc[i, j] + ar[i] * wr[j])

    return mma


# ---------------------------------------------------------------------------------------------
# elementwise: quantize / dequantize (per-tensor: nch == 1, per-channel: channel = (i//inner) % nch)
# ---------------------------------------------------------------------------------------------

@cuda.jit
def quantize_kernel(x, scale, zp, inner, lo, hi, out):
    """NaN quantizes to lo (qmin), as qrt's QuantizeLinear and onnxruntime do."""
    nch = scale.shape[0]
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for i in range(start, x.shape[0], step):
        ch = (i // inner) % nch
        v = x[i] / scale[ch]
        if v == v:
            out[i] = _round_sat(v, int64(zp[ch]), lo, hi)
        else:
            out[i] = lo


@cuda.jit
def dequantize_kernel(q, scale, zp, inner, out):
    nch = scale.shape[0]
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for i in range(start, q.shape[0], step):
        ch = (i // inner) % nch
        out[i] = float32(int32(q[i]) - int32(zp[ch])) * scale[ch]


# ---------------------------------------------------------------------------------------------
# dynamic quantization (ONNX DynamicQuantizeLinear, u8): min/max reduction then scale/zp on device
# ---------------------------------------------------------------------------------------------

@cuda.jit
def minmax_partial_kernel(x, pmin, pmax):
    """Per block: min(0, min x) and max(0, max x) over a grid-stride slice of x."""
    smin = cuda.shared.array(RED_THREADS, float32)
    smax = cuda.shared.array(RED_THREADS, float32)
    t = cuda.threadIdx.x
    lmin = float32(0)
    lmax = float32(0)
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = x[i]
        if v < lmin:
            lmin = v
        if v > lmax:
            lmax = v
    smin[t] = lmin
    smax[t] = lmax
    cuda.syncthreads()
    s = RED_THREADS // 2
    while s > 0:
        if t < s:
            if smin[t + s] < smin[t]:
                smin[t] = smin[t + s]
            if smax[t + s] > smax[t]:
                smax[t] = smax[t + s]
        cuda.syncthreads()
        s //= 2
    if t == 0:
        pmin[cuda.blockIdx.x] = smin[0]
        pmax[cuda.blockIdx.x] = smax[0]


@cuda.jit
def dynamic_params_kernel(pmin, pmax, zero_scale, scale_out, zp_out):
    """One block: reduce the partials, then scale = (max - min) / 255 (`zero_scale` when
    max == min) and zp = round_half_even(clamp(0 - min / scale, 0, 255)), as ONNX's reference."""
    smin = cuda.shared.array(RED_THREADS, float32)
    smax = cuda.shared.array(RED_THREADS, float32)
    t = cuda.threadIdx.x
    lmin = float32(0)
    lmax = float32(0)
    for i in range(t, pmin.shape[0], RED_THREADS):
        if pmin[i] < lmin:
            lmin = pmin[i]
        if pmax[i] > lmax:
            lmax = pmax[i]
    smin[t] = lmin
    smax[t] = lmax
    cuda.syncthreads()
    s = RED_THREADS // 2
    while s > 0:
        if t < s:
            if smin[t + s] < smin[t]:
                smin[t] = smin[t + s]
            if smax[t + s] > smax[t]:
                smax[t] = smax[t + s]
        cuda.syncthreads()
        s //= 2
    if t == 0:
        mn = smin[0]
        mx = smax[0]
        sc = zero_scale
        if mx != mn:
            sc = (mx - mn) / float32(255)
        izp = float32(0) - mn / sc
        scale_out[0] = sc
        zp_out[0] = int32(_round_sat(izp, 0, 0, 255))


# ---------------------------------------------------------------------------------------------
# small elementwise kernels the session's GPU plan uses (flat, contiguous arrays)
# ---------------------------------------------------------------------------------------------

@cuda.jit
def channel_bias_kernel(y, bias, inner, fclip, lo_f, hi_f):
    """In place: y[i] = clip(y[i] + bias[(i // inner) % nch]), float32. One rounding (the add),
    then np.clip-style bounds (NaN stays NaN). fclip: bit 1 clamp at lo_f, bit 2 at hi_f (float32
    scalars, by value: nothing is uploaded per call)."""
    nch = bias.shape[0]
    for i in range(cuda.grid(1), y.shape[0], cuda.gridsize(1)):
        v = y[i] + bias[(i // inner) % nch]
        if fclip & 1:
            if v < lo_f:
                v = lo_f
        if fclip & 2:
            if v > hi_f:
                v = hi_f
        y[i] = v


@cuda.jit
def lut_kernel(x, table, in_lo, inner, out):
    """out[i] = table[ch, x[i] - in_lo], ch = (i // inner) % C for a (C, T) table (C == 1: one
    table for every element). The host checks that every code indexes inside the table."""
    nch = table.shape[0]
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[i] = table[(i // inner) % nch, int32(x[i]) - in_lo]


@cuda.jit
def maxpool_kernel(x, geo, lowest, out):
    """2-D max pooling, NCHW, one thread per output element (grid-stride). Taps outside the
    input are skipped (ONNX pads with -inf): a window entirely in the padding gives `lowest`.
    geo: (KH, KW, SH, SW, PT, PL, DH, DW, OH, OW) by value. Exact: max involves no rounding."""
    KH = geo[0]
    KW = geo[1]
    SH = geo[2]
    SW = geo[3]
    PT = geo[4]
    PL = geo[5]
    DH = geo[6]
    DW = geo[7]
    OH = geo[8]
    OW = geo[9]
    H = x.shape[2]
    W = x.shape[3]
    C = x.shape[1]
    total = x.shape[0] * C * OH * OW
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        ow = e % OW
        t = e // OW
        oh = t % OH
        t = t // OH
        c = t % C
        n = t // C
        m = lowest
        for ki in range(KH):
            ih = oh * SH - PT + ki * DH
            if ih >= 0 and ih < H:
                for kj in range(KW):
                    iw = ow * SW - PL + kj * DW
                    if iw >= 0 and iw < W:
                        v = x[n, c, ih, iw]
                        if v > m:
                            m = v
        out[n, c, oh, ow] = m


@cuda.jit
def global_avg_kernel(x, zx, m, zy, lo, hi, out):
    """x (N, C, S) 8-bit codes -> out (N, C): sat(rint(float64(sum(x - zx)) * m) + zy), one
    thread per (n, c). The sum is exact in int64 and the rescale is the CPU op's float64 product:
    one rounding, no FMA (the product is rounded before anything is added to it)."""
    C = x.shape[1]
    S = x.shape[2]
    flo = float64(lo - zy - 1)
    fhi = float64(hi - zy + 1)
    for e in range(cuda.grid(1), x.shape[0] * C, cuda.gridsize(1)):
        n = e // C
        c = e % C
        acc = int64(0)
        for k in range(S):
            acc += int64(x[n, c, k])
        t = float64(acc - zx * S) * m
        if t < flo:
            t = flo
        elif t > fhi:
            t = fhi
        r = int64(round(t)) + zy
        if r < lo:
            r = lo
        elif r > hi:
            r = hi
        out[n, c] = r


# ---------------------------------------------------------------------------------------------
# tiled int8 GEMM and implicit-GEMM conv (factories: tile sizes are compile-time constants)
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def make_gemm_kernel(bm: int, bn: int, bk: int, tm: int, tn: int):
    """out[m, n] = epilogue(sum_k (a[m,k] - azp) * (w[n,k] - wzp[n])).

    Block (bn//tn, bm//tm) threads; thread (tx, ty) owns rows ty + i*(bm//tm) and columns
    tx + j*(bn//tn), so consecutive threads store consecutive columns of the row-major output.
    Tiles of (a - azp) and (w - wzp) live in shared memory as int32, k-major, padded by one word.
    mode 0: requantize (vec = multiplier, int output); mode 1: dequantize (vec = scale, float32).
    ip: int64[3] (out zero point, lo, hi); fp: float32[2] (lo_f, hi_f); fclip: bit mask.
    """
    tpx = bn // tn
    tpy = bm // tm
    nthreads = tpx * tpy
    mma = _make_mma(bk, tm, tn)
    bm1, bn1 = bm + 1, bn + 1  # padded shared rows (no bank conflicts); shapes must be constants

    @cuda.jit
    def gemm(a, azp, w, wzp, bias, vec, mode, ip, fclip, fp, out):
        As = cuda.shared.array((bk, bm1), int32)
        Ws = cuda.shared.array((bk, bn1), int32)
        acc = cuda.local.array((tm, tn), int32)
        ar = cuda.local.array(tm, int32)
        wr = cuda.local.array(tn, int32)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * tpx + tx
        m0 = cuda.blockIdx.y * bm
        n0 = cuda.blockIdx.x * bn
        M = a.shape[0]
        K = a.shape[1]
        N = w.shape[0]
        for i in range(tm):
            for j in range(tn):
                acc[i, j] = 0
        for k0 in range(0, K, bk):
            for idx in range(tid, bm * bk, nthreads):
                r = idx // bk
                c = idx % bk
                gm = m0 + r
                gk = k0 + c
                v = int32(0)
                if gm < M and gk < K:
                    v = int32(int32(a[gm, gk]) - azp)
                As[c, r] = v
            for idx in range(tid, bn * bk, nthreads):
                r = idx // bk
                c = idx % bk
                gn = n0 + r
                gk = k0 + c
                v = int32(0)
                if gn < N and gk < K:
                    v = int32(int32(w[gn, gk]) - wzp[gn])
                Ws[c, r] = v
            cuda.syncthreads()
            mma(As, Ws, acc, ar, wr, ty, tpy, tx, tpx)
            cuda.syncthreads()
        ozp = ip[0]
        lo = ip[1]
        hi = ip[2]
        for i in range(tm):
            gm = m0 + ty + i * tpy
            if gm < M:
                for j in range(tn):
                    gn = n0 + tx + j * tpx
                    if gn < N:
                        if mode == 0:
                            out[gm, gn] = _requant(acc[i, j], bias[gn], vec[gn], ozp, lo, hi)
                        else:
                            out[gm, gn] = _dequant_acc(acc[i, j], bias[gn], vec[gn], fclip, fp)

    return gemm


@functools.lru_cache(maxsize=None)
def make_conv_kernel(bm: int, bn: int, bk: int, tm: int, tn: int):
    """Implicit-GEMM 2-D conv, NCHW in and out, no im2col in memory.

    Per group g (grid z): rows are output pixels p = (n, oh, ow), columns the group's output
    channels, K = (C/group) * KH * KW in im2col order (c, ki, kj). A padded tap reads as the input
    zero point, i.e. contributes 0. Block (bm//tm, bn//tn): thread x runs along pixels so stores to
    NCHW are coalesced. geo: a tuple of 10 ints, by value (KH, KW, SH, SW, PT, PL, DH, DW, OH, OW).
    """
    tpx = bm // tm   # threads along pixels
    tpy = bn // tn   # threads along output channels
    nthreads = tpx * tpy
    mma = _make_mma(bk, tm, tn)
    bm1, bn1 = bm + 1, bn + 1  # padded shared rows (no bank conflicts); shapes must be constants

    @cuda.jit
    def conv(x, xzp, w, wzp, geo, bias, vec, mode, ip, fclip, fp, out):
        As = cuda.shared.array((bk, bm1), int32)
        Ws = cuda.shared.array((bk, bn1), int32)
        acc = cuda.local.array((tm, tn), int32)
        ar = cuda.local.array(tm, int32)
        wr = cuda.local.array(tn, int32)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * tpx + tx
        g = cuda.blockIdx.z
        p0 = cuda.blockIdx.x * bm
        c0 = cuda.blockIdx.y * bn
        NB = x.shape[0]
        H = x.shape[2]
        W = x.shape[3]
        KH = geo[0]
        KW = geo[1]
        SH = geo[2]
        SW = geo[3]
        PT = geo[4]
        PL = geo[5]
        DH = geo[6]
        DW = geo[7]
        OH = geo[8]
        OW = geo[9]
        KHW = KH * KW
        K = w.shape[1]
        cg = K // KHW                        # input channels per group
        coutg = out.shape[1] // cuda.gridDim.z  # output channels per group
        P = NB * OH * OW
        for i in range(tm):
            for j in range(tn):
                acc[i, j] = 0
        for k0 in range(0, K, bk):
            for idx in range(tid, bm * bk, nthreads):
                r = idx % bm
                c = idx // bm
                p = p0 + r
                k = k0 + c
                v = int32(0)
                if p < P and k < K:
                    ow = p % OW
                    t = p // OW
                    oh = t % OH
                    n = t // OH
                    ci = k // KHW
                    rem = k % KHW
                    ki = rem // KW
                    kj = rem % KW
                    ih = oh * SH - PT + ki * DH
                    iw = ow * SW - PL + kj * DW
                    if ih >= 0 and ih < H and iw >= 0 and iw < W:
                        v = int32(int32(x[n, g * cg + ci, ih, iw]) - xzp)
                As[c, r] = v
            for idx in range(tid, bn * bk, nthreads):
                r = idx // bk
                c = idx % bk
                co = c0 + r
                k = k0 + c
                v = int32(0)
                if co < coutg and k < K:
                    gco = g * coutg + co
                    v = int32(int32(w[gco, k]) - wzp[gco])
                Ws[c, r] = v
            cuda.syncthreads()
            mma(As, Ws, acc, ar, wr, tx, tpx, ty, tpy)
            cuda.syncthreads()
        ozp = ip[0]
        lo = ip[1]
        hi = ip[2]
        for i in range(tm):
            p = p0 + tx + i * tpx
            if p < P:
                ow = p % OW
                t = p // OW
                oh = t % OH
                n = t // OH
                for j in range(tn):
                    co = c0 + ty + j * tpy
                    if co < coutg:
                        gco = g * coutg + co
                        if mode == 0:
                            out[n, gco, oh, ow] = _requant(acc[i, j], bias[gco], vec[gco],
                                                           ozp, lo, hi)
                        else:
                            out[n, gco, oh, ow] = _dequant_acc(acc[i, j], bias[gco], vec[gco],
                                                               fclip, fp)

    return conv


@cuda.jit
def depthwise_kernel(x, xzp, w, wzp, geo, bias, vec, mode, ip, fclip, fp, out):
    """Depthwise (group == C) 2-D conv, one thread per output element (grid-stride), NCHW.
    Output channel co reads input channel co // (Cout / C) (channel multiplier); w is (Cout, KH*KW)."""
    KH = geo[0]
    KW = geo[1]
    SH = geo[2]
    SW = geo[3]
    PT = geo[4]
    PL = geo[5]
    DH = geo[6]
    DW = geo[7]
    OH = geo[8]
    OW = geo[9]
    H = x.shape[2]
    W = x.shape[3]
    cout = out.shape[1]
    mult = cout // x.shape[1]
    total = out.shape[0] * cout * OH * OW
    ozp = ip[0]
    lo = ip[1]
    hi = ip[2]
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        ow = e % OW
        t = e // OW
        oh = t % OH
        t = t // OH
        co = t % cout
        n = t // cout
        ci = co // mult
        wz = wzp[co]
        acc = int32(0)
        for ki in range(KH):
            ih = oh * SH - PT + ki * DH
            if ih >= 0 and ih < H:
                for kj in range(KW):
                    iw = ow * SW - PL + kj * DW
                    if iw >= 0 and iw < W:
                        acc = int32(acc + (int32(x[n, ci, ih, iw]) - xzp)
                                    * (int32(w[co, ki * KW + kj]) - wz))
        if mode == 0:
            out[n, co, oh, ow] = _requant(acc, bias[co], vec[co], ozp, lo, hi)
        else:
            out[n, co, oh, ow] = _dequant_acc(acc, bias[co], vec[co], fclip, fp)
