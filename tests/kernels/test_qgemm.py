"""Every fast integer kernel is bit-exact against its ref.py twin, on every path this CPU can run,
and on the vnni path through the emulated vpdpbusd on any CPU (kernel variant ``vnni-emulated``).

Variants: ``vnni`` is the hardware instruction (skipped on a CPU without AVX-512 VNNI, and never
compiled there: LLVM would abort the process); ``vnni-emulated`` is the same path -- packing, the 6x64
tile and its loops, s8 shift, column/row corrections, epilogue -- with vpdpbusd emulated in plain LLVM
IR (features.emulate_vnni). Emulation proves the kernel logic, not the instruction itself.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrt.kernels import qlinear as ql
from qrt.kernels import ref
from qrt.kernels.cpu import KernelPathError, available_paths, backend, check_path, features

FAST = ("vnni", "avx2", "portable")
SETTINGS = dict(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
VNNI_EMULATED = "vnni-emulated"


def _hardware_skip(p):
    missing = features.missing_features(p)
    if not missing:
        return []
    why = "CPU lacks AVX-512 VNNI" if p == "vnni" else f"CPU lacks {', '.join(missing)}"
    return [pytest.mark.skip(reason=why)]


def _path_param(p):
    marks = [] if features.can_run(p) else _hardware_skip(p)
    return pytest.param(p, marks=marks, id=p)


# Path names for tests that take a plain path (kept for other kernel tests that import it).
PATHS = [_path_param(p) for p in FAST + ("ref",)]
# Kernel variants: the hardware paths, plus the vnni path through the emulation (always runs).
VARIANTS = ([pytest.param("vnni", marks=_hardware_skip("vnni"), id="vnni")]
            + [pytest.param(VNNI_EMULATED, id=VNNI_EMULATED)]
            + [_path_param(p) for p in ("avx2", "portable", "ref")])


@contextlib.contextmanager
def kernel_path(variant):
    """Enter a kernel variant; yields the path name to pass as `path=`. 'vnni' is the hardware
    instruction (emulation forced off whatever QRT_VNNI_EMULATE says), 'vnni-emulated' the emulation."""
    if variant == VNNI_EMULATED:
        with features.emulate_vnni(True):
            assert features.vnni_implementation() == "emulated"
            yield "vnni"
    elif variant == "vnni":
        with features.emulate_vnni(False):
            assert features.vnni_implementation() == "hardware"
            yield "vnni"
    else:
        yield variant


def _rand(rng, shape, dtype):
    lo, hi = ref.qrange(dtype)
    return rng.integers(lo, hi + 1, shape).astype(dtype)


@st.composite
def gemm_case(draw):
    m = draw(st.integers(1, 20))
    n = draw(st.integers(1, 40))
    k = draw(st.integers(1, 70))
    a_dt = draw(st.sampled_from([np.uint8, np.int8]))
    w_dt = draw(st.sampled_from([np.int8, np.uint8]))
    per_channel = draw(st.booleans())
    seed = draw(st.integers(0, 2 ** 31))
    rng = np.random.default_rng(seed)
    a = _rand(rng, (m, k), a_dt)
    w = _rand(rng, (n, k), w_dt)
    alo, ahi = ref.qrange(a_dt)
    wlo, whi = ref.qrange(w_dt)
    za = int(rng.integers(alo, ahi + 1)) if draw(st.booleans()) else 0
    zw = rng.integers(wlo, whi + 1, n if per_channel else 1) if draw(st.booleans()) else \
        np.zeros(n if per_channel else 1, np.int64)
    return a, za, w, zw, rng


def _epilogue(draw_kind, rng, n, per_channel):
    shape = (n,) if per_channel else ()
    if draw_kind == "float":
        return ql.Epilogue(np.float32, bias=rng.integers(-5000, 5000, n).astype(np.int32),
                           scale=(rng.random(shape) * 1e-3 + 1e-5).astype(np.float32),
                           lo_f=0.0 if rng.random() < 0.5 else None)
    out = np.uint8 if draw_kind in ("u8", "u8relu") else np.int8
    lo, hi = ref.qrange(out)
    ep = ql.Epilogue(out, bias=rng.integers(-20000, 20000, n).astype(np.int32),
                     multiplier=(rng.random(shape) * 2e-3 + 1e-5).astype(np.float32),
                     out_zero_point=int(rng.integers(lo, hi + 1)))
    if draw_kind == "u8relu":
        ep.lo = ep.out_zero_point
    elif draw_kind == "s8clip":
        ep.lo, ep.hi = ep.out_zero_point - 20, ep.out_zero_point + 30
    return ep


@pytest.mark.parametrize("variant", VARIANTS)
@settings(**SETTINGS)
@given(case=gemm_case(), kind=st.sampled_from(["i32", "u8", "u8relu", "s8", "s8clip", "float"]),
       threads=st.sampled_from([1, 2]))
def test_qlinear_matches_ref(variant, case, kind, threads):
    a, za, w, zw, rng = case
    with kernel_path(variant) as path:
        pw = ql.pack_weight(w, zw, path=path)
        want_acc = ref.qgemm_i32(a, za, w, np.broadcast_to(zw, (w.shape[0],)))
        if kind == "i32":
            got = ql.qgemm_i32(a, za, pw, threads)
            assert got.dtype == np.int32
            np.testing.assert_array_equal(got, want_acc)
            return
        ep = _epilogue(kind, rng, w.shape[0], zw.size > 1)
        got = ql.qlinear(a, za, pw, ep, threads)
        want = ref.epilogue_ref(want_acc, ep)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(ql.apply_epilogue(want_acc, ep, path), want)


@pytest.mark.parametrize("variant", VARIANTS)
def test_larger_gemm_blocks(variant):
    """Several row blocks, panels and K chunks (the blocking loops), incl. leftovers everywhere."""
    rng = np.random.default_rng(7)
    a = _rand(rng, (101, 1030), np.uint8)
    w = _rand(rng, (300, 1030), np.int8)
    with kernel_path(variant) as path:
        pw = ql.pack_weight(w, 0, path=path)
        np.testing.assert_array_equal(ql.qgemm_i32(a, 128, pw, 2), ref.qgemm_i32(a, 128, w, 0))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("a_dt,w_dt", [(np.uint8, np.uint8), (np.int8, np.int8)], ids=["u8u8", "s8s8"])
def test_requantized_blocks_with_k_chunks_and_zero_points(variant, a_dt, w_dt):
    """The 8-bit epilogue in the micro-kernel's registers: several row blocks, panels and K chunks
    (the last chunk continues from the int32 tile), leftover rows and columns, per-channel weight
    zero points (the vnni path subtracts zw' * rowsum in registers) and 2 threads."""
    rng = np.random.default_rng(17)
    a = _rand(rng, (101, 1030), a_dt)
    w = _rand(rng, (300, 1030), w_dt)
    lo, hi = ref.qrange(w_dt)
    zw = rng.integers(lo, hi + 1, 300)
    za = int(rng.integers(*ref.qrange(a_dt)))
    ep = ql.Epilogue(np.uint8, bias=rng.integers(-50000, 50000, 300).astype(np.int32),
                     multiplier=(rng.random(300) * 4e-6 + 3e-6).astype(np.float32),
                     out_zero_point=128)
    want = ref.epilogue_ref(ref.qgemm_i32(a, za, w, zw), ep)
    assert np.isin(want, (0, 255)).mean() < 0.3 and len(np.unique(want)) > 100  # mostly in range
    with kernel_path(variant) as path:
        pw = ql.pack_weight(w, zw, path=path)
        for threads in (1, 2):
            np.testing.assert_array_equal(ql.qlinear(a, za, pw, ep, threads), want)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("a_dt", [np.uint8, np.int8], ids=["u8", "s8"])
def test_extreme_values_exact(variant, a_dt):
    """|a - za| = |w - zw| = 255 everywhere: the largest products, no saturation anywhere
    (s8 activations: -128 with zero point 127, through the vnni path's +128 shift)."""
    k = 1000
    lo, hi = ref.qrange(a_dt)
    a = np.full((7, k), hi, a_dt)
    za = lo
    w = np.full((9, k), 255, np.uint8)
    with kernel_path(variant) as path:
        pw = ql.pack_weight(w, 0, path=path)
        got = ql.qgemm_i32(a, za, pw)
        np.testing.assert_array_equal(got, np.full((7, 9), 255 * 255 * k, np.int32))
        pw = ql.pack_weight(np.zeros((9, k), np.uint8), 255, path=path)
        np.testing.assert_array_equal(ql.qgemm_i32(a, za, pw), np.full((7, 9), -255 * 255 * k))


@pytest.mark.parametrize("variant", VARIANTS)
def test_largest_k_and_zero_points_wrap_exactly(variant):
    """K = the largest exact K, |a - za| = |w - zw| = 255 through the zero points only: the exact
    sums sit next to the int32 limit, and the vnni path's column correction K*za'*zw' - za'*colsum
    (> 2^31) only comes out right through its wrapping (mod 2^32) arithmetic."""
    k = ref.max_exact_k() // 4 * 4
    a = np.zeros((2, k), np.uint8)
    w = np.zeros((3, k), np.uint8)
    want = ref.qgemm_i32(a, 255, w, np.full(3, 255))
    assert int(want[0, 0]) == 255 * 255 * k > 2 ** 31 - 2 ** 20
    with kernel_path(variant) as path:
        pw = ql.pack_weight(w, 255, path=path)
        np.testing.assert_array_equal(ql.qgemm_i32(a, 255, pw, 2), want)
        s8 = np.full((2, k), 127, np.int8)  # s8 activations, zero point -128: +255 per element
        np.testing.assert_array_equal(ql.qgemm_i32(s8, -128, pw), -want)


@pytest.mark.parametrize("variant", VARIANTS)
def test_k_beyond_max_exact_k_split_or_overflow(variant):
    kmax = ref.max_exact_k()
    k = kmax + 100
    rng = np.random.default_rng(3)
    a = _rand(rng, (3, k), np.uint8)
    w = _rand(rng, (5, k), np.int8)
    with kernel_path(variant) as path:
        pw = ql.pack_weight(w, 0, path=path)
        np.testing.assert_array_equal(ql.qgemm_i32(a, 0, pw), ref.qgemm_i32(a, 0, w, 0))
        big = ql.pack_weight(np.full((2, k), 255, np.uint8), 0, path=path)
        with pytest.raises(OverflowError, match=f"K={k}"):
            ql.qgemm_i32(np.full((1, k), 255, np.uint8), 0, big)


def test_path_selection_and_errors(monkeypatch):
    monkeypatch.delenv(features.ENV_VAR, raising=False)
    paths = available_paths()
    assert paths[-2:] == ("portable", "ref")
    assert backend("ref") is None
    with pytest.raises(KernelPathError, match="unknown kernel path"):
        check_path("sse9")
    with features.emulate_vnni(False):
        if features.missing_features("vnni"):
            assert not features.can_run("vnni") and "vnni" not in available_paths()
            with pytest.raises(KernelPathError, match="avx512vnni.*QRT_VNNI_EMULATE"):
                check_path("vnni")
            with pytest.raises(KernelPathError):
                ql.pack_weight(np.zeros((2, 4), np.int8), 0, path="vnni")
            with pytest.raises(KernelPathError, match="avx512vnni"):
                features.vnni_implementation()
        else:
            assert features.vnni_implementation() == "hardware"
            assert features.default_path() == "vnni"
    with features.emulate_vnni(True):  # runnable when asked for, never the default
        assert check_path("vnni") == "vnni" and "vnni" in available_paths()
        assert features.vnni_implementation() == "emulated"
        assert features.default_path() == features.native_paths()[0]
        monkeypatch.setenv(features.ENV_VAR, "vnni")
        assert features.default_path() == "vnni"
    if features.missing_features("vnni"):
        with features.emulate_vnni(False):
            with pytest.raises(KernelPathError):  # the cached choice follows the switch
                features.default_path()
    monkeypatch.setenv(features.ENV_VAR, "portable")
    assert features.default_path() == "portable"
    monkeypatch.setenv(features.ENV_VAR, "bogus")
    with pytest.raises(KernelPathError):
        features.default_path()
