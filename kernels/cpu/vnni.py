"""VNNI path (AVX-512): u8 x s8 GEMM on ``vpdpbusd`` (llvm.x86.avx512.vpdpbusd.512), PERF-NOTES design.

NEVER import or compile this module unless the host has avx512vnni + avx512bw: LLVM aborts the whole
process otherwise. kernels/cpu/__init__.py only loads it when features.can_run('vnni').

Formats:
- weights: int8 (N/64, Kp/4, 64, 4) of w' (s8 weights as given; u8 weights shifted by -128), zw' likewise
- activations: uint8 (MT, Kp/4, 4*MR) row tiles of a' (u8 as given; s8 shifted by +128), za' likewise;
  per-row sums of a' computed while packing.
vpdpbusd adds four u8*s8 products into each int32 lane without saturation, so P = sum a'*w' is exact
modulo 2^32, and the exact result (fits int32 since K <= ref.max_exact_k) is recovered with wrapping
int32 arithmetic:  sum (a'-za')(w'-zw') = P - za'*colsum(w')[n] - zw'[n]*rowsum(a')[m] + K*za'*zw'[n].
The column terms are folded into one per-column int32 correction (like the bias).
Register tile: MR=6 rows x 64 columns = 24 zmm accumulators held as loop phis.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import cgutils, types
from numba.extending import intrinsic

from qrt.kernels.cpu.common import KALIGN, epilogue_tile, round_up

MR = 6
NRV = 64  # columns per panel: 4 zmm of int32
NVEC = NRV // 16


def _make_ukernel(mr: int, nvec: int = NVEC):
    """C[0:mr, 0:16*nvec] (int32, row stride ldc bytes) += A' strip . B' panel over kq k-quads.
    a_addr: packed A tile (row r at byte 4*r, k-quads 4*MR bytes apart); b_addr: panel, 64*nvec bytes
    per k-quad."""

    @intrinsic
    def ukernel(typingctx, a_addr, b_addr, kq, c_addr, ldc):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            a_addr, b_addr, kq, c_addr, ldc = args
            i64, i32 = ir.IntType(64), ir.IntType(32)
            v16i32 = ir.VectorType(i32, 16)
            dp = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v16i32, [v16i32, v16i32, v16i32]),
                "llvm.x86.avx512.vpdpbusd.512")
            c64 = lambda v: ir.Constant(i64, v)  # noqa: E731
            zero16 = ir.Constant(ir.VectorType(i32, 16), None)
            bstride = 64 * nvec

            c_rows = [builder.add(c_addr, builder.mul(c64(r), ldc)) for r in range(mr)]
            acc0 = []
            for r in range(mr):
                for j in range(nvec):
                    p = builder.inttoptr(builder.add(c_rows[r], c64(64 * j)), v16i32.as_pointer())
                    acc0.append(builder.load(p, align=4))
            entry = builder.block
            loop = builder.append_basic_block("qrt_vnni_loop")
            done = builder.append_basic_block("qrt_vnni_done")
            builder.cbranch(builder.icmp_signed(">", kq, c64(0)), loop, done)

            builder.position_at_end(loop)
            k = builder.phi(i64, "k")
            k.add_incoming(c64(0), entry)
            phis = []
            for v in acc0:
                ph = builder.phi(v16i32)
                ph.add_incoming(v, entry)
                phis.append(ph)
            boff = builder.add(b_addr, builder.mul(k, c64(bstride)))
            bvec = []
            for j in range(nvec):
                p = builder.inttoptr(builder.add(boff, c64(64 * j)), v16i32.as_pointer())
                bvec.append(builder.load(p, align=4))
            aoff = builder.add(a_addr, builder.mul(k, c64(4 * MR)))
            new = []
            for r in range(mr):
                p = builder.inttoptr(builder.add(aoff, c64(4 * r)), i32.as_pointer())
                s = builder.load(p, align=4)
                bc = builder.insert_element(ir.Constant(v16i32, ir.Undefined), s, ir.Constant(i32, 0))
                av = builder.shuffle_vector(bc, ir.Constant(v16i32, ir.Undefined), zero16)
                for j in range(nvec):
                    new.append(builder.call(dp, [phis[r * nvec + j], av, bvec[j]]))
            k1 = builder.add(k, c64(1))
            k.add_incoming(k1, builder.block)
            for ph, v in zip(phis, new):
                ph.add_incoming(v, builder.block)
            builder.cbranch(builder.icmp_signed("<", k1, kq), loop, done)

            builder.position_at_end(done)
            final = []
            for idx, v0 in enumerate(acc0):
                ph = builder.phi(v16i32)
                ph.add_incoming(v0, entry)
                ph.add_incoming(new[idx], loop)
                final.append(ph)
            for idx, ph in enumerate(final):
                r, j = divmod(idx, nvec)
                p = builder.inttoptr(builder.add(c_rows[r], c64(64 * j)), v16i32.as_pointer())
                builder.store(ph, p, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return ukernel


_uk6, _uk5, _uk4, _uk3, _uk2, _uk1 = (_make_ukernel(r) for r in (6, 5, 4, 3, 2, 1))


@njit(cache=True, inline="always")
def _ukernel(mr, a_addr, b_addr, kq, c_addr, ldc):
    if mr == 6:
        _uk6(a_addr, b_addr, kq, c_addr, ldc)
    elif mr == 5:
        _uk5(a_addr, b_addr, kq, c_addr, ldc)
    elif mr == 4:
        _uk4(a_addr, b_addr, kq, c_addr, ldc)
    elif mr == 3:
        _uk3(a_addr, b_addr, kq, c_addr, ldc)
    elif mr == 2:
        _uk2(a_addr, b_addr, kq, c_addr, ldc)
    elif mr == 1:
        _uk1(a_addr, b_addr, kq, c_addr, ldc)


def pack_b(w: np.ndarray, zero_point: np.ndarray):
    """(N, K) s8/u8 weights -> (packed int8 (N/64, Kp/4, 64, 4), zw' int32 (N,), colsum(w') int64 (N,))."""
    n, k = w.shape
    kp = round_up(max(k, 1), KALIGN)
    npad = round_up(max(n, 1), NRV)
    shift = 128 if w.dtype == np.uint8 else 0
    ws = w.astype(np.int16) - shift
    full = np.zeros((npad, kp), np.int8)
    full[:n, :k] = ws.astype(np.int8)
    packed = np.ascontiguousarray(full.reshape(npad // NRV, NRV, kp // 4, 4).transpose(0, 2, 1, 3))
    zw = zero_point.astype(np.int64) - shift
    colsum = ws.astype(np.int64).sum(axis=1)
    return packed, zw, colsum


def column_correction(colsum: np.ndarray, zw: np.ndarray, za: int, k: int) -> np.ndarray:
    """-za'*colsum(w')[n] + K*za'*zw'[n], wrapped to int32 (exact modulo 2^32)."""
    c = -np.int64(za) * colsum + np.int64(k) * np.int64(za) * zw
    return (c & 0xFFFFFFFF).astype(np.uint32).view(np.int32)


@njit(cache=True)
def prep_a(a, signed, kp, mr):
    """(M, K) uint8 view -> (packed uint8 (MT, kp/4, 4*mr) of a', int32 row sums of a')."""
    m, k = a.shape
    mt = (m + mr - 1) // mr
    out = np.zeros((mt, kp // 4, 4 * mr), np.uint8)
    rs = np.zeros(m, np.int32)
    for t in range(mt):
        for r in range(min(mr, m - t * mr)):
            i = t * mr + r
            s = 0
            for j in range(k):
                v = a[i, j] ^ np.uint8(128) if signed else a[i, j]
                out[t, j >> 2, 4 * r + (j & 3)] = v
                s += np.int32(v)
            rs[i] = s
    return out, rs


@njit(cache=True, parallel=True)
def gemm(a, rowsum, m, b, zw, colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof, hif,
         out_q, out_f, out_i):
    """a: packed u8 A' (MT, Kp/4, 4*MR); b: packed s8 (NP, Kp/4, 64, 4). Same blocking as avx2.gemm;
    the exactness corrections are applied to the tile before the epilogue."""
    np_, kq, _, _ = b.shape
    nmb = (m + mb - 1) // mb
    nnb = (np_ + npb - 1) // npb
    ldc = npb * NRV * 4
    atile = kq * MR * 4
    for t in prange(nmb * nnb):
        ib = t // nnb
        jb = t - ib * nnb
        r0 = ib * mb
        rows = min(mb, m - r0)
        p0 = jb * npb
        pn = min(npb, np_ - p0)
        tile = np.zeros((mb, npb * NRV), np.int32)
        a0 = a.ctypes.data + (r0 // MR) * atile
        t0 = tile.ctypes.data
        b0 = b.ctypes.data
        for k0 in range(0, kq, kcq):
            kl = min(kcq, kq - k0)
            for p in range(pn):
                bp = b0 + ((p0 + p) * kq + k0) * (4 * NRV)
                for i in range(0, rows, MR):
                    _ukernel(min(MR, rows - i), a0 + (i // MR) * atile + k0 * (4 * MR), bp, kl,
                             t0 + i * ldc + p * (4 * NRV), ldc)
        cols = min(pn * NRV, n - p0 * NRV)
        for i in range(rows):
            rsi = np.int64(rowsum[r0 + i])
            for j in range(cols):
                c = p0 * NRV + j
                v = np.int64(tile[i, j]) + np.int64(colcorr[c]) - zw[c] * rsi
                tile[i, j] = np.int32(np.uint32(v & 0xFFFFFFFF))  # wrap: exact mod 2^32
        epilogue_tile(tile, r0, rows, 0, cols, p0 * NRV, mode, bias, mult, zpf, lof, hif,
                      out_q, out_f, out_i)
