"""bench/isa_peaks.py keeps compiling and printing its table (its numbers are measured, not
asserted: see README, Benchmarks)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from qrt.kernels.cpu.features import host_features

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "isa_peaks.py"


@pytest.mark.skipif("avx2" not in host_features(), reason="the ceilings are measured on AVX2 CPUs")
def test_isa_peaks_script_prints_every_mix(capsys):
    spec = importlib.util.spec_from_file_location("isa_peaks", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--repeat", "1", "--iterations", "1000"])
    out = capsys.readouterr().out
    for name in ("fp32 fma", "exact int8", "saturating int8", "micro-kernel"):
        assert name in out
    assert "exact int8 / fp32 peak" in out
