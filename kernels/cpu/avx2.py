"""AVX2 path: exact int8 GEMM on ``vpmaddwd`` (llvm.x86.avx2.pmadd.wd), i16 pairs -> int32.

Not ``vpmaddubsw``: it saturates its i16 pair sums (255*127*2 > 32767), so it is not exact for u8*s8.
Operands are the shared int16 formats of common.py (zero points already subtracted), so the kernel
computes sum_k (a - za)(w - zw) directly, for u8 or s8 activations and s8 or u8 weights alike.

Micro-kernel: an ``@intrinsic`` emitting LLVM IR for an MR x 16 register tile (MR*2 ymm accumulators
held as loop phis, i.e. SSA values), one variant per row count 1..MR built from the same Python
generator (no generated source files needed, so ``cache=True`` works).

Never import this module on a CPU without AVX2 (kernels/cpu/__init__.py checks the host features).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import cgutils, types
from numba.extending import intrinsic

from qrt.kernels.cpu.common import (NR, apply_table, epilogue_tile, im2col_image,
                                     pointwise_image, prep_a_i16)

MR = 6  # rows of the register tile: 6 x 16 int32 = 12 ymm accumulators
NVEC = NR // 8


def _make_ukernel(mr: int, nvec: int = NVEC):
    """C[0:mr, 0:8*nvec] (int32, row stride ldc bytes) += A[0:mr, 0:2*kp2] . B_panel over kp2 k-pairs.

    a_addr: packed A tile, MR (row) pairs of int16 per k-pair (row r at byte 4*r, k-pairs 4*MR apart);
    b_addr: int16 panel rows of 16*nvec i16 (one per k-pair)."""

    @intrinsic
    def ukernel(typingctx, a_addr, b_addr, kp2, c_addr, ldc):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            a_addr, b_addr, kp2, c_addr, ldc = args
            i64, i32, i16 = ir.IntType(64), ir.IntType(32), ir.IntType(16)
            v8i32, v16i16 = ir.VectorType(i32, 8), ir.VectorType(i16, 16)
            pmadd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v8i32, [v16i16, v16i16]), "llvm.x86.avx2.pmadd.wd")
            c64 = lambda v: ir.Constant(i64, v)  # noqa: E731
            zero8 = ir.Constant(ir.VectorType(i32, 8), None)
            bstride = 32 * nvec  # bytes per k-pair row of the panel

            c_rows = [builder.add(c_addr, builder.mul(c64(r), ldc)) for r in range(mr)]
            a_rows = [builder.add(a_addr, c64(4 * r)) for r in range(mr)]
            acc0 = []
            for r in range(mr):
                for j in range(nvec):
                    p = builder.inttoptr(builder.add(c_rows[r], c64(32 * j)), v8i32.as_pointer())
                    acc0.append(builder.load(p, align=4))

            entry = builder.block
            loop = builder.append_basic_block("qrt_uk_loop")
            done = builder.append_basic_block("qrt_uk_done")
            builder.cbranch(builder.icmp_signed(">", kp2, c64(0)), loop, done)

            builder.position_at_end(loop)
            k = builder.phi(i64, "k")
            k.add_incoming(c64(0), entry)
            phis = []
            for v in acc0:
                ph = builder.phi(v8i32)
                ph.add_incoming(v, entry)
                phis.append(ph)
            boff = builder.add(b_addr, builder.mul(k, c64(bstride)))
            bvec = []
            for j in range(nvec):
                p = builder.inttoptr(builder.add(boff, c64(32 * j)), v16i16.as_pointer())
                bvec.append(builder.load(p, align=2))
            koff = builder.mul(k, c64(4 * MR))
            new = []
            for r in range(mr):
                p = builder.inttoptr(builder.add(a_rows[r], koff), i32.as_pointer())
                s = builder.load(p, align=2)
                bc = builder.insert_element(ir.Constant(v8i32, ir.Undefined), s, ir.Constant(i32, 0))
                bc = builder.shuffle_vector(bc, ir.Constant(v8i32, ir.Undefined), zero8)
                av = builder.bitcast(bc, v16i16)
                for j in range(nvec):
                    prod = builder.call(pmadd, [av, bvec[j]])
                    new.append(builder.add(phis[r * nvec + j], prod))
            k1 = builder.add(k, c64(1))
            k.add_incoming(k1, builder.block)
            for ph, v in zip(phis, new):
                ph.add_incoming(v, builder.block)
            builder.cbranch(builder.icmp_signed("<", k1, kp2), loop, done)

            builder.position_at_end(done)
            final = []
            for idx, v0 in enumerate(acc0):  # all phis first: they must head the block
                ph = builder.phi(v8i32)
                ph.add_incoming(v0, entry)
                ph.add_incoming(new[idx], loop)
                final.append(ph)
            for idx, ph in enumerate(final):
                r, j = divmod(idx, nvec)
                p = builder.inttoptr(builder.add(c_rows[r], c64(32 * j)), v8i32.as_pointer())
                builder.store(ph, p, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return ukernel


_uk6, _uk5, _uk4, _uk3, _uk2, _uk1 = (_make_ukernel(r) for r in (6, 5, 4, 3, 2, 1))


@njit(cache=True, inline="always")
def _ukernel(mr, a_addr, b_addr, kp2, c_addr, ldc):
    if mr == 6:
        _uk6(a_addr, b_addr, kp2, c_addr, ldc)
    elif mr == 5:
        _uk5(a_addr, b_addr, kp2, c_addr, ldc)
    elif mr == 4:
        _uk4(a_addr, b_addr, kp2, c_addr, ldc)
    elif mr == 3:
        _uk3(a_addr, b_addr, kp2, c_addr, ldc)
    elif mr == 2:
        _uk2(a_addr, b_addr, kp2, c_addr, ldc)
    elif mr == 1:
        _uk1(a_addr, b_addr, kp2, c_addr, ldc)


@njit(cache=True, inline="always")
def _gemm_task(t, nnb, a, m, b, n, mb, npb, kc2, mode, bias, mult, zpf, lof, hif, out_q, out_f,
               out_i):
    """One task of `gemm`: the row block x panel block `t`, accumulated then stored via the epilogue."""
    np_, kp2, _ = b.shape
    atile = kp2 * MR * 4  # bytes per packed A row tile
    ib = t // nnb
    jb = t - ib * nnb
    r0 = ib * mb
    rows = min(mb, m - r0)
    p0 = jb * npb
    pn = min(npb, np_ - p0)
    # Only as wide as the panels this task owns: zeroing a full npb-panel tile for a layer with
    # few output channels cost more than its multiply-adds.
    ldc = pn * NR * 4
    tile = np.zeros((mb, pn * NR), np.int32)
    a0 = a.ctypes.data + (r0 // MR) * atile
    t0 = tile.ctypes.data
    b0 = b.ctypes.data
    for k0 in range(0, kp2, kc2):
        kl = min(kc2, kp2 - k0)
        for p in range(pn):
            bp = b0 + ((p0 + p) * kp2 + k0) * (4 * NR)
            for i in range(0, rows, MR):
                _ukernel(min(MR, rows - i), a0 + (i // MR) * atile + k0 * (4 * MR), bp, kl,
                         t0 + i * ldc + p * (4 * NR), ldc)
    cols = min(pn * NR, n - p0 * NR)
    epilogue_tile(tile, r0, rows, 0, cols, p0 * NR, mode, bias, mult, zpf, lof, hif,
                  out_q, out_f, out_i)


@njit(cache=True, parallel=True)
def gemm(a, m, b, n, mb, npb, kc2, mode, bias, mult, zpf, lof, hif, out_q, out_f, out_i):
    """a: packed int16 A (MT, Kp/2, 2*MR) for m rows; b: int16 (NP, Kp/2, 2*NR) panels.
    Tasks = (row block of mb rows, a multiple of MR) x (npb panels), spread over the threads; each task
    accumulates its block in an int32 tile (K in chunks of kc2 k-pairs so the B chunk stays in L1) and
    applies the epilogue to it right away."""
    nmb = (m + mb - 1) // mb
    nnb = (b.shape[0] + npb - 1) // npb
    for t in prange(nmb * nnb):
        _gemm_task(t, nnb, a, m, b, n, mb, npb, kc2, mode, bias, mult, zpf, lof, hif, out_q, out_f,
                   out_i)


@njit(cache=True)
def gemm_serial(a, m, b, n, mb, npb, kc2, mode, bias, mult, zpf, lof, hif, out_q, out_f, out_i):
    """`gemm` on the calling thread: for work too small to pay for a parallel launch."""
    nmb = (m + mb - 1) // mb
    nnb = (b.shape[0] + npb - 1) // npb
    for t in range(nmb * nnb):
        _gemm_task(t, nnb, a, m, b, n, mb, npb, kc2, mode, bias, mult, zpf, lof, hif, out_q, out_f,
                   out_i)


@njit(cache=True)
def conv_nchw(x, signed, geo, b, n, mb, npb, kc2, mode, bias, mult, zpf, lof, hif, table, flip,
              par, out_q, out_f, out_i):
    """A whole integer conv (group 1) in one call: per image, im2col into the packed A, the GEMM with
    the epilogue storing straight into the NCHW output (a transposed view: no copy afterwards), then
    the optional per-channel table (`table` (N, 256) of raw bytes, or 0 rows for none).
    x: (N, C, H, W) uint8 view; geo: int64 [zx, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, kp, point];
    outputs (N, M, oh*ow), the unused ones (1, 1, 1) dummies. `par`: the parallel GEMM."""
    zx, kh, kw, sh, sw = geo[0], geo[1], geo[2], geo[3], geo[4]
    pt, pl, dh, dw, oh, ow, kp = geo[5], geo[6], geo[7], geo[8], geo[9], geo[10], geo[11]
    p = oh * ow
    for img in range(x.shape[0]):
        a = np.zeros(((p + MR - 1) // MR, kp // 2, 2 * MR), np.int16)
        if geo[12]:
            pointwise_image(x, img, signed, zx, a)
        else:
            im2col_image(x, img, signed, zx, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, a)
        oq = out_q[min(img, out_q.shape[0] - 1)].T
        of = out_f[min(img, out_f.shape[0] - 1)].T
        oi = out_i[min(img, out_i.shape[0] - 1)].T
        if par:
            gemm(a, p, b, n, mb, npb, kc2, mode, bias, mult, zpf, lof, hif, oq, of, oi)
        else:
            gemm_serial(a, p, b, n, mb, npb, kc2, mode, bias, mult, zpf, lof, hif, oq, of, oi)
    if table.shape[0] > 0:
        apply_table(out_q, table, flip)


@njit(cache=True)
def linear_2d(a, signed, za, kp, b, n, mb, npb, kc2, mode, bias, mult, zpf, lof, hif, table, flip,
              par, out_q, out_f, out_i):
    """(M, K) 8-bit activations (uint8 view) x packed weights in one call: pack A, GEMM with the
    epilogue, then the optional table along the last axis (`table` (N, 256) raw bytes, 0 rows for
    none). Outputs (M, N); the unused ones are dummies."""
    m = a.shape[0]
    ap = prep_a_i16(a, signed, za, kp, MR)
    if par:
        gemm(ap, m, b, n, mb, npb, kc2, mode, bias, mult, zpf, lof, hif, out_q, out_f, out_i)
    else:
        gemm_serial(ap, m, b, n, mb, npb, kc2, mode, bias, mult, zpf, lof, hif, out_q, out_f, out_i)
    if table.shape[0] > 0:
        for i in range(m):
            for j in range(n):
                out_q[i, j] = table[j, out_q[i, j] ^ flip]
