"""qconv (im2col + packed GEMM) and the depthwise kernel, bit-exact against qconv_ref /
depthwise_conv_ref over strides, pads, dilations and groups, on every path this CPU can run and on the
vnni path through the emulated vpdpbusd (see test_qgemm.VARIANTS)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrt.kernels import qlinear as ql
from qrt.kernels import ref
from tests.kernels.test_qgemm import VARIANTS, _epilogue, _rand, kernel_path

SETTINGS = dict(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def conv_case(draw, depthwise=False):
    nd = draw(st.sampled_from([1, 2]))
    n = draw(st.integers(1, 2))
    group = 1
    if depthwise:
        c = m = group = draw(st.integers(1, 6))
    else:
        group = draw(st.sampled_from([1, 1, 2, 3]))
        c = group * draw(st.integers(1, 3))
        m = group * draw(st.integers(1, 4))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(2 * nd))
    sp = tuple(draw(st.integers(max(1, (kernel[i] - 1) * dil[i] + 1 - pads[i] - pads[i + nd]), 9))
               for i in range(nd))
    x_dt = draw(st.sampled_from([np.uint8, np.int8]))
    w_dt = draw(st.sampled_from([np.int8, np.uint8]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31)))
    x = _rand(rng, (n, c) + sp, x_dt)
    w = _rand(rng, (m, c // group) + kernel, w_dt)
    lo, hi = ref.qrange(x_dt)
    zx = int(rng.integers(lo, hi + 1))
    wlo, whi = ref.qrange(w_dt)
    zw = rng.integers(wlo, whi + 1, m if draw(st.booleans()) else 1)
    kind = draw(st.sampled_from(["i32", "u8", "u8relu", "s8clip", "float"]))
    ep = None if kind == "i32" else _epilogue(kind, rng, m, True)
    return x, zx, w, zw, group, strides, pads, dil, ep


@pytest.mark.parametrize("variant", VARIANTS)
@settings(**SETTINGS)
@given(case=conv_case())
def test_qconv_matches_ref(variant, case):
    x, zx, w, zw, group, strides, pads, dil, ep = case
    with kernel_path(variant) as path:
        pcw = ql.pack_conv_weight(w, zw, group, path=path)
        got = ql.qconv(x, zx, pcw, ep, strides, pads, dil, threads=2)
    want = ref.qconv_ref(x, zx, w, zw, ep, strides, pads, dil, group)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("variant", VARIANTS)
@settings(**SETTINGS)
@given(case=conv_case(depthwise=True))
def test_depthwise_matches_ref(variant, case):
    x, zx, w, zw, group, strides, pads, dil, ep = case
    with kernel_path(variant) as path:
        pcw = ql.pack_conv_weight(w, zw, group, path=path)
        if group > 1:
            assert pcw.depthwise
        got = ql.qconv(x, zx, pcw, ep, strides, pads, dil, threads=2)
    want = ref.depthwise_conv_ref(x, zx, w, zw, ep, strides, pads, dil)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    # the depthwise twin is the grouped conv twin
    np.testing.assert_array_equal(want, ref.qconv_ref(x, zx, w, zw, ep, strides, pads, dil, group))
