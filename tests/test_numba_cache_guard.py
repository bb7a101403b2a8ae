"""qrt.kernels drops Numba's cache files when any kernel source changes (stale inlined code)."""
from __future__ import annotations

import os

from qrt import kernels


def _tree(tmp_path):
    (tmp_path / "cpu" / "__pycache__").mkdir(parents=True)
    (tmp_path / "cpu" / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    return tmp_path


def _cache_files(root):
    return sorted(f for _, _, fs in os.walk(root) for f in fs if f.endswith((".nbi", ".nbc")))


def test_cache_kept_while_sources_unchanged_and_dropped_after_an_edit(tmp_path):
    root = _tree(tmp_path)
    kernels._guard_numba_cache(str(root))  # first sight: stamp written
    (root / "cpu" / "__pycache__" / "a.f-1.py311.nbi").write_bytes(b"i")
    (root / "cpu" / "__pycache__" / "a.f-1.py311.1.nbc").write_bytes(b"c")
    kernels._guard_numba_cache(str(root))
    assert len(_cache_files(root)) == 2  # unchanged sources: cache kept
    (root / "b.py").write_text("y = 3\n")  # a helper another file inlines changes
    kernels._guard_numba_cache(str(root))
    assert _cache_files(root) == []
    (root / "cpu" / "__pycache__" / "a.f-1.py311.nbi").write_bytes(b"i")
    kernels._guard_numba_cache(str(root))
    assert len(_cache_files(root)) == 1  # new stamp matches: the fresh cache stays
