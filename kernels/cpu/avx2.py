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

from qrt.kernels.cpu.common import (MODE_Q_WIDE_BIAS, NR, apply_table_avx2, epilogue_tile,
                                     im2col_image, im2col_panels, ir_requant8, ir_splat,
                                     matrix_panels, pointwise_image, pointwise_panels, prep_a_i16)

MR = 6  # rows of the register tile: 6 x 16 int32 = 12 ymm accumulators
# 8-bit outputs requantized in the micro-kernel's registers (False: through the int32 tile and
# common.epilogue_tile, the reference-shaped path; kept for comparison)
FUSED_REQUANT = True
NVEC = NR // 8


_I64, _I32, _I16 = ir.IntType(64), ir.IntType(32), ir.IntType(16)
_V8I32, _V16I16 = ir.VectorType(_I32, 8), ir.VectorType(_I16, 16)


def _c64(v):
    return ir.Constant(_I64, v)


def _load_tile(builder, c_addr, ldc, mr, nvec):
    """The mr x 8*nvec int32 tile at c_addr (row stride ldc bytes) as a list of <8 x i32>."""
    c_rows = [builder.add(c_addr, builder.mul(_c64(r), ldc)) for r in range(mr)]
    return [builder.load(builder.inttoptr(builder.add(c_rows[r], _c64(32 * j)),
                                          _V8I32.as_pointer()), align=4)
            for r in range(mr) for j in range(nvec)], c_rows


def _emit_k_loop(builder, a_addr, b_addr, kp2, acc0, mr, nvec):
    """acc0 (mr*nvec <8 x i32>, held as loop phis) += A strip . B panel over kp2 k-pairs, one
    vpmaddwd per (row, vector) and k-pair; returns the final accumulators (phis of the exit
    block). a_addr: packed A tile (row r at byte 4*r, k-pairs 4*MR bytes apart); b_addr: int16
    panel rows of 16*nvec i16, one per k-pair."""
    pmadd = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_V8I32, [_V16I16, _V16I16]), "llvm.x86.avx2.pmadd.wd")
    zero8 = ir.Constant(_V8I32, None)
    bstride = 32 * nvec  # bytes per k-pair row of the panel
    a_rows = [builder.add(a_addr, _c64(4 * r)) for r in range(mr)]

    entry = builder.block
    loop = builder.append_basic_block("qrt_uk_loop")
    done = builder.append_basic_block("qrt_uk_done")
    builder.cbranch(builder.icmp_signed(">", kp2, _c64(0)), loop, done)

    builder.position_at_end(loop)
    k = builder.phi(_I64, "k")
    k.add_incoming(_c64(0), entry)
    phis = []
    for v in acc0:
        ph = builder.phi(_V8I32)
        ph.add_incoming(v, entry)
        phis.append(ph)
    boff = builder.add(b_addr, builder.mul(k, _c64(bstride)))
    bvec = [builder.load(builder.inttoptr(builder.add(boff, _c64(32 * j)), _V16I16.as_pointer()),
                         align=2) for j in range(nvec)]
    koff = builder.mul(k, _c64(4 * MR))
    new = []
    for r in range(mr):
        sv = builder.load(builder.inttoptr(builder.add(a_rows[r], koff), _I32.as_pointer()),
                          align=2)
        bc = builder.insert_element(ir.Constant(_V8I32, ir.Undefined), sv, ir.Constant(_I32, 0))
        bc = builder.shuffle_vector(bc, ir.Constant(_V8I32, ir.Undefined), zero8)
        av = builder.bitcast(bc, _V16I16)
        for j in range(nvec):
            new.append(builder.add(phis[r * nvec + j], builder.call(pmadd, [av, bvec[j]])))
    k1 = builder.add(k, _c64(1))
    k.add_incoming(k1, builder.block)
    for ph, v in zip(phis, new):
        ph.add_incoming(v, builder.block)
    builder.cbranch(builder.icmp_signed("<", k1, kp2), loop, done)

    builder.position_at_end(done)
    final = []
    for idx, v0 in enumerate(acc0):  # all phis first: they must head the block
        ph = builder.phi(_V8I32)
        ph.add_incoming(v0, entry)
        ph.add_incoming(new[idx], loop)
        final.append(ph)
    return final


def _make_ukernel(mr: int, nvec: int = NVEC):
    """C[0:mr, 0:8*nvec] (int32, row stride ldc bytes) += A[0:mr, 0:2*kp2] . B_panel over kp2
    k-pairs (see _emit_k_loop for the operand formats)."""

    @intrinsic
    def ukernel(typingctx, a_addr, b_addr, kp2, c_addr, ldc):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            a_addr, b_addr, kp2, c_addr, ldc = args
            acc0, c_rows = _load_tile(builder, c_addr, ldc, mr, nvec)
            final = _emit_k_loop(builder, a_addr, b_addr, kp2, acc0, mr, nvec)
            for idx, v in enumerate(final):
                r, j = divmod(idx, nvec)
                builder.store(v, builder.inttoptr(builder.add(c_rows[r], _c64(32 * j)),
                                                  _V8I32.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return ukernel


_uk6, _uk5, _uk4, _uk3, _uk2, _uk1 = (_make_ukernel(r) for r in (6, 5, 4, 3, 2, 1))


def _make_ukernel_requant(mr: int, cont: bool, rowwise: bool = False, nvec: int = NVEC):
    """The micro-kernel with the requantize epilogue (mode 1) applied in registers, storing 8-bit
    codes straight to the output: no int32 tile round trip, and vector arithmetic where the tile
    epilogue was scalar. Accumulators start at zero (`cont` False: the whole K in this call) or
    from the int32 tile at c_addr (`cont` True: the last K chunk after earlier ones).
    Per element, exactly common.requant_one (for biases that cannot overflow, see below): int32
    add of the bias (here the sums' starting value), float32 conversion, float32 multiply (no FMA
    contraction: plain IR fmul/fadd), rint
    (ties to even), + zero point, clamp to [lof, hif], truncation, low byte stored.
    out_addr: byte address of C[0, 0]; rs / cs: byte strides of a row / a column of the output
    (a transposed NCHW view has rs = 1); only the first `ncols` (<= 16) columns are stored.
    bias_addr / mult_addr: int32 / float32 vectors of this panel's 16 columns (readable past n:
    the epilogue vectors are allocated padded to 16); with `rowwise`, the entries of the tile's
    first row instead, one per row (the channels-as-rows GEMM of `conv_nchw`).
    A full-width panel stored into unit-stride columns (cs = 1) is one 16-byte store per row; the
    general case stores byte by byte (the old NCHW epilogue: ~250 cycles a tile, more than the
    multiply-adds of a small-K layer)."""

    @intrinsic
    def ukernel(typingctx, a_addr, b_addr, kp2, c_addr, ldc, out_addr, rs, cs, ncols, bias_addr,
                mult_addr, zpf, lof, hif):
        ip = types.intp
        sig = types.void(ip, ip, ip, ip, ip, ip, ip, ip, ip, ip, ip, types.float32, types.float32,
                         types.float32)

        def codegen(context, builder, signature, args):
            (a_addr, b_addr, kp2, c_addr, ldc, out_addr, rs, cs, ncols, bias_addr, mult_addr, zpf,
             lof, hif) = args
            i32, i8 = _I32, ir.IntType(8)
            f32 = ir.FloatType()
            v8i32, v8f32 = _V8I32, ir.VectorType(f32, 8)
            c64 = _c64

            def splat(x, vt=v8f32):
                return ir_splat(builder, x, vt)
            bias_v, mult_v = [], []
            if rowwise:
                for r in range(mr):
                    bias_v.append(splat(builder.load(builder.inttoptr(
                        builder.add(bias_addr, c64(4 * r)), i32.as_pointer()), align=4), v8i32))
                    mult_v.append(splat(builder.load(builder.inttoptr(
                        builder.add(mult_addr, c64(4 * r)), f32.as_pointer()), align=4)))
            else:
                for j in range(nvec):
                    bias_v.append(builder.load(builder.inttoptr(
                        builder.add(bias_addr, c64(32 * j)), v8i32.as_pointer()), align=4))
                    mult_v.append(builder.load(builder.inttoptr(
                        builder.add(mult_addr, c64(32 * j)), v8f32.as_pointer()), align=4))
            # the bias starts the sums (or joins the earlier chunks' tile): plain int32 adds,
            # exact because the caller runs this only when |bias| + K*255*255 < 2**31 (mode 1;
            # else mode 3, the int32 tile and the saturating scalar epilogue)
            bias_of = [bias_v[idx // nvec if rowwise else idx % nvec] for idx in range(mr * nvec)]
            if cont:
                acc0, _ = _load_tile(builder, c_addr, ldc, mr, nvec)
                acc0 = [builder.add(a, b) for a, b in zip(acc0, bias_of)]
            else:
                acc0 = bias_of
            final = _emit_k_loop(builder, a_addr, b_addr, kp2, acc0, mr, nvec)
            zv, lov, hiv = splat(zpf), splat(lof), splat(hif)
            codes = []  # per row, per vector: <8 x i8>
            for idx, acc in enumerate(final):
                j = idx // nvec if rowwise else idx % nvec
                codes.append(ir_requant8(builder, acc, mult_v[j], zv, lov, hiv))
            row_addr = [builder.add(out_addr, builder.mul(c64(r), rs)) for r in range(mr)]
            full = builder.and_(builder.icmp_signed("==", cs, c64(1)),
                                builder.icmp_signed("==", ncols, c64(8 * nvec)))
            with builder.if_else(full, likely=True) as (whole_rows, by_byte):
                with whole_rows:
                    vt = ir.VectorType(i8, 8 * nvec)
                    for r in range(mr):
                        row = codes[r * nvec]
                        if nvec == 2:
                            row = builder.shuffle_vector(
                                row, codes[r * nvec + 1],
                                ir.Constant(ir.VectorType(i32, 16), list(range(16))))
                        builder.store(row, builder.inttoptr(row_addr[r], vt.as_pointer()),
                                      align=1)
                with by_byte:
                    for c in range(8 * nvec):  # column by column: guarded for a partial panel
                        with builder.if_then(builder.icmp_signed("<", c64(c), ncols),
                                             likely=True):
                            col_off = builder.mul(c64(c), cs)
                            for r in range(mr):
                                byte = builder.extract_element(codes[r * nvec + c // 8],
                                                               ir.Constant(i32, c % 8))
                                ptr = builder.inttoptr(builder.add(row_addr[r], col_off),
                                                       i8.as_pointer())
                                builder.store(byte, ptr)
            return context.get_dummy_value()

        return sig, codegen

    return ukernel


_ukq = {(r, c, w): _make_ukernel_requant(r, c, w)
        for r in (6, 5, 4, 3, 2, 1) for c in (False, True) for w in (False, True)}
_ukq6, _ukq5, _ukq4, _ukq3, _ukq2, _ukq1 = (_ukq[(r, False, False)] for r in (6, 5, 4, 3, 2, 1))
_ukc6, _ukc5, _ukc4, _ukc3, _ukc2, _ukc1 = (_ukq[(r, True, False)] for r in (6, 5, 4, 3, 2, 1))
_ukr6, _ukr5, _ukr4, _ukr3, _ukr2, _ukr1 = (_ukq[(r, False, True)] for r in (6, 5, 4, 3, 2, 1))
_ukt6, _ukt5, _ukt4, _ukt3, _ukt2, _ukt1 = (_ukq[(r, True, True)] for r in (6, 5, 4, 3, 2, 1))


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
def _ukernel_requant(mr, cont, a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                     m_addr, zpf, lof, hif):
    if cont:
        if mr == 6:
            _ukc6(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 5:
            _ukc5(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 4:
            _ukc4(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 3:
            _ukc3(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 2:
            _ukc2(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 1:
            _ukc1(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
    else:
        if mr == 6:
            _ukq6(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 5:
            _ukq5(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 4:
            _ukq4(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 3:
            _ukq3(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 2:
            _ukq2(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 1:
            _ukq1(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)


@njit(cache=True, inline="always")
def _ukernel_requant_rows(mr, cont, a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols,
                          b_addr2, m_addr, zpf, lof, hif):
    """`_ukernel_requant` with the epilogue's bias and multiplier per row (output channel)."""
    if cont:
        if mr == 6:
            _ukt6(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 5:
            _ukt5(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 4:
            _ukt4(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 3:
            _ukt3(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 2:
            _ukt2(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 1:
            _ukt1(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
    else:
        if mr == 6:
            _ukr6(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 5:
            _ukr5(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 4:
            _ukr4(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 3:
            _ukr3(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 2:
            _ukr2(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)
        elif mr == 1:
            _ukr1(a_addr, b_addr, kp2, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2, m_addr, zpf,
                  lof, hif)


@njit(cache=True, inline="always")
def _gemm_task_rows(t, nnb, a, m, b, n, mb, npb, kc2, bias, mult, zpf, lof, hif, out_q):
    """`_gemm_task_requant` for the channels-as-rows GEMM of an NCHW conv: A = the packed weights
    (m output channels), B = the packed activation panels (n output positions), out_q the (m, n)
    NCHW plane (unit-stride columns: whole-panel vector stores), bias/mult per row."""
    np_, kp2, _ = b.shape
    atile = kp2 * MR * 4
    ib = t // nnb
    jb = t - ib * nnb
    r0 = ib * mb
    rows = min(mb, m - r0)
    p0 = jb * npb
    pn = min(npb, np_ - p0)
    a0 = a.ctypes.data + (r0 // MR) * atile
    b0 = b.ctypes.data
    rs = out_q.strides[0]
    cs = out_q.strides[1]
    o0 = out_q.ctypes.data + r0 * rs
    bias0 = bias.ctypes.data + r0 * 4
    mult0 = mult.ctypes.data + r0 * 4
    kl_last = kp2 - (kp2 - 1) // kc2 * kc2 if kp2 > 0 else 0
    k_last = kp2 - kl_last
    ldc = pn * NR * 4
    tile = np.zeros((mb if k_last > 0 else 0, pn * NR), np.int32)
    t0 = tile.ctypes.data
    if k_last > 0:  # earlier K chunks into an int32 tile
        for k0 in range(0, k_last, kc2):
            kl = min(kc2, k_last - k0)
            for p in range(pn):
                bp = b0 + ((p0 + p) * kp2 + k0) * (4 * NR)
                for i in range(0, rows, MR):
                    _ukernel(min(MR, rows - i), a0 + (i // MR) * atile + k0 * (4 * MR), bp, kl,
                             t0 + i * ldc + p * (4 * NR), ldc)
    for p in range(pn):
        col = (p0 + p) * NR
        ncols = min(NR, n - col)
        bp = b0 + ((p0 + p) * kp2 + k_last) * (4 * NR)
        for i in range(0, rows, MR):
            _ukernel_requant_rows(min(MR, rows - i), k_last > 0,
                                  a0 + (i // MR) * atile + k_last * (4 * MR), bp, kl_last,
                                  t0 + i * ldc + p * (4 * NR), ldc, o0 + i * rs + col * cs, rs,
                                  cs, ncols, bias0 + i * 4, mult0 + i * 4, zpf, lof, hif)
    if k_last > 0:
        tile[0, 0] += 0  # a use after the raw-address calls keeps the tile alive until here


@njit(cache=True, parallel=True)
def _gemm_rows(a, m, b, n, mb, npb, kc2, bias, mult, zpf, lof, hif, out_q):
    nmb = (m + mb - 1) // mb
    nnb = (b.shape[0] + npb - 1) // npb
    for t in prange(nmb * nnb):
        _gemm_task_rows(t, nnb, a, m, b, n, mb, npb, kc2, bias, mult, zpf, lof, hif, out_q)


@njit(cache=True)
def _gemm_rows_serial(a, m, b, n, mb, npb, kc2, bias, mult, zpf, lof, hif, out_q):
    nmb = (m + mb - 1) // mb
    nnb = (b.shape[0] + npb - 1) // npb
    for t in range(nmb * nnb):
        _gemm_task_rows(t, nnb, a, m, b, n, mb, npb, kc2, bias, mult, zpf, lof, hif, out_q)


@njit(cache=True, inline="always")
def _gemm_task_requant(t, nnb, a, m, b, n, mb, npb, kc2, bias, mult, zpf, lof, hif, out_q):
    """`_gemm_task` for the 8-bit epilogue (mode 1), fused into the micro-kernel: a single-chunk K
    (the common small layer) needs no int32 tile at all; a longer K accumulates its earlier
    chunks in the tile and requantizes in the last one. bias/mult are readable to a multiple of
    16 entries (see qlinear._ep_args)."""
    np_, kp2, _ = b.shape
    atile = kp2 * MR * 4
    ib = t // nnb
    jb = t - ib * nnb
    r0 = ib * mb
    rows = min(mb, m - r0)
    p0 = jb * npb
    pn = min(npb, np_ - p0)
    a0 = a.ctypes.data + (r0 // MR) * atile
    b0 = b.ctypes.data
    rs = out_q.strides[0]
    cs = out_q.strides[1]
    o0 = out_q.ctypes.data + r0 * rs
    bias0 = bias.ctypes.data
    mult0 = mult.ctypes.data
    kl_last = kp2 - (kp2 - 1) // kc2 * kc2 if kp2 > 0 else 0
    k_last = kp2 - kl_last
    ldc = pn * NR * 4
    tile = np.zeros((mb if k_last > 0 else 0, pn * NR), np.int32)
    t0 = tile.ctypes.data
    if k_last > 0:  # earlier K chunks into an int32 tile
        for k0 in range(0, k_last, kc2):
            kl = min(kc2, k_last - k0)
            for p in range(pn):
                bp = b0 + ((p0 + p) * kp2 + k0) * (4 * NR)
                for i in range(0, rows, MR):
                    _ukernel(min(MR, rows - i), a0 + (i // MR) * atile + k0 * (4 * MR), bp, kl,
                             t0 + i * ldc + p * (4 * NR), ldc)
    for p in range(pn):
        col = (p0 + p) * NR
        ncols = min(NR, n - col)
        bp = b0 + ((p0 + p) * kp2 + k_last) * (4 * NR)
        for i in range(0, rows, MR):
            _ukernel_requant(min(MR, rows - i), k_last > 0,
                             a0 + (i // MR) * atile + k_last * (4 * MR), bp, kl_last,
                             t0 + i * ldc + p * (4 * NR), ldc, o0 + i * rs + col * cs, rs, cs,
                             ncols, bias0 + col * 4, mult0 + col * 4, zpf, lof, hif)
    if k_last > 0:
        tile[0, 0] += 0  # a use after the raw-address calls keeps the tile alive until here


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
    if mode == 1 and FUSED_REQUANT:
        for t in prange(nmb * nnb):
            _gemm_task_requant(t, nnb, a, m, b, n, mb, npb, kc2, bias, mult, zpf, lof, hif, out_q)
        return
    md = 1 if mode == MODE_Q_WIDE_BIAS else mode
    for t in prange(nmb * nnb):
        _gemm_task(t, nnb, a, m, b, n, mb, npb, kc2, md, bias, mult, zpf, lof, hif, out_q, out_f,
                   out_i)


@njit(cache=True)
def gemm_serial(a, m, b, n, mb, npb, kc2, mode, bias, mult, zpf, lof, hif, out_q, out_f, out_i):
    """`gemm` on the calling thread: for work too small to pay for a parallel launch."""
    nmb = (m + mb - 1) // mb
    nnb = (b.shape[0] + npb - 1) // npb
    if mode == 1 and FUSED_REQUANT:
        for t in range(nmb * nnb):
            _gemm_task_requant(t, nnb, a, m, b, n, mb, npb, kc2, bias, mult, zpf, lof, hif, out_q)
        return
    md = 1 if mode == MODE_Q_WIDE_BIAS else mode
    for t in range(nmb * nnb):
        _gemm_task(t, nnb, a, m, b, n, mb, npb, kc2, md, bias, mult, zpf, lof, hif, out_q, out_f,
                   out_i)


@njit(cache=True)
def conv_nchw(x, signed, geo, b, n, mb, npb, kc2, mode, bias, mult, zpf, lof, hif, table, flip,
              par, out_q, out_f, out_i):
    """A whole integer conv (group 1) in one call: per image, im2col into the packed A, the GEMM with
    the epilogue storing straight into the NCHW output (a transposed view: no copy afterwards), then
    the optional per-channel table (`table` (N, 256) of raw bytes, or 0 rows for none).
    x: (N, C, H, W) uint8 view; geo: int64 [zx, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, kp, point,
    rows]; rows = 1 is `conv_nchw_rows` (channels as rows), this is the positions-as-rows form,
    whose epilogue stores the transposed tile byte by byte.
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
        apply_table_avx2(out_q, table, flip)


@njit(cache=True)
def conv_nchw_rows(x, signed, geo, b, n, mb, npb, kc2, mode, bias, mult, zpf, lof, hif, table,
                   flip, par, out_q, out_f, out_i):
    """`conv_nchw` with the output channels as the GEMM's rows (geo[13] = 1, mode 1 only): b holds
    the weights packed as A (common.pack_b_i16 with nr = MR) and each image's activations are packed as B
    panels of 16 output positions, so every output row is NCHW-contiguous (whole-panel vector
    stores). A function of its own so that a process loads only the form its convs use (each
    cached kernel costs load time at the first call)."""
    zx, kh, kw, sh, sw = geo[0], geo[1], geo[2], geo[3], geo[4]
    pt, pl, dh, dw, oh, ow, kp = geo[5], geo[6], geo[7], geo[8], geo[9], geo[10], geo[11]
    p = oh * ow
    for img in range(x.shape[0]):
        panels = np.empty(((p + NR - 1) // NR, kp // 2, 2 * NR), np.int16)
        if geo[12]:
            pointwise_panels(x, img, signed, zx, panels)
        else:
            im2col_panels(x, img, signed, zx, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, kp,
                          panels)
        oq = out_q[img]
        if par:
            _gemm_rows(b, n, panels, p, mb, npb, kc2, bias, mult, zpf, lof, hif, oq)
        else:
            _gemm_rows_serial(b, n, panels, p, mb, npb, kc2, bias, mult, zpf, lof, hif, oq)
    if table.shape[0] > 0:
        apply_table_avx2(out_q, table, flip)


@njit(cache=True, inline="always")
def _qmatmul_one(a, b, t, signed_a, signed_b, za, zb, kp, mb, npb, kc2, bias, mult, zpf, lof,
                 hif, out_q):
    m = a.shape[1]
    n = b.shape[2]
    ap = prep_a_i16(a[t], signed_a, za, kp, MR)
    panels = np.empty(((n + NR - 1) // NR, kp // 2, 2 * NR), np.int16)
    matrix_panels(b[t], signed_b, zb, panels)
    _gemm_rows_serial(ap, m, panels, n, mb, npb, kc2, bias, mult, zpf, lof, hif, out_q[t])


@njit(cache=True, parallel=True)
def qmatmul_rows(a, b, signed_a, signed_b, za, zb, kp, mb, npb, kc2, bias, mult, zpf, lof, hif,
                 out_q):
    """Batched MatMul of two 8-bit activations with an 8-bit output (mode 1 only): per batch
    index t, a[t] (M, K) packed as the GEMM's A, b[t] (K, N) packed as B panels of 16 columns,
    then the channels-as-rows GEMM with the register epilogue (rows of out_q[t] are contiguous:
    whole-panel stores). a, b, out_q: (T, M, K), (T, K, N), (T, M, N) uint8 views; za/zb the
    zero points as values (s8 codes are read as signed); bias/mult per row, readable to a
    multiple of MR entries past M. Batch indices run in parallel; `qmatmul_rows_serial` is the
    one-thread twin."""
    for t in prange(a.shape[0]):
        _qmatmul_one(a, b, t, signed_a, signed_b, za, zb, kp, mb, npb, kc2, bias, mult, zpf,
                     lof, hif, out_q)


@njit(cache=True)
def qmatmul_rows_serial(a, b, signed_a, signed_b, za, zb, kp, mb, npb, kc2, bias, mult, zpf, lof,
                        hif, out_q):
    for t in range(a.shape[0]):
        _qmatmul_one(a, b, t, signed_a, signed_b, za, zb, kp, mb, npb, kc2, bias, mult, zpf,
                     lof, hif, out_q)


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
