"""VNNI path (AVX-512): u8 x s8 GEMM on ``vpdpbusd`` (llvm.x86.avx512.vpdpbusd.512), PERF-NOTES design.

The hardware kernel is compiled only after ``features.vnni_implementation()`` said "hardware" (the
host has avx512vnni + avx512bw): LLVM aborts the whole process if the intrinsic is compiled on any
other CPU. Importing this module compiles nothing.

Two implementations of the one instruction, chosen per call by :func:`gemm`:
- ``hardware``: the ``llvm.x86.avx512.vpdpbusd.512`` intrinsic (a CPU with AVX-512 VNNI);
- ``emulated`` (``QRT_VNNI_EMULATE=1`` or ``features.emulate_vnni()``): the same operation in
  plain LLVM IR (per int32 lane: its four bytes zero-extended (a) and sign-extended (b) by shifts,
  four i32 multiplies, wrapping adds into the accumulator lane), which LLVM lowers on any CPU.
Everything else -- packing, the 6x64 register tile and its loop, the k-quad blocking, the s8 shift
and exactness corrections, the epilogue -- is the same code for both.
The emulation lets the kernel *logic* be tested bit-exact on any CPU; it proves nothing about the
instruction itself (operand order, semantics as the CPU implements them): that needs a VNNI CPU,
where tests/kernels run the hardware kernel and its instruction-level check too.

Numba's on-disk cache cannot mix the two: each implementation has its own @njit functions
(``_gemm_hardware`` / ``_gemm_emulated``, and the ``dpbusd_*`` probes), so their cache index files
differ by qualified name, and their cache entries carry the CPU name and features as well. Both
implementations are generated here, in this one file, so that editing either invalidates both caches
(Numba keys a cache on the source file of the function, not on the files of what it inlines).

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

from qrt.kernels.cpu import features
from qrt.kernels.cpu.common import (EPILOGUE_PAD, KALIGN, MODE_Q_WIDE_BIAS, _tap_offsets,
                                     _tile_windows, apply_table, apply_table_avx2, epilogue_tile,
                                     ir_requant8, ir_splat, padded, round_up)

MR = 6
NRV = 64  # columns per panel: 4 zmm of int32
NVEC = NRV // 16
assert EPILOGUE_PAD % NRV == 0  # the register epilogue reads a whole panel of epilogue vectors
# 8-bit outputs requantized in the micro-kernel's registers (False: through the int32 tile and
# common.epilogue_tile, the reference-shaped path; kept for comparison)
FUSED_REQUANT = True
IMPLEMENTATIONS = ("hardware", "emulated")

_I8, _I32 = ir.IntType(8), ir.IntType(32)
_V16I32 = ir.VectorType(_I32, 16)


# ---------------------------------------------------------------- the instruction, two ways
def _dpbusd_hardware(builder, acc, a, b):
    """acc + vpdpbusd(a, b) on the real instruction (AVX-512 VNNI only!)."""
    dp = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_V16I32, [_V16I32, _V16I32, _V16I32]),
        "llvm.x86.avx512.vpdpbusd.512")
    return builder.call(dp, [acc, a, b])


def _dpbusd_emulated(builder, acc, a, b):
    """The same in plain LLVM IR, following Intel's pseudo-code for VPDPBUSD (src1=acc, src2=a,
    src3=b): for lane i, acc[i] + sum_j zext(a.byte[4i+j]) * sext(b.byte[4i+j]), j = 0..3 (byte j of
    a lane is bits 8j..8j+7, little-endian), every add wrapping modulo 2^32 (VPDPBUSD does not
    saturate; VPDPBUSDS would). The products are exact in i32 (|u8 * s8| <= 32640). Only 16 x i32
    shifts, multiplies and adds: cheap to compile, and LLVM lowers them on any target."""
    out = acc
    for j in range(4):
        aj = builder.and_(builder.lshr(a, _splat(8 * j)), _splat(0xFF))  # zext(a.byte[4i+j])
        bj = builder.ashr(builder.shl(b, _splat(24 - 8 * j)), _splat(24))  # sext(b.byte[4i+j])
        out = builder.add(out, builder.mul(aj, bj))
    return out


def _splat(v: int):
    return ir.Constant(_V16I32, [v] * 16)


_DPBUSD = {"hardware": _dpbusd_hardware, "emulated": _dpbusd_emulated}


def _make_dpbusd_probe(impl: str):
    """Intrinsic out[0:16] = vpdpbusd(acc[0:16], a[0:64 bytes], b[0:64 bytes]) on addresses: the
    instruction alone, for the instruction-level test against a numpy model."""
    dot = _DPBUSD[impl]

    @intrinsic
    def probe(typingctx, acc_addr, a_addr, b_addr, out_addr):
        sig = types.void(types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            acc, a, b = (builder.load(builder.inttoptr(x, _V16I32.as_pointer()), align=4)
                         for x in args[:3])
            builder.store(dot(builder, acc, a, b), builder.inttoptr(args[3], _V16I32.as_pointer()),
                          align=4)
            return context.get_dummy_value()

        return sig, codegen

    return probe


_probe_hw, _probe_emu = _make_dpbusd_probe("hardware"), _make_dpbusd_probe("emulated")


@njit(cache=True)
def _dpbusd_probe_hardware(acc, a, b):
    out = np.empty(16, np.int32)
    _probe_hw(acc.ctypes.data, a.ctypes.data, b.ctypes.data, out.ctypes.data)
    return out


@njit(cache=True)
def _dpbusd_probe_emulated(acc, a, b):
    out = np.empty(16, np.int32)
    _probe_emu(acc.ctypes.data, a.ctypes.data, b.ctypes.data, out.ctypes.data)
    return out


def dpbusd(acc: np.ndarray, a: np.ndarray, b: np.ndarray, impl: str | None = None) -> np.ndarray:
    """One vpdpbusd on (16,) int32 acc, (64,) uint8 a, (64,) int8 b through `impl` (default: the
    current vnni implementation; 'hardware' is refused on a CPU without VNNI)."""
    impl = _check_impl(impl)
    acc = np.ascontiguousarray(acc, np.int32).reshape(16)
    a = np.ascontiguousarray(a).view(np.uint8).reshape(64)
    b = np.ascontiguousarray(b).view(np.int8).reshape(64)
    fn = _dpbusd_probe_emulated if impl == "emulated" else _dpbusd_probe_hardware
    return fn(acc, a, b)


def _check_impl(impl: str | None) -> str:
    if impl is None:
        return features.vnni_implementation()
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown vnni implementation {impl!r}; choose one of {IMPLEMENTATIONS}")
    if impl == "hardware":
        missing = features.missing_features("vnni")
        if missing:  # never compile the intrinsic here: LLVM would abort the process
            raise features.KernelPathError(
                f"the hardware vpdpbusd needs CPU features {', '.join(missing)} that this CPU "
                "lacks")
    return impl


# ---------------------------------------------------------------- micro-kernels
def _c64(v):
    return ir.Constant(ir.IntType(64), v)


def _emit_k_loop(builder, dot, a_addr, b_addr, kq, acc0, mr, nvec):
    """acc0 (mr*nvec <16 x i32>, held as loop phis) += A' strip . B' panel over kq k-quads, one
    vpdpbusd (`dot`) per (row, vector) and k-quad; returns the final accumulators (phis of the
    exit block). a_addr: packed A tile (row r at byte 4*r, k-quads 4*MR bytes apart); b_addr:
    panel, 64*nvec bytes per k-quad."""
    i32, v16i32 = _I32, _V16I32
    zero16 = ir.Constant(v16i32, None)
    bstride = 64 * nvec
    entry = builder.block
    loop = builder.append_basic_block("qrt_vnni_loop")
    done = builder.append_basic_block("qrt_vnni_done")
    builder.cbranch(builder.icmp_signed(">", kq, _c64(0)), loop, done)

    builder.position_at_end(loop)
    k = builder.phi(ir.IntType(64), "k")
    k.add_incoming(_c64(0), entry)
    phis = []
    for v in acc0:
        ph = builder.phi(v16i32)
        ph.add_incoming(v, entry)
        phis.append(ph)
    boff = builder.add(b_addr, builder.mul(k, _c64(bstride)))
    bvec = [builder.load(builder.inttoptr(builder.add(boff, _c64(64 * j)), v16i32.as_pointer()),
                         align=4) for j in range(nvec)]
    aoff = builder.add(a_addr, builder.mul(k, _c64(4 * MR)))
    new = []
    for r in range(mr):
        s = builder.load(builder.inttoptr(builder.add(aoff, _c64(4 * r)), i32.as_pointer()),
                         align=4)
        bc = builder.insert_element(ir.Constant(v16i32, ir.Undefined), s, ir.Constant(i32, 0))
        av = builder.shuffle_vector(bc, ir.Constant(v16i32, ir.Undefined), zero16)
        for j in range(nvec):
            new.append(dot(builder, phis[r * nvec + j], av, bvec[j]))
    k1 = builder.add(k, _c64(1))
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
    return final


def _load_tile(builder, c_addr, ldc, mr, nvec):
    """The mr x 16*nvec int32 tile at c_addr (row stride ldc bytes): (vectors, row addresses)."""
    c_rows = [builder.add(c_addr, builder.mul(_c64(r), ldc)) for r in range(mr)]
    return [builder.load(builder.inttoptr(builder.add(c_rows[r], _c64(64 * j)),
                                          _V16I32.as_pointer()), align=4)
            for r in range(mr) for j in range(nvec)], c_rows


def _make_ukernel(mr: int, impl: str, nvec: int = NVEC):
    """C[0:mr, 0:16*nvec] (int32, row stride ldc bytes) += A' strip . B' panel over kq k-quads.
    a_addr: packed A tile (row r at byte 4*r, k-quads 4*MR bytes apart); b_addr: panel, 64*nvec bytes
    per k-quad. `impl` picks how vpdpbusd is emitted; the rest of the IR is the same."""
    dot = _DPBUSD[impl]

    @intrinsic
    def ukernel(typingctx, a_addr, b_addr, kq, c_addr, ldc):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            a_addr, b_addr, kq, c_addr, ldc = args
            acc0, c_rows = _load_tile(builder, c_addr, ldc, mr, nvec)
            final = _emit_k_loop(builder, dot, a_addr, b_addr, kq, acc0, mr, nvec)
            for idx, v in enumerate(final):
                r, j = divmod(idx, nvec)
                builder.store(v, builder.inttoptr(builder.add(c_rows[r], _c64(64 * j)),
                                                  _V16I32.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return ukernel


def _make_ukernel_requant(mr: int, impl: str, cont: bool, nvec: int = NVEC):
    """The micro-kernel with the exactness corrections and the requantize epilogue (mode 1) in
    registers, storing 8-bit codes straight to the output (no int32 tile, no scalar epilogue).
    The sums start at bias + colcorr (`cont` False: the whole K in this call), or at the int32
    tile at c_addr plus those (`cont` True: the last K chunk after earlier ones); after the
    k-loop zw'[n] * rowsum(a')[m] is subtracted. All int32 adds wrap, so the result is the exact
    sum plus bias modulo 2^32, which is the exact value because the caller runs this only when
    |bias| + K*255*255 < 2**31 (else mode 3: the int32 tile and the saturating scalar epilogue).
    Then per element exactly common.requant_one (common.ir_requant8).
    out_addr: byte address of C[0, 0]; rs / cs: byte strides of an output row / column (the
    transposed NCHW view of a conv has rs = 1); only the first `ncols` (<= 64) columns are
    stored. bias/colcorr/zw (int32) and mult (float32) addresses point at this panel's 64
    columns (readable past n: allocated padded to 64); rsum_addr at the tile's first row sum."""
    dot = _DPBUSD[impl]

    @intrinsic
    def ukernel(typingctx, a_addr, b_addr, kq, c_addr, ldc, out_addr, rs, cs, ncols, bias_addr,
                corr_addr, zw_addr, rsum_addr, mult_addr, zpf, lof, hif):
        ip = types.intp
        sig = types.void(ip, ip, ip, ip, ip, ip, ip, ip, ip, ip, ip, ip, ip, ip, types.float32,
                         types.float32, types.float32)

        def codegen(context, builder, signature, args):
            (a_addr, b_addr, kq, c_addr, ldc, out_addr, rs, cs, ncols, bias_addr, corr_addr,
             zw_addr, rsum_addr, mult_addr, zpf, lof, hif) = args
            i32, i8, f32 = _I32, _I8, ir.FloatType()
            v16i32, v16f32 = _V16I32, ir.VectorType(f32, 16)

            def vec(addr, j, vt=v16i32):
                return builder.load(builder.inttoptr(builder.add(addr, _c64(64 * j)),
                                                     vt.as_pointer()), align=4)
            init = [builder.add(vec(bias_addr, j), vec(corr_addr, j)) for j in range(nvec)]
            zw_v = [vec(zw_addr, j) for j in range(nvec)]
            mult_v = [vec(mult_addr, j, v16f32) for j in range(nvec)]
            if cont:
                acc0, _ = _load_tile(builder, c_addr, ldc, mr, nvec)
                acc0 = [builder.add(a, init[idx % nvec]) for idx, a in enumerate(acc0)]
            else:
                acc0 = [init[idx % nvec] for idx in range(mr * nvec)]
            final = _emit_k_loop(builder, dot, a_addr, b_addr, kq, acc0, mr, nvec)
            zv, lov, hiv = (ir_splat(builder, x, v16f32) for x in (zpf, lof, hif))
            codes = []  # per row, per vector: <16 x i8>
            for r in range(mr):
                rsum = builder.load(builder.inttoptr(builder.add(rsum_addr, _c64(4 * r)),
                                                     i32.as_pointer()), align=4)
                rv = ir_splat(builder, rsum, v16i32)
                for j in range(nvec):
                    s = builder.sub(final[r * nvec + j], builder.mul(zw_v[j], rv))
                    codes.append(ir_requant8(builder, s, mult_v[j], zv, lov, hiv))
            row_addr = [builder.add(out_addr, builder.mul(_c64(r), rs)) for r in range(mr)]
            full = builder.and_(builder.icmp_signed("==", cs, _c64(1)),
                                builder.icmp_signed("==", ncols, _c64(16 * nvec)))
            with builder.if_else(full, likely=True) as (whole_rows, by_byte):
                with whole_rows:
                    for r in range(mr):
                        for j in range(nvec):
                            ptr = builder.add(row_addr[r], _c64(16 * j))
                            builder.store(codes[r * nvec + j], builder.inttoptr(
                                ptr, ir.VectorType(i8, 16).as_pointer()), align=1)
                with by_byte:
                    for c in range(16 * nvec):  # column by column: guarded for a partial panel
                        with builder.if_then(builder.icmp_signed("<", _c64(c), ncols),
                                             likely=True):
                            col_off = builder.mul(_c64(c), cs)
                            for r in range(mr):
                                byte = builder.extract_element(codes[r * nvec + c // 16],
                                                               ir.Constant(i32, c % 16))
                                ptr = builder.inttoptr(builder.add(row_addr[r], col_off),
                                                       i8.as_pointer())
                                builder.store(byte, ptr)
            return context.get_dummy_value()

        return sig, codegen

    return ukernel


_hw6, _hw5, _hw4, _hw3, _hw2, _hw1 = (_make_ukernel(r, "hardware") for r in (6, 5, 4, 3, 2, 1))
_em6, _em5, _em4, _em3, _em2, _em1 = (_make_ukernel(r, "emulated") for r in (6, 5, 4, 3, 2, 1))


@njit(cache=True, inline="always")
def _ukernel_hardware(mr, a_addr, b_addr, kq, c_addr, ldc):
    if mr == 6:
        _hw6(a_addr, b_addr, kq, c_addr, ldc)
    elif mr == 5:
        _hw5(a_addr, b_addr, kq, c_addr, ldc)
    elif mr == 4:
        _hw4(a_addr, b_addr, kq, c_addr, ldc)
    elif mr == 3:
        _hw3(a_addr, b_addr, kq, c_addr, ldc)
    elif mr == 2:
        _hw2(a_addr, b_addr, kq, c_addr, ldc)
    elif mr == 1:
        _hw1(a_addr, b_addr, kq, c_addr, ldc)


@njit(cache=True, inline="always")
def _ukernel_emulated(mr, a_addr, b_addr, kq, c_addr, ldc):
    if mr == 6:
        _em6(a_addr, b_addr, kq, c_addr, ldc)
    elif mr == 5:
        _em5(a_addr, b_addr, kq, c_addr, ldc)
    elif mr == 4:
        _em4(a_addr, b_addr, kq, c_addr, ldc)
    elif mr == 3:
        _em3(a_addr, b_addr, kq, c_addr, ldc)
    elif mr == 2:
        _em2(a_addr, b_addr, kq, c_addr, ldc)
    elif mr == 1:
        _em1(a_addr, b_addr, kq, c_addr, ldc)


_hwq = {(r, c): _make_ukernel_requant(r, "hardware", c) for r in (6, 5, 4, 3, 2, 1)
        for c in (False, True)}
_emq = {(r, c): _make_ukernel_requant(r, "emulated", c) for r in (6, 5, 4, 3, 2, 1)
        for c in (False, True)}
_hwq6, _hwq5, _hwq4, _hwq3, _hwq2, _hwq1 = (_hwq[(r, False)] for r in (6, 5, 4, 3, 2, 1))
_hwc6, _hwc5, _hwc4, _hwc3, _hwc2, _hwc1 = (_hwq[(r, True)] for r in (6, 5, 4, 3, 2, 1))
_emq6, _emq5, _emq4, _emq3, _emq2, _emq1 = (_emq[(r, False)] for r in (6, 5, 4, 3, 2, 1))
_emc6, _emc5, _emc4, _emc3, _emc2, _emc1 = (_emq[(r, True)] for r in (6, 5, 4, 3, 2, 1))


@njit(cache=True, inline="always")
def _ukernel_requant_hardware(mr, cont, a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols,
                              b_addr2, c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif):
    if cont:
        if mr == 6:
            _hwc6(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 5:
            _hwc5(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 4:
            _hwc4(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 3:
            _hwc3(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 2:
            _hwc2(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 1:
            _hwc1(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
    else:
        if mr == 6:
            _hwq6(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 5:
            _hwq5(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 4:
            _hwq4(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 3:
            _hwq3(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 2:
            _hwq2(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 1:
            _hwq1(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)


@njit(cache=True, inline="always")
def _ukernel_requant_emulated(mr, cont, a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols,
                              b_addr2, c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif):
    if cont:
        if mr == 6:
            _emc6(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 5:
            _emc5(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 4:
            _emc4(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 3:
            _emc3(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 2:
            _emc2(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 1:
            _emc1(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
    else:
        if mr == 6:
            _emq6(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 5:
            _emq5(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 4:
            _emq4(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 3:
            _emq3(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 2:
            _emq2(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)
        elif mr == 1:
            _emq1(a_addr, b_addr, kq, c_addr, ldc, o_addr, rs, cs, ncols, b_addr2,
                  c_addr2, zw_addr, rsum_addr, m_addr, zpf, lof, hif)


# ---------------------------------------------------------------- packing
def pack_b(w: np.ndarray, zero_point: np.ndarray):
    """(N, K) s8/u8 weights -> (packed int8 (N/64, Kp/4, 64, 4), zw' int32 (N,), colsum(w') int64
    (N,)); zw' is readable to a multiple of common.EPILOGUE_PAD (= NRV) entries."""
    n, k = w.shape
    kp = round_up(max(k, 1), KALIGN)
    npad = round_up(max(n, 1), NRV)
    shift = 128 if w.dtype == np.uint8 else 0
    ws = w.astype(np.int16) - shift
    full = np.zeros((npad, kp), np.int8)
    full[:n, :k] = ws.astype(np.int8)
    packed = np.ascontiguousarray(full.reshape(npad // NRV, NRV, kp // 4, 4).transpose(0, 2, 1, 3))
    zw = padded(zero_point.astype(np.int64) - shift, np.int32)
    colsum = ws.astype(np.int64).sum(axis=1)
    return packed, zw, colsum


def column_correction(colsum: np.ndarray, zw: np.ndarray, za: int, k: int) -> np.ndarray:
    """-za'*colsum(w')[n] + K*za'*zw'[n], wrapped to int32 (exact modulo 2^32); readable to a
    multiple of common.EPILOGUE_PAD entries."""
    c = -np.int64(za) * colsum + np.int64(k) * np.int64(za) * zw.astype(np.int64)
    return padded((c & 0xFFFFFFFF).astype(np.uint32).view(np.int32), np.int32)


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


# ---------------------------------------------------------------- GEMM
@njit(cache=True, inline="always")
def _gemm_task_requant(ukernel, ukernel_rq, t, nnb, a, rowsum, m, b, zw, colcorr, n, mb, npb, kcq,
                       bias, mult, zpf, lof, hif, out_q):
    """One task of the 8-bit epilogue (mode 1), fused into the micro-kernel: a single-chunk K
    needs no int32 tile at all; a longer K accumulates its earlier chunks in the tile and
    requantizes in the last one. bias/mult/zw/colcorr are readable to a multiple of 64 entries."""
    np_, kq, _, _ = b.shape
    atile = kq * MR * 4
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
    rsum0 = rowsum.ctypes.data + r0 * 4
    kl_last = kq - (kq - 1) // kcq * kcq if kq > 0 else 0
    k_last = kq - kl_last
    ldc = pn * NRV * 4
    tile = np.zeros((mb if k_last > 0 else 0, pn * NRV), np.int32)
    t0 = tile.ctypes.data
    if k_last > 0:  # earlier K chunks into an int32 tile
        for k0 in range(0, k_last, kcq):
            kl = min(kcq, k_last - k0)
            for p in range(pn):
                bp = b0 + ((p0 + p) * kq + k0) * (4 * NRV)
                for i in range(0, rows, MR):
                    ukernel(min(MR, rows - i), a0 + (i // MR) * atile + k0 * (4 * MR), bp, kl,
                            t0 + i * ldc + p * (4 * NRV), ldc)
    for p in range(pn):
        col = (p0 + p) * NRV
        ncols = min(NRV, n - col)
        bp = b0 + ((p0 + p) * kq + k_last) * (4 * NRV)
        for i in range(0, rows, MR):
            ukernel_rq(min(MR, rows - i), k_last > 0, a0 + (i // MR) * atile + k_last * (4 * MR),
                       bp, kl_last, t0 + i * ldc + p * (4 * NRV), ldc, o0 + i * rs + col * cs, rs,
                       cs, ncols, bias.ctypes.data + col * 4, colcorr.ctypes.data + col * 4,
                       zw.ctypes.data + col * 4, rsum0 + i * 4, mult.ctypes.data + col * 4, zpf,
                       lof, hif)
    if k_last > 0:
        tile[0, 0] += 0  # a use after the raw-address calls keeps the tile alive until here


@njit(cache=True, inline="always")
def _gemm_task(ukernel, t, nnb, a, rowsum, m, b, zw, colcorr, n, mb, npb, kcq, mode, bias, mult,
               zpf, lof, hif, out_q, out_f, out_i):
    """One task through the int32 tile: the exactness corrections applied to the tile, then
    common.epilogue_tile (int32 and float outputs, and 8-bit ones with a wide bias)."""
    np_, kq, _, _ = b.shape
    atile = kq * MR * 4
    ib = t // nnb
    jb = t - ib * nnb
    r0 = ib * mb
    rows = min(mb, m - r0)
    p0 = jb * npb
    pn = min(npb, np_ - p0)
    # only as wide as this task's panels (zeroing a full-width tile dominated narrow layers)
    ldc = pn * NRV * 4
    tile = np.zeros((mb, pn * NRV), np.int32)
    a0 = a.ctypes.data + (r0 // MR) * atile
    t0 = tile.ctypes.data
    b0 = b.ctypes.data
    for k0 in range(0, kq, kcq):
        kl = min(kcq, kq - k0)
        for p in range(pn):
            bp = b0 + ((p0 + p) * kq + k0) * (4 * NRV)
            for i in range(0, rows, MR):
                ukernel(min(MR, rows - i), a0 + (i // MR) * atile + k0 * (4 * MR), bp, kl,
                        t0 + i * ldc + p * (4 * NRV), ldc)
    cols = min(pn * NRV, n - p0 * NRV)
    for i in range(rows):
        rsi = np.int64(rowsum[r0 + i])
        for j in range(cols):
            c = p0 * NRV + j
            v = np.int64(tile[i, j]) + np.int64(colcorr[c]) - np.int64(zw[c]) * rsi
            tile[i, j] = np.int32(np.uint32(v & 0xFFFFFFFF))  # wrap: exact mod 2^32
    md = 1 if mode == MODE_Q_WIDE_BIAS else mode
    epilogue_tile(tile, r0, rows, 0, cols, p0 * NRV, md, bias, mult, zpf, lof, hif,
                  out_q, out_f, out_i)


@njit(cache=True, inline="always")
def _gemm_body(ukernel, ukernel_rq, a, rowsum, m, b, zw, colcorr, n, mb, npb, kcq, mode, bias,
               mult, zpf, lof, hif, out_q, out_f, out_i):
    """The blocked GEMM, written once; inlined into _gemm_hardware and _gemm_emulated with their own
    micro-kernels (`ukernel`, `ukernel_rq`), so each compiles to code that holds only one of the
    two. Tasks = (row block of mb rows) x (npb panels); mode 1 requantizes in registers."""
    nmb = (m + mb - 1) // mb
    nnb = (b.shape[0] + npb - 1) // npb
    if mode == 1 and FUSED_REQUANT:
        for t in prange(nmb * nnb):
            _gemm_task_requant(ukernel, ukernel_rq, t, nnb, a, rowsum, m, b, zw, colcorr, n, mb,
                               npb, kcq, bias, mult, zpf, lof, hif, out_q)
        return
    for t in prange(nmb * nnb):
        _gemm_task(ukernel, t, nnb, a, rowsum, m, b, zw, colcorr, n, mb, npb, kcq, mode, bias,
                   mult, zpf, lof, hif, out_q, out_f, out_i)


@njit(cache=True, parallel=True)
def _gemm_hardware(a, rowsum, m, b, zw, colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof, hif,
                   out_q, out_f, out_i):
    _gemm_body(_ukernel_hardware, _ukernel_requant_hardware, a, rowsum, m, b, zw, colcorr, n, mb,
               npb, kcq, mode, bias, mult, zpf, lof, hif, out_q, out_f, out_i)


@njit(cache=True, parallel=True)
def _gemm_emulated(a, rowsum, m, b, zw, colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof, hif,
                   out_q, out_f, out_i):
    _gemm_body(_ukernel_emulated, _ukernel_requant_emulated, a, rowsum, m, b, zw, colcorr, n, mb,
               npb, kcq, mode, bias, mult, zpf, lof, hif, out_q, out_f, out_i)


@njit(cache=True)
def _gemm_serial_hardware(a, rowsum, m, b, zw, colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof,
                          hif, out_q, out_f, out_i):
    """`_gemm_hardware` on the calling thread (prange is range here): for work too small to pay
    for a parallel launch."""
    _gemm_body(_ukernel_hardware, _ukernel_requant_hardware, a, rowsum, m, b, zw, colcorr, n, mb,
               npb, kcq, mode, bias, mult, zpf, lof, hif, out_q, out_f, out_i)


@njit(cache=True)
def _gemm_serial_emulated(a, rowsum, m, b, zw, colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof,
                          hif, out_q, out_f, out_i):
    _gemm_body(_ukernel_emulated, _ukernel_requant_emulated, a, rowsum, m, b, zw, colcorr, n, mb,
               npb, kcq, mode, bias, mult, zpf, lof, hif, out_q, out_f, out_i)


def gemm(a, rowsum, m, b, zw, colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof, hif,
         out_q, out_f, out_i, impl=None):
    """a: packed u8 A' (MT, Kp/4, 4*MR); b: packed s8 (NP, Kp/4, 64, 4). Same blocking as avx2.gemm;
    the exactness corrections start the register epilogue's sums (mode 1) or are applied to the
    int32 tile before common.epilogue_tile (other modes). `impl` ('hardware' or
    'emulated'; default: features.vnni_implementation(), checked before anything is compiled)."""
    fn = _gemm_emulated if _check_impl(impl) == "emulated" else _gemm_hardware
    # Own copies padded for the register epilogue, which loads whole panels; read-only
    # vectors (np.broadcast_to views) would be a different Numba type (another compile). The
    # one-call kernels get theirs padded from qlinear._ep_args.
    bias, mult = padded(bias, np.int32), padded(mult, np.float32)
    zw, colcorr = padded(zw, np.int32), padded(colcorr, np.int32)
    fn(a, rowsum, m, b, zw, colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof, hif,
       out_q, out_f, out_i)


# ---------------------------------------------------------------- whole ops in one call
@njit(cache=True)
def im2col_image_u8(x, img, signed, zx, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, out, rowsum):
    """One image's im2col into a zeroed packed A' `out` (MT, Kp/4, 4*MR) and its row sums: row
    r = y*ow + xo; a' = x (u8) or x ^ 128 (s8, i.e. x + 128), padding taps hold zx = za' (the
    shifted zero point), so they count in the row sums like any tap. Written tile by tile in the
    packed order, the tile's MR output positions worked out once."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    mr = out.shape[2] // 4
    p = oh * ow
    flip = np.uint8(128) if signed else np.uint8(0)
    zv = np.uint8(zx)
    ys = np.empty(mr, np.int64)
    xs = np.empty(mr, np.int64)
    base = np.empty(mr, np.int64)
    sums = np.empty(mr, np.int32)
    xf = x[img].reshape(-1)
    taps = _tap_offsets(c, h, w, kh, kw, dh, dw)
    ktaps = taps.shape[0]
    for rt in range(out.shape[0]):
        r0 = rt * mr
        nr = min(mr, p - r0)
        if _tile_windows(r0, nr, ow, sh, sw, pt, pl, h, w, kh, kw, dh, dw, ys, xs, base):
            # every tap of every row of this tile is in the image: no bounds checks
            for rr in range(nr):
                b = base[rr]
                sm = np.int32(0)
                for col in range(ktaps):
                    v = xf[b + taps[col]] ^ flip
                    out[rt, col >> 2, 4 * rr + (col & 3)] = v
                    sm += np.int32(v)
                rowsum[r0 + rr] = sm
            continue
        sums[:nr] = 0
        col = 0
        for ci in range(c):
            for i in range(kh):
                for j in range(kw):
                    kq = col >> 2
                    lane = col & 3
                    for rr in range(nr):
                        iy = ys[rr] + i * dh
                        ix = xs[rr] + j * dw
                        v = zv
                        if 0 <= iy < h and 0 <= ix < w:
                            v = x[img, ci, iy, ix] ^ flip
                        out[rt, kq, 4 * rr + lane] = v
                        sums[rr] += np.int32(v)
                    col += 1
        for rr in range(nr):
            rowsum[r0 + rr] = sums[rr]
    return out


@njit(cache=True)
def pointwise_image_u8(x, img, signed, out, rowsum):
    """im2col of a 1x1, stride-1, unpadded conv (the packed transpose of x[img] (C, P)) into A'
    and its row sums; the zeros of `out` cover rows past P and C up to Kp."""
    c = x.shape[1]
    p = x.shape[2] * x.shape[3]
    mr = out.shape[2] // 4
    flip = np.uint8(128) if signed else np.uint8(0)
    plane = x[img].reshape(c, p)
    for i in range(p):
        rowsum[i] = 0
    for rt in range(out.shape[0]):
        r0 = rt * mr
        nr = min(mr, p - r0)
        for ci in range(c):
            row = plane[ci]
            kq = ci >> 2
            lane = ci & 3
            for rr in range(nr):
                v = row[r0 + rr] ^ flip
                out[rt, kq, 4 * rr + lane] = v
                rowsum[r0 + rr] += np.int32(v)
    return out


@njit(cache=True, inline="always")
def _conv_nchw_body(gemm_par, gemm_ser, table_fn, x, signed, geo, b, zw, colcorr, n, mb, npb, kcq,
                    mode, bias, mult, zpf, lof, hif, table, flip, par, out_q, out_f, out_i):
    zx, kh, kw, sh, sw = geo[0], geo[1], geo[2], geo[3], geo[4]
    pt, pl, dh, dw, oh, ow, kp = geo[5], geo[6], geo[7], geo[8], geo[9], geo[10], geo[11]
    p = oh * ow
    for img in range(x.shape[0]):
        a = np.zeros(((p + MR - 1) // MR, kp // 4, 4 * MR), np.uint8)
        rs = np.empty(p, np.int32)
        if geo[12]:
            pointwise_image_u8(x, img, signed, a, rs)
        else:
            im2col_image_u8(x, img, signed, zx, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, a, rs)
        oq = out_q[min(img, out_q.shape[0] - 1)].T
        of = out_f[min(img, out_f.shape[0] - 1)].T
        oi = out_i[min(img, out_i.shape[0] - 1)].T
        if par:
            gemm_par(a, rs, p, b, zw, colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof, hif,
                     oq, of, oi)
        else:
            gemm_ser(a, rs, p, b, zw, colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof, hif,
                     oq, of, oi)
    if table.shape[0] > 0:
        table_fn(out_q, table, flip)


@njit(cache=True)
def _conv_nchw_hardware(x, signed, geo, b, zw, colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof,
                        hif, table, flip, par, out_q, out_f, out_i):
    # (a VNNI CPU has AVX2: the vpshufb table lookups)
    _conv_nchw_body(_gemm_hardware, _gemm_serial_hardware, apply_table_avx2, x, signed, geo, b, zw,
                    colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof, hif, table, flip, par,
                    out_q, out_f, out_i)


@njit(cache=True)
def _conv_nchw_emulated(x, signed, geo, b, zw, colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof,
                        hif, table, flip, par, out_q, out_f, out_i):
    # (emulated: any CPU, so the scalar table lookups)
    _conv_nchw_body(_gemm_emulated, _gemm_serial_emulated, apply_table, x, signed, geo, b, zw,
                    colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof, hif, table, flip, par,
                    out_q, out_f, out_i)


@njit(cache=True, inline="always")
def _linear_2d_body(gemm_par, gemm_ser, a, signed, kp, b, zw, colcorr, n, mb, npb, kcq, mode, bias,
                    mult, zpf, lof, hif, table, flip, par, out_q, out_f, out_i):
    m = a.shape[0]
    ap, rs = prep_a(a, signed, kp, MR)
    if par:
        gemm_par(ap, rs, m, b, zw, colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof, hif,
                 out_q, out_f, out_i)
    else:
        gemm_ser(ap, rs, m, b, zw, colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof, hif,
                 out_q, out_f, out_i)
    if table.shape[0] > 0:
        for i in range(m):
            for j in range(n):
                out_q[i, j] = table[j, out_q[i, j] ^ flip]


@njit(cache=True)
def _linear_2d_hardware(a, signed, kp, b, zw, colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof,
                        hif, table, flip, par, out_q, out_f, out_i):
    _linear_2d_body(_gemm_hardware, _gemm_serial_hardware, a, signed, kp, b, zw, colcorr, n, mb,
                    npb, kcq, mode, bias, mult, zpf, lof, hif, table, flip, par, out_q, out_f,
                    out_i)


@njit(cache=True)
def _linear_2d_emulated(a, signed, kp, b, zw, colcorr, n, mb, npb, kcq, mode, bias, mult, zpf, lof,
                        hif, table, flip, par, out_q, out_f, out_i):
    _linear_2d_body(_gemm_emulated, _gemm_serial_emulated, a, signed, kp, b, zw, colcorr, n, mb,
                    npb, kcq, mode, bias, mult, zpf, lof, hif, table, flip, par, out_q, out_f,
                    out_i)


def conv_nchw_fn(impl=None):
    """The one-call conv of the chosen implementation (checked before anything is compiled):
    fn(x (N, C, H, W) u8 view, signed, geo, b, zw', colcorr, n, mb, npb, kcq, mode, bias, mult, zpf,
    lof, hif, table, flip, par, out_q, out_f, out_i); geo as avx2.conv_nchw's but geo[0] = za'."""
    return _conv_nchw_emulated if _check_impl(impl) == "emulated" else _conv_nchw_hardware


def linear_2d_fn(impl=None):
    """The one-call (M, K) x packed weights of the chosen implementation:
    fn(a u8 view, signed, kp, b, zw', colcorr, n, mb, npb, kcq, mode, ..., par, out_q, out_f, out_i)."""
    return _linear_2d_emulated if _check_impl(impl) == "emulated" else _linear_2d_hardware
