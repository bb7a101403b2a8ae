"""The Numba 2-D MaxPool against the tap-by-tap numpy path (padding, strides, dilations, ceil mode,
NaN), for uint8/int8/float32."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from qrt.ops import pool


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 31), dt=st.sampled_from([np.uint8, np.int8, np.float32]),
       k=st.tuples(st.integers(1, 3), st.integers(1, 3)), s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       d=st.tuples(st.integers(1, 2), st.integers(1, 2)), p=st.tuples(*[st.integers(0, 2)] * 4),
       ceil=st.integers(0, 1), nan=st.booleans())
def test_fast_maxpool_matches_numpy_path(seed, dt, k, s, d, p, ceil, nan):
    rng = np.random.default_rng(seed)
    p = tuple(min(v, k[i % 2] - 1) for i, v in enumerate(p))  # ONNX: pads smaller than the kernel
    x = (rng.normal(0, 50, (2, 3, 7, 6))).astype(dt) if dt == np.float32 else \
        rng.integers(-128 if dt == np.int8 else 0, 128 if dt == np.int8 else 256, (2, 3, 7, 6)).astype(dt)
    if nan and dt == np.float32:
        x[0, 1, 2, 3] = np.nan
    kw = dict(auto_pad="NOTSET", ceil_mode=ceil, dilations=list(d), kernel_shape=list(k),
              pads=[p[0], p[1], p[2], p[3]], storage_order=0, strides=list(s))
    try:
        got = pool.max_pool(x, **kw)
    except ValueError:
        return  # a geometry the spec rejects is rejected by both paths alike
    saved, pool._FAST_POOL_TYPES = pool._FAST_POOL_TYPES, ()
    try:
        want = pool.max_pool(x, **kw)
    finally:
        pool._FAST_POOL_TYPES = saved
    np.testing.assert_array_equal(got, want)


def test_plan_step_equals_the_op_for_every_input_form():
    """MaxPool's plan step (per-shape geometry and compiled entry) against the op itself: repeated
    and new shapes, dtypes, a strided view, 3-D input, SAME padding, and indices wanted (the
    step defers to the op for the forms it does not specialise)."""
    from qrt.ops import NodeContext
    rng = np.random.default_rng(3)
    kw = dict(auto_pad="NOTSET", ceil_mode=1, dilations=[1, 2], kernel_shape=[3, 2],
              pads=[1, 0, 1, 1], storage_order=0, strides=[2, 1], ctx=NodeContext("p", "MaxPool", 1, 1))
    step = pool.max_pool.bind_step(**kw)
    xs = [rng.integers(0, 256, (1, 4, 9, 8)).astype(np.uint8),
          rng.integers(0, 256, (1, 4, 9, 8)).astype(np.uint8),
          rng.integers(-128, 128, (2, 3, 5, 7)).astype(np.int8),
          rng.normal(size=(1, 2, 6, 6)).astype(np.float32),
          rng.normal(size=(1, 2, 12, 6)).astype(np.float32)[:, :, ::2],
          rng.normal(size=(1, 2, 6, 6)).astype(np.float64)]
    for x in xs + xs:
        np.testing.assert_array_equal(step(x), pool.max_pool(x, **kw))
    kw1 = dict(kw, dilations=[1], kernel_shape=[3], pads=[1, 1], strides=[2], auto_pad="NOTSET")
    x1 = rng.normal(size=(1, 2, 9)).astype(np.float32)
    np.testing.assert_array_equal(pool.max_pool.bind_step(**kw1)(x1), pool.max_pool(x1, **kw1))
    kws = dict(kw, auto_pad="SAME_UPPER", pads=None)
    np.testing.assert_array_equal(pool.max_pool.bind_step(**kws)(xs[0]), pool.max_pool(xs[0], **kws))
    kwi = dict(kw, ctx=NodeContext("p", "MaxPool", 2, 1))
    got, want = pool.max_pool.bind_step(**kwi)(xs[3]), pool.max_pool(xs[3], **kwi)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
