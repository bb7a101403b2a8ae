"""The vnni path's emulated vpdpbusd (kernels/cpu/vnni.py, features.emulate_vnni / QRT_VNNI_EMULATE=1).

What these tests establish, and what they cannot:
- the emulated instruction follows Intel's VPDPBUSD pseudo-code (u8 x s8, four products per int32
  lane, wrapping adds), checked against an independent numpy model; on a VNNI CPU the real
  instruction is checked against the same model (that test is the only one here that needs one);
- whole models run on the vnni path through the emulation, bit-identical with the ref path (the kernel
  tests in test_qgemm/test_qconv cover the path's kernels one by one, as variant 'vnni-emulated');
- the hardware kernel is never compiled where the CPU lacks VNNI (LLVM would abort the process) and
  Numba's on-disk cache keeps the two implementations apart.
Emulation proves the kernel logic, not the instruction: the hardware path still needs a VNNI CPU.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

import qrt
from qrt.kernels.cpu import features, vnni

HAS_VNNI = not features.missing_features("vnni")
IMPLS = [pytest.param("hardware", id="hardware", marks=[] if HAS_VNNI else [
            pytest.mark.skip(reason="CPU lacks AVX-512 VNNI: the instruction itself is untested")]),
         pytest.param("emulated", id="emulated")]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def vpdpbusd_model(acc, a, b):
    """Intel SDM, VPDPBUSD (EVEX.512): for each dword i, DEST[i] = SRC1[i] + sum_{j<4}
    ZeroExtend(SRC2.byte[4i+j]) * SignExtend(SRC3.byte[4i+j]), without saturation (mod 2^32)."""
    prod = a.astype(np.int64).reshape(16, 4) * b.astype(np.int64).reshape(16, 4)
    r = acc.astype(np.int64) + prod.sum(axis=1)
    return ((r + 2 ** 31) % 2 ** 32 - 2 ** 31).astype(np.int32)


def _vectors(rng):
    """Random vectors, every extreme product, the int32 wrap both ways, and single bytes in each
    position of a lane (so a byte-order mistake cannot hide)."""
    out = []
    for _ in range(200):
        out.append((rng.integers(-2 ** 31, 2 ** 31, 16).astype(np.int32),
                    rng.integers(0, 256, 64).astype(np.uint8),
                    rng.integers(-128, 128, 64).astype(np.int8)))
    i32 = np.iinfo(np.int32)
    for acc, av, bv in [(i32.max, 255, 127), (i32.min, 255, -128), (0, 255, -128), (0, 255, 127),
                        (-1, 0, -128), (i32.max - 100, 1, 1), (i32.min + 3, 128, -1)]:
        out.append((np.full(16, acc, np.int32), np.full(64, av, np.uint8), np.full(64, bv, np.int8)))
    for j in range(4):
        a = np.zeros(64, np.uint8)
        b = np.zeros(64, np.int8)
        a[j::4] = rng.integers(1, 256, 16)
        b[j::4] = rng.integers(-128, 128, 16)
        b[(j + 1) % 4::4] = 77  # a neighbour byte that must not be picked up (a is 0 there)
        out.append((np.arange(16, dtype=np.int32), a, b))
    return out


@pytest.mark.parametrize("impl", IMPLS)
def test_dpbusd_matches_the_instruction_definition(impl):
    for acc, a, b in _vectors(np.random.default_rng(0)):
        np.testing.assert_array_equal(vnni.dpbusd(acc, a, b, impl), vpdpbusd_model(acc, a, b))


def test_emulation_switch_and_refusal():
    with features.emulate_vnni(True):
        assert features.vnni_implementation() == "emulated"
        assert features.can_run("vnni")
    with features.emulate_vnni(False):
        if HAS_VNNI:
            assert features.vnni_implementation() == "hardware"
        else:
            with pytest.raises(features.KernelPathError, match="QRT_VNNI_EMULATE"):
                features.vnni_implementation()
            with pytest.raises(features.KernelPathError):  # explicit, and refused before compiling
                vnni.dpbusd(np.zeros(16, np.int32), np.zeros(64, np.uint8), np.zeros(64, np.int8),
                            "hardware")
    with pytest.raises(ValueError, match="unknown vnni implementation"):
        vnni.dpbusd(np.zeros(16, np.int32), np.zeros(64, np.uint8), np.zeros(64, np.int8), "fast")


def test_hardware_and_emulated_kernels_have_separate_cache_entries():
    """Numba names a function's cache index after its qualified name; the implementations are
    separate functions, so neither can load the other's compiled code (entries also carry the
    CPU name and features)."""
    pairs = [(vnni._gemm_hardware, vnni._gemm_emulated),
             (vnni._dpbusd_probe_hardware, vnni._dpbusd_probe_emulated)]
    for hw, emu in pairs:
        assert hw._cache._cache_file._index_name != emu._cache._cache_file._index_name
        assert "hardware" in hw.py_func.__qualname__ and "emulated" in emu.py_func.__qualname__


_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from qrt.kernels import qlinear as ql
    from qrt.kernels.cpu import features, vnni   # importing compiles nothing
    acc = np.arange(16, dtype=np.int32)
    a = np.arange(64, dtype=np.uint8) * 3
    b = (np.arange(64) - 32).astype(np.int8)
    res = {"has_vnni": not features.missing_features("vnni")}
    refused = []  # no switch (QRT_KERNEL_PATH=vnni asked for): refused before anything compiles
    for name, call in [
            ("dpbusd", lambda: vnni.dpbusd(acc, a, b)),
            ("pack_weight", lambda: ql.pack_weight(np.ones((3, 8), np.int8), 0, path="vnni")),
            ("default_path", features.default_path)]:
        try:
            call()
        except features.KernelPathError:
            refused.append(name)
    res["refused"] = refused
    # emulated entries only: on a VNNI CPU the calls above ran (and cached) the hardware probe
    res["cache_files_before"] = sorted(
        f for _, _, fs in os.walk(os.environ["NUMBA_CACHE_DIR"]) for f in fs
        if "vnni" in f and "emulated" in f)
    if res["has_vnni"]:
        res["hw_out"] = vnni.dpbusd(acc, a, b, "hardware").tolist()
    res["hw_compiled"] = len(vnni._dpbusd_probe_hardware.overloads)
    with features.emulate_vnni(True):
        res["out"] = vnni.dpbusd(acc, a, b).tolist()
        res["packed"] = ql.pack_weight(np.ones((3, 8), np.int8), 0, path="vnni").kernel
    res["hits"] = sum(vnni._dpbusd_probe_emulated.stats.cache_hits.values())
    print(json.dumps(res))
""")


def _run(tmp_path):
    e = {k: v for k, v in os.environ.items() if k != features.EMULATE_ENV_VAR}
    e.update(NUMBA_CACHE_DIR=str(tmp_path / "numba"), PYTHONPATH=REPO,
             **{features.ENV_VAR: "vnni"})
    p = subprocess.run([sys.executable, "-c", _SCRIPT], env=e, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, f"rc={p.returncode} (an LLVM abort is -6)\n{p.stderr[-2000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_fresh_processes_never_touch_the_intrinsic_and_caches_stay_apart(tmp_path):
    """Two processes sharing a private Numba cache. Without the switch (QRT_KERNEL_PATH=vnni asked
    for) a CPU without VNNI refuses the vnni path cleanly -- no LLVM abort -- and compiles no
    hardware kernel; with the switch the emulation fills only its own cache entries, which the
    second process loads."""
    acc, a, b = (np.arange(16, dtype=np.int32), np.arange(64, dtype=np.uint8) * 3,
                 (np.arange(64) - 32).astype(np.int8))
    want = vpdpbusd_model(acc, a, b).tolist()
    first, second = _run(tmp_path), _run(tmp_path)
    for r in (first, second):
        assert r["out"] == want and r["packed"] == "vnni"
        if r["has_vnni"]:
            assert r["hw_out"] == want and not r["refused"]
        else:
            assert r["refused"] == ["dpbusd", "pack_weight", "default_path"]
            assert r["hw_compiled"] == 0
    assert first["cache_files_before"] == [] and first["hits"] == 0
    assert second["hits"] >= 1  # the emulated probe came from the cache
    names = [os.path.basename(f) for f in _walk(tmp_path / "numba")]
    assert any("_dpbusd_probe_emulated" in f for f in names), names
    assert any("hardware" in f for f in names) == first["has_vnni"], names


def _walk(root):
    out = []
    for d, _, fs in os.walk(root):
        out += [os.path.join(d, f) for f in fs]
    return out


# ------------------------------------------------------------------ whole models on the emulated path
@pytest.fixture(scope="module")
def ort_quantized(tmp_path_factory):
    """The pass tests' small CNN (conv, depthwise, 1x1, Gemm) and transformer block (MatMuls incl.
    activation x activation), quantized by onnxruntime with u8 and s8 activations."""
    oq = pytest.importorskip("onnxruntime.quantization")
    from tests.passes.models import Reader, small_cnn, small_transformer

    tmp = tmp_path_factory.mktemp("vnni_emu")
    out = {}
    for name, make, shape in [("cnn", small_cnn, (1, 3, 16, 16)),
                              ("transformer", small_transformer, (1, 8, 16))]:
        src = str(tmp / f"{name}.onnx")
        onnx.save(make(), src)
        rng = np.random.default_rng(0)
        feeds = [{"x": rng.normal(0, 1, shape).astype(np.float32)} for _ in range(4)]
        for act, qt, pc in [("u8", oq.QuantType.QUInt8, True), ("s8", oq.QuantType.QInt8, False)]:
            dst = str(tmp / f"{name}_{act}.onnx")
            oq.quantize_static(src, dst, Reader(feeds), quant_format=oq.QuantFormat.QDQ,
                               activation_type=qt, weight_type=oq.QuantType.QInt8, per_channel=pc)
            out[f"{name}_{act}"] = (dst, {"x": np.random.default_rng(1).normal(0, 1, shape)
                                          .astype(np.float32)})
    return out


@pytest.mark.parametrize("name", ["cnn_u8", "cnn_s8", "transformer_u8", "transformer_s8"])
def test_models_on_emulated_vnni_path_bit_identical_with_ref(name, ort_quantized, monkeypatch):
    path, feeds = ort_quantized[name]
    monkeypatch.setenv(features.ENV_VAR, "ref")
    want = qrt.InferenceSession(path, threads=1).run(None, feeds)
    calls = []
    real_gemm = vnni.gemm

    def counting_gemm(*args, **kw):
        calls.append(features.vnni_implementation())
        return real_gemm(*args, **kw)

    monkeypatch.setattr(vnni, "gemm", counting_gemm)
    for name in ("conv_nchw_fn", "linear_2d_fn"):  # the one-call conv / linear kernels
        def counting_fn(impl=None, real=getattr(vnni, name)):
            fn = real(impl)

            def call(*args):
                calls.append(fn.py_func.__name__.rsplit("_", 1)[-1])
                return fn(*args)
            return call
        monkeypatch.setattr(vnni, name, counting_fn)
    monkeypatch.setenv(features.ENV_VAR, "vnni")
    with features.emulate_vnni(True):
        sess = qrt.InferenceSession(path, threads=2)
        got = sess.run(None, feeds)
    assert calls and set(calls) == {"emulated"}  # the vnni GEMM ran, emulated
    heavy = [e for e in sess.lowering_report() if e["op_type"] in ("Conv", "MatMul", "Gemm")]
    assert heavy and all(e["precision"] == "int8" for e in heavy), heavy
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
