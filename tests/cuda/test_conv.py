"""CUDA implicit-GEMM conv (groups, padding, strides, dilations, 1-D) and depthwise conv, bit-exact
against ref.im2col + ref.qgemm_i32 + the epilogue reference."""
import numpy as np
import pytest

from tests.cuda.util import SMALL, C, conv_ref, rand_q, ref, spread_multiplier
from qrt.kernels.qlinear import Epilogue

# (x shape, cout, kernel, strides, pads, dilations, group, x dtype, out dtype)
CASES = {
    "3x3_pad1": ((1, 3, 7, 6), 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "uint8", "uint8"),
    "stride2_asym_dil2_s8_relu": ((2, 2, 9, 8), 4, (2, 3), (2, 1), (0, 1, 2, 0), (2, 2), 1, "int8", "int8"),
    "groups2_float": ((1, 4, 5, 5), 6, (2, 3), (1, 2), (1, 0, 0, 1), (1, 1), 2, "uint8", "float32"),
    "1x1_batch3": ((3, 5, 3, 4), 7, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "uint8", "int8"),
    "conv1d": ((2, 3, 9), 4, (3,), (2,), (1, 2), (1,), 1, "uint8", "uint8"),
    "depthwise_as_groups": ((1, 4, 6, 5), 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4, "uint8", "uint8"),
}


def _epilogue(rng, acc_peak, cout, out_dtype, clamp):
    out_dtype = np.dtype(out_dtype)
    bias = rng.integers(-2000, 2000, cout).astype(np.int32)
    mult = spread_multiplier(np.array([acc_peak]), rng, cout)
    if out_dtype == np.float32:
        return Epilogue(np.float32, bias=bias, scale=mult * np.float32(0.1), lo_f=0.0 if clamp else None)
    zp = 10 if out_dtype == np.uint8 else -5
    return Epilogue(out_dtype, bias=bias, multiplier=mult, out_zero_point=zp, lo=zp if clamp else None)


def _run(case, algo="auto", tile=SMALL, seed=0):
    xs, cout, ks, st, pads, dil, group, xdt, odt = case
    rng = np.random.default_rng(seed)
    x = rand_q(rng, xs, xdt)
    w = rand_q(rng, (cout, xs[1] // group) + ks, np.int8)
    x_zp = int(rng.integers(*ref.qrange(xdt)) // 2)
    w_zp = rng.integers(-3, 4, cout)
    peak = 128 * 128 * (xs[1] // group) * int(np.prod(ks)) // 4
    ep = _epilogue(rng, peak, cout, odt, clamp=(odt != "uint8"))
    want = conv_ref(x, x_zp, w, w_zp, ep, ks, st, pads, dil, group)
    cw = C.upload_weight(w, w_zp)
    got = C.qconv_cuda(x, x_zp, cw, ep, kernel_shape=ks, strides=st, pads=pads, dilations=dil,
                       group=group, algo=algo, tile=tile).copy_to_host()
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", sorted(CASES))
def test_qconv_matches_ref(name):
    _run(CASES[name])


def test_qconv_default_tile():
    _run(CASES["groups2_float"], tile=C.DEFAULT_TILE, seed=1)


def test_depthwise_via_implicit_gemm():
    """group == C forced through the implicit-GEMM kernel (one grid z per group)."""
    _run(CASES["depthwise_as_groups"], algo="implicit_gemm", seed=2)


DW = {
    "3x3_s1": ((2, 3, 6, 7), 3, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 3, "uint8", "uint8"),
    "mult2_s2_dil": ((1, 2, 9, 8), 4, (3, 2), (2, 2), (2, 0, 1, 1), (2, 1), 2, "int8", "int8"),
    "5x5_float": ((1, 4, 7, 7), 4, (5, 5), (1, 2), (2, 2, 2, 2), (1, 1), 4, "uint8", "float32"),
    "1d": ((2, 3, 11), 3, (3,), (1,), (1, 1), (2,), 3, "uint8", "int8"),
}


@pytest.mark.parametrize("name", sorted(DW))
def test_depthwise_matches_ref(name):
    _run(DW[name], algo="depthwise", seed=3)


def test_depthwise_conv_cuda_entry_point():
    rng = np.random.default_rng(4)
    x = rand_q(rng, (1, 3, 5, 5), np.uint8)
    w = rand_q(rng, (3, 1, 3, 3), np.int8)
    ep = Epilogue(np.uint8, multiplier=np.full(3, 1e-3, np.float32), out_zero_point=100)
    got = C.depthwise_conv_cuda(x, 7, C.upload_weight(w, 0), ep, (3, 3), pads=(1, 1, 1, 1))
    want = conv_ref(x, 7, w, 0, ep, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 3)
    np.testing.assert_array_equal(got.copy_to_host(), want)


def test_qconv_errors():
    x = np.zeros((1, 4, 5, 5), np.uint8)
    ep = Epilogue(np.uint8, multiplier=np.ones(6, np.float32))
    with pytest.raises(ValueError, match="must divide"):
        C.qconv_cuda(x, 0, np.zeros((6, 4, 3, 3), np.int8), ep, (3, 3), group=3)
    with pytest.raises(ValueError, match="does not match C/group"):
        C.qconv_cuda(x, 0, np.zeros((6, 4, 3, 3), np.int8), ep, (3, 3), group=2)
    with pytest.raises(ValueError, match="empty"):
        C.qconv_cuda(x, 0, np.zeros((6, 4, 7, 7), np.int8), ep, (7, 7))
    with pytest.raises(ValueError, match="1-D and 2-D"):
        C.qconv_cuda(np.zeros((1, 1, 2, 2, 2), np.uint8), 0, np.zeros((1, 1, 1, 1, 1), np.int8),
                     Epilogue(np.uint8, multiplier=np.ones(1, np.float32)), (1, 1, 1))
    with pytest.raises(ValueError, match="group == input channels"):
        C.qconv_cuda(x, 0, np.zeros((6, 4, 3, 3), np.int8), ep, (3, 3), algo="depthwise")
