"""qrt.QAdd / qrt.QMul: every Numba broadcast variant (same shape, one element, per channel either
side, general rank <= 4) is bit-exact with the numpy twin of the documented formula."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from qrt.kernels import ref
from qrt.ops.fused import qadd, qmul

SHAPES = [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), ()), ((2, 3, 4, 5), (1, 3, 1, 1)),
          ((1, 3, 1, 1), (2, 3, 4, 5)), ((2, 3, 4, 5), (2, 3, 1, 1)), ((2, 3, 4), (1, 3, 1)),
          ((2, 3, 4, 5), (1, 1, 4, 1)), ((3, 1), (1, 4)), ((2, 1, 3, 1, 2), (1, 2, 1, 4, 1)),
          ((1, 20, 7), (7,)), ((4, 1, 6), (5, 1)), ((6,), (2, 3, 1, 6))]


def _twin(op, a, b, sa, za, sb, zb, sy, zy, dt):
    lo, hi = ref.qrange(dt)
    ia = a.astype(np.int32) - np.int32(za)
    ib = b.astype(np.int32) - np.int32(zb)
    if op == "add":
        ma = np.float32(np.float64(sa) / np.float64(sy))
        mb = np.float32(np.float64(sb) / np.float64(sy))
        y = np.rint(ia.astype(np.float32) * ma + ib.astype(np.float32) * mb)
    else:
        m = np.float32(np.float64(sa) * np.float64(sb) / np.float64(sy))
        y = np.rint((ia * ib).astype(np.float32) * m)
    return np.clip(y + np.float32(zy), lo, hi).astype(dt)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 31), k=st.integers(0, len(SHAPES) - 1),
       op=st.sampled_from(["add", "mul"]),
       dts=st.tuples(*[st.sampled_from([np.uint8, np.int8])] * 3))
def test_qadd_qmul_match_numpy_twin(seed, k, op, dts):
    rng = np.random.default_rng(seed)
    sha, shb = SHAPES[k]
    da, db, dy = dts
    a = rng.integers(*ref.qrange(da), size=sha, endpoint=True).astype(da)
    b = rng.integers(*ref.qrange(db), size=shb, endpoint=True).astype(db)
    sa, sb, sy = (float(np.float32(v)) for v in rng.uniform(0.001, 0.1, 3))
    za, zb, zy = (int(rng.integers(*ref.qrange(d), endpoint=True)) for d in (da, db, dy))
    kw = dict(a_scale=sa, a_zp=za, b_scale=sb, b_zp=zb, y_scale=sy, y_zp=zy,
              out_dtype=np.dtype(dy).name, kernel="")
    fn = qadd if op == "add" else qmul
    want = _twin(op, a, b, sa, za, sb, zb, sy, zy, dy)
    # the op as called directly, and as the plan runs it (attributes bound once)
    for got in (fn(a, b, **kw), fn.bind_step(**kw)(a, b)):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
