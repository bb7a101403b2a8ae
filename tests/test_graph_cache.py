"""qrt.graph_cache: `qrt warmup` writes the lowered graph; a new process then starts from it without
importing onnx, with outputs identical to a fresh build; stale, foreign or torn entries are rebuilt."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest

import qrt
from qrt import graph_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = str(resources.files("qrt.data") / "digits_cnn_int8.onnx")

_CHILD = r"""
import json, sys, time
import numpy as np
t0 = time.perf_counter()
import qrt
s = qrt.InferenceSession(sys.argv[1], threads=1)
y = s.run(None, {s.get_inputs()[0].name: np.load(sys.argv[2])})[0]
np.save(sys.argv[3], y)
print(json.dumps({"onnx": "onnx" in sys.modules, "ml_dtypes": "ml_dtypes" in sys.modules,
                  "report": len(s.lowering_report()), "seconds": time.perf_counter() - t0}))
"""


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QRT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("QRT_GRAPH_CACHE", raising=False)
    return tmp_path


def _child(model, x, tmp_path, **env):
    np.save(tmp_path / "x.npy", x)
    e = dict(os.environ, PYTHONPATH=REPO, **env)
    p = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(tmp_path / "x.npy"),
                        str(tmp_path / "y.npy")], env=e, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1]), np.load(tmp_path / "y.npy")


def test_warmup_then_a_new_process_skips_onnx_and_matches(cache):
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    want = qrt.InferenceSession(DEMO, threads=1).run(None, {"input": x})[0]
    from qrt.cli import main
    assert main(["warmup", DEMO]) == 0
    entries = [f for _, _, fs in os.walk(graph_cache.cache_dir()) for f in fs]
    assert len(entries) == 1 and entries[0].endswith(".pkl")
    info, got = _child(DEMO, x, cache)
    assert not info["onnx"] and not info["ml_dtypes"]  # the cached graph needs neither
    assert info["report"] == len(qrt.InferenceSession(DEMO).lowering_report())
    np.testing.assert_array_equal(got, want)
    # switched off: the same process builds from the file (and imports onnx)
    info, got = _child(DEMO, x, cache, QRT_GRAPH_CACHE="0")
    assert info["onnx"]
    np.testing.assert_array_equal(got, want)


def test_entries_are_keyed_by_bytes_and_options(cache, tmp_path):
    data = open(DEMO, "rb").read()
    k = graph_cache.key(data, optimize=True, dynamic_quantization=None)
    assert k != graph_cache.key(data, optimize=False, dynamic_quantization=None)
    assert k != graph_cache.key(data + b"\0", optimize=True, dynamic_quantization=None)
    qrt.InferenceSession(DEMO, cache_graph=True)
    assert graph_cache.load(k) is not None
    # another model's bytes miss; optimize=False misses too and builds the unoptimised graph
    s = qrt.InferenceSession(DEMO, optimize=False)
    assert all(e["precision"] == "float" for e in s.lowering_report()
               if e["op_type"] in ("Conv", "Gemm"))


@pytest.mark.parametrize("damage", ["torn", "foreign", "not_a_dict"])
def test_a_bad_entry_is_a_miss_not_an_error(cache, damage):
    qrt.InferenceSession(DEMO, cache_graph=True)
    (path,) = [os.path.join(d, f) for d, _, fs in os.walk(graph_cache.cache_dir()) for f in fs]
    raw = open(path, "rb").read()
    import pickle
    bad = {"torn": raw[: len(raw) // 2], "foreign": b"not a pickle",
           "not_a_dict": pickle.dumps([1, 2, 3])}[damage]
    with open(path, "wb") as f:
        f.write(bad)
    x = np.zeros((1, 1, 8, 8), np.float32)
    s = qrt.InferenceSession(DEMO)
    assert s.run(None, {"input": x})[0].shape == (1, 10)


def test_models_with_external_data_are_not_cached(cache, tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / "ext.onnx")
    onnx.save(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.bin", size_threshold=0)
    qrt.InferenceSession(path, cache_graph=True)
    assert not os.path.isdir(graph_cache.cache_dir()) or not any(
        fs for _, _, fs in os.walk(graph_cache.cache_dir()))
