"""Integer linear algebra entry points used by qrt's fused ops: the stable API between the graph side
(qrt/ops/fused.py) and the kernels. Which implementation runs (VNNI, AVX2, portable, reference) is
chosen in kernels/cpu; callers never see it.

Shapes: activations a are (M, K) row-major; weights are (N, K) (one row per output channel).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qrt.kernels import ref


@dataclass
class PackedWeight:
    """Weights prepared once at load time for the kernel that will run them."""

    w: np.ndarray  # (N, K) int8/uint8 as given
    zero_point: np.ndarray  # (N,) int32
    n: int
    k: int
    kernel: str = "ref"  # which implementation packed it
    data: dict = field(default_factory=dict)  # kernel-specific packed arrays


@dataclass
class Epilogue:
    """What happens to the int32 accumulators: data, not code variants.

    out_dtype uint8/int8: requantize with `multiplier` (sx*sw[n]/sy), add `out_zero_point`,
    clamp to [lo, hi] (fused ReLU/Clip in the quantized domain) and saturate.
    out_dtype float32: dequantize with `scale` (sx*sw[n]) and clamp to [lo_f, hi_f] if given.
    """

    out_dtype: type
    bias: np.ndarray | None = None  # (N,) int32 at scale sx*sw
    multiplier: np.ndarray | None = None  # (N,) float32
    out_zero_point: int = 0
    lo: int | None = None
    hi: int | None = None
    scale: np.ndarray | None = None  # (N,) float32, float output only
    lo_f: float | None = None
    hi_f: float | None = None


def pack_weight(w: np.ndarray, zero_point=0) -> PackedWeight:
    w = np.ascontiguousarray(w)
    n, k = w.shape
    zp = np.broadcast_to(np.asarray(zero_point, np.int32).reshape(-1), (n,)).copy()
    return PackedWeight(w, zp, n, k)


def qgemm_i32(a: np.ndarray, a_zero_point: int, pw: PackedWeight, threads: int = 1) -> np.ndarray:
    return ref.qgemm_i32(a, a_zero_point, pw.w, pw.zero_point)


def apply_epilogue(acc: np.ndarray, ep: Epilogue) -> np.ndarray:
    if np.dtype(ep.out_dtype) == np.float32:
        y = ref.dequantize_acc(acc, ep.bias, ep.scale)
        if ep.lo_f is not None or ep.hi_f is not None:
            y = np.clip(y, ep.lo_f, ep.hi_f)
        return y
    return ref.requantize(acc, ep.bias, ep.multiplier, ep.out_zero_point, ep.out_dtype, ep.lo, ep.hi)


def qlinear(a: np.ndarray, a_zero_point: int, pw: PackedWeight, ep: Epilogue,
            threads: int = 1) -> np.ndarray:
    """(M, K) x packed (N, K) -> (M, N) in ep.out_dtype, exactly as the reference twins compute."""
    return apply_epilogue(qgemm_i32(a, a_zero_point, pw, threads), ep)
