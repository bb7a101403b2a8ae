"""Helpers for the pass tests: build one-op models, run qrt (optimised and not) and onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

import qrt


def model(nodes, inputs, outputs, inits=(), opset=21):
    """inputs/outputs: (name, elem_type, shape); inits: (name, array)."""
    g = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10 if opset >= 21 else 8

    return m


def run_three(m, feeds, **kw):
    """(optimised qrt outputs, unoptimised qrt outputs, onnxruntime outputs or None, session)."""
    s = qrt.InferenceSession(m, threads=1, **kw)
    opt = s.run(None, feeds)
    noopt = qrt.InferenceSession(m, threads=1, optimize=False).run(None, feeds)
    try:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        ref = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception:  # an op onnxruntime's CPU provider lacks for that type
        ref = None
    return opt, noopt, ref, s


def precision(sess, name):
    for e in sess.lowering_report():
        if e["name"] == name:
            return e["precision"], e["kernel"], e["reason"]
    raise KeyError(name)


def assert_within_one_step(got, want, max_frac=0.02, what=""):
    """Integer outputs: every element within 1 step, and at most `max_frac` of them off by one.
    Returns the number off by one (reported by the caller)."""
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype, got.shape, want.shape)
    d = np.abs(got.astype(np.int64) - want.astype(np.int64))
    off = int((d == 1).sum())
    assert d.max(initial=0) <= 1, f"{what}: max difference {d.max()} steps"
    assert off <= max(1, max_frac * d.size), f"{what}: {off}/{d.size} elements off by one"
    print(f"{what}: {off}/{d.size} elements off by one step")
    return off


def cosine(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))
