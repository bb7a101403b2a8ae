"""Shared pieces of the CUDA kernel tests: skip guard, small tiles, numpy reference for convs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from tests.cuda._sim import SKIP_REASON

if SKIP_REASON:
    pytest.skip(SKIP_REASON, allow_module_level=True)

from qrt.kernels import ref  # noqa: E402
from qrt.kernels.cuda import api as C  # noqa: E402
from qrt.kernels.qlinear import apply_epilogue  # noqa: E402

# A small tile: under the simulator every CUDA thread is a Python thread, so tests use few threads
# per block; shapes still span several blocks and K steps. The default tile has its own cases.
SMALL = C.TileConfig(bm=16, bn=16, bk=8, tm=2, tn=2)

# the simulator is slow: few examples, no deadline
FEW = settings(max_examples=8, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def rand_q(rng, shape, dtype):
    lo, hi = ref.qrange(dtype)
    return rng.integers(lo, hi + 1, size=shape).astype(dtype)


def spread_multiplier(acc, rng, n, out_range=200.0):
    """Per-channel multipliers that map the accumulators over most of the output range."""
    peak = max(1.0, float(np.abs(acc).max()))
    return (out_range / peak * rng.uniform(0.5, 1.5, n)).astype(np.float32)


def conv_ref(x, x_zp, w, w_zp, ep, kernel_shape, strides, pads, dilations, group):
    """Grouped integer conv via ref.im2col (padding = input zero point) + ref.qgemm_i32 + epilogue."""
    n, c = x.shape[:2]
    cout = w.shape[0]
    cg, cog = c // group, cout // group
    w_zp = np.broadcast_to(np.asarray(w_zp, np.int32).reshape(-1), (cout,))
    accs = []
    for g in range(group):
        cols, out_sp = ref.im2col(x[:, g * cg:(g + 1) * cg], kernel_shape, strides, pads, dilations,
                                  pad_value=x_zp)
        wg = w[g * cog:(g + 1) * cog].reshape(cog, -1)
        accs.append(ref.qgemm_i32(cols, x_zp, wg, w_zp[g * cog:(g + 1) * cog]))
    y = apply_epilogue(np.concatenate(accs, axis=1), ep)  # (n * prod(out), cout)
    nd = len(kernel_shape)
    y = y.reshape((n,) + tuple(out_sp) + (cout,))
    return np.ascontiguousarray(y.transpose((0, nd + 1) + tuple(range(1, nd + 1))))
