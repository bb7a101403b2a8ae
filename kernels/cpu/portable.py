"""Portable path: the same exact int16 GEMM as the avx2 path, in plain Numba (any CPU).

A is the shared packed format of common.py ((MT, Kp/2, 2*MR) int16 of a - za). B has its own layout,
even/odd k planes across all columns: (Kp/2, 2, Npad) int16 of w - zw, so the innermost loop runs over a
block of output columns with unit stride and LLVM's loop vectoriser turns it into
vpmovsxwd/vpmulld/vpaddd on whatever vector ISA the CPU has. int32 accumulation into an L1-resident
tile (MR rows x column block); padded rows/columns are computed as zeros.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from qrt.kernels.cpu.common import KALIGN, NR, epilogue_tile, round_up

MR = 6


def pack_b(w: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """(N, K) weights -> int16 (Kp/2, 2, Npad) of w - zw (zeros in the padding)."""
    n, k = w.shape
    kp = round_up(max(k, 1), KALIGN)
    npad = round_up(max(n, 1), NR)
    full = np.zeros((npad, kp), np.int16)
    full[:n, :k] = w.astype(np.int16) - zero_point.astype(np.int16).reshape(-1, 1)
    return np.ascontiguousarray(full.T.reshape(kp // 2, 2, npad))


@njit(cache=True, parallel=True)
def gemm(a, m, b, n, mb, cw, kc2, mode, bias, mult, zpf, lof, hif, out_q, out_f, out_i):
    """a: packed A (MT, Kp/2, 2*MR); b: (Kp/2, 2, Npad). Tasks = (mb rows, a multiple of MR) x (cw
    columns); each accumulates an int32 tile, K in chunks of kc2 pairs, then runs the epilogue."""
    kp2, _, npad = b.shape
    nmb = (m + mb - 1) // mb
    nnb = (npad + cw - 1) // cw
    for t in prange(nmb * nnb):
        ib = t // nnb
        jb = t - ib * nnb
        r0 = ib * mb
        rows = min(mb, m - r0)
        c0 = jb * cw
        cl = min(cw, npad - c0)
        tile = np.zeros((mb, cw), np.int32)
        for k0 in range(0, kp2, kc2):
            k1 = min(kp2, k0 + kc2)
            for i in range(0, rows, MR):
                at = (r0 + i) // MR
                mr = min(MR, rows - i)
                for kk in range(k0, k1):
                    be = b[kk, 0, c0:c0 + cl]
                    bo = b[kk, 1, c0:c0 + cl]
                    for r in range(mr):
                        a0 = np.int32(a[at, kk, 2 * r])
                        a1 = np.int32(a[at, kk, 2 * r + 1])
                        tr = tile[i + r]
                        for c in range(cl):
                            tr[c] += np.int32(a0 * np.int32(be[c])) + np.int32(a1 * np.int32(bo[c]))
        cols = min(cl, n - c0)
        epilogue_tile(tile, r0, rows, 0, cols, c0, mode, bias, mult, zpf, lof, hif,
                      out_q, out_f, out_i)
