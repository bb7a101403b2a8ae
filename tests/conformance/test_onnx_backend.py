"""ONNX backend node conformance, run twice: with the optimisation pipeline and without it, so that a
pass bug and a kernel bug look different (as tract does)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import qrt
from tests.conformance.onnx_cases import cases, out_of_scope_reason

CASES = cases()


def _array(v):
    # A few generators store their data as TensorProto (e.g. to keep exact double bit patterns).
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, list) or v is None:  # sequence / optional values
        return v
    return np.asarray(v)


def _assert_same(name, got, want, rtol, atol):
    want = _array(want)
    if isinstance(want, list) or want is None:
        assert type(got) is type(want), f"{name}: got {type(got).__name__}"
        for i, (g, w) in enumerate(zip(got or [], want or [])):
            _assert_same(f"{name}[{i}]", g, w, rtol, atol)
        assert len(got or []) == len(want or []), name
        return
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != expected {want.dtype}"
    assert got.shape == want.shape, f"{name}: shape {got.shape} != expected {want.shape}"
    if want.dtype.kind in "fc":
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)
    else:
        np.testing.assert_array_equal(got.astype(want.dtype), want, err_msg=name)


@pytest.mark.parametrize("optimize", [True, False], ids=["opt", "noopt"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case, optimize):
    reason = out_of_scope_reason(case.model)
    if reason:
        pytest.skip(reason)
    sess = qrt.InferenceSession(case.model, optimize=optimize, threads=1)
    names = [i.name for i in sess.get_inputs()]
    all_inputs = [vi.name for vi in case.model.graph.input]
    for inputs, outputs in case.data_sets:
        feeds = dict(zip(all_inputs, [_array(v) for v in inputs]))
        feeds = {k: v for k, v in feeds.items() if k in names}
        got = sess.run(None, feeds)
        for o, g, w in zip(sess.get_outputs(), got, outputs):
            _assert_same(f"{case.name}:{o.name}", g, w, case.rtol, case.atol)


def test_case_count_is_sane():
    # Guards the filter itself: the generators must yield cases for the in-scope ops.
    assert len(CASES) > 300, len(CASES)
