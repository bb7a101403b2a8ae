"""CUDA int8 GEMM with fused epilogue, bit-exact against qrt.kernels.qlinear (numpy reference)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.cuda.util import FEW, SMALL, C, rand_q, ref, spread_multiplier
from qrt.kernels.qlinear import Epilogue, pack_weight, qlinear


def _case(rng, m, n, k, a_dtype, w_dtype, out_dtype, per_channel, with_bias, clamp):
    a = rand_q(rng, (m, k), a_dtype)
    w = rand_q(rng, (n, k), w_dtype)
    a_zp = int(rng.integers(*ref.qrange(a_dtype)) // 2)
    w_zp = (rng.integers(-4, 5, n) if per_channel else np.full(n, int(rng.integers(-4, 5))))
    if np.dtype(w_dtype) == np.uint8:
        w_zp = w_zp + 128
    pw = pack_weight(w, w_zp)
    acc = ref.qgemm_i32(a, a_zp, w, pw.zero_point)
    bias = rng.integers(-5000, 5000, n).astype(np.int32) if with_bias else None
    mult = spread_multiplier(acc, rng, n)
    if not per_channel:
        mult = mult[:1]
    out_dtype = np.dtype(out_dtype)
    if out_dtype == np.float32:
        ep = Epilogue(np.float32, bias=bias, scale=mult * np.float32(0.01),
                      lo_f=0.0 if clamp else None, hi_f=0.5 if clamp else None)
    else:
        lo, hi = ref.qrange(out_dtype)
        zp = int(rng.integers(lo, hi + 1) // 3)
        ep = Epilogue(out_dtype, bias=bias, multiplier=mult, out_zero_point=zp,
                      lo=zp if clamp else None, hi=zp + 60 if clamp else None)
    return a, a_zp, pw, ep


@settings(FEW, max_examples=20)
@given(m=st.integers(1, 24), n=st.integers(1, 20), k=st.integers(1, 40),
       a_dtype=st.sampled_from(["uint8", "int8"]), w_dtype=st.sampled_from(["int8", "uint8"]),
       out_dtype=st.sampled_from(["uint8", "int8", "float32"]), per_channel=st.booleans(),
       with_bias=st.booleans(), clamp=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_qlinear_matches_ref(m, n, k, a_dtype, w_dtype, out_dtype, per_channel, with_bias, clamp,
                             seed):
    a, a_zp, pw, ep = _case(np.random.default_rng(seed), m, n, k, a_dtype, w_dtype, out_dtype,
                            per_channel, with_bias, clamp)
    got = C.qlinear_cuda(a, a_zp, C.upload_weight(pw), ep, tile=SMALL).copy_to_host()
    want = qlinear(a, a_zp, pw, ep)
    assert got.dtype == want.dtype and got.shape == (m, n)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("a_dtype,out_dtype", [("uint8", "uint8"), ("int8", "float32")])
def test_qlinear_default_tile(a_dtype, out_dtype):
    """The production tile (64x64x32, 16x16 threads): one ragged block, two K steps."""
    a, a_zp, pw, ep = _case(np.random.default_rng(11), 37, 21, 40, a_dtype, "int8", out_dtype,
                            True, True, False)
    got = C.qlinear_cuda(a, a_zp, pw, ep).copy_to_host()
    np.testing.assert_array_equal(got, qlinear(a, a_zp, pw, ep))


@pytest.mark.parametrize("out_dtype", [np.uint8, np.int8])
def test_epilogue_ties_round_half_even(out_dtype):
    """acc * 0.5 lands on exact .5 ties: the epilogue must round them to even, like np.rint."""
    k = 4
    a = np.arange(1, 13, dtype=np.uint8).reshape(12, 1).repeat(k, 1) - np.uint8(1)
    w = np.array([[1, 0, 0, 0], [1, 1, 1, 0], [-1, 0, 0, 0]], np.int8)
    pw = pack_weight(w, 0)
    ep = Epilogue(out_dtype, multiplier=np.array([0.5, 0.5, 0.5], np.float32), out_zero_point=3)
    got = C.qlinear_cuda(a, 0, pw, ep, tile=SMALL).copy_to_host()
    np.testing.assert_array_equal(got, qlinear(a, 0, pw, ep))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # simulator threads
def test_epilogue_int32_saturation_and_large_multiplier():
    """acc + bias beyond int32 clamps like the reference; a huge multiplier saturates."""
    rng = np.random.default_rng(5)
    a, w = rand_q(rng, (5, 16), np.uint8), rand_q(rng, (4, 16), np.int8)
    pw = pack_weight(w, 0)
    bias = np.array([2 ** 31 - 1, -(2 ** 31), 0, 2 ** 31 - 100], np.int32)
    for ep in (Epilogue(np.int8, bias=bias, multiplier=np.full(4, 1e-9, np.float32)),
               Epilogue(np.uint8, bias=bias, multiplier=np.array([1e30, 1e30, 1e30, 1e-12], np.float32),
                        out_zero_point=7),
               Epilogue(np.float32, bias=bias, scale=np.full(4, 1e-6, np.float32))):
        with np.errstate(over="ignore"):  # 1e30 * acc overflows float32 to inf, then saturates
            want = qlinear(a, 0, pw, ep)
        got = C.qlinear_cuda(a, 0, pw, ep, tile=SMALL).copy_to_host()
        np.testing.assert_array_equal(got, want)


def test_qlinear_device_inputs_prepared_epilogue_and_out():
    rng = np.random.default_rng(9)
    a, a_zp, pw, ep = _case(rng, 9, 7, 12, "uint8", "int8", "uint8", True, True, True)
    cw = C.upload_weight(pw.w, pw.zero_point)
    cep = C.prepare_epilogue(ep, cw.n)
    out = C.to_device(np.zeros((9, 7), np.uint8))
    y = C.qlinear_cuda(C.to_device(a), np.array([a_zp]), cw, cep, out=out, tile=SMALL)
    assert y is out
    np.testing.assert_array_equal(y.copy_to_host(), qlinear(a, a_zp, pw, ep))


def test_qlinear_errors():
    pw = pack_weight(np.zeros((3, 4), np.int8))
    ep = Epilogue(np.uint8, multiplier=np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"expected \(M, 4\)"):
        C.qlinear_cuda(np.zeros((2, 5), np.uint8), 0, pw, ep)
    with pytest.raises(TypeError, match="activation must be uint8 or int8"):
        C.qlinear_cuda(np.zeros((2, 4), np.float32), 0, pw, ep)
    with pytest.raises(ValueError, match="needs Epilogue.multiplier"):
        C.qlinear_cuda(np.zeros((2, 4), np.uint8), 0, pw, Epilogue(np.int8))
    with pytest.raises(ValueError, match="exceeds"):
        C.qlinear_cuda(np.zeros((1, ref.max_exact_k() + 1), np.uint8), 0,
                       pack_weight(np.zeros((1, ref.max_exact_k() + 1), np.int8)),
                       Epilogue(np.uint8, multiplier=np.ones(1, np.float32)))
    with pytest.raises(ValueError, match="multiple of tm"):
        C.TileConfig(bm=10, tm=4)
