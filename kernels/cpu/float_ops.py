"""Numba kernels for float ops that BLAS does not cover well (depthwise convolution).

Arrays only: no ONNX, no graph. Every kernel has a numpy twin in the op module that uses it
(`qrt.ops.conv` falls back to its shifted-tap accumulation for ranks other than 2-D).
"""
from __future__ import annotations

import numba as nb
import numpy as np


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
