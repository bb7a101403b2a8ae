"""Test-wide settings."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# `qrt warmup` (tested in tests/cli) writes qrt's graph cache: keep it out of the user's home and
# away from later runs (a per-run folder, removed at exit; subprocesses inherit it).
if "QRT_CACHE_DIR" not in os.environ:
    os.environ["QRT_CACHE_DIR"] = tempfile.mkdtemp(prefix="qrt-test-cache-")
    atexit.register(shutil.rmtree, os.environ["QRT_CACHE_DIR"], True)
