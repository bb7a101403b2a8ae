"""`qrt` command line: every subcommand through qrt.cli.main, bad input, and one real subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from importlib import resources

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from qrt import cli

CNN = str(resources.files("qrt.data").joinpath("digits_cnn.onnx"))
INT8 = str(resources.files("qrt.data").joinpath("digits_cnn_int8.onnx"))


def run_cli(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_clean_error(rc, err, *needles):
    assert rc == 2
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert lines, "expected an error message on stderr"
    for n in needles:
        assert n in err, err


@pytest.fixture
def int_model(tmp_path):
    """Two inputs sharing a symbolic dim: int64 ids [B, 3] and float x [B, 3] -> (ids + ids, x)."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", 3])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 3])
    y = helper.make_tensor_value_info("twice", TensorProto.INT64, ["B", 3])
    z = helper.make_tensor_value_info("xx", TensorProto.FLOAT, ["B", 3])
    g = helper.make_graph([helper.make_node("Add", ["ids", "ids"], ["twice"], name="add_ids"),
                           helper.make_node("Add", ["x", "x"], ["xx"], name="add_x")],
                          "ints", [ids, x], [y, z])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "ints.onnx"
    onnx.save(m, path)
    return path


# -- run ---------------------------------------------------------------------------------------
def test_run_random_inputs(capsys):
    rc, out, err = run_cli(capsys, "run", CNN, "--threads", "1")
    assert rc == 0, err
    assert "input  input: shape [1, 1, 8, 8] float32" in out
    assert "output logits: shape [1, 10] float32" in out
    assert "min " in out and "max " in out and "mean " in out and "first [" in out


def test_run_with_input_file_and_save(capsys, tmp_path):
    x = np.load(resources.files("qrt.data").joinpath("digits_test.npz"))["images"][:3]
    np.save(tmp_path / "x.npy", x)
    rc, out, err = run_cli(capsys, "run", INT8, "--input", f"input={tmp_path / 'x.npy'}",
                           "--save", tmp_path / "out")
    assert rc == 0, err
    assert "output logits: shape [3, 10] float32" in out
    saved = np.load(tmp_path / "out" / "logits.npy")
    assert saved.shape == (3, 10)


def test_run_int_inputs_and_symbolic_dims(capsys, int_model):
    rc, out, err = run_cli(capsys, "run", int_model)
    assert rc == 0, err
    assert "input  ids: shape [1, 3] int64" in out
    assert "output twice: shape [1, 3] int64" in out
    assert "output xx: shape [1, 3] float32" in out


def test_random_feed_rules():
    rng = np.random.default_rng(0)
    arg = types.SimpleNamespace(name="t", shape=["N", 3, None], dtype=np.dtype(np.int32),
                                type="tensor(int32)")
    a = cli.random_feed(arg, rng)
    assert a.shape == (1, 3, 1) and a.dtype == np.int32 and (0 <= a).all() and (a < 10).all()
    b = cli.random_feed(arg, rng, batch=5)
    assert b.shape == (5, 3, 1)
    fixed = types.SimpleNamespace(name="t", shape=[2, 3], dtype=np.dtype(np.float32),
                                  type="tensor(float)")
    with pytest.raises(cli.CliError, match="fixed batch"):
        cli.random_feed(fixed, rng, batch=5)
    unknown = types.SimpleNamespace(name="t", shape=None, dtype=np.dtype(np.float32),
                                    type="tensor(float)")
    with pytest.raises(cli.CliError, match="unknown rank"):
        cli.random_feed(unknown, rng)


def test_summarize():
    assert cli.summarize(np.zeros((0, 3), np.float32)) == "(empty)"
    s = cli.summarize(np.arange(10, dtype=np.int64))
    assert "min 0" in s and "max 9" in s and "first [0, 1, 2, 3, 4, 5, ...]" in s
    assert "max 1" in cli.summarize(np.array([True, False]))


@pytest.mark.parametrize("spec, needle", [
    ("input", "expected NAME=FILE.npy"),
    ("=x.npy", "expected NAME=FILE.npy"),
    ("input=", "expected NAME=FILE.npy"),
    ("nosuch=x.npy", "has no input 'nosuch'"),
    ("input=does-not-exist.npy", "no such file"),
])
def test_run_bad_input_spec(capsys, spec, needle):
    rc, out, err = run_cli(capsys, "run", CNN, "--input", spec)
    assert_clean_error(rc, err, needle)


def test_run_input_file_not_npy(capsys, tmp_path):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an npy file")
    rc, _, err = run_cli(capsys, "run", CNN, "--input", f"input={bad}")
    assert_clean_error(rc, err, "not a readable .npy file")


def test_run_input_wrong_dtype_and_shape(capsys, tmp_path):
    np.save(tmp_path / "f64.npy", np.zeros((1, 1, 8, 8), np.float64))
    rc, _, err = run_cli(capsys, "run", CNN, "--input", f"input={tmp_path / 'f64.npy'}")
    assert_clean_error(rc, err, "float32")
    np.save(tmp_path / "shape.npy", np.zeros((1, 1, 7, 8), np.float32))
    rc, _, err = run_cli(capsys, "run", CNN, "--input", f"input={tmp_path / 'shape.npy'}")
    assert_clean_error(rc, err, "input")


def test_run_input_given_twice(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    spec = f"input={tmp_path / 'x.npy'}"
    rc, _, err = run_cli(capsys, "run", CNN, "--input", spec, "--input", spec)
    assert_clean_error(rc, err, "given twice")


@pytest.mark.parametrize("cmd", ["run", "inspect", "bench", "warmup"])
def test_missing_model(capsys, tmp_path, cmd):
    rc, _, err = run_cli(capsys, cmd, tmp_path / "missing.onnx")
    assert_clean_error(rc, err, "missing.onnx", "no such file")


@pytest.mark.parametrize("cmd", ["run", "inspect", "bench", "warmup"])
def test_malformed_model(capsys, tmp_path, cmd):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf\xff\xff\xff")
    rc, _, err = run_cli(capsys, cmd, bad)
    assert_clean_error(rc, err, "bad.onnx")
    assert len(err.strip().splitlines()) == 1


def test_malformed_model_to_quantize_or_compare(capsys, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf\xff\xff\xff")
    rc, _, err = run_cli(capsys, "quantize", bad, tmp_path / "out.onnx", "--samples", "2")
    assert_clean_error(rc, err, "bad.onnx", "not a valid ONNX model")
    rc, _, err = run_cli(capsys, "compare", CNN, bad)
    assert_clean_error(rc, err, "bad.onnx", "not a valid ONNX model")


def test_unsupported_op_to_quantize_is_named(capsys, tmp_path):
    """Neither qrt nor onnxruntime can calibrate it: qrt's error, listing the op, is shown."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    g = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], name="weird")], "g", [x],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "unsupported.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    rc, _, err = run_cli(capsys, "quantize", path, tmp_path / "out.onnx", "--samples", "2")
    assert_clean_error(rc, err, "NoSuchOp")


def test_run_save_onto_a_file_is_a_clean_error(capsys, tmp_path):
    f = tmp_path / "taken.npy"
    f.write_bytes(b"x")
    rc, _, err = run_cli(capsys, "run", CNN, "--save", f)
    assert_clean_error(rc, err, "taken.npy", "not a folder")


def test_model_is_a_directory(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "run", tmp_path)
    assert_clean_error(rc, err, "directory")


def test_unsupported_op_is_a_clean_error(capsys, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    g = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], name="weird")], "g", [x],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "unsupported.onnx"
    onnx.save(m, path)
    rc, _, err = run_cli(capsys, "inspect", path)
    assert_clean_error(rc, err, "NoSuchOp")


# -- usage -------------------------------------------------------------------------------------
def test_usage_errors(capsys):
    rc, _, err = run_cli(capsys)
    assert rc == 2 and "usage:" in err
    rc, _, err = run_cli(capsys, "frobnicate")
    assert rc == 2 and "invalid choice" in err
    rc, _, err = run_cli(capsys, "run")
    assert rc == 2 and "MODEL" in err
    for bad in ("0", "-1", "two"):
        rc, _, err = run_cli(capsys, "bench", CNN, "--threads", bad)
        assert rc == 2 and "positive integer" in err


def test_help_and_version(capsys):
    rc, out, _ = run_cli(capsys, "--help")
    assert rc == 0
    for cmd in ("run", "inspect", "demo", "bench", "warmup"):
        assert cmd in out
    rc, out, _ = run_cli(capsys, "--version")
    assert rc == 0 and out.startswith("qrt ")


# -- inspect -----------------------------------------------------------------------------------
def test_inspect_text(capsys):
    rc, out, err = run_cli(capsys, "inspect", CNN)
    assert rc == 0, err
    assert "input: float32 [N, 1, 8, 8]" in out
    assert "logits: float32 [N, 10]" in out
    assert "Conv x3" in out and "BatchNormalization x2" in out
    assert "[N, 16, 8, 8]" in out


def test_inspect_json(capsys):
    rc, out, err = run_cli(capsys, "inspect", INT8, "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["N", 1, 8, 8]}]
    assert info["outputs"][0]["name"] == "logits"
    m = onnx.load(INT8)
    assert len(info["nodes"]) == len(m.graph.node)
    assert sum(info["op_histogram"].values()) == len(m.graph.node)
    for n in info["nodes"]:
        assert {"name", "op_type", "precision", "kernel", "reason", "inputs", "outputs"} <= set(n)
    convs = [n for n in info["nodes"] if n["op_type"] == "Conv"]
    assert len(convs) == 3 and all(c["precision"] == "int8" for c in convs)
    assert convs[0]["outputs"][0]["shape"][1:] in ([16, 8, 8], [32, 8, 8])
    assert "Conv" in info["summary"]


def test_inspect_unknown_shapes(capsys, tmp_path):
    """Shapes shape inference cannot tell are null in JSON and '?' in text."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "g", [x], [y])
    path = tmp_path / "norank.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    rc, out, err = run_cli(capsys, "inspect", path, "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["inputs"][0]["shape"] is None
    rc, out, _ = run_cli(capsys, "inspect", path)
    assert rc == 0 and "[?]" in out
    rc, _, err = run_cli(capsys, "run", path)  # random inputs need a rank
    assert_clean_error(rc, err, "unknown rank")


# -- demo, bench, warmup -----------------------------------------------------------------------
def test_demo(capsys):
    rc, out, err = run_cli(capsys, "demo", "--threads", "1", "--runs", "3")
    assert rc == 0, err
    assert "FP32" in out and "INT8" in out
    r = cli.run_demo(threads=1, single_runs=2, batch_runs=1)
    assert r["FP32"]["accuracy"] >= 0.95
    assert r["INT8"]["accuracy"] >= r["FP32"]["accuracy"] - 0.01
    assert r["agree"] >= 0.98 * r["n"]


def test_bench_json(capsys):
    rc, out, err = run_cli(capsys, "bench", CNN, "--threads", "1", "--batch", "4", "--warmup", "1",
                           "--runs", "5", "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert r["batch"] == 4 and r["inputs"] == {"input": [4, 1, 8, 8]}
    q = r["qrt"]
    assert q["runs"] == 5 and q["p50_ms"] <= q["p90_ms"] <= q["p99_ms"]
    assert q["throughput_per_s"] > 0
    assert "onnxruntime" not in r


def test_bench_compare_onnxruntime(capsys):
    pytest.importorskip("onnxruntime")
    rc, out, err = run_cli(capsys, "bench", INT8, "--threads", "1", "--warmup", "0", "--runs",
                           "3", "--compare-onnxruntime")
    assert rc == 0, err
    assert "qrt " in out and "onnxruntime " in out and "p50" in out


def test_bench_profile(capsys):
    """--profile: per-op-type times that cover every node of the plan once, and the slowest
    nodes, largest first; the JSON holds the same."""
    import qrt
    rc, out, err = run_cli(capsys, "bench", INT8, "--threads", "1", "--warmup", "1", "--runs",
                           "6", "--profile", "3", "--json")
    assert rc == 0, err
    pr = json.loads(out)["profile"]
    plan = qrt.InferenceSession(INT8, threads=1)._plan
    ops = sorted(st.node.op_type for st in plan.steps)
    assert sorted(op for e in pr["by_op"] for op in [e["op"]] * e["nodes"]) == ops
    assert pr["runs"] == 3 and abs(sum(e["share"] for e in pr["by_op"]) - 1) < 1e-6
    assert len(pr["nodes"]) == 3
    assert [e["ms"] for e in pr["nodes"]] == sorted((e["ms"] for e in pr["nodes"]), reverse=True)
    assert abs(sum(e["ms"] for e in pr["by_op"]) - pr["total_ms"]) < 1e-6
    rc, out, err = run_cli(capsys, "bench", INT8, "--threads", "1", "--warmup", "0", "--runs",
                           "2", "--profile")
    assert rc == 0, err
    assert "slowest nodes" in out and "QConv" in out and "share" in out


def test_bench_bad_batch(capsys, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "g", [x], [y])
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    rc, _, err = run_cli(capsys, "bench", path, "--batch", "3", "--runs", "1")
    assert_clean_error(rc, err, "fixed batch")


def test_warmup(capsys):
    rc, out, err = run_cli(capsys, "warmup", INT8, "--threads", "1")
    assert rc == 0, err
    assert "loaded in" in out and "first run" in out


# -- quantize / compare (from qrt.quantization.cli) --------------------------------------------
def test_quantization_commands_when_present(capsys):
    try:
        import qrt.quantization.cli  # noqa: F401
    except ModuleNotFoundError:
        pytest.skip("qrt.quantization.cli is not there yet")
    for cmd in ("quantize", "compare"):
        rc, out, _ = run_cli(capsys, cmd, "--help")
        assert rc == 0 and "usage:" in out


def test_broken_quantization_cli_does_not_break_the_others(capsys, monkeypatch):
    fake = types.ModuleType("qrt.quantization.cli")  # no `register`: an ImportError on import
    monkeypatch.setitem(sys.modules, "qrt.quantization.cli", fake)
    rc, out, err = run_cli(capsys, "quantize", "a.onnx", "b.onnx")
    assert_clean_error(rc, err, "unavailable")
    rc, out, err = run_cli(capsys, "run", CNN)
    assert rc == 0, err


# -- a real process ----------------------------------------------------------------------------
def test_subprocess(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    ok = subprocess.run([sys.executable, "-m", "qrt.cli", "inspect", INT8, "--json"],
                        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["inputs"][0]["name"] == "input"
    bad = subprocess.run([sys.executable, "-m", "qrt.cli", "run", "missing.onnx"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "missing.onnx" in bad.stderr


def test_warmup_with_symbolic_dims_says_how_to_pass_real_shapes(capsys, tmp_path):
    """Random inputs fill symbolic dims with 1, too small for a 2x2 pool: a clear error that says
    the graph is cached and how to compile the kernels too; with --input it succeeds."""
    from onnx import TensorProto, helper
    g = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "pool.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    rc, out, err = run_cli(capsys, "warmup", path)
    assert_clean_error(rc, err, "MaxPool", "symbolic dimensions", "--input")
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 4, 4), np.float32))
    rc, out, err = run_cli(capsys, "warmup", path, "--input", f"x={tmp_path / 'x.npy'}")
    assert rc == 0 and "graph cached" in out


@pytest.mark.parametrize("cmd", ["run", "bench"])
def test_random_inputs_with_symbolic_spatial_dims_hint_at_input(capsys, tmp_path, cmd):
    """Symbolic H and W become 1 for random inputs; a 3x3 conv then cannot run. The error says so
    and points at --input."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 3, 3], rng.normal(size=9).tolist())
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c")], "g", [x], [y], [w])
    path = tmp_path / "sym.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    args = [cmd, path] + (["--runs", "1", "--warmup", "0"] if cmd == "bench" else [])
    rc, _, err = run_cli(capsys, *args)
    assert_clean_error(rc, err, "symbolic dimensions", "--input")
