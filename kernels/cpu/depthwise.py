"""Depthwise int8 convolution (group == C == M), 2-D (1-D as H = 1), for every CPU path.

One task per (image, channel) plane:

1. The plane's input rows are converted once into a scratch of ``x - zx`` (|.| <= 255, so int16 is
   exact) with the left/right padding as zeros and the columns de-interleaved by the horizontal
   stride ``sw``: scratch row ``r``, phase ``p``, position ``q`` holds padded column ``q*sw + p``.
   Output column ``xo`` of tap ``j`` then reads phase ``(j*dw) % sw`` at ``(j*dw) // sw + xo``: a
   unit-stride run for every stride, so stride 2 vectorises like stride 1 (a strided gather does
   not). Vertical padding costs nothing: a kernel row whose input row lies outside the image would
   multiply zeros, so it is skipped instead of being materialised.
2. Each output row is accumulated exactly in int32, then the epilogue stores it right away (while it
   is in L1): common.py's modes 0 int32, 1 requantize to 8 bits, 2 float32, computed as
   common.requant_one / dequant_one do, so results are bit-exact with ref.depthwise_conv_ref.
   - ``avx2`` (also taken by the ``vnni`` path: AVX-512 CPUs have AVX2): the scratch holds *pairs*
     ``(x[u], x[u + dw])`` as one 32-bit word, so a ``vpmaddwd`` against the broadcast weight pair
     ``(w[j], w[j+1])`` gives, per output, two taps' products summed in int32 (|.| <= 2*255*255: no
     saturation). All taps of a row (every valid kernel row, kw/2 rounded up pairs each; an odd
     last tap is paired with a zero weight) accumulate in registers for a block of up to 40
     outputs (NV vectors; a row is split into blocks of even size), which are stored once. LLVM
     does not form ``vpmaddwd`` from plain loops here (it emits ``vpmulld``, ~4x slower on
     Zen 3), hence the explicit intrinsic, as in avx2.py.
   - ``portable``: plain Numba; each kernel row's kw taps (3 and 5 unrolled: the MobileNet shapes)
     are summed per output before the int32 row is read and written once.

Signed activations are mapped without a branch: the uint8 view ``u`` of an int8 ``v`` gives
``v = (u ^ 128) - 128``, so ``v - zx = (u ^ flip) - zeff`` with flip = 128, zeff = zx + 128
(flip = 0, zeff = zx for uint8).

Why the code looks the way it does (each measured on the PP-OCR cls shapes, where a whole call
takes tens of microseconds):
- The plane loops are written out flat, one function per path, with no array views made per row: a
  call (even an inlined one) taking array views, or a view made in a loop, pays atomic reference
  counting each time, which cost more than the arithmetic of a MobileNet row.
- Hot loops index with unsigned offsets (or from 0): with a signed offset of unknown sign, Numba's
  negative-index wraparound turns vector stores into scatters.
- The u8 -> int16 row conversion is an explicit vector intrinsic (plain LLVM IR, any target):
  Numba's integer promotion made LLVM compute that loop in 64-bit lanes inside these kernels.
- Arguments are few and packed (``geo`` int64, ``epf`` float32): each one costs dispatch time.

The avx2 kernels must only be called on CPUs with AVX2 (they compile on first call; the portable
ones compile anywhere).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import cgutils, types
from numba.extending import intrinsic

from qrt.kernels.cpu.common import (I32_MAX, apply_table_avx2, dequant_one, ir_requant8,
                                     ir_splat, requant_one)

# geo (int64) layout. GEO_SIZE is followed by kw tap starts: where tap j's run begins in a scratch
# row, in elements (int16 for portable, int32 pair words for avx2); then kh * ceil(kw/2) byte
# offsets of the avx2 pair streams (see make_geo).
(G_KH, G_KW, G_SH, G_SW, G_PT, G_PL, G_DH, G_DW, G_OH, G_OW, G_MODE, G_FLIP, G_ZEFF,
 G_LEN) = range(14)
GEO_SIZE = 14
# epf (float32) layout: output zero point, clamp low, clamp high (common.py's zpf, lof, hif), and
# 1 if acc + bias cannot leave int32 (see `bias_is_safe`), else 0
E_ZP, E_LO, E_HI, E_SAFE = range(4)
SLACK = 8  # words after each phase run: the avx2 kernel computes outputs in whole 8-lane vectors
NV = 5  # most vectors per register block of the avx2 kernel (40 outputs, 5 independent sums);
# a row is split into blocks of at most NV vectors, of even size (48 outputs: 3 + 3)
# Below this many multiply-adds (padding taps included) a conv runs on one thread whatever
# `threads` says: a parallel launch costs microseconds (far more on shared, busy cores) and these
# kernels do tens of multiply-adds per nanosecond, so a small conv loses time when split.
PAR_MIN_MACS = 1 << 22


def make_geo(kh, kw, sh, sw, pt, pl, pr, dh, dw, oh, ow, w, mode, signed, zx) -> np.ndarray:
    """Pack the geometry of one call (2-D numbers; 1-D as H = 1; w is the input width).
    Everything that needs a division by a runtime stride is computed here, once: per tap and row
    in the kernel it would cost more than the row's arithmetic."""
    nq = max(1, -(-(w + pl + pr) // sw))  # words per phase of a padded row
    ln = nq + SLACK
    taps = [(j * dw % sw) * ln + j * dw // sw for j in range(kw)]
    # avx2: byte offset of the pair stream (kernel row i, tap pair jp) from its output row's base
    npr = (kw + 1) // 2
    offs = [i * dh * sw * ln * 4 + 4 * taps[2 * jp] for i in range(kh) for jp in range(npr)]
    return np.array([kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, mode, 128 if signed else 0,
                     zx + 128 if signed else zx, ln] + taps + offs, np.int64)


def pair_weights(w16: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """(C, kh*kw) int16 taps -> (C, kh * ceil(kw/2)) int32 words holding (w[j], w[j+1]) as the two
    int16 halves vpmaddwd multiplies (low half first: x86 is little-endian); an odd last tap is
    paired with 0."""
    c = w16.shape[0]
    npr = (kw + 1) // 2
    wp = np.zeros((c, kh, 2 * npr), np.int16)
    wp[:, :, :kw] = w16.reshape(c, kh, kw)
    return np.ascontiguousarray(wp).view(np.int32).reshape(c, kh * npr)


def bias_is_safe(bias: np.ndarray, taps: int) -> bool:
    """True when acc + bias fits int32 for every possible accumulator (|acc| <= taps * 255 * 255):
    the epilogue may then add in int32 and convert 8 lanes at once (AVX2 has no int64 -> float
    conversion), giving exactly common.requant_one / dequant_one, whose int64 sum and int32 clip
    cannot change such a value."""
    return bias.size == 0 or int(np.abs(bias.astype(np.int64)).max()) <= I32_MAX - taps * 255 * 255


@njit(cache=True, inline="always")
def _requant_sum(s, mult, zpf, lof, hif):
    """common.requant_one for an int32 s = acc + bias known not to overflow: same float32 steps."""
    y = np.float32(s) * mult
    y = np.float32(np.rint(y)) + zpf
    if y < lof:
        y = lof
    if y > hif:
        y = hif
    return np.int32(y)


@njit(cache=True, inline="always")
def _dequant_sum(s, scale, lof, hif):
    """common.dequant_one for an int32 s = acc + bias known not to overflow."""
    y = np.float32(s) * scale
    if y < lof:
        y = lof
    if y > hif:
        y = hif
    return y


@intrinsic
def _widen_row(typingctx, dst_addr, src_addr, nblk, flip, zeff):
    """dst[0:16*nblk] (int16) = (src[0:16*nblk] (uint8) ^ flip) - zeff, 16 lanes at a time.
    Plain LLVM vector IR (any target). The same loop in Numba computes in 64-bit lanes inside the
    kernels (LLVM narrows it only in small functions): about 4x the instructions."""
    sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        dst_addr, src_addr, nblk, flip, zeff = args
        i64, i32, i16, i8 = ir.IntType(64), ir.IntType(32), ir.IntType(16), ir.IntType(8)
        v16i8, v16i16 = ir.VectorType(i8, 16), ir.VectorType(i16, 16)
        c64 = lambda v: ir.Constant(i64, v)  # noqa: E731
        zeros16 = ir.Constant(ir.VectorType(i32, 16), None)

        def splat(v):
            e = builder.insert_element(ir.Constant(v16i16, ir.Undefined), builder.trunc(v, i16),
                                       ir.Constant(i32, 0))
            return builder.shuffle_vector(e, ir.Constant(v16i16, ir.Undefined), zeros16)

        fv = splat(flip)
        zv = splat(zeff)
        entry = builder.block
        loop = builder.append_basic_block("qrt_dw_widen")
        done = builder.append_basic_block("qrt_dw_widen_done")
        builder.cbranch(builder.icmp_signed(">", nblk, c64(0)), loop, done)
        builder.position_at_end(loop)
        i = builder.phi(i64)
        i.add_incoming(c64(0), entry)
        sp = builder.inttoptr(builder.add(src_addr, builder.mul(i, c64(16))), v16i8.as_pointer())
        v = builder.sub(builder.xor(builder.zext(builder.load(sp, align=1), v16i16), fv), zv)
        dp = builder.inttoptr(builder.add(dst_addr, builder.mul(i, c64(32))), v16i16.as_pointer())
        builder.store(v, dp, align=2)
        i1 = builder.add(i, c64(1))
        i.add_incoming(i1, builder.block)
        builder.cbranch(builder.icmp_signed("<", i1, nblk), loop, done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _requant_row(typingctx, dst_addr, acc_addr, nblk, bias, mult, zpf, lof, hif):
    """dst[0:8*nblk] (8-bit codes) = _requant_sum(acc[0:8*nblk] + bias, ...) eight lanes at a time:
    int32 add (the caller has checked it cannot overflow: bias_is_safe), float32 conversion,
    multiply, rint (ties to even), + zero point, clamp, truncation, the low byte stored:
    common.ir_requant8, shared with the avx2 GEMM's register epilogue. The scalar loop took ~6
    cycles an output, several times the multiply-adds of a 3x3 depthwise row."""
    sig = types.void(types.intp, types.intp, types.intp, types.int32, types.float32,
                     types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        dst_addr, acc_addr, nblk, bias, mult, zpf, lof, hif = args
        i64, i32, i8 = ir.IntType(64), ir.IntType(32), ir.IntType(8)
        v8i32, v8f32 = ir.VectorType(i32, 8), ir.VectorType(ir.FloatType(), 8)
        c64 = lambda v: ir.Constant(i64, v)  # noqa: E731
        bv, mv = ir_splat(builder, bias, v8i32), ir_splat(builder, mult, v8f32)
        zv, lov, hiv = (ir_splat(builder, v, v8f32) for v in (zpf, lof, hif))
        entry = builder.block
        loop = builder.append_basic_block("qrt_dw_requant")
        done = builder.append_basic_block("qrt_dw_requant_done")
        builder.cbranch(builder.icmp_signed(">", nblk, c64(0)), loop, done)
        builder.position_at_end(loop)
        i = builder.phi(i64)
        i.add_incoming(c64(0), entry)
        a = builder.load(builder.inttoptr(builder.add(acc_addr, builder.mul(i, c64(32))),
                                          v8i32.as_pointer()), align=4)
        codes = ir_requant8(builder, builder.add(a, bv), mv, zv, lov, hiv)
        builder.store(codes, builder.inttoptr(builder.add(dst_addr, builder.mul(i, c64(8))),
                                              ir.VectorType(i8, 8).as_pointer()), align=1)
        i1 = builder.add(i, c64(1))
        i.add_incoming(i1, builder.block)
        builder.cbranch(builder.icmp_signed("<", i1, nblk), loop, done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _pair_row(typingctx, dst_addr, src_addr, shift, nblk):
    """dst[0:16*nblk] (int32 words) = (src[q], src[q + shift]) as (lo, hi) int16 halves, 16 words
    at a time: two unaligned loads and one interleaving shuffle. Reads src up to 16*nblk + shift
    int16 (the caller pads its scratch). The Numba loop for the same word ran in 64-bit lanes."""
    sig = types.void(types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        dst_addr, src_addr, shift, nblk = args
        i64, i32, i16 = ir.IntType(64), ir.IntType(32), ir.IntType(16)
        v16i16 = ir.VectorType(i16, 16)
        c64 = lambda v: ir.Constant(i64, v)  # noqa: E731
        mask = ir.Constant(ir.VectorType(i32, 32), [i // 2 + 16 * (i % 2) for i in range(32)])
        entry = builder.block
        loop = builder.append_basic_block("qrt_dw_pair")
        done = builder.append_basic_block("qrt_dw_pair_done")
        builder.cbranch(builder.icmp_signed(">", nblk, c64(0)), loop, done)
        builder.position_at_end(loop)
        i = builder.phi(i64)
        i.add_incoming(c64(0), entry)
        sa = builder.add(src_addr, builder.mul(i, c64(32)))
        lo = builder.load(builder.inttoptr(sa, v16i16.as_pointer()), align=2)
        hi = builder.load(builder.inttoptr(builder.add(sa, builder.mul(shift, c64(2))),
                                           v16i16.as_pointer()), align=2)
        pair = builder.shuffle_vector(lo, hi, mask)
        builder.store(pair, builder.inttoptr(builder.add(dst_addr, builder.mul(i, c64(64))),
                                             ir.VectorType(i16, 32).as_pointer()), align=2)
        i1 = builder.add(i, c64(1))
        i.add_incoming(i1, builder.block)
        builder.cbranch(builder.icmp_signed("<", i1, nblk), loop, done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


# ---------------------------------------------------------------- portable
@njit(cache=True)
def depthwise(x, w16, geo, bias, mult, epf, out_q, out_f, out_i, t0, t1):
    """Portable kernel for planes t0 <= t < t1 (t = image * C + channel).
    x: (N, C, H, W) uint8 view of u8/s8 activations; w16: (C, kh*kw) int16 = w - zw; outputs
    (N, C, oh, ow), the two unused ones (1, 1, 1, 1) dummies (mode picks)."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    kh, kw, sh, sw = geo[G_KH], geo[G_KW], geo[G_SH], geo[G_SW]
    pt, pl, dh, oh, ow = geo[G_PT], geo[G_PL], geo[G_DH], geo[G_OH], geo[G_OW]
    mode, ln = geo[G_MODE], geo[G_LEN]
    flip = np.int32(geo[G_FLIP])
    zeff = np.int32(geo[G_ZEFF])
    zpf, lof, hif = epf[E_ZP], epf[E_LO], epf[E_HI]
    safe = epf[E_SAFE] != 0
    row = np.empty(sw * ln, np.int16)
    buf = np.empty((h, sw * ln), np.int16)
    acc = np.empty(ow, np.int32)
    uow = np.uint64(ow)
    nb16 = w // 16  # whole 16-byte blocks of an input row
    x0 = x.ctypes.data  # x is C-contiguous (the caller's ascontiguousarray)
    row0 = row.ctypes.data
    buf0 = buf.ctypes.data
    ut = np.empty(kw, np.uint64)  # tap starts, unsigned (see the module docstring)
    for j in range(kw):
        ut[j] = geo[GEO_SIZE + j]
    for t in range(t0, t1):
        b = t // c
        ch = t - b * c
        for r in range(h):  # scratch rows: padded, stride phases side by side
            xa = x0 + ((b * c + ch) * h + r) * w
            if sw == 1:
                for q in range(pl):
                    buf[r, q] = 0
                _widen_row(buf0 + (r * sw * ln + pl) * 2, xa, nb16, flip, zeff)
                for q in range(nb16 * 16, w):
                    buf[r, pl + q] = np.int16((np.int32(x[b, ch, r, q]) ^ flip) - zeff)
                for q in range(pl + w, ln):
                    buf[r, q] = 0
            else:
                for q in range(pl):
                    row[q] = 0
                _widen_row(row0 + pl * 2, xa, nb16, flip, zeff)
                for q in range(nb16 * 16, w):
                    row[pl + q] = np.int16((np.int32(x[b, ch, r, q]) ^ flip) - zeff)
                for q in range(pl + w, sw * ln):
                    row[q] = 0
                usw = np.uint64(sw)
                for p in range(sw):
                    uo = np.uint64(p * ln)
                    up = np.uint64(p)
                    for q in range(np.uint64(ln)):
                        buf[r, uo + q] = row[q * usw + up]
        bi = bias[ch]
        mu = mult[ch]
        for yo in range(oh):
            for xo in range(ow):
                acc[xo] = 0
            for i in range(kh):
                iy = yo * sh - pt + i * dh
                if iy < 0 or iy >= h:
                    continue
                j = 0
                while j < kw:
                    k = i * kw + j
                    t0_ = ut[j]
                    w0 = np.int32(w16[ch, k])
                    if kw - j >= 5:
                        t1_ = ut[j + 1]
                        t2_ = ut[j + 2]
                        t3_ = ut[j + 3]
                        t4_ = ut[j + 4]
                        w1 = np.int32(w16[ch, k + 1])
                        w2 = np.int32(w16[ch, k + 2])
                        w3 = np.int32(w16[ch, k + 3])
                        w4 = np.int32(w16[ch, k + 4])
                        for xo in range(uow):
                            acc[xo] += (np.int32(buf[iy, t0_ + xo]) * w0
                                        + np.int32(buf[iy, t1_ + xo]) * w1
                                        + np.int32(buf[iy, t2_ + xo]) * w2
                                        + np.int32(buf[iy, t3_ + xo]) * w3
                                        + np.int32(buf[iy, t4_ + xo]) * w4)
                        j += 5
                    elif kw - j >= 3:
                        t1_ = ut[j + 1]
                        t2_ = ut[j + 2]
                        w1 = np.int32(w16[ch, k + 1])
                        w2 = np.int32(w16[ch, k + 2])
                        for xo in range(uow):
                            acc[xo] += (np.int32(buf[iy, t0_ + xo]) * w0
                                        + np.int32(buf[iy, t1_ + xo]) * w1
                                        + np.int32(buf[iy, t2_ + xo]) * w2)
                        j += 3
                    else:
                        for xo in range(uow):
                            acc[xo] += np.int32(buf[iy, t0_ + xo]) * w0
                        j += 1
            # epilogue of the row (the same code as in depthwise_avx2)
            if mode == 0:
                for xo in range(ow):
                    out_i[b, ch, yo, xo] = acc[xo]
            elif mode == 1:
                if safe:
                    for xo in range(ow):
                        out_q[b, ch, yo, xo] = np.uint8(
                            _requant_sum(np.int32(acc[xo] + bi), mu, zpf, lof, hif) & 255)
                else:
                    for xo in range(ow):
                        out_q[b, ch, yo, xo] = np.uint8(
                            requant_one(acc[xo], bi, mu, zpf, lof, hif) & 255)
            else:
                if safe:
                    for xo in range(ow):
                        out_f[b, ch, yo, xo] = _dequant_sum(np.int32(acc[xo] + bi), mu, lof, hif)
                else:
                    for xo in range(ow):
                        out_f[b, ch, yo, xo] = dequant_one(acc[xo], bi, mu, lof, hif)


@njit(cache=True, parallel=True)
def depthwise_parallel(x, w16, geo, bias, mult, epf, out_q, out_f, out_i, nchunks):
    """`depthwise` over all planes, in nchunks contiguous chunks spread over Numba's threads."""
    total = x.shape[0] * x.shape[1]
    for k in prange(nchunks):
        depthwise(x, w16, geo, bias, mult, epf, out_q, out_f, out_i, total * k // nchunks,
                  total * (k + 1) // nchunks)


# ---------------------------------------------------------------- avx2
def _make_rowacc(nvec: int):
    """acc[0:8*nvec] (int32, at acc_addr) = sum over p < npairs of vpmaddwd(stream_p, splat(wp[p])),
    stream_p being 8*nvec int32 pair words at address src[p] + off (src: int64 byte offsets, wp:
    int32 weight pairs). All sums stay in registers (nvec independent chains) until the store."""

    @intrinsic
    def rowacc(typingctx, acc_addr, src_addr, wp_addr, npairs, off):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            acc_addr, src_addr, wp_addr, npairs, off = args
            i64, i32, i16 = ir.IntType(64), ir.IntType(32), ir.IntType(16)
            v8i32, v16i16 = ir.VectorType(i32, 8), ir.VectorType(i16, 16)
            pmadd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v8i32, [v16i16, v16i16]), "llvm.x86.avx2.pmadd.wd")
            c64 = lambda v: ir.Constant(i64, v)  # noqa: E731
            zero8 = ir.Constant(v8i32, None)
            splat = ir.Constant(v8i32, None)  # shuffle mask of zeros: broadcast lane 0

            entry = builder.block
            loop = builder.append_basic_block("qrt_dw_loop")
            done = builder.append_basic_block("qrt_dw_done")
            builder.cbranch(builder.icmp_signed(">", npairs, c64(0)), loop, done)

            builder.position_at_end(loop)
            p = builder.phi(i64, "p")
            p.add_incoming(c64(0), entry)
            phis = []
            for _ in range(nvec):
                ph = builder.phi(v8i32)
                ph.add_incoming(zero8, entry)
                phis.append(ph)
            s = builder.load(builder.inttoptr(builder.add(src_addr, builder.mul(p, c64(8))),
                                              i64.as_pointer()), align=8)
            wv = builder.load(builder.inttoptr(builder.add(wp_addr, builder.mul(p, c64(4))),
                                               i32.as_pointer()), align=4)
            wb = builder.insert_element(ir.Constant(v8i32, ir.Undefined), wv, ir.Constant(i32, 0))
            wb = builder.shuffle_vector(wb, ir.Constant(v8i32, ir.Undefined), splat)
            wb = builder.bitcast(wb, v16i16)
            base = builder.add(s, off)
            new = []
            for v in range(nvec):
                xv = builder.load(builder.inttoptr(builder.add(base, c64(32 * v)),
                                                   v16i16.as_pointer()), align=4)
                new.append(builder.add(phis[v], builder.call(pmadd, [xv, wb])))
            p1 = builder.add(p, c64(1))
            p.add_incoming(p1, builder.block)
            for ph, v in zip(phis, new):
                ph.add_incoming(v, builder.block)
            builder.cbranch(builder.icmp_signed("<", p1, npairs), loop, done)

            builder.position_at_end(done)
            final = []
            for v in range(nvec):  # all phis first: they must head the block
                ph = builder.phi(v8i32)
                ph.add_incoming(zero8, entry)
                ph.add_incoming(new[v], loop)
                final.append(ph)
            for v, ph in enumerate(final):
                builder.store(ph, builder.inttoptr(builder.add(acc_addr, c64(32 * v)),
                                                   v8i32.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return rowacc


_rowacc_1, _rowacc_2, _rowacc_3, _rowacc_4, _rowacc_5 = (_make_rowacc(v) for v in range(1, NV + 1))


@njit(cache=True, inline="always")
def _rowacc(nv, acc_addr, src_addr, wp_addr, npairs, off):
    """The row block of nv (1..NV) vectors: one pass over the pair streams for all of them (a
    row's last, partial block used to take one pass per vector, each paying the loop's loads of
    stream offsets and weight pairs: a third of a 40-wide row's time)."""
    if nv == 5:
        _rowacc_5(acc_addr, src_addr, wp_addr, npairs, off)
    elif nv == 4:
        _rowacc_4(acc_addr, src_addr, wp_addr, npairs, off)
    elif nv == 3:
        _rowacc_3(acc_addr, src_addr, wp_addr, npairs, off)
    elif nv == 2:
        _rowacc_2(acc_addr, src_addr, wp_addr, npairs, off)
    else:
        _rowacc_1(acc_addr, src_addr, wp_addr, npairs, off)


@njit(cache=True)
def depthwise_avx2(x, wpair, geo, bias, mult, epf, out_q, out_f, out_i, t0, t1):
    """AVX2 kernel for planes t0 <= t < t1: as `depthwise`, with `pair_weights` for the taps.
    Per plane the pair scratch: buf[r, p*ln + q] = the int32 word (lo, hi) = (x - zx at padded
    column u, at u + dw) of input row r, u = q*sw + p (0 in the padding); then per output row its
    valid kernel rows' pair streams (row base + offsets from geo) against their weight pairs,
    accumulated in registers; then the epilogue of the row."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    kh, kw, sh, sw, pt, pl = geo[G_KH], geo[G_KW], geo[G_SH], geo[G_SW], geo[G_PT], geo[G_PL]
    dh, dw, oh, ow = geo[G_DH], geo[G_DW], geo[G_OH], geo[G_OW]
    mode, ln = geo[G_MODE], geo[G_LEN]
    npr = (kw + 1) // 2
    flip = np.int32(geo[G_FLIP])
    zeff = np.int32(geo[G_ZEFF])
    zpf, lof, hif = epf[E_ZP], epf[E_LO], epf[E_HI]
    safe = epf[E_SAFE] != 0
    unq = np.uint64(ln - SLACK)  # the SLACK words stay unset: they only feed lanes past ow
    rlen = (ln - SLACK) * sw + dw
    usw = np.uint64(sw)
    udw = np.uint64(dw)
    nb16 = w // 16  # whole 16-byte blocks of an input row
    nbw = (w + 15) // 16  # blocks covering the row
    xbytes = x.size
    x0 = x.ctypes.data  # x is C-contiguous (the caller's ascontiguousarray)
    # 16 spare words: _pair_row writes whole blocks of 16 (past a row into the next one, which
    # is built after it, and past the last row into the spare)
    bufall = np.empty(h * sw * ln + 16, np.int32)
    buf = bufall[:h * sw * ln].reshape(h, sw * ln)
    # horizontal stride 2, dilation 1: tap pairs start at even columns, so the pair words are the
    # padded int16 row itself read as int32 (phase 0 only): the row is built in place, unpaired
    direct = sw == 2 and dw == 1
    # (+ 16 + dw: _pair_row reads whole blocks of 16 and the shifted block)
    dst = buf.view(np.int16) if direct else np.empty((1, rlen + 16 + dw), np.int16)
    npblk = (np.int64(unq) + 15) // 16
    dlen = dst.shape[1]
    d0 = dst.ctypes.data
    acc = np.empty(ow + 8, np.int32)  # whole 8-lane vectors: up to 7 lanes past ow
    rbytes = sw * ln * 4
    off0 = GEO_SIZE + kw
    b0 = buf.ctypes.data
    a0 = acc.ctypes.data
    g0 = geo.ctypes.data
    wp0 = wpair.ctypes.data  # (C, kh*npr), C-contiguous (pair_weights)
    oq0 = out_q.ctypes.data
    qs0, qs1, qs2 = out_q.strides[0], out_q.strides[1], out_q.strides[2]
    unit = out_q.strides[3] == 1  # output rows stored as whole vectors
    for t in range(t0, t1):
        b = t // c
        ch = t - b * c
        for r in range(h):
            # the padded int16 row, then its pairs: two simple passes vectorise to narrow lanes,
            # one pass straight from x did not (64-bit lanes, twice the time)
            dr = r if direct else 0
            for q in range(pl):
                dst[dr, q] = 0
            # a row's partial last block is widened whole when the 16-byte read stays inside x
            # (the values past w are overwritten by the right padding below, or by the next
            # row in the direct layout): a scalar tail cost as much as the row's blocks
            roff = ((b * c + ch) * h + r) * w
            nbr = nbw if roff + 16 * nbw <= xbytes else nb16
            _widen_row(d0 + (dr * dlen + pl) * 2, x0 + roff, nbr, flip, zeff)
            for q in range(nbr * 16, w):
                dst[dr, pl + q] = np.int16((np.int32(x[b, ch, r, q]) ^ flip) - zeff)
            for q in range(pl + w, rlen):
                dst[dr, q] = 0
            if direct:
                continue
            for p in range(sw):
                uo = np.uint64(p * ln)
                up = np.uint64(p)
                if sw == 1:
                    _pair_row(b0 + r * rbytes, d0, dw, npblk)
                else:
                    for q in range(unq):
                        u = q * usw + up
                        buf[r, uo + q] = ((np.int32(dst[0, u]) & 0xFFFF)
                                          | (np.int32(dst[0, u + udw]) << 16))
        bi = bias[ch]
        mu = mult[ch]
        wrow = wp0 + 4 * ch * kh * npr
        for yo in range(oh):
            # the kernel rows over image rows are consecutive: ilo..ihi; their pair streams start
            # at base + the precomputed offsets, their weight pairs are consecutive in wpair
            iy0 = yo * sh - pt
            ilo = 0
            ihi = -1
            for i in range(kh):
                iy = iy0 + i * dh
                if 0 <= iy < h:
                    if ihi < 0:
                        ilo = i
                    ihi = i
            n = (ihi - ilo + 1) * npr
            base = b0 + iy0 * rbytes
            oa = g0 + 8 * (off0 + ilo * npr)
            wa = wrow + 4 * ilo * npr
            xo = 0
            vleft = (ow + 7) // 8
            nblk = (vleft + NV - 1) // NV
            while vleft > 0:  # blocks of even size, at most NV vectors
                nv = (vleft + nblk - 1) // nblk
                _rowacc(nv, a0 + 4 * xo, oa, wa, n, base + 4 * xo)
                xo += 8 * nv
                vleft -= nv
                nblk -= 1
            # epilogue of the row (the same code as in depthwise)
            if mode == 0:
                for xo in range(ow):
                    out_i[b, ch, yo, xo] = acc[xo]
            elif mode == 1:
                if safe and unit:
                    nb = ow // 8
                    _requant_row(oq0 + b * qs0 + ch * qs1 + yo * qs2, a0, nb, bi, mu, zpf, lof,
                                 hif)
                    for xo in range(nb * 8, ow):
                        out_q[b, ch, yo, xo] = np.uint8(
                            _requant_sum(np.int32(acc[xo] + bi), mu, zpf, lof, hif) & 255)
                elif safe:
                    for xo in range(ow):
                        out_q[b, ch, yo, xo] = np.uint8(
                            _requant_sum(np.int32(acc[xo] + bi), mu, zpf, lof, hif) & 255)
                else:
                    for xo in range(ow):
                        out_q[b, ch, yo, xo] = np.uint8(
                            requant_one(acc[xo], bi, mu, zpf, lof, hif) & 255)
            else:
                if safe:
                    for xo in range(ow):
                        out_f[b, ch, yo, xo] = _dequant_sum(np.int32(acc[xo] + bi), mu, lof, hif)
                else:
                    for xo in range(ow):
                        out_f[b, ch, yo, xo] = dequant_one(acc[xo], bi, mu, lof, hif)


@njit(cache=True, parallel=True)
def depthwise_avx2_parallel(x, wpair, geo, bias, mult, epf, out_q, out_f, out_i, nchunks):
    """`depthwise_avx2` over all planes, in nchunks contiguous chunks over Numba's threads."""
    total = x.shape[0] * x.shape[1]
    for k in prange(nchunks):
        depthwise_avx2(x, wpair, geo, bias, mult, epf, out_q, out_f, out_i, total * k // nchunks,
                       total * (k + 1) // nchunks)


@njit(cache=True, inline="always")
def _as_planes(o, oh, ow):
    """An (N, C, oh*ow) output as (N, C, oh, ow); a (1, 1, 1) dummy as (1, 1, 1, 1)."""
    if o.shape[2] == oh * ow:
        return o.reshape(o.shape[0], o.shape[1], oh, ow)
    return o.reshape(o.shape[0], o.shape[1], 1, o.shape[2])


@njit(cache=True)
def depthwise_avx2_nchw(x, wpair, geo, bias, mult, epf, table, flip, nchunks, out_q, out_f,
                        out_i):
    """A whole depthwise conv in one call (the plan's bound step): `depthwise_avx2` over every
    plane (nchunks > 1: `depthwise_avx2_parallel`), then the optional per-channel table (`table`
    (C, 256) raw bytes, 0 rows for none) on the 8-bit output. Outputs (N, C, oh*ow), the unused
    ones (1, 1, 1) dummies."""
    oh, ow = geo[G_OH], geo[G_OW]
    q = _as_planes(out_q, oh, ow)
    f = _as_planes(out_f, oh, ow)
    i = _as_planes(out_i, oh, ow)
    if nchunks > 1:
        depthwise_avx2_parallel(x, wpair, geo, bias, mult, epf, q, f, i, nchunks)
    else:
        depthwise_avx2(x, wpair, geo, bias, mult, epf, q, f, i, 0, x.shape[0] * x.shape[1])
    if table.shape[0] > 0:
        apply_table_avx2(out_q, table, flip)
