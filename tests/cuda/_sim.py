"""Load numba.cuda for the CUDA kernel tests: as the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) unless
QRT_TEST_REAL_GPU=1 asks for a real GPU.

numba picks simulator or driver when numba.cuda is first imported, so this is done once, from
tests/cuda/conftest.py, before any test module imports the kernels. NUMBA_ENABLE_CUDASIM is set only
around that import and then restored, so it does not leak into other tests or the subprocesses they
start (nothing outside tests/cuda imports numba.cuda; an already-imported numba.cuda is respected).
"""
from __future__ import annotations

import importlib
import os
import sys

REAL_GPU = os.environ.get("QRT_TEST_REAL_GPU", "0") not in ("", "0")
# NUMBA_ENABLE_CUDASIM as it was before this module ran (restored after importing numba.cuda)
PREV_ENV = os.environ.get("NUMBA_ENABLE_CUDASIM")


def _is_simulator(mod) -> bool:
    return getattr(getattr(mod, "is_available", None), "__module__", "").endswith("simulator_init")


def _load() -> tuple[str | None, bool]:
    """(skip reason or None, simulator?)"""
    loaded = sys.modules.get("numba.cuda")
    if loaded is not None:
        sim = _is_simulator(loaded)
        if not sim and not loaded.is_available():
            return ("numba.cuda was imported for a real device before tests/cuda were collected and "
                    "no GPU is available; run tests/cuda in their own pytest process"), False
        return None, sim
    prev = PREV_ENV
    if not REAL_GPU:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    try:
        cuda = importlib.import_module("numba.cuda")
    except Exception as e:  # numba without numba.cuda, or numba-cuda without its bindings
        return (f"numba.cuda cannot be imported ({type(e).__name__}: {e}); "
                "pip install 'qrt[cuda]' (numba-cuda)"), False
    finally:
        if prev is None:
            os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
        else:
            os.environ["NUMBA_ENABLE_CUDASIM"] = prev
    sim = _is_simulator(cuda)
    if not sim and not cuda.is_available():
        return f"QRT_TEST_REAL_GPU=1 but no CUDA GPU: {cuda.cuda_error()}", False
    return None, sim


SKIP_REASON, SIMULATOR = _load()
