"""The `qrt_benchmark` fixture (qrt.pytest_plugin, loaded through the pytest11 entry point)."""
from __future__ import annotations

from importlib import resources

import pytest

pytest_plugins = ["pytester"]

CNN = str(resources.files("qrt.data").joinpath("digits_cnn.onnx"))

TEST = f"""
import numpy as np

def test_latency(qrt_benchmark):
    x = np.zeros((2, 1, 8, 8), np.float32)
    out = qrt_benchmark({CNN!r}, {{"input": x}}, threads=1, rounds=3)
    assert out[0].shape == (2, 10)
    info = qrt_benchmark.extra_info
    assert info["threads"] == 1 and info["inputs"] == {{"input": [2, 1, 8, 8]}}
    assert info["p50_ms"] > 0
    assert qrt_benchmark.session is not None

def test_twice_is_an_error(qrt_benchmark):
    import pytest
    x = np.zeros((1, 1, 8, 8), np.float32)
    qrt_benchmark({CNN!r}, {{"input": x}}, threads=1, rounds=1)
    with pytest.raises(RuntimeError, match="once per test"):
        qrt_benchmark({CNN!r}, {{"input": x}}, threads=1, rounds=1)
"""


REL = """
import numpy as np

def test_relative_path_found_next_to_the_test(qrt_benchmark):
    out = qrt_benchmark("here.onnx", {"input": np.zeros((1, 1, 8, 8), np.float32)}, threads=1,
                        rounds=1)
    assert out[0].shape == (1, 10)
"""


def test_fixture_times_and_records_p50(pytester):
    pytest.importorskip("pytest_benchmark")
    import shutil

    pytester.makepyfile(test_bench=TEST)
    sub = pytester.mkdir("sub")
    shutil.copy(CNN, sub / "here.onnx")
    (sub / "test_rel.py").write_text(REL)
    # Run from the top folder: "here.onnx" is not in the working directory, only next to the test.
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_fixture_skips_without_pytest_benchmark(pytester):
    pytester.makepyfile(test_bench=TEST)
    result = pytester.runpytest_subprocess("-q", "-rs", "-p", "no:benchmark", "-p",
                                           "no:cacheprovider")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*qrt_benchmark needs pytest-benchmark*"])
