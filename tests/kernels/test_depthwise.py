"""The depthwise kernels (kernels/cpu/depthwise.py, via qlinear.depthwise_conv) are bit-exact with
ref.depthwise_conv_ref (and so with the grouped ref.qconv_ref) on every path this CPU can run:
u8/s8 activations, s8/u8 weights with per-tensor or per-channel zero points, any kernel size (odd
kw leaves an unpaired tap on avx2), strides (stride 2 has its own avx2 layout), dilations,
asymmetric pads, 1-D and 2-D, widths across the 8- and 32-output blocks, int32/8-bit/float outputs
with clamps and with biases near the int32 limits, serial and parallel kernels, and the per-pcw
caches (shapes, zero points, edited or rebuilt epilogues)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrt.kernels import qlinear as ql
from qrt.kernels import ref
from qrt.kernels.cpu import depthwise as dwk
from qrt.kernels.cpu import features
from tests.kernels.test_qgemm import PATHS, VNNI_EMULATED, _rand, kernel_path

SETTINGS = dict(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1


def _epilogue(kind, rng, c):
    per_channel = rng.random() < 0.7
    shape = (c,) if per_channel else ()
    # bias now and then near the int32 limits: the requantize clip of acc + bias must match too
    big = rng.random() < 0.15
    bias = (rng.choice([I32_MIN + 5, I32_MAX - 5], c) if big
            else rng.integers(-30000, 30000, c)).astype(np.int32)
    if kind == "i32":
        return None
    if kind in ("float", "floatclip"):
        ep = ql.Epilogue(np.float32, bias=bias,
                         scale=(rng.random(shape) * 1e-3 + 1e-6).astype(np.float32))
        if kind == "floatclip":
            ep.lo_f, ep.hi_f = -0.5, float(rng.random() * 3)
        return ep
    out = np.uint8 if kind.startswith("u8") else np.int8
    lo, hi = ref.qrange(out)
    mult = (rng.random(shape) * 3e-3 + 1e-5).astype(np.float32)
    ep = ql.Epilogue(out, bias=bias, multiplier=mult, out_zero_point=int(rng.integers(lo, hi + 1)))
    if kind == "u8relu":
        ep.lo = ep.out_zero_point
    elif kind == "s8clip":
        ep.lo, ep.hi = ep.out_zero_point - 20, ep.out_zero_point + 30
    return ep


@st.composite
def dw_case(draw):
    nd = draw(st.sampled_from([1, 2, 2, 2]))
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, 7))
    kernel = tuple(draw(st.sampled_from([1, 2, 3, 3, 4, 5, 5, 7])) for _ in range(nd))
    strides = tuple(draw(st.sampled_from([1, 1, 2, 2, 3])) for _ in range(nd))
    dil = tuple(draw(st.sampled_from([1, 1, 1, 2, 3])) for _ in range(nd))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(2 * nd))
    # the last (width) axis goes past one and two 32-output blocks
    hi_sp = [9] * (nd - 1) + [80]
    sp = tuple(draw(st.integers(max(1, (kernel[i] - 1) * dil[i] + 1 - pads[i] - pads[i + nd]),
                                max(hi_sp[i], (kernel[i] - 1) * dil[i] + 1)))
               for i in range(nd))
    x_dt = draw(st.sampled_from([np.uint8, np.int8]))
    w_dt = draw(st.sampled_from([np.int8, np.int8, np.uint8]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31)))
    x = _rand(rng, (n, c) + sp, x_dt)
    w = _rand(rng, (c, 1) + kernel, w_dt)
    lo, hi = ref.qrange(x_dt)
    zx = int(rng.integers(lo, hi + 1))
    wlo, whi = ref.qrange(w_dt)
    zw = rng.integers(wlo, whi + 1, c if draw(st.booleans()) else 1)
    kind = draw(st.sampled_from(["i32", "u8", "u8relu", "s8", "s8clip", "float", "floatclip"]))
    ep = _epilogue(kind, rng, c)
    return x, zx, w, zw, strides, pads, dil, ep


def _check(path, case, threads):
    x, zx, w, zw, strides, pads, dil, ep = case
    c = x.shape[1]
    pcw = ql.pack_conv_weight(w, zw, c, path=path)
    got = ql.depthwise_conv(x, zx, pcw, ep, strides, pads, dil, threads=threads)
    want = ref.depthwise_conv_ref(x, zx, w, zw, ep, strides, pads, dil)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    # the public conv entry routes depthwise weights here too
    np.testing.assert_array_equal(ql.qconv(x, zx, pcw, ep, strides, pads, dil, threads), want)
    return pcw, want


@pytest.mark.parametrize("path", PATHS)
@settings(**SETTINGS)
@given(case=dw_case())
def test_depthwise_matches_ref(path, case):
    _check(path, case, 1)


@pytest.mark.parametrize("path", PATHS)
@settings(**dict(SETTINGS, max_examples=15))
@given(case=dw_case())
def test_depthwise_parallel_matches_ref(path, case, monkeypatch):
    # force the parallel kernels whatever the size (the threshold only trades speed)
    monkeypatch.setattr(dwk, "PAR_MIN_MACS", 0)
    _check(path, case, 2)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("width,kernel,stride,kind", [
    (200, 3, 1, "u8"), (203, 5, 1, "s8clip"), (250, 3, 2, "u8relu"), (97, 7, 1, "float"),
    (161, 3, 1, "i32"), (40, 5, 1, "u8"), (48, 3, 1, "s8clip"), (33, 3, 1, "u8"),
    (89, 5, 2, "u8"), (17, 3, 1, "u8relu")])
def test_wide_rows(path, width, kernel, stride, kind):
    """Rows wider than the hypothesis cases: the avx2 row accumulation in register blocks of 1 to 5
    vectors of 8 outputs (a row split evenly: 40 outputs one block of 5, 48 two of 3, 200 five of
    5), and the vector epilogue's whole-vector part plus its scalar tail, in one row."""
    rng = np.random.default_rng(width)
    c = 3
    x = _rand(rng, (1, c, 4, width), np.uint8)
    w = _rand(rng, (c, 1, kernel, kernel), np.int8)
    ep = _epilogue(kind, rng, c)
    pads = (kernel // 2,) * 4
    _check(path, (x, 7, w, np.zeros(c, np.int64), (stride, stride), pads, (1, 1), ep), 1)


@pytest.mark.parametrize("path", PATHS)
def test_extremes_exact(path):
    """Largest |x - zx| and |w - zw| (255 each) on every tap of a big kernel: int32 sums of pair
    products (2 * 255 * 255 per vpmaddwd lane) with no saturation anywhere."""
    c = 4
    x = np.full((1, c, 13, 40), 255, np.uint8)
    x[:, 1::2] = 0
    w = np.full((c, 1, 11, 11), -128, np.int8)
    w[2:] = 127
    for zw in (127, -128):
        pcw = ql.pack_conv_weight(w, zw, c, path=path)
        for zx in (0, 255):
            got = ql.depthwise_conv(x, zx, pcw, None, (1, 1), (5, 5, 5, 5), (1, 1))
            want = ref.depthwise_conv_ref(x, zx, w, zw, None, (1, 1), (5, 5, 5, 5), (1, 1))
            np.testing.assert_array_equal(got, want)
            assert np.abs(want).max() == 121 * 255 * 255


@pytest.mark.parametrize("path", PATHS)
def test_caches_follow_changes(path):
    """One packed weight across calls whose shape, zero point and epilogue change (the per-pcw
    caches must never serve a stale geometry or epilogue), plus a non-contiguous input."""
    rng = np.random.default_rng(7)
    c = 5
    w = _rand(rng, (c, 1, 3, 5), np.int8)
    zw = rng.integers(-5, 5, c)
    pcw = ql.pack_conv_weight(w, zw, c, path=path)
    ep = _epilogue("u8", rng, c)

    def check(x, zx, ep, strides=(1, 2), pads=(1, 2, 0, 1), dil=(1, 1)):
        got = ql.depthwise_conv(x, zx, pcw, ep, strides, pads, dil)
        want = ref.depthwise_conv_ref(x, zx, w, zw, ep, strides, pads, dil)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)

    x = _rand(rng, (1, c, 6, 37), np.uint8)
    check(x, 3, ep)
    check(x, 3, ep)  # cached
    check(x, 200, ep)  # zero point changed
    check(_rand(rng, (2, c, 4, 9), np.uint8), 3, ep)  # shape changed
    check(x.astype(np.int8), -3, ep)  # dtype changed
    ep.lo, ep.out_zero_point = 100, 90  # the same Epilogue edited in place
    check(x, 3, ep)
    ep.multiplier = (ep.multiplier * 2).astype(np.float32)
    check(x, 3, ep)
    check(x, 3, _epilogue("float", rng, c))  # another epilogue, another mode
    check(x, 3, None)
    check(x, 3, ep, strides=(2, 1), pads=(0, 0, 2, 2), dil=(2, 1))
    xt = np.ascontiguousarray(np.swapaxes(x, 2, 3)).swapaxes(2, 3)  # same values, not C-ordered
    assert not xt.flags.c_contiguous
    check(xt, 3, ep)


@pytest.mark.skipif(not features.can_run("avx2"), reason="CPU lacks avx2")
def test_vnni_path_runs_the_avx2_kernel():
    """Weights packed for the vnni path (here through its emulation) take the vpmaddwd kernel."""
    rng = np.random.default_rng(3)
    c = 6
    x = _rand(rng, (2, c, 7, 45), np.int8)
    w = _rand(rng, (c, 1, 5, 5), np.int8)
    ep = _epilogue("s8clip", rng, c)
    with kernel_path(VNNI_EMULATED) as path:
        pcw = ql.pack_conv_weight(w, 0, c, path=path)
        got = ql.depthwise_conv(x, -4, pcw, ep, (2, 1), (2, 1, 2, 3), (1, 1))
    assert "_dw_wpair" in pcw.__dict__
    np.testing.assert_array_equal(
        got, ref.depthwise_conv_ref(x, -4, w, 0, ep, (2, 1), (2, 1, 2, 3), (1, 1)))
