"""InferenceSession(device="cuda"): the GPU plan (qrt.cuda_plan) against device="cpu" as the truth.

Under the CUDA simulator (see _sim.py) every kernel runs as Python: bit-identical outputs here mean
the plan wires the kernels, epilogues, per-call parameters and transfers exactly as the CPU op
does (the kernels' own bit-exactness against numpy twins is tested in test_gemm/test_conv/
test_quantize). Float ops run on the CPU in both sessions, on identical inputs, so float outputs
are compared bit for bit too: no tolerance is needed anywhere.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.cuda import util  # noqa: F401  (skips this module when numba.cuda cannot be imported)
from tests.cuda import qdq_models as M
from tests.cuda._sim import SIMULATOR

import qrt  # noqa: E402
import qrt.cuda_device as cd  # noqa: E402
from qrt.errors import InvalidQuantParamsError, NodeExecutionError, QrtError  # noqa: E402
from qrt.kernels import ref  # noqa: E402


@pytest.fixture
def cuda_session(monkeypatch):
    """Sessions on the simulator: require_cuda() reads NUMBA_ENABLE_CUDASIM when called."""
    if SIMULATOR:
        monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")

    def make(model, **kw):
        return qrt.InferenceSession(model, threads=1, device="cuda", **kw)
    return make


def _same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert isinstance(g, np.ndarray) and not hasattr(g, "copy_to_host")
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype, w.shape)
        np.testing.assert_array_equal(g, w)  # NaN == NaN here


def _by_name(sess):
    return {e["name"]: e for e in sess.lowering_report()}


@pytest.mark.parametrize("act", ["uint8", "int8"])
def test_conv_net_bit_identical_to_cpu(cuda_session, act):
    model = M.conv_net(act)
    x = np.random.default_rng(5).normal(0, 1.5, (1, 3, 6, 6)).astype(np.float32)
    gpu = cuda_session(model)
    cpu = qrt.InferenceSession(model, threads=1)
    _same(gpu.run(None, {"x": x}), cpu.run(None, {"x": x}))
    assert gpu.get_providers() == ["CUDAExecutionProvider"]

    rep = _by_name(gpu)
    kernels = {"conv3x3": "cuda.implicit_gemm_conv", "dwconv": "cuda.depthwise_conv",
               "conv1x1": "cuda.implicit_gemm_conv", "matmul": "cuda.int8_gemm",
               "gemm": "cuda.int8_gemm", "flatten": "cuda.view"}
    for name, kern in kernels.items():
        assert rep[name]["device"] == "cuda" and rep[name]["device_kernel"] == kern, rep[name]
        assert rep[name]["precision"] == "int8"
    for name in ("softmax_mid", "softmax"):
        assert rep[name]["device"] == "cpu"
        assert rep[name]["device_reason"] == "no CUDA kernel for Softmax"
    # the fused nodes' QDQ pieces run where their fused node runs; folded ones nowhere
    assert rep["relu1"]["device"] == "cuda" and rep["DQ_out"]["device"] == "cuda"
    assert [e["name"] for e in gpu.lowering_report() if e["device"] is None] == ["DQ49"]

    # exactly the crossings: the input, around the two Softmax, the integer graph output
    d = gpu.lowering_report().to_dict()
    moves = [(t["value"], t["direction"], t["before"], t["bytes"]) for t in d["transfers"]]
    src = {n.name: n for n in model.graph.node}
    mid = src["softmax_mid"]
    reader_of_mid = next(n.name for n in model.graph.node if mid.output[0] in n.input)
    q = np.dtype(act).itemsize
    assert moves == [
        ("x", "host_to_device", "Q5", 1 * 3 * 6 * 6 * 4),
        (mid.input[0], "device_to_host", "softmax_mid", 5 * 3 * 3 * 4),
        (mid.output[0], "host_to_device", reader_of_mid, 5 * 3 * 3 * 4),
        (src["softmax"].input[0], "device_to_host", "softmax", 4 * 4),
        ("q_conv1x1", "device_to_host", None, 5 * 3 * 3 * q),
    ]
    assert [t["value"] for t in rep["softmax_mid"]["transfers"]] == [mid.input[0]]
    assert rep["conv3x3"]["transfers"] == [] and rep["softmax"]["transfers"][0]["bytes"] == 16
    assert [(t["value"], t["before"]) for t in rep["conv1x1"]["transfers"]] == [("q_conv1x1", None)]
    assert "27 nodes on cuda, 2 on cpu, 5 host<->device copies per call, 853 bytes" in \
        gpu.lowering_report().summary()
    gpu.lowering_report().to_json()  # JSON-ready
    assert "[cpu: no CUDA kernel for Softmax]" in str(gpu.lowering_report())


def test_cpu_session_report_unchanged():
    rep = qrt.InferenceSession(M.mlp(), threads=1).lowering_report()
    assert all("device" not in e and "transfers" not in e for e in rep)
    assert set(rep.to_dict()) == {"nodes"} and "cuda" not in rep.summary()


def test_mlp_symbolic_batch_and_threads(cuda_session):
    """Per-call state only: several threads share one session (under the simulator, which runs
    one kernel at a time, the plan serialises calls; on a GPU each call has its own stream)."""
    gpu, cpu = cuda_session(M.mlp("int8")), qrt.InferenceSession(M.mlp("int8"), threads=1)
    xs = [np.random.default_rng(i).normal(0, 2, (b, 8)).astype(np.float32)
          for i, b in enumerate((1, 3, 2))]
    got = [None] * len(xs)

    def work(i):
        got[i] = gpu.run(None, {"x": xs[i]})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, g in zip(xs, got):
        _same(g, cpu.run(None, {"x": x}))
    # the batch is symbolic: the input's transfer size is not known from the graph
    assert [(t["value"], t["bytes"], t["shape"]) for t in gpu.lowering_report().transfers] == \
        [("x", None, ["batch", 8]), ("y", None, ["batch", 3])]


@pytest.mark.parametrize("zeros", [False, True])
def test_dynamic_quantization_bit_identical(cuda_session, zeros):
    """FP32 Conv/Gemm with per-call activation quantization: DynamicQuantizeLinear on the GPU, its
    scale and zero point (8 bytes) to the host for the epilogue, float bias added on the device.
    All zeros: a zero range, where qrt's CPU op uses scale 1.0 (ONNX's formula would say 1/255)."""
    model = M.float_net()
    x = (np.zeros((1, 2, 5, 5), np.float32) if zeros
         else np.random.default_rng(7).normal(size=(1, 2, 5, 5)).astype(np.float32))
    gpu = cuda_session(model, dynamic_quantization=True)
    cpu = qrt.InferenceSession(model, threads=1, dynamic_quantization=True)
    _same(gpu.run(None, {"x": x}), cpu.run(None, {"x": x}))
    rep = _by_name(gpu)
    assert rep["conv"]["kernel"].endswith("_dynamic_f32out") and rep["conv"]["device"] == "cuda"
    assert rep["gemm"]["device"] == "cuda" and rep["relu"]["device"] == "cpu"
    inside = [(t["inside"], t["direction"], t["bytes"]) for t in gpu.lowering_report().transfers
              if t.get("inside")]
    dq = [n.name for n in gpu._graph.nodes if n.op_type == "DynamicQuantizeLinear"]
    # per node: scale and zero point to the host, then the epilogue's scale vector (one float
    # per output channel: 3 for the conv, 4 for the gemm) back to the device
    assert inside == [(dq[0], "device_to_host", 4)] * 2 + [("conv", "host_to_device", 12)] + \
        [(dq[1], "device_to_host", 4)] * 2 + [("gemm", "host_to_device", 16)]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf / inf
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_quantize_dequantize_dynamic_special_values(cuda_session):
    """Per-axis Q/DQ and DynamicQuantizeLinear on NaN, +-inf, huge values and exact ties: the CPU
    op's rules (NaN -> qmin, saturation, round half to even), outputs' dtypes and 0-d shapes."""
    x = np.array([[[0.25, 0.75, np.nan, np.inf], [-np.inf, 1e30, -0.125, 0.375],
                   [2.25, 0.75, -3.75, 0.0]],
                  [[1, 2, 3, 4], [5, 6, 7, 8], [-1, -2, -3, -4]]], np.float32)
    for out_dtype, feed in (("int8", x), ("uint8", x[..., 2:] * 3), ("uint8", np.zeros_like(x))):
        model = M.quant_ops(out_dtype)
        gpu = cuda_session(model)
        cpu = qrt.InferenceSession(model, threads=1)
        _same(gpu.run(None, {"x": feed}), cpu.run(None, {"x": feed}))
        assert {e["device"] for e in gpu.lowering_report()} == {"cuda"}


def test_zero_d_values(cuda_session):
    model = M.scalar_qdq()
    gpu, cpu = cuda_session(model), qrt.InferenceSession(model, threads=1)
    for v in (1.25, -70.0):
        x = np.array(v, np.float32)
        got, want = gpu.run(None, {"x": x}), cpu.run(None, {"x": x})
        for g, w in zip(got, want):  # the CPU's DequantizeLinear gives a numpy scalar here
            assert g.shape == () and g.dtype == w.dtype and g == w
    assert {e["device"] for e in gpu.lowering_report()} == {"cuda"}


def test_lookup_table_on_gpu(cuda_session):
    model = M.lut_net()
    x = np.arange(10, dtype=np.uint8).reshape(2, 5) * 25
    gpu = cuda_session(model)
    _same(gpu.run(None, {"x": x}), qrt.InferenceSession(model, threads=1).run(None, {"x": x}))
    assert _by_name(gpu)["sigmoid"]["device_kernel"] == "cuda.lut"


@pytest.mark.parametrize("act", ["uint8", "int8"])
def test_tables_folded_into_integer_ops(cuda_session, act):
    """passes/lut_regions folds BatchNorm (per channel) and Sigmoid tables into the QConv/QGemm
    before them: the GPU ops apply them after the epilogue, like the CPU ops."""
    model = M.table_net(act)
    x = np.random.default_rng(6).normal(size=(1, 2, 4, 4)).astype(np.float32)
    gpu = cuda_session(model)
    _same(gpu.run(None, {"x": x}), qrt.InferenceSession(model, threads=1).run(None, {"x": x}))
    tables = {st.node.name: np.shape(st.node.attrs.get("post_table")) for st in gpu._plan.steps
              if st.node is not None and st.node.domain == "qrt"}
    assert tables == {"conv": (3, 256), "gemm": (256,)}
    assert {e["device"] for e in gpu.lowering_report()} <= {"cuda", None}


def test_unknown_attribute_keeps_the_node_on_the_cpu(cuda_session, monkeypatch):
    """An attribute the GPU op does not implement (one the CPU op gains later, set by a pass)
    sends the node to the CPU instead of being silently ignored."""
    from qrt.ops import resolve
    from qrt.passes import fuse_qdq

    monkeypatch.setitem(resolve("QGemm", "qrt", 1).attrs, "new_thing", None)
    real = fuse_qdq.run

    def with_extra(graph, opts=None):
        changed = real(graph, opts)
        for n in graph.nodes:
            if n.op_type == "QGemm" and n.name == "mm":
                n.attrs["new_thing"] = 1
        return changed
    monkeypatch.setattr(fuse_qdq, "run", with_extra)
    rep = _by_name(cuda_session(M.mlp()))
    assert rep["mm"]["device"] == "cpu"
    assert rep["mm"]["device_reason"] == "attribute 'new_thing' has no GPU implementation"
    assert rep["gemm"]["device"] == "cuda"


@pytest.mark.parametrize("act", ["uint8", "int8"])
def test_global_average_pool(cuda_session, act):
    """8-bit DQ -> GlobalAveragePool -> Q (qrt.QGlobalAveragePool: exact sums, the CPU op's
    float64 rescale) on the GPU; a float GlobalAveragePool on the CPU."""
    model = M.gap_net(act)
    rng = np.random.default_rng(10)
    lo, hi = ref.qrange(act)
    feeds = {"x": rng.integers(lo, hi + 1, (2, 3, 4, 5)).astype(act),
             "xf": rng.normal(size=(1, 2, 3, 3)).astype(np.float32)}
    gpu = cuda_session(model)
    _same(gpu.run(None, feeds), qrt.InferenceSession(model, threads=1).run(None, feeds))
    rep = _by_name(gpu)
    assert rep["gap"]["device"] == "cuda" and rep["gap"]["device_kernel"] == "cuda.global_avg"
    assert rep["gap_float"]["device"] == "cpu"


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_max_pooling_geometries(cuda_session, dtype):
    model = M.pool_net(dtype)
    rng = np.random.default_rng(8)
    lo, hi = ref.qrange(dtype)
    feeds = {"x": rng.integers(lo, hi + 1, (1, 2, 7, 6)).astype(dtype),
             "x1": rng.integers(lo, hi + 1, (2, 1, 8)).astype(dtype),
             "xf": rng.normal(size=(1, 1, 4, 4)).astype(np.float32)}
    gpu = cuda_session(model)
    _same(gpu.run(None, feeds), qrt.InferenceSession(model, threads=1).run(None, feeds))
    rep = _by_name(gpu)
    assert all(rep[f"pool{i}"]["device_kernel"] == "cuda.maxpool" for i in range(4))
    assert rep["pool1d"]["device"] == "cuda"
    assert rep["pool_float"]["device"] == "cpu"
    assert rep["pool_float"]["device_reason"].startswith("float32 data")


def test_cpu_fallbacks_name_their_reason(cuda_session, monkeypatch):
    """A K beyond the int32-exact limit (lowered to 16 here, so the model stays tiny: the CPU op
    then splits its accumulation, as it does for real beyond 33025), a 3-D conv and a
    QuantizeLinear of int32 data run on the CPU, with the reason in the report."""
    monkeypatch.setattr(ref, "max_exact_k", lambda *a: 16)
    model = M.fallback_net(20)
    rng = np.random.default_rng(9)
    feeds = {"xg": rng.normal(size=(1, 20)).astype(np.float32),
             "xc": rng.normal(size=(1, 1, 3, 3, 3)).astype(np.float32),
             "xi": np.array([-5, 0, 4, 1000], np.int32)}
    gpu = cuda_session(model)
    _same(gpu.run(None, feeds), qrt.InferenceSession(model, threads=1).run(None, feeds))
    rep = _by_name(gpu)
    assert rep["matmul_bigk"]["device"] == "cpu"
    assert rep["matmul_bigk"]["device_reason"].startswith("K=20 exceeds 16")
    assert rep["conv3d"]["device"] == "cpu" and "3-D convolution" in rep["conv3d"]["device_reason"]
    assert rep["Q_int32"]["device"] == "cpu" and rep["Q_int32"]["device_reason"].startswith(
        "int32 input")
    crossing = {(t["value"], t["direction"]) for t in rep["matmul_bigk"]["transfers"]}
    assert crossing == {("q3", "device_to_host")}  # the GPU-quantized input goes to the CPU op


def test_missing_numba_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    monkeypatch.setattr(cd, "_numba_cuda_version", lambda: None)
    with pytest.raises(QrtError, match=r"needs the numba-cuda package: pip install 'qrt\[cuda\]'"):
        qrt.InferenceSession(M.mlp(), device="cuda")


def test_run_time_errors_match_the_cpu(cuda_session):
    """A per-axis length that does not fit: the GPU op hands the call to the CPU op, whose error
    (type and message, with the node named) is what the user sees on either device."""
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], name="Qaxis", axis=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, "c"])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [2, "c"])],
        [numpy_helper.from_array(np.float32([0.1, 0.2, 0.3]), "s"),
         numpy_helper.from_array(np.uint8([1, 2, 3]), "z")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    feeds = {"x": np.ones((2, 4), np.float32)}
    errors = []
    for sess in (cuda_session(model), qrt.InferenceSession(model, threads=1)):
        with pytest.raises(InvalidQuantParamsError) as e:
            sess.run(None, feeds)
        errors.append(str(e.value))
    assert errors[0] == errors[1] and "Qaxis" in errors[0]


def test_kernel_failure_names_node_device_and_shapes(cuda_session, monkeypatch):
    sess = cuda_session(M.mlp())
    step = next(s for s in sess._plan.steps if s.node is not None and s.node.name == "mm")

    def boom(api, args, stream):
        raise RuntimeError("launch failed")
    monkeypatch.setattr(step.op, "run", boom)
    with pytest.raises(NodeExecutionError,
                       match=r"QGemm node 'mm' failed on cuda on inputs \(uint8\[2, 8\] on cuda, "
                             r"int8\[6, 8\], int32\[6\].*RuntimeError: launch failed"):
        sess.run(None, {"x": np.zeros((2, 8), np.float32)})


def test_observer_sees_host_arrays(cuda_session):
    """The calibration hook (observer) gets host copies of device values."""
    sess = cuda_session(M.mlp())
    seen = []

    def observer(node, ins, outs):
        seen.append(node.name)
        assert all(v is None or isinstance(v, np.ndarray) for v in list(ins) + list(outs))

    x = np.random.default_rng(2).normal(size=(2, 8)).astype(np.float32)
    out = sess._execute({"x": x}, ["y"], observer)
    assert seen == [n.name for n in sess._graph.nodes]
    _same(out, qrt.InferenceSession(M.mlp(), threads=1).run(None, {"x": x}))
