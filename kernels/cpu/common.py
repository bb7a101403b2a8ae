"""Numba pieces shared by the avx2 and portable paths (and the depthwise kernel of every path).

Formats shared by the avx2 and portable GEMMs (exact: zero points are subtracted while packing, so the
micro-kernels need no correction terms):
- activations ``A``: int16 (M, Kp), ``a - za`` (|.| <= 255), zeros in the K padding (Kp % 4 == 0)
- weights ``B``: int16 (NP, Kp/2, 2*NR): panel p, k-pair kk, column c, j -> ``w[p*NR + c, 2*kk + j] - zw``
  (zeros in the padding). ``vpmaddwd`` on a broadcast (a[k], a[k+1]) pair against one row of a panel
  gives, per column, ``a[k]*w[c,k] + a[k+1]*w[c,k+1]`` in int32: |.| <= 2*255*255, never saturates.

Epilogue (one code for all kernels, selected by ``mode``; one compiled signature):
- mode 0: int32 accumulators out (``out_i``)
- mode 1: requantize to 8 bits, bit-exact with ref.requantize; stored as raw bytes into ``out_q``
  (a uint8 view of the uint8 *or* int8 output)
- mode 2: float32 out, bit-exact with ref.dequantize_acc followed by np.clip(lo_f, hi_f)
"""
from __future__ import annotations

import numba
import numba.core.cgutils
import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

NR = 16  # output columns per packed panel (two ymm of int32)
KALIGN = 4  # K is padded to a multiple of this

MODE_I32, MODE_Q, MODE_F32 = 0, 1, 2
# an 8-bit epilogue whose bias may overflow int32 together with the sums (|bias| + K*255*255 >=
# 2**31, qlinear.register_epilogue_mode): the avx2/vnni GEMMs run it through the int32 tile and
# epilogue_tile's saturating add (as MODE_Q) instead of the register epilogue's wrapping adds
MODE_Q_WIDE_BIAS = 3
I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1
# epilogue and correction vectors are allocated readable to a multiple of this many entries: the
# register epilogues load a whole panel of columns at once (16 on avx2, 64 on vnni)
EPILOGUE_PAD = 64


def round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def padded(v: np.ndarray, dtype) -> np.ndarray:
    """A writable (n,) copy of `v` as `dtype` whose buffer extends to a multiple of EPILOGUE_PAD
    entries (zeros)."""
    n = v.shape[0]
    buf = np.zeros(round_up(max(n, 1), EPILOGUE_PAD), dtype)
    buf[:n] = v
    return buf[:n]


# ---------------------------------------------------------------- packing (numpy: no compile)
def pack_b_i16(w: np.ndarray, zero_point: np.ndarray, nr: int = NR) -> np.ndarray:
    """(N, K) int8/uint8 weights, (N,) zero points -> int16 (NP, Kp/2, 2*nr) panels of w - zw.
    With nr = MR this is also the packed-A layout of prep_a_i16: the weights as the GEMM's A, for
    the channels-as-rows conv (avx2.conv_nchw_rows)."""
    n, k = w.shape
    kp = round_up(max(k, 1), KALIGN)
    npad = round_up(max(n, 1), nr)
    full = np.zeros((npad, kp), np.int16)
    full[:n, :k] = w.astype(np.int16) - zero_point.astype(np.int16).reshape(-1, 1)
    # (NP, nr, Kp/2, 2) -> (NP, Kp/2, nr, 2)
    b = full.reshape(npad // nr, nr, kp // 2, 2).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(b).reshape(npad // nr, kp // 2, 2 * nr)


@njit(cache=True)
def prep_a_i16(a, signed, za, kp, mr):
    """(M, K) uint8 view of u8/s8 activations -> packed int16 (ceil(M/mr), kp/2, 2*mr) of a - za:
    row tiles of mr rows, k-pairs outermost, so a micro-kernel reads its A strip sequentially.
    Zero padded (rows beyond M, K beyond K)."""
    m, k = a.shape
    mt = (m + mr - 1) // mr
    out = np.zeros((mt, kp // 2, 2 * mr), np.int16)
    for t in range(mt):
        for r in range(min(mr, m - t * mr)):
            i = t * mr + r
            for j in range(k):
                v = np.int32(a[i, j])
                if signed and v >= 128:
                    v -= 256
                out[t, j >> 1, 2 * r + (j & 1)] = np.int16(v - za)
    return out


# ---------------------------------------------------------------- epilogue
@njit(cache=True, inline="always")
def requant_one(acc, bias, mult, zpf, lof, hif):
    """int32 acc -> int32 quantized value, exactly ref.requantize (clip of acc+bias to int32, float32
    multiply, rint half-to-even, + zero point in float32, clamp, truncate)."""
    v = np.int64(acc) + np.int64(bias)
    if v < I32_MIN:
        v = I32_MIN
    elif v > I32_MAX:
        v = I32_MAX
    y = np.float32(np.int32(v)) * mult
    y = np.float32(np.rint(y)) + zpf
    if y < lof:
        y = lof
    if y > hif:
        y = hif
    return np.int32(y)


@njit(cache=True, inline="always")
def dequant_one(acc, bias, scale, lof, hif):
    y = np.float32(np.int64(acc) + np.int64(bias)) * scale
    if y < lof:
        y = lof
    if y > hif:
        y = hif
    return y


@njit(cache=True, inline="always")
def epilogue_tile(tile, r0, nrows, c0, ncols, ocol, mode, bias, mult, zpf, lof, hif,
                  out_q, out_f, out_i):
    """tile[r0:r0+nrows, c0:c0+ncols] (int32) -> out[r0:, ocol:] (offsets into the global output).
    An output whose rows are adjacent in memory (a transposed view: the NCHW conv output) is
    written column by column, so the stores are sequential."""
    if mode == 0:
        if out_i.strides[0] < out_i.strides[1]:
            for j in range(ncols):
                for i in range(nrows):
                    out_i[r0 + i, ocol + j] = tile[i, c0 + j]
        else:
            for i in range(nrows):
                for j in range(ncols):
                    out_i[r0 + i, ocol + j] = tile[i, c0 + j]
    elif mode == 1:
        if out_q.strides[0] < out_q.strides[1]:
            # Requantize row by row into a scratch tile (contiguous: vectorised), then store it
            # column by column: 2.3x faster than requantizing along the strided tile columns.
            # (slices first: indexing with a runtime offset adds a negative-index check per
            # element, which kept the loop scalar)
            sq = np.empty((nrows, ncols), np.uint8)
            bs = bias[ocol:ocol + ncols]
            ms = mult[ocol:ocol + ncols]
            for i in range(nrows):
                trow = tile[i, c0:c0 + ncols]
                srow = sq[i]
                for j in range(ncols):
                    srow[j] = np.uint8(requant_one(trow[j], bs[j], ms[j], zpf, lof, hif) & 255)
            for j in range(ncols):
                for i in range(nrows):
                    out_q[r0 + i, ocol + j] = sq[i, j]
        else:
            for i in range(nrows):
                for j in range(ncols):
                    q = requant_one(tile[i, c0 + j], bias[ocol + j], mult[ocol + j], zpf, lof, hif)
                    out_q[r0 + i, ocol + j] = np.uint8(q & 255)
    else:
        if out_f.strides[0] < out_f.strides[1]:
            sf = np.empty((nrows, ncols), np.float32)  # as in mode 1: compute by rows, store by columns
            bs = bias[ocol:ocol + ncols]
            ms = mult[ocol:ocol + ncols]
            for i in range(nrows):
                trow = tile[i, c0:c0 + ncols]
                frow = sf[i]
                for j in range(ncols):
                    frow[j] = dequant_one(trow[j], bs[j], ms[j], lof, hif)
            for j in range(ncols):
                for i in range(nrows):
                    out_f[r0 + i, ocol + j] = sf[i, j]
        else:
            for i in range(nrows):
                for j in range(ncols):
                    out_f[r0 + i, ocol + j] = dequant_one(tile[i, c0 + j], bias[ocol + j],
                                                          mult[ocol + j], lof, hif)


@njit(cache=True)
def apply_epilogue(acc, mode, bias, mult, zpf, lof, hif, out_q, out_f, out_i):
    """Standalone epilogue over a whole (M, N) int32 accumulator array."""
    m, n = acc.shape
    for i in range(m):
        epilogue_tile(acc[i:i + 1], i, 1, 0, n, 0, mode, bias, mult, zpf, lof, hif,
                      out_q, out_f, out_i)


# ---------------------------------------------------------------- im2col (2-D; 1-D via H=1)
@njit(cache=True, parallel=True)
def im2col_i16(x, signed, zx, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, kp, mr):
    """x: (N, C, H, W) uint8 view -> packed int16 A (ceil(N*oh*ow/mr), kp/2, 2*mr) (the prep_a_i16
    format) of the im2col rows, columns ordered (c, kh, kw) like ref.im2col, values x - zx; padded
    taps are 0 (= the zero point) and so is the K padding."""
    n, c, h, w = x.shape
    rows = n * oh * ow
    out = np.zeros(((rows + mr - 1) // mr, kp // 2, 2 * mr), np.int16)
    for t in prange(n * oh):
        b = t // oh
        y = t - b * oh
        for xo in range(ow):
            r = t * ow + xo
            rt = r // mr
            rr = 2 * (r - rt * mr)
            col = 0
            for ci in range(c):
                for i in range(kh):
                    iy = y * sh - pt + i * dh
                    for j in range(kw):
                        ix = xo * sw - pl + j * dw
                        if 0 <= iy < h and 0 <= ix < w:
                            v = np.int32(x[b, ci, iy, ix])
                            if signed and v >= 128:
                                v -= 256
                            out[rt, col >> 1, rr + (col & 1)] = np.int16(v - zx)
                        col += 1
    return out


@njit(cache=True, inline="always")
def _tap_offsets(c, h, w, kh, kw, dh, dw):
    """Offset of every (channel, ky, kx) tap from a window's top-left pixel in a (C, H, W) plane,
    in im2col column order."""
    taps = np.empty(c * kh * kw, np.int64)
    col = 0
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                taps[col] = ci * h * w + i * dh * w + j * dw
                col += 1
    return taps


@njit(cache=True, inline="always")
def _tile_windows(r0, nr, ow, sh, sw, pt, pl, h, w, kh, kw, dh, dw, ys, xs, base):
    """Top-left input pixel (ys, xs; flat: base) of the windows of output rows r0..r0+nr-1
    (row r = y*ow + xo); True when every tap of every window lies inside the h x w image."""
    inside = True
    for rr in range(nr):
        y = (r0 + rr) // ow
        ys[rr] = y * sh - pt
        xs[rr] = (r0 + rr - y * ow) * sw - pl
        base[rr] = ys[rr] * w + xs[rr]
        if (ys[rr] < 0 or ys[rr] + (kh - 1) * dh >= h or xs[rr] < 0
                or xs[rr] + (kw - 1) * dw >= w):
            inside = False
    return inside


@njit(cache=True)
def im2col_image(x, img, signed, zx, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, out):
    """One image of `im2col_i16`, serially, into a zeroed packed A `out` (ceil(oh*ow/MR) tiles):
    row r = y*ow + xo of image `img`. Written tile by tile in the packed order (sequential stores;
    the tile's MR output positions are worked out once, not per element)."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    mr = out.shape[2] // 2
    p = oh * ow
    ys = np.empty(mr, np.int64)
    xs = np.empty(mr, np.int64)
    base = np.empty(mr, np.int64)
    xf = x[img].reshape(-1)
    off = 128 if signed else 0  # (v ^ off) - off: the s8 value of a raw byte, branch-free
    taps = _tap_offsets(c, h, w, kh, kw, dh, dw)
    ktaps = taps.shape[0]
    for rt in range(out.shape[0]):
        r0 = rt * mr
        nr = min(mr, p - r0)
        if _tile_windows(r0, nr, ow, sh, sw, pt, pl, h, w, kh, kw, dh, dw, ys, xs, base):
            # every tap of every row of this tile is in the image: no bounds checks
            for rr in range(nr):
                b = base[rr]
                for col in range(ktaps):
                    v = (np.int32(xf[b + taps[col]]) ^ off) - off
                    out[rt, col >> 1, 2 * rr + (col & 1)] = np.int16(v - zx)
            continue
        col = 0
        for ci in range(c):
            for i in range(kh):
                for j in range(kw):
                    kk = col >> 1
                    odd = col & 1
                    for rr in range(nr):
                        iy = ys[rr] + i * dh
                        ix = xs[rr] + j * dw
                        if 0 <= iy < h and 0 <= ix < w:
                            v = np.int32(x[img, ci, iy, ix])
                            if signed and v >= 128:
                                v -= 256
                            out[rt, kk, 2 * rr + odd] = np.int16(v - zx)
                    col += 1
    return out


def ir_splat(builder, x, vt):
    """LLVM IR: the scalar x in every lane of vector type vt."""
    i32 = ir.IntType(32)
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(i32, 0))
    return builder.shuffle_vector(v, ir.Constant(vt, ir.Undefined),
                                  ir.Constant(ir.VectorType(i32, vt.count), None))


def ir_requant8(builder, s, mult, zv, lov, hiv):
    """LLVM IR of requant_one for <L x i32> sums s (any lane count L: 8 on avx2, 16 on vnni) that
    already include the bias (the caller has made sure the int32 sum cannot overflow): float32
    conversion, multiply (no FMA contraction), rint (ties to even), + zero point, clamp to [lo,
    hi], truncation; returns the <L x i8> codes. The one vector form of the 8-bit epilogue, for
    the avx2 and vnni GEMMs and the depthwise kernel."""
    lanes = s.type.count
    vf32 = ir.VectorType(ir.FloatType(), lanes)
    rint = numba.core.cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vf32, [vf32]), f"llvm.rint.v{lanes}f32")
    y = builder.fmul(builder.sitofp(s, vf32), mult)
    y = builder.fadd(builder.call(rint, [y]), zv)
    y = builder.select(builder.fcmp_ordered("<", y, lov), lov, y)
    y = builder.select(builder.fcmp_ordered(">", y, hiv), hiv, y)
    return builder.trunc(builder.fptosi(y, ir.VectorType(ir.IntType(32), lanes)),
                         ir.VectorType(ir.IntType(8), lanes))


@intrinsic
def _copy_run(typingctx, dst, src, n):
    """dst[0:n] = src[0:n] (bytes, n >= 16, no overlap): 16-byte vector moves, the last one
    overlapping its predecessor, so a run of any length >= 16 is a few instructions (the Numba
    byte loop paid an alias check and a remainder loop per run: ~25 ns for an 80-byte im2col
    row segment)."""
    sig = types.void(types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        dst, src, n = args
        i64 = ir.IntType(64)
        v16 = ir.VectorType(ir.IntType(8), 16)
        c64 = lambda v: ir.Constant(i64, v)  # noqa: E731
        entry = builder.block
        loop = builder.append_basic_block("qrt_copy")
        done = builder.append_basic_block("qrt_copy_done")
        last = builder.sub(n, c64(16))
        builder.cbranch(builder.icmp_signed(">", last, c64(0)), loop, done)
        builder.position_at_end(loop)
        i = builder.phi(i64)
        i.add_incoming(c64(0), entry)
        v = builder.load(builder.inttoptr(builder.add(src, i), v16.as_pointer()), align=1)
        builder.store(v, builder.inttoptr(builder.add(dst, i), v16.as_pointer()), align=1)
        i1 = builder.add(i, c64(16))
        i.add_incoming(i1, builder.block)
        builder.cbranch(builder.icmp_signed("<", i1, last), loop, done)
        builder.position_at_end(done)
        v = builder.load(builder.inttoptr(builder.add(src, last), v16.as_pointer()), align=1)
        builder.store(v, builder.inttoptr(builder.add(dst, last), v16.as_pointer()), align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _pair16(typingctx, dst, a0, a1, off, bias, m0, m1):
    """dst[2c + j] = ((aj[c] ^ off) - off - zx) & mj as int16, c < 16, from two rows of 16 raw
    bytes at addresses a0, a1 (bias = off + zx; m0/m1 0 or -1): one k-pair of one B panel, as
    widening loads, a subtract and one interleaving shuffle (Numba's loop for the same ran at
    ~1 cycle an element)."""
    ip = types.intp
    sig = types.void(ip, ip, ip, ip, ip, ip, ip)

    def codegen(context, builder, signature, args):
        dst, a0, a1, off, bias, m0, m1 = args
        i8, i16, i32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
        v16i8, v16i16 = ir.VectorType(i8, 16), ir.VectorType(i16, 16)
        offv = ir_splat(builder, builder.trunc(off, i8), v16i8)
        biasv = ir_splat(builder, builder.trunc(bias, i16), v16i16)
        rows = []
        for addr, m in ((a0, m0), (a1, m1)):
            v = builder.load(builder.inttoptr(addr, v16i8.as_pointer()), align=1)
            v = builder.zext(builder.xor(v, offv), v16i16)
            rows.append(builder.and_(builder.sub(v, biasv),
                                     ir_splat(builder, builder.trunc(m, i16), v16i16)))
        mask = [i // 2 + 16 * (i % 2) for i in range(32)]
        pair = builder.shuffle_vector(rows[0], rows[1],
                                      ir.Constant(ir.VectorType(i32, 32), mask))
        builder.store(pair, builder.inttoptr(dst, ir.VectorType(i16, 32).as_pointer()), align=2)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def _interleave_panels(src, nk, p, off, zx, out):
    """B panels (NP, Kp/2, 2*NR) from the rows of src (nk rows of p raw 8-bit codes): panel pp,
    k-pair kk, column c, j -> value(src[2kk+j, pp*NR+c]) - zx, value = (v ^ off) - off (the s8
    value of a raw byte when off = 128). K padding is zero; columns past p are left as they are
    (their products are never stored). src rows must be contiguous; the caller keeps src and out
    alive past the call (raw addresses are used inside)."""
    npan = out.shape[0]
    nfull = p // NR
    kp2 = out.shape[1]
    o0 = out.ctypes.data
    s0_ = src.ctypes.data
    rs = src.strides[0]  # bytes between rows (rows themselves contiguous)
    pstride = kp2 * (4 * NR)  # bytes between panels
    if kp2 > 16:
        # panel by panel, k-pairs inner: the stores run sequentially through each panel (k-pairs
        # outermost scattered them a panel apart: cache and TLB misses for long K)
        for pp in range(nfull):
            d = o0 + pp * pstride
            for kk in range(kp2):
                k0 = 2 * kk
                m0 = -1 if k0 < nk else 0  # K padding: zero codes
                m1 = -1 if k0 + 1 < nk else 0
                _pair16(d + kk * (4 * NR), s0_ + min(k0, nk - 1) * rs + pp * NR,
                        s0_ + min(k0 + 1, nk - 1) * rs + pp * NR, off, off + zx, m0, m1)
    else:  # short K: a k-pair's panels are close together, and this loop runs longer
        for kk in range(kp2):
            k0 = 2 * kk
            m0 = -1 if k0 < nk else 0
            m1 = -1 if k0 + 1 < nk else 0
            a0 = s0_ + min(k0, nk - 1) * rs
            a1 = s0_ + min(k0 + 1, nk - 1) * rs
            d = o0 + kk * (4 * NR)
            for pp in range(nfull):
                _pair16(d + pp * pstride, a0 + pp * NR, a1 + pp * NR, off, off + zx, m0, m1)
    if nfull < npan:
        b = nfull * NR
        for kk in range(kp2):
            k0 = 2 * kk
            s0 = src[min(k0, nk - 1)]
            s1 = src[min(k0 + 1, nk - 1)]
            m0 = -1 if k0 < nk else 0
            m1 = -1 if k0 + 1 < nk else 0
            o = out[nfull, kk]
            for c in range(p - b):
                v0 = (((np.int32(s0[b + c]) ^ off) - off) - zx) & m0
                v1 = (((np.int32(s1[b + c]) ^ off) - off) - zx) & m1
                o[2 * c] = np.int16(v0)
                o[2 * c + 1] = np.int16(v1)


@njit(cache=True)
def matrix_panels(src, signed, zx, out):
    """The B panels of a (K, N) matrix of 8-bit codes (uint8 view, rows contiguous), e.g. the
    second operand of an activation x activation MatMul."""
    _interleave_panels(src, src.shape[0], src.shape[1], 128 if signed else 0, zx, out)
    return out


@njit(cache=True)
def pointwise_panels(x, img, signed, zx, out):
    """The B panels of a 1x1, stride-1, unpadded conv of image `img`: x[img] is already (K=C, P)."""
    c = x.shape[1]
    p = x.shape[2] * x.shape[3]
    _interleave_panels(x[img].reshape(c, p), c, p, 128 if signed else 0, zx, out)
    return out


@njit(cache=True)
def im2col_panels(x, img, signed, zx, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, kp, out):
    """The B panels of a general conv of image `img`: row k = (c*kh + i)*kw + j of the (K, P)
    im2col matrix is gathered as raw bytes (contiguous runs along the output row when the stride
    is 1; padding = the zero point's byte, so it packs to 0), then interleaved into panels."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    p = oh * ow
    nk = c * kh * kw
    col = np.empty((nk, p), np.uint8)
    col0 = col.ctypes.data
    x0 = x.ctypes.data  # x: the caller's C-contiguous (N, C, H, W) uint8 view
    pad = np.uint8(zx & 0xFF)
    for ci in range(c):
        plane = x[img, ci]
        for i in range(kh):
            for j in range(kw):
                kr = (ci * kh + i) * kw + j
                row = col[kr]
                xoff = j * dw - pl
                # output columns whose input column ox*sw + xoff lies in [0, w)
                lo = 0 if xoff >= 0 else min(ow, (-xoff + sw - 1) // sw)
                hi = 0 if w - xoff <= 0 else min(ow, (w - xoff + sw - 1) // sw)
                if hi < lo:
                    hi = lo
                for oy in range(oh):
                    iy = oy * sh + i * dh - pt
                    base = oy * ow
                    if iy < 0 or iy >= h:
                        for ox in range(ow):
                            row[base + ox] = pad
                        continue
                    for ox in range(lo):
                        row[base + ox] = pad
                    # raw addresses and unsigned indices: no array view per run (each view
                    # pays atomic reference counting) and no negative-index wraparound code
                    if sw == 1 and hi - lo >= 16:
                        _copy_run(col0 + kr * p + base + lo,
                                  x0 + (((img * c + ci) * h) + iy) * w + lo + xoff, hi - lo)
                    else:
                        for ox in range(lo, hi):
                            row[np.uint64(base + ox)] = plane[iy, np.uint64(ox * sw + xoff)]
                    for ox in range(hi, ow):
                        row[base + ox] = pad
    _interleave_panels(col, nk, p, 128 if signed else 0, zx, out)
    col[0, 0] += 0  # a use after the raw-address calls keeps col alive until here
    return out


@njit(cache=True)
def pointwise_image(x, img, signed, zx, out):
    """im2col of a 1x1, stride-1, unpadded conv (the packed transpose of x[img] (C, P)) into the
    zeroed packed A `out`: first x - zx as int16 rows (a vectorised pass), then the interleave,
    full 6-row tiles as straight-line copies (the per-element branchy loop took 1.1-1.4 ns an
    element, this ~0.3). Rows past P and the odd channel of an odd C stay zero."""
    c = x.shape[1]
    p = x.shape[2] * x.shape[3]
    mr = out.shape[2] // 2
    plane = x[img].reshape(c, p)
    off = 128 if signed else 0
    t = np.empty((c + 1, p), np.int16)
    for ci in range(c):
        row = plane[ci]
        trow = t[ci]
        for i in range(p):
            trow[i] = np.int16(((np.int32(row[i]) ^ off) - off) - zx)
    t[c, :] = 0
    npair = (c + 1) // 2
    for rt in range(out.shape[0]):
        r0 = rt * mr
        nr = min(mr, p - r0)
        o = out[rt]
        if nr == 6 and mr == 6:
            for kk in range(npair):
                t0 = t[2 * kk]
                t1 = t[2 * kk + 1]
                ok = o[kk]
                ok[0] = t0[r0]
                ok[1] = t1[r0]
                ok[2] = t0[r0 + 1]
                ok[3] = t1[r0 + 1]
                ok[4] = t0[r0 + 2]
                ok[5] = t1[r0 + 2]
                ok[6] = t0[r0 + 3]
                ok[7] = t1[r0 + 3]
                ok[8] = t0[r0 + 4]
                ok[9] = t1[r0 + 4]
                ok[10] = t0[r0 + 5]
                ok[11] = t1[r0 + 5]
        else:
            for kk in range(npair):
                t0 = t[2 * kk]
                t1 = t[2 * kk + 1]
                ok = o[kk]
                for rr in range(nr):
                    ok[2 * rr] = t0[r0 + rr]
                    ok[2 * rr + 1] = t1[r0 + rr]
    return out


@intrinsic
def _lut_row_avx2(typingctx, dst_addr, src_addr, nvec, table_addr, flip):
    """dst[i] = table[src[i] ^ flip] for i < 32*nvec (bytes; table: 256 bytes), 32 at a time with
    vpshufb (AVX2 only!): the low nibble indexes each 16-byte slice of the table, the high nibble
    picks the slice (16 shuffles and selects a vector, ~0.1 ns a byte against ~0.45 for the scalar
    loop of loads)."""
    sig = types.void(types.intp, types.intp, types.intp, types.intp, types.uint8)

    def codegen(context, builder, signature, args):
        dst_addr, src_addr, nvec, table_addr, flip = args
        i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
        v32, v16 = ir.VectorType(i8, 32), ir.VectorType(i8, 16)
        c64 = lambda v: ir.Constant(i64, v)  # noqa: E731
        pshufb = numba.core.cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v32, [v32, v32]), "llvm.x86.avx2.pshuf.b")
        both = ir.Constant(ir.VectorType(i32, 32), list(range(16)) * 2)
        slices = []
        for j in range(16):  # each 16-byte slice in both 128-bit lanes (vpshufb works per lane)
            t = builder.load(builder.inttoptr(builder.add(table_addr, c64(16 * j)),
                                              v16.as_pointer()), align=1)
            slices.append(builder.shuffle_vector(t, t, both))
        fv = ir_splat(builder, flip, v32)
        entry = builder.block
        loop = builder.append_basic_block("qrt_lut")
        done = builder.append_basic_block("qrt_lut_done")
        builder.cbranch(builder.icmp_signed(">", nvec, c64(0)), loop, done)
        builder.position_at_end(loop)
        i = builder.phi(i64)
        i.add_incoming(c64(0), entry)
        off = builder.mul(i, c64(32))
        x = builder.xor(builder.load(builder.inttoptr(builder.add(src_addr, off),
                                                      v32.as_pointer()), align=1), fv)
        lo = builder.and_(x, ir.Constant(v32, [15] * 32))
        hi = builder.lshr(x, ir.Constant(v32, [4] * 32))
        res = ir.Constant(v32, None)
        for j in range(16):
            hit = builder.icmp_unsigned("==", hi, ir.Constant(v32, [j] * 32))
            res = builder.select(hit, builder.call(pshufb, [slices[j], lo]), res)
        builder.store(res, builder.inttoptr(builder.add(dst_addr, off), v32.as_pointer()), align=1)
        i1 = builder.add(i, c64(1))
        i.add_incoming(i1, builder.block)
        builder.cbranch(builder.icmp_signed("<", i1, nvec), loop, done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True)
def lut_rows_avx2(x, flip, table, out):
    """out[b, c, i] = table[c, x[b, c, i] ^ flip] with vpshufb lookups, 32 bytes at a time (AVX2
    CPUs only): x, out (N, C, S) uint8 views, C-contiguous (out may be x itself); table (C, 256)
    C-contiguous, or (1, 256) for one table for every channel."""
    n, c, p = x.shape
    nv = p // 32
    x0 = x.ctypes.data
    o0 = out.ctypes.data
    t0 = table.ctypes.data
    per_channel = table.shape[0] > 1
    f = np.uint8(flip)
    for b in range(n):
        for ch in range(c):
            tc = ch if per_channel else 0
            row = (b * c + ch) * p
            _lut_row_avx2(o0 + row, x0 + row, nv, t0 + tc * 256, f)
            t = table[tc]
            for i in range(nv * 32, p):
                out[b, ch, i] = t[x[b, ch, i] ^ f]
    return out


@njit(cache=True)
def apply_table_avx2(out_q, table, flip):
    """`apply_table` with vpshufb lookups (AVX2 CPUs only; out_q and table C-contiguous):
    2.6x faster on PP-OCR rec's HardSwish tables (240 x 480 bytes: 53 -> 21 us)."""
    lut_rows_avx2(out_q, flip, table, out_q)


@njit(cache=True)
def apply_table(out_q, table, flip):
    """out_q[b, c, i] = table[c, out_q[b, c, i] ^ flip] in place (per-channel tables, raw bytes)."""
    n, c, p = out_q.shape
    for b in range(n):
        for ch in range(c):
            t = table[ch]
            for i in range(p):
                out_q[b, ch, i] = t[out_q[b, ch, i] ^ flip]


# ---------------------------------------------------------------- depthwise conv (2-D; 1-D via H=1)
@njit(cache=True, parallel=True)
def depthwise(x, signed, zx, w16, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, oh, ow,
              mode, bias, mult, zpf, lof, hif, out_q, out_f, out_i):
    """x: (N, C, H, W) uint8 view; w16: (C, kh*kw) int16 = w - zw. Outputs are (N, C, oh*ow).
    One task per (image, channel): the plane is padded once (x - zx, zeros around), then each output
    row accumulates kh*kw shifted rows of int32 — exact, and vectorised along the output row."""
    n, c, h, w = x.shape
    hp = h + pt + pb
    wp = w + pl + pr
    for t in prange(n * c):
        b = t // c
        ch = t - b * c
        plane = np.zeros((hp, wp), np.int32)
        for i in range(h):
            for j in range(w):
                v = np.int32(x[b, ch, i, j])
                if signed and v >= 128:
                    v -= 256
                plane[pt + i, pl + j] = v - zx
        acc = np.zeros(ow, np.int32)
        bi = bias[ch]
        mu = mult[ch]
        for yo in range(oh):
            acc[:] = 0
            for i in range(kh):
                row = plane[yo * sh + i * dh]
                for j in range(kw):
                    wv = np.int32(w16[ch, i * kw + j])
                    x0 = j * dw
                    if sw == 1:
                        for xo in range(ow):
                            acc[xo] += row[x0 + xo] * wv
                    else:
                        for xo in range(ow):
                            acc[xo] += row[x0 + xo * sw] * wv
            base = yo * ow
            if mode == 0:
                for xo in range(ow):
                    out_i[b, ch, base + xo] = acc[xo]
            elif mode == 1:
                for xo in range(ow):
                    q = requant_one(acc[xo], bi, mu, zpf, lof, hif)
                    out_q[b, ch, base + xo] = np.uint8(q & 255)
            else:
                for xo in range(ow):
                    out_f[b, ch, base + xo] = dequant_one(acc[xo], bi, mu, lof, hif)
