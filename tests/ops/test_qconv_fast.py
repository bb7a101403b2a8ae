"""qrt.QConv / qrt.QGemm as the plan runs them (the one-call avx2 path when the CPU has AVX2, the
general route otherwise) against the numpy reference twins, bit for bit: kernels, strides, pads,
dilations, 1-D/2-D, u8/s8, per-channel zero points, 8-bit and float outputs, folded tables."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qrt.kernels import ref
from qrt.kernels.qlinear import Epilogue
from qrt.ops.fused import qconv, qgemm
from qrt.ops.registry import NodeContext

CTX = NodeContext("t", "QConv", 1, 1)


def _epi_kwargs(rng, m, out):
    mult = rng.uniform(1e-4, 3e-3, m).astype(np.float32)
    return dict(x_scale=0.02, w_scale=None, out_dtype=out, multiplier=mult, scale=mult,
                y_zp=int(rng.integers(0, 50)) if out == "uint8" else int(rng.integers(-20, 20)),
                lo=None, hi=None, lo_f=None, hi_f=None, kernel="")


def _ep(kw, m, bias):
    dt = np.dtype(kw["out_dtype"])
    if dt == np.float32:
        return Epilogue(np.float32, bias=bias, scale=kw["scale"])
    return Epilogue(dt.type, bias=bias, multiplier=kw["multiplier"], out_zero_point=kw["y_zp"])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 31), nd=st.sampled_from([1, 2]), c=st.integers(1, 9),
       m=st.integers(1, 20), k=st.integers(1, 3), s=st.integers(1, 2), d=st.integers(1, 2),
       p=st.integers(0, 2), xdt=st.sampled_from([np.uint8, np.int8]),
       out=st.sampled_from(["uint8", "int8", "float32"]), table=st.booleans(), n=st.integers(1, 2))
def test_qconv_matches_reference(seed, nd, c, m, k, s, d, p, xdt, out, table, n):
    rng = np.random.default_rng(seed)
    sp = tuple(int(v) for v in rng.integers(max(k * d, 3), 11, nd))
    lo = 0 if xdt == np.uint8 else -128
    x = rng.integers(lo, lo + 256, (n, c) + sp).astype(xdt)
    w = rng.integers(-128, 128, (m, c) + (k,) * nd).astype(np.int8)
    wzp = rng.integers(-5, 6, m).astype(np.int32)
    bias = rng.integers(-3000, 3000, m).astype(np.int32)
    xzp = int(rng.integers(lo, lo + 256))
    kw = _epi_kwargs(rng, m, out)
    pt = None
    if table and out != "float32":
        pt = rng.integers(0, 256, (m, 256)).astype(np.uint8 if rng.integers(2) else np.int8)
    got = qconv(x, w, wzp, bias, x_zp=xzp, state={}, kernel_shape=None, strides=[s] * nd,
                pads=[p] * (2 * nd), dilations=[d] * nd, group=1, auto_pad="NOTSET",
                post_table=pt, post_lo=0 if out == "uint8" else -128, ctx=CTX, **kw)
    want = ref.qconv_ref(x, xzp, w, wzp, _ep(kw, m, bias), [s] * nd, [p] * (2 * nd), [d] * nd)
    if pt is not None:
        idx = want.astype(np.int32) - (0 if out == "uint8" else -128)
        want = pt[np.arange(m).reshape((1, m) + (1,) * nd), idx]
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 31), lead=st.sampled_from([(1,), (7,), (2, 5)]),
       kdim=st.integers(1, 70), n=st.integers(1, 40), xdt=st.sampled_from([np.uint8, np.int8]),
       out=st.sampled_from(["uint8", "int8", "float32"]))
def test_qgemm_matches_reference(seed, lead, kdim, n, xdt, out):
    rng = np.random.default_rng(seed)
    lo = 0 if xdt == np.uint8 else -128
    x = rng.integers(lo, lo + 256, lead + (kdim,)).astype(xdt)
    w = rng.integers(-128, 128, (n, kdim)).astype(np.int8)
    wzp = rng.integers(-5, 6, n).astype(np.int32)
    bias = rng.integers(-3000, 3000, n).astype(np.int32)
    xzp = int(rng.integers(lo, lo + 256))
    kw = _epi_kwargs(rng, n, out)
    got = qgemm(x, w, wzp, bias, x_zp=xzp, state={}, ctx=CTX, **kw)
    acc = ref.qgemm_i32(x.reshape(-1, kdim), xzp, w, wzp)
    want = ref.epilogue_ref(acc, _ep(kw, n, bias)).reshape(lead + (n,))
    np.testing.assert_array_equal(got, want)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 31), shapes=st.sampled_from([
    ((2, 5, 8), (2, 8, 6)), ((3, 1, 4, 16), (1, 2, 16, 4)), ((7, 9), (9, 3)), ((4, 33), (33,)),
    ((2, 64, 128), (2, 128, 64)), ((4, 128, 16), (4, 16, 128)), ((2, 37, 130), (2, 130, 71)),
    ((1, 6, 300), (1, 300, 20))]),
       adt=st.sampled_from([np.uint8, np.int8]), bdt=st.sampled_from([np.uint8, np.int8]),
       out=st.sampled_from(["uint8", "int8", "float32"]), threads=st.sampled_from([1, 2]))
def test_qmatmul_act_matches_reference(seed, shapes, adt, bdt, out, threads):
    """Two integer activations (attention scores, context): the small Numba path, the packed
    avx2 GEMM (8-bit outputs from 32K multiply-adds: partial tiles and panels, K in two chunks,
    batch indices in parallel) and the BLAS path (float outputs of the larger shapes) against
    exact int64 sums + the reference epilogue."""
    from qrt.ops.fused import qmatmul_act
    ctx = NodeContext("m", "QMatMulAct", 1, threads)
    rng = np.random.default_rng(seed)
    sa, sb = shapes
    a = rng.integers(*ref.qrange(adt), size=sa, endpoint=True).astype(adt)
    b = rng.integers(*ref.qrange(bdt), size=sb, endpoint=True).astype(bdt)
    za, zb = int(rng.integers(*ref.qrange(adt))), int(rng.integers(*ref.qrange(bdt)))
    nn = sb[-1] if len(sb) > 1 else 1
    mult = np.float32(rng.uniform(1e-5, 1e-3))
    kw = dict(a_scale=0.1, a_zp=za, b_scale=0.1, b_zp=zb, out_dtype=out, multiplier=mult,
              scale=mult, y_zp=3 if out != "float32" else 0, lo=None, hi=None, lo_f=None,
              hi_f=None, kernel="")
    acc = np.matmul(a.astype(np.int64) - za, b.astype(np.int64) - zb)
    dt = np.dtype(out)
    ep = (Epilogue(np.float32, scale=np.full(nn, mult, np.float32)) if dt == np.float32 else
          Epilogue(dt.type, multiplier=np.full(nn, mult, np.float32), out_zero_point=3))
    want = ref.epilogue_ref(acc.reshape(-1, nn).astype(np.int32), ep).reshape(acc.shape)
    # the op called directly, and as the plan runs it (attributes bound once)
    step = qmatmul_act.bind_step(ctx=ctx, **kw)
    for got in (qmatmul_act(a, b, ctx=ctx, **kw), step(a, b), step(a, b)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif("not _avx2()")
def test_attention_sized_qmatmul_takes_the_packed_gemm():
    from qrt.kernels import qlinear as ql
    from qrt.ops.fused import _packed_qmatmul_call, make_epilogue
    a = np.zeros((4, 128, 64), np.uint8)
    b = np.zeros((4, 64, 128), np.int8)
    ep = ql._ep_args(make_epilogue(128, "uint8", None, None, None, None, np.float32(1e-3),
                                   None, 3, None, None, None, None), 128)
    assert _packed_qmatmul_call(np.dtype(np.uint8), a, b, 0, 0, ep, 1) is not None
    # float outputs and broadcast batch dims keep their own paths
    assert _packed_qmatmul_call(np.dtype(np.uint8), a, b[:1], 0, 0, ep, 1) is None


# ------------------------------------------------------------- every one-call kernel path
def _variants():
    from qrt.kernels.cpu import features
    out = [pytest.param("vnni-emulated", id="vnni-emulated")]
    for p in ("vnni", "avx2"):
        out.append(pytest.param(p, id=p, marks=pytest.mark.skipif(
            bool(features.missing_features(p)), reason=f"CPU lacks {p}")))
    return out


@contextlib.contextmanager
def _forced_path(variant, monkeypatch):
    from qrt.kernels.cpu import features
    path = "vnni" if variant.startswith("vnni") else variant
    monkeypatch.setenv(features.ENV_VAR, path)
    with features.emulate_vnni(variant == "vnni-emulated"):
        yield path


# (n, c, m, k, stride, pad, dilation, x dtype, out, table, threads): multi-panel (m > 64), row
# blocks past 48 positions, 1x1 pointwise, padding wider than the kernel's reach, 2 threads
# (parallel GEMM inside the one call), s8 activations, float and tabled outputs.
CONV_CASES = [
    (1, 3, 16, 3, 1, 1, 1, np.uint8, "uint8", False, 1),
    (2, 20, 130, 3, 2, 1, 1, np.int8, "int8", True, 1),
    (1, 64, 72, 1, 1, 0, 1, np.uint8, "uint8", False, 2),
    (1, 64, 130, 3, 1, 1, 1, np.int8, "float32", False, 2),
    (2, 7, 9, 3, 1, 3, 2, np.int8, "uint8", True, 1),
    (1, 33, 65, 1, 1, 0, 1, np.int8, "int8", False, 1),
    # K = 360: more than one K chunk (the register epilogue continues from the int32 tile)
    (1, 40, 70, 3, 1, 1, 1, np.uint8, "uint8", False, 1),
    (1, 40, 70, 3, 1, 1, 1, np.int8, "int8", True, 2),
]


@pytest.mark.parametrize("variant", _variants())
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(map(str, c[:7])))
def test_one_call_conv_on_every_path(variant, case, monkeypatch):
    """The one-call conv (im2col/pointwise packing, GEMM, epilogue into NCHW, table) of each
    path is the one that runs, and is bit-exact with the reference twin."""
    n, c, m, k, s, p, d, xdt, out, table, threads = case
    rng = np.random.default_rng(7)
    lo = 0 if xdt == np.uint8 else -128
    x = rng.integers(lo, lo + 256, (n, c, 24, 20)).astype(xdt)
    w = rng.integers(-128, 128, (m, c, k, k)).astype(np.int8)
    wzp = rng.integers(-3, 4, m).astype(np.int32)
    bias = rng.integers(-3000, 3000, m).astype(np.int32)
    xzp = int(rng.integers(lo, lo + 256))
    kw = _epi_kwargs(rng, m, out)
    pt = rng.integers(0, 256, (m, 256)).astype(np.uint8) if table else None
    state = {}
    ctx = NodeContext("t", "QConv", 1, threads)
    with _forced_path(variant, monkeypatch):
        got = qconv(x, w, wzp, bias, x_zp=xzp, state=state, kernel_shape=None, strides=[s, s],
                    pads=[p] * 4, dilations=[d, d], group=1, auto_pad="NOTSET", post_table=pt,
                    post_lo=0 if out == "uint8" else -128, ctx=ctx, **kw)
        fast = state[("fast", x.shape, x.dtype)]
    assert fast and "conv_nchw" in getattr(fast[0], "py_func", fast[0]).__name__
    want = ref.qconv_ref(x, xzp, w, wzp, _ep(kw, m, bias), [s, s], [p] * 4, [d, d])
    if pt is not None:
        idx = want.astype(np.int32) - (0 if out == "uint8" else -128)
        want = pt[np.arange(m).reshape(1, m, 1, 1), idx]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("variant", _variants())
@pytest.mark.parametrize("m,kdim,n,xdt,out,threads", [
    (1, 37, 10, np.uint8, "uint8", 1), (50, 300, 130, np.int8, "int8", 1),
    (97, 256, 700, np.uint8, "float32", 2), (7, 64, 65, np.int8, "uint8", 1),
    (50, 700, 130, np.int8, "int8", 1), (61, 1030, 33, np.uint8, "uint8", 2),
    (200, 1024, 130, np.uint8, "uint8", 2)])  # 26.6M MACs: the parallel GEMM
def test_one_call_gemm_on_every_path(variant, m, kdim, n, xdt, out, threads, monkeypatch):
    rng = np.random.default_rng(11)
    lo = 0 if xdt == np.uint8 else -128
    x = rng.integers(lo, lo + 256, (m, kdim)).astype(xdt)
    w = rng.integers(-128, 128, (n, kdim)).astype(np.int8)
    wzp = rng.integers(-3, 4, n).astype(np.int32)
    bias = rng.integers(-3000, 3000, n).astype(np.int32)
    xzp = int(rng.integers(lo, lo + 256))
    kw = _epi_kwargs(rng, n, out)
    state = {}
    with _forced_path(variant, monkeypatch):
        got = qgemm(x, w, wzp, bias, x_zp=xzp, state=state,
                    ctx=NodeContext("t", "QGemm", 1, threads), **kw)
    fast = [v for key, v in state.items() if isinstance(key, tuple) and key[0] == "fast"]
    assert fast and fast[0] and "linear_2d" in getattr(fast[0][0], "py_func", fast[0][0]).__name__
    acc = ref.qgemm_i32(x, xzp, w, wzp)
    np.testing.assert_array_equal(got, ref.epilogue_ref(acc, _ep(kw, n, bias)))


# ------------------------------------------------ avx2: output channels as the GEMM's rows
def _panels_reference(x, img, zx, k, s, p, d, nd):
    """The (K, P) im2col matrix of x[img] minus zx (padding = zx, so 0), as numpy."""
    xi = x[img].astype(np.int32)
    c, sp = xi.shape[0], xi.shape[1:]
    xpad = np.pad(xi, [(0, 0)] + [(p, p)] * nd, constant_values=zx)
    out_sp = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n in sp]
    cols = []
    for ci in range(c):
        for taps in np.ndindex(*(k,) * nd):
            sl = tuple(slice(t * d, t * d + s * (o - 1) + 1, s) for t, o in zip(taps, out_sp))
            cols.append(xpad[(ci,) + sl].reshape(-1))
    return np.stack(cols) - zx


@pytest.mark.skipif("not _avx2()")
@pytest.mark.parametrize("c,sp,k,s,p,d,xdt", [
    (1, (5, 7), 1, 1, 0, 1, np.uint8), (3, (9, 13), 3, 1, 1, 1, np.int8),
    (5, (8, 8), 3, 2, 1, 1, np.uint8), (4, (6, 10), 1, 2, 0, 1, np.int8),
    (2, (4, 5), 3, 1, 4, 2, np.uint8), (7, (37,), 5, 1, 2, 1, np.int8)])
def test_b_panel_packers_match_numpy(c, sp, k, s, p, d, xdt):
    """pointwise_panels / im2col_panels: panel pp, k-pair kk, column cc, j holds im2col[2kk+j,
    16pp+cc] - zx; K padding is zero."""
    from qrt.kernels.cpu import common
    nd = len(sp)
    rng = np.random.default_rng(c * 31 + k)
    lo = 0 if xdt == np.uint8 else -128
    x = rng.integers(lo, lo + 256, (2, c) + sp).astype(xdt)
    zx = int(rng.integers(lo, lo + 256))
    want = _panels_reference(x, 1, zx, k, s, p, d, nd)
    kdim, npos = want.shape
    kp = common.round_up(kdim, common.KALIGN)
    out = np.full((-(-npos // 16), kp // 2, 32), 12345, np.int16)
    x4 = x.reshape((2, c) + ((1,) if nd == 1 else ()) + sp).view(np.uint8)
    ow = want.shape[1] if nd == 1 else (sp[1] + 2 * p - d * (k - 1) - 1) // s + 1
    oh = npos // ow
    signed = xdt == np.int8
    if k == 1 and s == 1 and p == 0:
        common.pointwise_panels(x4, 1, signed, zx, out)
    else:
        kh = 1 if nd == 1 else k
        ph, sh, dh = (0, 1, 1) if nd == 1 else (p, s, d)
        common.im2col_panels(x4, 1, signed, zx, kh, k, sh, s, ph, p, dh, d, oh, ow, kp, out)
    full = np.zeros((kp, out.shape[0] * 16), np.int64)
    full[:kdim, :npos] = want
    got = out.reshape(out.shape[0], kp // 2, 16, 2).transpose(1, 3, 0, 2).reshape(kp, -1)
    np.testing.assert_array_equal(got[:, :npos], full[:, :npos])


def _avx2():
    from qrt.kernels.cpu import features
    return features.can_run("avx2")


@pytest.mark.skipif("not _avx2()")
@pytest.mark.parametrize("case", [
    # (n, c, sp, m, k, stride, pad, dilation, x dtype, out, table, threads)
    (1, 1, (4, 4), 1, 1, 1, 0, 1, np.uint8, "uint8", False, 1),      # P = 16, K = 1, M = 1
    (2, 3, (7, 13), 7, 3, 1, 1, 1, np.int8, "int8", True, 1),        # P = 91: a partial panel
    (1, 9, (10, 11), 13, 1, 2, 0, 1, np.uint8, "uint8", False, 1),   # strided 1x1: im2col
    (1, 2, (3, 20), 5, 3, 1, 4, 2, np.int8, "uint8", False, 1),      # padding past the reach
    (1, 5, (41,), 11, 5, 1, 2, 1, np.uint8, "int8", False, 1),       # 1-D
    (1, 300, (4, 8), 20, 1, 1, 0, 1, np.int8, "uint8", True, 1),     # K = 300: two K chunks
    (1, 48, (12, 12), 70, 3, 1, 1, 1, np.uint8, "uint8", False, 2),  # 2 threads, K chunks
])
def test_channels_as_rows_conv(case, monkeypatch):
    """avx2 convs with 8-bit outputs and at least one panel of output positions run with the
    output channels as the GEMM's rows (NCHW rows stored whole); bit-exact with the reference."""
    from qrt.kernels.cpu import features
    n, c, sp, m, k, s, p, d, xdt, out, table, threads = case
    nd = len(sp)
    rng = np.random.default_rng(sum(sp) + m)
    lo = 0 if xdt == np.uint8 else -128
    x = rng.integers(lo, lo + 256, (n, c) + sp).astype(xdt)
    w = rng.integers(-128, 128, (m, c) + (k,) * nd).astype(np.int8)
    wzp = rng.integers(-3, 4, m).astype(np.int32)
    bias = rng.integers(-3000, 3000, m).astype(np.int32)
    xzp = int(rng.integers(lo, lo + 256))
    kw = _epi_kwargs(rng, m, out)
    pt = rng.integers(0, 256, (m, 256)).astype(np.uint8) if table else None
    state = {}
    monkeypatch.setenv(features.ENV_VAR, "avx2")
    got = qconv(x, w, wzp, bias, x_zp=xzp, state=state, kernel_shape=None, strides=[s] * nd,
                pads=[p] * (2 * nd), dilations=[d] * nd, group=1, auto_pad="NOTSET",
                post_table=pt, post_lo=0 if out == "uint8" else -128,
                ctx=NodeContext("t", "QConv", 1, threads), **kw)
    fast = state[("fast", x.shape, x.dtype)]
    assert fast and fast[1][1][13] == 1  # geo[13]: channels as rows
    assert getattr(fast[0], "py_func", fast[0]).__name__ == "conv_nchw_rows"
    want = ref.qconv_ref(x, xzp, w, wzp, _ep(kw, m, bias), [s] * nd, [p] * (2 * nd), [d] * nd)
    if pt is not None:
        idx = want.astype(np.int32) - (0 if out == "uint8" else -128)
        want = pt[np.arange(m).reshape((1, m) + (1,) * nd), idx]
    np.testing.assert_array_equal(got, want)


@pytest.mark.skipif("not _avx2()")
@pytest.mark.parametrize("sp,out", [((3, 5), "uint8"), ((8, 8), "float32")])
def test_positions_as_rows_below_a_panel_or_for_float(sp, out, monkeypatch):
    """Fewer than 16 output positions, or a float output: the positions-as-rows GEMM."""
    from qrt.kernels.cpu import features
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (1, 6) + sp).astype(np.uint8)
    w = rng.integers(-128, 128, (9, 6, 1, 1)).astype(np.int8)
    kw = _epi_kwargs(rng, 9, out)
    state = {}
    monkeypatch.setenv(features.ENV_VAR, "avx2")
    got = qconv(x, w, np.zeros(9, np.int32), None, x_zp=5, state=state, kernel_shape=None,
                strides=[1, 1], pads=[0] * 4, dilations=[1, 1], group=1, auto_pad="NOTSET",
                post_table=None, post_lo=0, ctx=CTX, **kw)
    fast = state[("fast", x.shape, x.dtype)]
    assert fast and fast[1][1][13] == 0
    assert getattr(fast[0], "py_func", fast[0]).__name__ == "conv_nchw"
    want = ref.qconv_ref(x, 5, w, np.zeros(9, np.int32), _ep(kw, 9, None), [1, 1], [0] * 4,
                         [1, 1])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("variant", _variants())
@pytest.mark.parametrize("op", ["conv", "gemm"])
def test_bias_near_int32_limits_saturates_like_the_reference(variant, op, monkeypatch):
    """Biases within K*255*255 of the int32 limits: acc + bias must clip exactly as the reference
    (avx2: the register epilogue adds the bias with plain int32 adds, so such layers take the
    saturating tile epilogue)."""
    rng = np.random.default_rng(5)
    m, c = 20, 37
    x = rng.integers(0, 256, (1, c, 6, 9)).astype(np.uint8)
    w = rng.integers(-128, 128, (m, c, 1, 1)).astype(np.int8)
    wzp = np.zeros(m, np.int32)
    bias = rng.choice([2 ** 31 - 7, -(2 ** 31) + 7, 0, 1000], m).astype(np.int32)
    kw = _epi_kwargs(rng, m, "uint8")
    kw["multiplier"] = kw["scale"] = np.full(m, 1e-7, np.float32)  # the clipped sums stay in range
    with _forced_path(variant, monkeypatch):
        if op == "conv":
            got = qconv(x, w, wzp, bias, x_zp=3, state={}, kernel_shape=None, strides=[1, 1],
                        pads=[0] * 4, dilations=[1, 1], group=1, auto_pad="NOTSET",
                        post_table=None, post_lo=0, ctx=CTX, **kw)
            want = ref.qconv_ref(x, 3, w, wzp, _ep(kw, m, bias), [1, 1], [0] * 4, [1, 1])
        else:
            x2 = x.reshape(c, -1).T.copy()
            got = qgemm(x2, w.reshape(m, c), wzp, bias, x_zp=3, state={}, ctx=CTX, **kw)
            want = ref.epilogue_ref(ref.qgemm_i32(x2, 3, w.reshape(m, c), wzp),
                                    _ep(kw, m, bias))
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) > 2  # both clipped ends and ordinary values


@pytest.mark.skipif("not _avx2()")
@pytest.mark.parametrize("case", [
    # (n, c, sp, k, stride, pad, x dtype, out, table, threads)
    (1, 8, (12, 40), 3, 1, 1, np.uint8, "uint8", True, 1),
    (2, 5, (9, 21), 5, 2, 2, np.int8, "int8", False, 1),
    (1, 6, (7, 33), 3, 1, 1, np.uint8, "float32", False, 1),
    (1, 4, (50,), 5, 1, 2, np.int8, "uint8", True, 1),       # 1-D
    (2, 64, (24, 80), 3, 1, 1, np.uint8, "uint8", True, 2),  # parallel over planes
])
def test_depthwise_one_call(case, monkeypatch):
    """Depthwise QConv (group = C) on AVX2 runs as one bound Numba call (the kernel over every
    plane, then the folded per-channel table), bit-exact with the grouped reference conv."""
    from qrt.kernels.cpu import depthwise as dwk
    from qrt.kernels.cpu import features
    from qrt.ops import fused
    monkeypatch.setattr(dwk, "PAR_MIN_MACS", 0)
    monkeypatch.setattr(fused, "_PAR_MIN_MACS", 0)
    n, c, sp, k, s, p, xdt, out, table, threads = case
    nd = len(sp)
    rng = np.random.default_rng(c + k)
    lo = 0 if xdt == np.uint8 else -128
    x = rng.integers(lo, lo + 256, (n, c) + sp).astype(xdt)
    w = rng.integers(-128, 128, (c, 1) + (k,) * nd).astype(np.int8)
    wzp = rng.integers(-3, 4, c).astype(np.int32)
    bias = rng.integers(-3000, 3000, c).astype(np.int32)
    xzp = int(rng.integers(lo, lo + 256))
    kw = _epi_kwargs(rng, c, out)
    pt = rng.integers(0, 256, (c, 256)).astype(np.uint8) if table else None
    state = {}
    monkeypatch.setenv(features.ENV_VAR, "avx2")
    ctx = NodeContext("t", "QConv", 1, threads)
    for _ in range(2):  # the first call prepares, the second runs the bound call
        got = qconv(x, w, wzp, bias, x_zp=xzp, state=state, kernel_shape=None,
                    strides=[s] * nd, pads=[p] * (2 * nd), dilations=[1] * nd, group=c,
                    auto_pad="NOTSET", post_table=pt, post_lo=0 if out == "uint8" else -128,
                    ctx=ctx, **kw)
    fast = state[("fast", x.shape, x.dtype)]
    assert fast and "depthwise_avx2_nchw" in getattr(fast[0], "py_func", fast[0]).__name__
    assert fast[1][7] == min(threads, n * c)  # planes split over the threads
    want = ref.qconv_ref(x, xzp, w, wzp, _ep(kw, c, bias), [s] * nd, [p] * (2 * nd), [1] * nd,
                         group=c)
    if pt is not None:
        idx = want.astype(np.int32) - (0 if out == "uint8" else -128)
        want = pt[np.arange(c).reshape((1, c) + (1,) * nd), idx]
    np.testing.assert_array_equal(got, want)


@pytest.mark.skipif("not _avx2()")
@pytest.mark.parametrize("shape", [(1, 3, 1), (2, 5, 31), (1, 4, 32), (2, 3, 95), (1, 240, 480)])
@pytest.mark.parametrize("flip", [0, 128])
def test_vpshufb_table_lookups_equal_the_scalar_twin(shape, flip):
    """common.lut_rows_avx2 / apply_table_avx2 (16 vpshufb slices a vector, scalar tail) against
    the scalar apply_table: per-channel tables and one shared table, in place and out of place,
    every byte value."""
    from qrt.kernels.cpu import common
    rng = np.random.default_rng(sum(shape) + flip)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    x.reshape(-1)[:256] = np.arange(256)[:x.size]  # every index, where there is room
    tables = rng.integers(0, 256, (shape[1], 256)).astype(np.uint8)
    want = x.copy()
    common.apply_table(want, tables, np.uint8(flip))
    got = x.copy()
    common.apply_table_avx2(got, tables, np.uint8(flip))
    np.testing.assert_array_equal(got, want)
    out = np.empty_like(x)
    common.lut_rows_avx2(x, np.uint8(flip), tables, out)
    np.testing.assert_array_equal(out, want)
    one = tables[:1]
    want1 = one[0][x ^ np.uint8(flip)]
    common.lut_rows_avx2(x, np.uint8(flip), np.ascontiguousarray(one), out)
    np.testing.assert_array_equal(out, want1)
