"""LayerNormalization's bound plan step (qrt.ops.nn._bind_layer_norm) returns exactly what the op
returns, for every shape, axis and bias form, including after the scale or bias object changes
and for inputs the Numba row kernel does not take."""
from __future__ import annotations

import numpy as np
import pytest

from qrt.ops.nn import layer_norm
from qrt.ops.registry import NodeContext


@pytest.mark.parametrize("shape,axis", [((1, 16, 32), -1), ((2, 3, 4, 5), 2), ((7, 9), 0),
                                        ((4, 6), -1)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_step_equals_op(shape, axis, with_bias):
    rng = np.random.default_rng(len(shape))
    ctx = NodeContext("ln", "LayerNormalization", 1, 1)
    ax = axis % len(shape)
    x = rng.standard_normal(shape).astype(np.float32)
    scale = rng.standard_normal(shape[ax:]).astype(np.float32)
    bias = rng.standard_normal(shape[ax:]).astype(np.float32) if with_bias else None
    kw = dict(axis=axis, epsilon=1e-5, stash_type=1)
    step = layer_norm.bind_step(ctx=ctx, **kw)
    for _ in range(2):  # prepare, then the cached path
        np.testing.assert_array_equal(step(x, scale, bias), layer_norm(x, scale, bias, ctx=ctx, **kw))
    scale2 = scale * 2  # a new scale object: recomputed, not served stale
    np.testing.assert_array_equal(step(x, scale2, bias), layer_norm(x, scale2, bias, ctx=ctx, **kw))
    x64 = x.astype(np.float64)  # not the kernel's dtype: the op's numpy path
    np.testing.assert_array_equal(step(x64, scale.astype(np.float64), None),
                                  layer_norm(x64, scale.astype(np.float64), None, ctx=ctx, **kw))
    xt = np.asfortranarray(x)  # non-contiguous input
    np.testing.assert_array_equal(step(xt, scale2, bias), layer_norm(xt, scale2, bias, ctx=ctx, **kw))
