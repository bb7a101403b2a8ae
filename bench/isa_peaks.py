"""What this CPU's vector units can do, next to what qrt's GEMM micro-kernel gets.

    python bench/isa_peaks.py [--repeat 7]

Loops of independent register-resident chains (no loads), one per instruction mix:
- ``fp32 fma``: ``vfmadd`` ymm, 8 MACs each: the ceiling of an FP32 GEMM (onnxruntime FP32).
- ``exact int8 (avx2)``: ``vpmaddwd`` + ``vpaddd`` on i16 pairs, 16 MACs: qrt's avx2 mix, exact.
- ``saturating int8 (avx2)``: ``vpmaddubsw`` + ``vpmaddwd`` (widen) + ``vpaddd``, 32 MACs: the mix
  of onnxruntime's AVX2 u8*s8 kernel, whose i16 pair sums saturate for full-range weights.
- ``vnni``: ``vpdpbusd`` zmm, 64 MACs, only where the CPU has AVX-512 VNNI.
and qrt's avx2 6x16 micro-kernel on an L1-resident A strip and B panel (K = 256).

GOPS = 2 * MACs / s. The ratio that bounds INT8 against FP32 on a CPU is (exact int8 GOPS) /
(fp32 GFLOPS): a GEMM-bound INT8 model cannot take less than its inverse of the FP32 time.
Medians over --repeat runs; the machine is shared, so also the best run.
"""
from __future__ import annotations

import argparse
import statistics
import time

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from qrt.kernels.cpu.features import host_features

_I64, _I32, _I16, _I8 = ir.IntType(64), ir.IntType(32), ir.IntType(16), ir.IntType(8)
_F32 = ir.FloatType()
CHAINS = 12  # independent accumulators: enough to hide every latency below, few enough for ymm


def _chain_loop(mix: str):
    """An intrinsic `(n, seed) -> int64` running n iterations of CHAINS independent `mix` steps.
    Each chain feeds its own accumulator back as an operand so LLVM cannot hoist the multiply."""
    width = 16 if mix == "vnni" else 8  # i32 / f32 lanes

    @intrinsic
    def loop(typingctx, n, seed):
        sig = types.int64(types.int64, types.int64)

        def codegen(context, builder, signature, args):
            n, seed = args
            mod = builder.module
            v32 = ir.VectorType(_I32, width)
            v16 = ir.VectorType(_I16, 2 * width)
            v8 = ir.VectorType(_I8, 4 * width)
            vf = ir.VectorType(_F32, width)
            fn = {
                "fma": ("llvm.fma.v8f32", vf, [vf, vf, vf]),
                "exact": ("llvm.x86.avx2.pmadd.wd", v32, [v16, v16]),
                "sat": ("llvm.x86.avx2.pmadd.ub.sw", v16, [v8, v8]),
                "vnni": ("llvm.x86.avx512.vpdpbusd.512", v32, [v32, v32, v32]),
            }[mix]
            f = cgutils.get_or_insert_function(mod, ir.FunctionType(fn[1], fn[2]), fn[0])
            widen = cgutils.get_or_insert_function(
                mod, ir.FunctionType(v32, [v16, v16]), "llvm.x86.avx2.pmadd.wd")
            s = builder.trunc(seed, _I32)
            splat = builder.shuffle_vector(
                builder.insert_element(ir.Constant(v32, ir.Undefined), s, ir.Constant(_I32, 0)),
                ir.Constant(v32, ir.Undefined), ir.Constant(v32, None))
            acc_t = vf if mix == "fma" else v32
            other = builder.bitcast(splat, acc_t)
            ones = ir.Constant(v16, [ir.Constant(_I16, 1)] * (2 * width))
            entry = builder.block
            body = builder.append_basic_block("body")
            done = builder.append_basic_block("done")
            builder.branch(body)
            builder.position_at_end(body)
            i = builder.phi(_I64)
            i.add_incoming(ir.Constant(_I64, 0), entry)
            phis = []
            for _ in range(CHAINS):
                p = builder.phi(acc_t)
                p.add_incoming(other, entry)
                phis.append(p)
            new = []
            for p in phis:
                if mix == "fma":
                    v = builder.call(f, [p, other, other])
                elif mix == "exact":
                    v = builder.add(p, builder.call(f, [builder.bitcast(p, v16),
                                                        builder.bitcast(other, v16)]))
                elif mix == "sat":
                    pairs = builder.call(f, [builder.bitcast(p, v8), builder.bitcast(other, v8)])
                    v = builder.add(p, builder.call(widen, [pairs, ones]))
                else:
                    v = builder.call(f, [p, p, other])
                new.append(v)
            i1 = builder.add(i, ir.Constant(_I64, 1))
            i.add_incoming(i1, body)
            for p, v in zip(phis, new):
                p.add_incoming(v, body)
            builder.cbranch(builder.icmp_signed("<", i1, n), body, done)
            builder.position_at_end(done)
            tot = builder.bitcast(new[0], v32)
            for v in new[1:]:
                tot = builder.add(tot, builder.bitcast(v, v32))
            return builder.sext(builder.extract_element(tot, ir.Constant(_I32, 0)), _I64)

        return sig, codegen

    return loop


def _runner(mix):
    loop = _chain_loop(mix)

    @njit
    def run(n, seed):
        return loop(n, seed)

    return run


MIXES = {  # name: (mix, MACs per chain step)
    "fp32 fma (ymm)": ("fma", 8),
    "exact int8, vpmaddwd (ymm)": ("exact", 16),
    "saturating int8, vpmaddubsw (ymm)": ("sat", 32),
    "vnni vpdpbusd (zmm)": ("vnni", 64),
}


def _microkernel_rate(repeat):
    import numpy as np

    from qrt.kernels.cpu import avx2

    uk = avx2._uk6
    kp2 = 128  # K = 256: A strip 3 KB + B panel 8 KB, in L1

    @njit
    def run(a, b, c, kp2, reps):
        for _ in range(reps):
            uk(a.ctypes.data, b.ctypes.data, kp2, c.ctypes.data, 64)

    a = np.ones(kp2 * avx2.MR * 2, np.int16)
    b = np.ones(kp2 * 16 * 2, np.int16)
    c = np.zeros(avx2.MR * 16, np.int32)
    run(a, b, c, kp2, 10)
    reps, rates = 100_000, []
    for _ in range(repeat):
        t = time.perf_counter()
        run(a, b, c, kp2, reps)
        rates.append(2 * avx2.MR * 16 * 2 * kp2 * reps / (time.perf_counter() - t) / 1e9)
    return rates


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--iterations", type=int, default=10_000_000)
    args = ap.parse_args(argv)
    feats = host_features()
    rows = {}
    for name, (mix, macs) in MIXES.items():
        if mix == "vnni" and not {"avx512f", "avx512vnni"} <= feats:
            continue
        if mix != "vnni" and "avx2" not in feats:
            continue
        run = _runner(mix)
        run(10, 1)
        rates = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            run(args.iterations, 1)
            rates.append(2 * macs * CHAINS * args.iterations / (time.perf_counter() - t) / 1e9)
        rows[name] = rates
    if "avx2" in feats:
        rows["qrt avx2 micro-kernel 6x16, L1 (ops incl. its loads)"] = _microkernel_rate(args.repeat)
    print(f"{'instruction mix':56s} {'GOPS median':>12s} {'best':>8s}")
    for name, rates in rows.items():
        print(f"{name:56s} {statistics.median(rates):12.1f} {max(rates):8.1f}")
    fma = rows.get("fp32 fma (ymm)")
    exact = rows.get("exact int8, vpmaddwd (ymm)")
    uk = rows.get("qrt avx2 micro-kernel 6x16, L1 (ops incl. its loads)")
    if fma and exact:
        ratio = statistics.median(exact) / statistics.median(fma)
        print(f"\nexact int8 / fp32 peak: {ratio:.2f}x -> a GEMM-bound INT8 model takes at least "
              f"{1 / ratio:.2f}x the FP32 time on this CPU's avx2 path")
    if exact and uk:
        print(f"micro-kernel / exact-int8 peak: {statistics.median(uk) / statistics.median(exact):.0%}")


if __name__ == "__main__":
    main()
