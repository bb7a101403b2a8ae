"""`qrt inspect --device cuda` shows where each node runs and the copies it needs."""
from __future__ import annotations

from importlib import resources

from tests.cuda import util  # noqa: F401  (skips this module when numba.cuda cannot be imported)
from tests.cuda._sim import SIMULATOR

from qrt import cli


def test_inspect_device_cuda_lists_placement_and_copies(monkeypatch, capsys):
    if SIMULATOR:
        monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    model = str(resources.files("qrt.data") / "digits_cnn_int8.onnx")
    info = cli.inspect_model(model, device="cuda")
    assert info["device"] == "cuda"
    placed = {n["name"]: n for n in info["nodes"] if "device" in n}
    assert placed and all(n["device"] in ("cuda", "cpu") for n in placed.values())
    convs = [n for n in info["nodes"] if n["op_type"] == "Conv"]
    assert convs and all(n["device"] == "cuda" for n in convs), convs
    assert any(n.get("transfers") for n in info["nodes"])  # the float input goes up, logits come down
    assert cli.main(["inspect", model, "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    assert "[cuda]" in out and "copies:" in out


def test_inspect_cpu_has_no_device_fields():
    model = str(resources.files("qrt.data") / "digits_cnn_int8.onnx")
    info = cli.inspect_model(model)
    assert info["device"] == "cpu"
    assert all("device" not in n for n in info["nodes"])
