"""The plan limits numpy's BLAS to one thread during a run only when one of its ops may call BLAS
(float Conv/Gemm/MatMul, einsum, the integer ops' float64 routes); a fully integer plan leaves
the process's BLAS thread count alone and pays nothing for it."""
from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

import qrt
from qrt.kernels.cpu import blas_threads

DATA = resources.files("qrt.data")


def test_integer_plan_never_touches_blas():
    sess = qrt.InferenceSession(str(DATA / "digits_cnn_int8.onnx"), threads=1)
    ops = {st.node.op_type for st in sess._plan.steps}
    assert ops.isdisjoint({"Conv", "Gemm", "MatMul", "QMatMulAct"}), ops
    assert sess._plan._blas is None


@pytest.mark.skipif(not blas_threads.available(), reason="numpy's BLAS is not controllable here")
def test_float_plan_runs_with_one_blas_thread_and_restores_the_count():
    sess = qrt.InferenceSession(str(DATA / "digits_cnn.onnx"), threads=1)
    assert sess._plan._blas is blas_threads
    before = blas_threads.set_blas_threads(2)
    try:
        seen = []
        x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
        sess._execute(sess._check_feeds({"input": x}), sess._output_names(None),
                      observer=lambda node, ins, outs: seen.append(blas_threads.get_blas_threads()))
        assert seen and set(seen) == {1}
        assert blas_threads.get_blas_threads() == 2
    finally:
        if before is not None:
            blas_threads.set_blas_threads(before)
