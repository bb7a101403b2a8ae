"""Numba kernels for float ops that BLAS does not cover well (depthwise convolution).

Arrays only: no ONNX, no graph. Every kernel has a numpy twin in the op module that uses it
(`qrt.ops.conv` falls back to its shifted-tap accumulation for ranks other than 2-D).

The 8-bit kernels (QAdd/QMul, DequantizeLinear) subtract zero points in float32: exact, since
|x - z| <= 255 and a product of two such values is below 2**24, so the results are bit for bit
those of the integer formula. Numba computes int32 arithmetic in 64-bit lanes, and AVX2 has no
int64 -> float32 conversion, so the integer form ran scalar (DequantizeLinear 7x slower).
"""
from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from qrt.kernels.cpu.common import dequant_one, ir_splat, requant_one


@nb.njit(cache=True, nogil=True, fastmath={"contract"})
def depthwise_conv2d(xp, w, out, sh, sw, dh, dw, mult):
    """out[n, m, i, j] = sum_{a,b} xp[n, m // mult, i*sh + a*dh, j*sw + b*dw] * w[m, a, b].

    xp: padded input (N, C, Hp, Wp), C-contiguous; w: (M, KH, KW) with M = C * mult; out:
    (N, M, OH, OW), overwritten. Accumulates in out's dtype (float32 or float64), tap by tap, so
    the innermost loop runs along a contiguous output row and vectorises when sw == 1."""
    n_, m_, oh, ow = out.shape
    kh, kw = w.shape[1], w.shape[2]
    for n in range(n_):
        for m in range(m_):
            c = m // mult
            o = out[n, m]
            o[:, :] = 0
            for a in range(kh):
                for b in range(kw):
                    wv = w[m, a, b]
                    base = b * dw
                    for i in range(oh):
                        row = xp[n, c, i * sh + a * dh]
                        orow = o[i]
                        if sw == 1:
                            src = row[base:base + ow]
                            for j in range(ow):
                                orow[j] += src[j] * wv
                        else:
                            for j in range(ow):
                                orow[j] += row[base + j * sw] * wv
    return out


# ------------------------------------------------------------------------------------------------
# Elementwise kernels of the fused integer ops (qrt/ops/fused.py QAdd/QMul): float32 rescale of the
# integer operands, round half to even, saturate. Bit-exact with the numpy twins in fused.py
# (every step is the same float32 operation; the sum/product of two codes is exact).
# `b` is either as long as `a` (same shape) or one element (broadcast scalar); other broadcasts
# use the 4-D kernels below on broadcast views. Integer intermediates are cast back to int32
# explicitly: numba widens int32 arithmetic to int64, and int64 -> float32 does not vectorise on AVX2
# (3-4x slower).
# ------------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True, inline="always")
def _sat(y, zy, lo, hi):
    y = np.float32(np.rint(y)) + zy
    if y < lo:
        y = lo
    elif y > hi:
        y = hi
    return np.int32(y)


@nb.njit(cache=True, nogil=True)
def qadd_flat(a, b, out, za, zb, ma, mb, zy, lo, hi):
    n = a.size
    if b.size == n:
        for i in range(n):
            va = (np.float32(a[i]) - np.float32(za)) * ma
            vb = (np.float32(b[i]) - np.float32(zb)) * mb
            out[i] = _sat(va + vb, zy, lo, hi)
    else:
        vb = (np.float32(b[0]) - np.float32(zb)) * mb
        for i in range(n):
            va = (np.float32(a[i]) - np.float32(za)) * ma
            out[i] = _sat(va + vb, zy, lo, hi)
    return out


@nb.njit(cache=True, nogil=True)
def qmul_flat(a, b, out, za, zb, m, zy, lo, hi):
    n = a.size
    if b.size == n:
        for i in range(n):
            p = (np.float32(a[i]) - np.float32(za)) * (np.float32(b[i]) - np.float32(zb))
            out[i] = _sat(p * m, zy, lo, hi)
    else:
        vb = np.float32(b[0]) - np.float32(zb)
        for i in range(n):
            p = (np.float32(a[i]) - np.float32(za)) * vb
            out[i] = _sat(p * m, zy, lo, hi)
    return out


@nb.njit(cache=True, nogil=True)
def qadd_4d(a, b, out, za, zb, ma, mb, zy, lo, hi):
    """a, b: 4-D, each axis either out's length or 1 (broadcast here, by a zero index step: a
    numpy broadcast view cost more to make than this pass over a small tensor); out C-contiguous."""
    d0, d1, d2, d3 = out.shape
    a0, a1, a2, a3 = (int(a.shape[0] > 1), int(a.shape[1] > 1), int(a.shape[2] > 1),
                      int(a.shape[3] > 1))
    b0, b1, b2, b3 = (int(b.shape[0] > 1), int(b.shape[1] > 1), int(b.shape[2] > 1),
                      int(b.shape[3] > 1))
    for i in range(d0):
        for j in range(d1):
            for k in range(d2):
                ar = a[i * a0, j * a1, k * a2]
                br = b[i * b0, j * b1, k * b2]
                orow = out[i, j, k]
                for l in range(d3):
                    va = (np.float32(ar[l * a3]) - np.float32(za)) * ma
                    vb = (np.float32(br[l * b3]) - np.float32(zb)) * mb
                    orow[l] = _sat(va + vb, zy, lo, hi)
    return out


@nb.njit(cache=True, nogil=True)
def qmul_4d(a, b, out, za, zb, m, zy, lo, hi):
    """As qadd_4d."""
    d0, d1, d2, d3 = out.shape
    a0, a1, a2, a3 = (int(a.shape[0] > 1), int(a.shape[1] > 1), int(a.shape[2] > 1),
                      int(a.shape[3] > 1))
    b0, b1, b2, b3 = (int(b.shape[0] > 1), int(b.shape[1] > 1), int(b.shape[2] > 1),
                      int(b.shape[3] > 1))
    for i in range(d0):
        for j in range(d1):
            for k in range(d2):
                ar = a[i * a0, j * a1, k * a2]
                br = b[i * b0, j * b1, k * b2]
                orow = out[i, j, k]
                for l in range(d3):
                    p = ((np.float32(ar[l * a3]) - np.float32(za))
                         * (np.float32(br[l * b3]) - np.float32(zb)))
                    orow[l] = _sat(p * m, zy, lo, hi)
    return out


@nb.njit(cache=True, nogil=True)
def lut8_channels(x, flip, table, out):
    """out[n, c, i] = table[c, x[n, c, i] ^ flip]: per-channel tables (axis 1), or one (1, 256)
    table when c is 1. x: a uint8 view of 8-bit codes (flip 128 turns int8 codes into table
    indices x - (-128)); the QLut of fused.py without numpy's fancy-indexing overhead."""
    n, c, s = x.shape
    for b in range(n):
        for ch in range(c):
            t = table[ch]
            for i in range(s):
                out[b, ch, i] = t[x[b, ch, i] ^ flip]
    return out


@nb.njit(cache=True, nogil=True)
def quantize_f32(x, s, zp, lo, hi, out):
    """out (raw bytes) = saturate(rint(x / s) + zp), NaN -> lo: QuantizeLinear's float32 path
    (true division, not a multiply by 1/s, so it matches bit for bit)."""
    for i in range(x.size):
        v = np.float32(np.rint(x[i] / s)) + zp
        if not (v >= lo):  # also NaN
            v = lo
        elif v > hi:
            v = hi
        out[i] = np.uint8(np.int32(v) & 255)
    return out


@nb.njit(cache=True, nogil=True)
def dequantize_u8(x, zp, s, out):
    for i in range(x.size):
        out[i] = (np.float32(x[i]) - np.float32(zp)) * s
    return out


@nb.njit(cache=True, nogil=True)
def dequantize_s8(x, zp, s, out):
    for i in range(x.size):
        out[i] = (np.float32(x[i]) - np.float32(zp)) * s
    return out


@nb.njit(cache=True, nogil=True)
def qadd_chan(a, b, out, za, zb, ma, mb, zy, lo, hi):
    """a, out: (N, C, S); b: (Nb, C) with Nb in {1, N}, broadcast along S (a per-channel operand
    such as a squeeze-excitation scale)."""
    n, c, s = a.shape
    for i in range(n):
        ib = i if b.shape[0] > 1 else 0
        for j in range(c):
            vb = (np.float32(b[ib, j]) - np.float32(zb)) * mb
            for k in range(s):
                va = (np.float32(a[i, j, k]) - np.float32(za)) * ma
                out[i, j, k] = _sat(va + vb, zy, lo, hi)
    return out


@nb.njit(cache=True, nogil=True)
def qmul_chan(a, b, out, za, zb, m, zy, lo, hi):
    n, c, s = a.shape
    for i in range(n):
        ib = i if b.shape[0] > 1 else 0
        for j in range(c):
            vb = np.float32(b[ib, j]) - np.float32(zb)
            for k in range(s):
                p = (np.float32(a[i, j, k]) - np.float32(za)) * vb
                out[i, j, k] = _sat(p * m, zy, lo, hi)
    return out


@nb.njit(cache=True, nogil=True)
def maxpool2d(x, kh, kw, sh, sw, pt, pl, dh, dw, lowest, out):
    """out[n, c, i, j] = max over the window's taps inside x (taps in the padding count as `lowest`,
    as the padded numpy twin does); NaN propagates like np.maximum.
    Row by row: each valid (kernel row, tap) folds into the whole output row with a branch-free
    select over the output columns whose input column is inside x (worked out once per tap), so
    the loop vectorises; the per-output tap loop with early exits ran ~20 cycles an output."""
    n_, c_, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    # flat C-order views made once: a row view per output row (and per tap row) cost more than a
    # small pool's arithmetic (~40 ns each, from reference counting)
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for plane in range(n_ * c_):
        xb = plane * h * w
        for i in range(oh):
            ob = (plane * oh + i) * ow
            for j in range(ow):
                of[ob + j] = lowest
            for a in range(kh):
                iy = i * sh - pt + a * dh
                if iy < 0 or iy >= h:
                    continue
                rb = xb + iy * w
                for b in range(kw):
                    off = b * dw - pl
                    lo = 0 if off >= 0 else min(ow, (-off + sw - 1) // sw)
                    hi = 0 if w - off <= 0 else min(ow, (w - off + sw - 1) // sw)
                    for j in range(lo, hi):
                        v = xf[np.uint64(rb + j * sw + off)]
                        m = of[np.uint64(ob + j)]
                        # NaN wins and then stays (v > NaN is False)
                        of[np.uint64(ob + j)] = v if (v > m) | (v != v) else m
    return out


@nb.njit(cache=True, nogil=True)
def qglobal_avg(x, zx, m, zy, lo, hi, out):
    """x (N, C, S) 8-bit codes; out (N, C) raw bytes: sat(rint(sum(x - zx) * m) + zy)."""
    n, c, s = x.shape
    for i in range(n):
        for j in range(c):
            # int32 partial sums (vectorise; 255 * 2**23 < 2**31), added up in int64
            acc = np.int64(0)
            for k0 in range(0, s, 1 << 23):
                part = np.int32(0)
                for k in range(k0, min(s, k0 + (1 << 23))):
                    part += np.int32(x[i, j, k])
                acc += np.int64(part)
            v = np.rint(np.float64(acc - zx * s) * m) + zy
            if v < lo:
                v = lo
            elif v > hi:
                v = hi
            out[i, j] = np.uint8(np.int64(v) & 255)
    return out


@nb.njit(cache=True, nogil=True)
def qmatmul_batched(a, b, za, zb, mode, bias, mult, zpf, lof, hif, out_q, out_f):
    """a (B, M, K), b (B, K, N) 8-bit codes (as int8/uint8 arrays): exact int32 sums of
    (a - za)(b - zb), then the shared epilogue (mode 1: 8-bit raw bytes into out_q (B, M, N);
    mode 2: float32 into out_f)."""
    nb_, m, k = a.shape
    n = b.shape[2]
    acc = np.empty(n, np.int32)
    for t in range(nb_):
        for i in range(m):
            acc[:] = 0
            for kk in range(k):
                av = np.int32(a[t, i, kk]) - za
                for j in range(n):
                    acc[j] += av * (np.int32(b[t, kk, j]) - zb)
            if mode == 1:
                for j in range(n):
                    out_q[t, i, j] = np.uint8(requant_one(acc[j], bias[j], mult[j], zpf, lof, hif)
                                              & 255)
            else:
                for j in range(n):
                    out_f[t, i, j] = dequant_one(acc[j], bias[j], mult[j], lof, hif)
    return out_q


@nb.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _row_sum64(row):
    """float64 sum of a float32 row. `reassoc` lets LLVM keep several vector partial sums: a
    single in-order float64 chain is latency-bound (~4 cycles an element). The order changes the
    float64 sum only in its last bits, far below the float32 mean taken from it."""
    s = 0.0
    for j in range(row.size):
        s += np.float64(row[j])
    return s


@nb.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _row_sq_dev64(row, mean):
    """float64 sum of float32(row - mean) squared, partial sums as in _row_sum64."""
    v = 0.0
    for j in range(row.size):
        d = np.float64(np.float32(row[j] - mean))
        v += d * d
    return v


@nb.njit(cache=True, nogil=True)
def layer_norm_rows(x, scale, bias, eps, out):
    """out[i] = (x[i] - mean) / sqrt(var + eps) * scale + bias per row of x (R, C) float32, with
    the mean and the (biased) variance accumulated in float64, the normalisation in float32 as
    the numpy form does (d * inv, then * scale, + bias)."""
    r, c = x.shape
    for i in range(r):
        mean = np.float32(_row_sum64(x[i]) / c)
        var = np.float32(_row_sq_dev64(x[i], mean) / c)
        inv = np.float32(np.float32(1.0) / np.float32(np.sqrt(np.float32(var + np.float32(eps)))))
        for j in range(c):
            out[i, j] = np.float32(np.float32(x[i, j] - mean) * inv) * scale[j] + bias[j]
    return out


# ---------------------------------------------------------------- softmax
_EXP_LO = -87.33654  # below this expf is under float32's smallest normal: taken as 0
_EXP_UNROLL = 4  # independent vectors per loop iteration of _exp_row


@intrinsic
def _exp_row(typingctx, dst_addr, src_addr, nblk, shift):
    """dst[i] = exp(src[i] - shift) for i < 8*nblk (float32), returning the float64 sum of dst.
    The exponential is Cephes' expf (range reduction by ln 2 in two parts, a degree-6 polynomial,
    the power of two built in the exponent bits): within ~1 ulp of libm, 8 lanes at a time. NumPy's
    exp ran at ~1.5 ns a value here; Numba's calls libm per value. Below _EXP_LO the result is 0
    (libm gives a subnormal < 1.2e-38); NaN stays NaN.
    _EXP_UNROLL vectors per loop iteration: each is a ~20-deep chain of dependent operations, and
    independent chains in one iteration overlap where the out-of-order core alone did not
    (softmax over 512 rows of 128: 114 -> 85 us). The sum is still added vector by vector, in
    order."""
    sig = types.float64(types.intp, types.intp, types.intp, types.float32)

    def codegen(context, builder, signature, args):
        dst_addr, src_addr, nblk, shift = args
        i64, i32 = ir.IntType(64), ir.IntType(32)
        f32, f64 = ir.FloatType(), ir.DoubleType()
        v8f, v8i, v4d = ir.VectorType(f32, 8), ir.VectorType(i32, 8), ir.VectorType(f64, 4)
        c64 = lambda v: ir.Constant(i64, v)  # noqa: E731
        mod = builder.module
        rint = cgutils.get_or_insert_function(mod, ir.FunctionType(v8f, [v8f]), "llvm.rint.v8f32")

        def cf(v):
            return ir.Constant(v8f, [float(np.float32(v))] * 8)
        sv = ir_splat(builder, shift, v8f)
        zd = ir.Constant(v4d, None)

        def exp8(j):
            """exp of vector j (an i64 index of 8-value blocks), stored to dst; returns it."""
            x0 = builder.load(builder.inttoptr(builder.add(src_addr, builder.mul(j, c64(32))),
                                               v8f.as_pointer()), align=4)
            x0 = builder.fsub(x0, sv)
            x = builder.select(builder.fcmp_ordered(">", x0, cf(88.3762626647949)),
                               cf(88.3762626647949), x0)
            fx = builder.call(rint, [builder.fmul(x, cf(1.44269504088896341))])
            x = builder.fsub(x, builder.fmul(fx, cf(0.693359375)))
            x = builder.fsub(x, builder.fmul(fx, cf(-2.12194440e-4)))
            z = builder.fmul(x, x)
            y = cf(1.9875691500e-4)
            for c in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
                      5.0000001201e-1):
                y = builder.fadd(builder.fmul(y, x), cf(c))
            y = builder.fadd(builder.fadd(builder.fmul(y, z), x), cf(1.0))
            # 2**fx in the exponent bits (fx in [-126, 127] wherever the result is used)
            e = builder.fptosi(builder.select(builder.fcmp_ordered("<", fx, cf(-126.0)),
                                              cf(-126.0), fx), v8i)
            pw = builder.bitcast(builder.shl(builder.add(e, ir.Constant(v8i, [127] * 8)),
                                             ir.Constant(v8i, [23] * 8)), v8f)
            y = builder.fmul(y, pw)
            y = builder.select(builder.fcmp_ordered("<", x0, cf(_EXP_LO)), cf(0.0), y)
            y = builder.select(builder.fcmp_unordered("uno", x0, x0), x0, y)  # NaN stays NaN
            builder.store(y, builder.inttoptr(builder.add(dst_addr, builder.mul(j, c64(32))),
                                              v8f.as_pointer()), align=4)
            return y

        def add_halves(acc_lo, acc_hi, y):
            lo = builder.fpext(builder.shuffle_vector(y, y, ir.Constant(ir.VectorType(i32, 4),
                                                                        [0, 1, 2, 3])), v4d)
            hi = builder.fpext(builder.shuffle_vector(y, y, ir.Constant(ir.VectorType(i32, 4),
                                                                        [4, 5, 6, 7])), v4d)
            return builder.fadd(acc_lo, lo), builder.fadd(acc_hi, hi)

        nfull = builder.sdiv(nblk, c64(_EXP_UNROLL))
        entry = builder.block
        loop = builder.append_basic_block("qrt_exp")
        pairs_done = builder.append_basic_block("qrt_exp_pairs_done")
        builder.cbranch(builder.icmp_signed(">", nfull, c64(0)), loop, pairs_done)
        builder.position_at_end(loop)
        i = builder.phi(i64)
        i.add_incoming(c64(0), entry)
        acc_lo = builder.phi(v4d)
        acc_lo.add_incoming(zd, entry)
        acc_hi = builder.phi(v4d)
        acc_hi.add_incoming(zd, entry)
        j0 = builder.mul(i, c64(_EXP_UNROLL))
        ys = [exp8(builder.add(j0, c64(u))) for u in range(_EXP_UNROLL)]
        new_lo, new_hi = acc_lo, acc_hi
        for y in ys:
            new_lo, new_hi = add_halves(new_lo, new_hi, y)
        i1 = builder.add(i, c64(1))
        i.add_incoming(i1, builder.block)
        acc_lo.add_incoming(new_lo, builder.block)
        acc_hi.add_incoming(new_hi, builder.block)
        builder.cbranch(builder.icmp_signed("<", i1, nfull), loop, pairs_done)
        builder.position_at_end(pairs_done)
        sum_lo = builder.phi(v4d)
        sum_lo.add_incoming(zd, entry)
        sum_lo.add_incoming(new_lo, loop)
        sum_hi = builder.phi(v4d)
        sum_hi.add_incoming(zd, entry)
        sum_hi.add_incoming(new_hi, loop)
        # the last nblk % _EXP_UNROLL vectors one at a time
        start = builder.mul(nfull, c64(_EXP_UNROLL))
        pre = builder.block
        tail = builder.append_basic_block("qrt_exp_tail")
        done = builder.append_basic_block("qrt_exp_done")
        builder.cbranch(builder.icmp_signed("<", start, nblk), tail, done)
        builder.position_at_end(tail)
        j = builder.phi(i64)
        j.add_incoming(start, pre)
        t_lo = builder.phi(v4d)
        t_lo.add_incoming(sum_lo, pre)
        t_hi = builder.phi(v4d)
        t_hi.add_incoming(sum_hi, pre)
        n_lo, n_hi = add_halves(t_lo, t_hi, exp8(j))
        j1 = builder.add(j, c64(1))
        j.add_incoming(j1, builder.block)
        t_lo.add_incoming(n_lo, builder.block)
        t_hi.add_incoming(n_hi, builder.block)
        builder.cbranch(builder.icmp_signed("<", j1, nblk), tail, done)
        builder.position_at_end(done)
        fin_lo = builder.phi(v4d)
        fin_lo.add_incoming(sum_lo, pre)
        fin_lo.add_incoming(n_lo, tail)
        fin_hi = builder.phi(v4d)
        fin_hi.add_incoming(sum_hi, pre)
        fin_hi.add_incoming(n_hi, tail)
        t = builder.fadd(fin_lo, fin_hi)
        s = builder.extract_element(t, ir.Constant(i32, 0))
        for k in (1, 2, 3):
            s = builder.fadd(s, builder.extract_element(t, ir.Constant(i32, k)))
        return s

    return sig, codegen


@intrinsic
def _max_row(typingctx, src_addr, nblk, first):
    """max(first, src[0:8*nblk]) (float32) with NaN propagating (NaN if any value is NaN), 8 lanes
    at a time: the scalar loop with its NaN test ran ~1 ns a value."""
    sig = types.float32(types.intp, types.intp, types.float32)

    def codegen(context, builder, signature, args):
        src_addr, nblk, first = args
        i64, i32 = ir.IntType(64), ir.IntType(32)
        f32 = ir.FloatType()
        v8f = ir.VectorType(f32, 8)
        c64 = lambda v: ir.Constant(i64, v)  # noqa: E731
        fv = ir_splat(builder, first, v8f)

        def vmax(m, v):  # v wins if greater or NaN; a NaN m stays (v > NaN is false)
            take = builder.or_(builder.fcmp_ordered(">", v, m), builder.fcmp_unordered("uno", v, v))
            return builder.select(take, v, m)
        entry = builder.block
        loop = builder.append_basic_block("qrt_max")
        done = builder.append_basic_block("qrt_max_done")
        builder.cbranch(builder.icmp_signed(">", nblk, c64(0)), loop, done)
        builder.position_at_end(loop)
        i = builder.phi(i64)
        i.add_incoming(c64(0), entry)
        m = builder.phi(v8f)
        m.add_incoming(fv, entry)
        v = builder.load(builder.inttoptr(builder.add(src_addr, builder.mul(i, c64(32))),
                                          v8f.as_pointer()), align=4)
        m1 = vmax(m, v)
        i1 = builder.add(i, c64(1))
        i.add_incoming(i1, builder.block)
        m.add_incoming(m1, builder.block)
        builder.cbranch(builder.icmp_signed("<", i1, nblk), loop, done)
        builder.position_at_end(done)
        mf = builder.phi(v8f)
        mf.add_incoming(fv, entry)
        mf.add_incoming(m1, loop)
        r = builder.extract_element(mf, ir.Constant(i32, 0))
        for k in range(1, 8):
            e = builder.extract_element(mf, ir.Constant(i32, k))
            take = builder.or_(builder.fcmp_ordered(">", e, r), builder.fcmp_unordered("uno", e, e))
            r = builder.select(take, e, r)
        return r

    return sig, codegen


@nb.njit(cache=True, nogil=True)
def softmax_rows(x, out):
    """out[r] = softmax(x[r]) for each row of the C-contiguous float32 (R, N) x: max, then
    exp(x - max) with its sum (`_exp_row`, 8 values at a time; a short tail through the same code
    in an 8-value scratch), then a division by the float32 sum, as NumPy's softmax does."""
    rows, n = x.shape
    nb8 = n // 8
    tail_in = np.zeros(8, np.float32)
    tail_out = np.zeros(8, np.float32)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        m = _max_row(xr.ctypes.data, nb8, xr[0])
        for i in range(nb8 * 8, n):
            v = xr[i]
            if v > m or v != v:
                m = v
        s = _exp_row(orow.ctypes.data, xr.ctypes.data, nb8, m)
        t = n - nb8 * 8
        if t > 0:
            for i in range(t):
                tail_in[i] = xr[nb8 * 8 + i]
            for i in range(t, 8):
                tail_in[i] = -np.inf
            s += _exp_row(tail_out.ctypes.data, tail_in.ctypes.data, 1, m)
            for i in range(t):
                orow[nb8 * 8 + i] = tail_out[i]
        sf = np.float32(s)
        for i in range(n):  # vectorises (a plain division per value)
            orow[i] = orow[i] / sf
    return out
