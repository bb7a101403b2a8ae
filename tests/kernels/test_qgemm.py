"""Every fast integer kernel is bit-exact against its ref.py twin, on every path this CPU can run."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrt.kernels import qlinear as ql
from qrt.kernels import ref
from qrt.kernels.cpu import KernelPathError, available_paths, backend, check_path, features

FAST = ("vnni", "avx2", "portable")
SETTINGS = dict(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def _path_param(p):
    marks = []
    if not features.can_run(p):
        marks.append(pytest.mark.skip(reason="CPU lacks AVX-512 VNNI" if p == "vnni"
                                      else f"CPU lacks {', '.join(features.missing_features(p))}"))
    return pytest.param(p, marks=marks, id=p)


PATHS = [_path_param(p) for p in FAST + ("ref",)]


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


@pytest.mark.parametrize("path", PATHS)
@settings(**SETTINGS)
@given(case=gemm_case(), kind=st.sampled_from(["i32", "u8", "u8relu", "s8", "s8clip", "float"]),
       threads=st.sampled_from([1, 2]))
def test_qlinear_matches_ref(path, case, kind, threads):
    a, za, w, zw, rng = case
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


@pytest.mark.parametrize("path", PATHS)
def test_larger_gemm_blocks(path):
    """Several row blocks, panels and K chunks (the blocking loops), incl. leftovers everywhere."""
    rng = np.random.default_rng(7)
    a = _rand(rng, (101, 1030), np.uint8)
    w = _rand(rng, (300, 1030), np.int8)
    pw = ql.pack_weight(w, 0, path=path)
    np.testing.assert_array_equal(ql.qgemm_i32(a, 128, pw, 2), ref.qgemm_i32(a, 128, w, 0))


@pytest.mark.parametrize("path", PATHS)
def test_extreme_values_exact(path):
    """|a - za| = |w - zw| = 255 everywhere: the largest products, no saturation anywhere."""
    k = 1000
    a = np.full((7, k), 255, np.uint8)
    w = np.full((9, k), 255, np.uint8)
    pw = ql.pack_weight(w, 0, path=path)
    got = ql.qgemm_i32(a, 0, pw)
    np.testing.assert_array_equal(got, np.full((7, 9), 255 * 255 * k, np.int32))
    pw = ql.pack_weight(np.zeros((9, k), np.uint8), 255, path=path)
    np.testing.assert_array_equal(ql.qgemm_i32(a, 0, pw), np.full((7, 9), -255 * 255 * k))


@pytest.mark.parametrize("path", PATHS)
def test_k_beyond_max_exact_k_split_or_overflow(path):
    kmax = ref.max_exact_k()
    k = kmax + 100
    rng = np.random.default_rng(3)
    a = _rand(rng, (3, k), np.uint8)
    w = _rand(rng, (5, k), np.int8)
    pw = ql.pack_weight(w, 0, path=path)
    np.testing.assert_array_equal(ql.qgemm_i32(a, 0, pw), ref.qgemm_i32(a, 0, w, 0))
    big = ql.pack_weight(np.full((2, k), 255, np.uint8), 0, path=path)
    with pytest.raises(OverflowError, match=f"K={k}"):
        ql.qgemm_i32(np.full((1, k), 255, np.uint8), 0, big)


def test_path_selection_and_errors(monkeypatch):
    paths = available_paths()
    assert paths[-2:] == ("portable", "ref")
    assert backend("ref") is None
    with pytest.raises(KernelPathError, match="unknown kernel path"):
        check_path("sse9")
    if not features.can_run("vnni"):
        with pytest.raises(KernelPathError, match="avx512vnni"):
            check_path("vnni")
        with pytest.raises(KernelPathError):
            ql.pack_weight(np.zeros((2, 4), np.int8), 0, path="vnni")
    monkeypatch.setenv(features.ENV_VAR, "portable")
    assert features.default_path() == "portable"
    monkeypatch.setenv(features.ENV_VAR, "bogus")
    with pytest.raises(KernelPathError):
        features.default_path()
