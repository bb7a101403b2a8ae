"""Thread count of the BLAS behind numpy (float Conv/Gemm/MatMul go through numpy's matmul).

numpy's wheels bundle OpenBLAS (``scipy_openblas``: symbols such as
``scipy_openblas_set_num_threads64_``); other builds link a system OpenBLAS
(``openblas_set_num_threads``). OpenBLAS uses every core by default, which ignores a session's
``threads`` and, on a machine whose cores are shared, makes each small matmul wait for a descheduled
worker (measured here: PP-OCR cls FP32, 1 session thread, 53 ms with the default against 6.8 ms with
one BLAS thread).

The library is found with ctypes, without importing anything beyond numpy: first among the shared
objects this process has already mapped (Linux ``/proc/self/maps``), then in the directories numpy's
wheels ship their libraries in (``numpy.libs``, ``numpy/.dylibs``). When no OpenBLAS is found (MKL,
Accelerate, an unusual build) every function here is a harmless no-op and `available()` is False.

    from qrt.kernels.cpu import blas_threads
    blas_threads.set_blas_threads(1)        # process-wide, returns the previous count (or None)
    with blas_threads.limit(2): ...         # restore the previous count afterwards

OpenBLAS's count is process-wide (not per thread): concurrent sessions with different ``threads``
see whichever was set last. That only changes speed, never results.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import threading

_SET_NAMES = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads_64_",
              "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
              "openblas_set_num_threads_64_", "openblas_set_num_threads")
_GET_NAMES = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads_64_",
              "scipy_openblas_get_num_threads", "openblas_get_num_threads64_",
              "openblas_get_num_threads_64_", "openblas_get_num_threads")

_lock = threading.Lock()
_state: dict = {}  # "fns": (setter, getter) or None once looked up; "cur": last count we set


def _candidates() -> list[str]:
    paths: list[str] = []
    try:  # libraries already loaded by numpy (the one whose threads matter)
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.rstrip("\n").split(None, 5)
                if len(p) == 6 and "blas" in os.path.basename(p[5]).lower() and p[5] not in paths:
                    paths.append(p[5])
    except OSError:
        pass
    try:
        import numpy as np
        d = os.path.dirname(np.__file__)
        for pat in (os.path.join(d, os.pardir, "numpy.libs", "*openblas*"),
                    os.path.join(d, ".dylibs", "*openblas*"),
                    os.path.join(d, os.pardir, "scipy_openblas*", "lib", "*openblas*")):
            for p in sorted(glob.glob(pat)):
                if p not in paths:
                    paths.append(p)
    except Exception:  # pragma: no cover - numpy always importable in qrt
        pass
    return paths


def _bind(lib):
    setter = getter = None
    for name in _SET_NAMES:
        setter = getattr(lib, name, None)
        if setter is not None:
            break
    for name in _GET_NAMES:
        getter = getattr(lib, name, None)
        if getter is not None:
            break
    if setter is None:
        return None
    setter.argtypes = [ctypes.c_int]
    setter.restype = None
    if getter is not None:
        getter.argtypes = []
        getter.restype = ctypes.c_int
    return setter, getter


def _find():
    if "fns" in _state:
        return _state["fns"]
    with _lock:
        if "fns" in _state:
            return _state["fns"]
        fns = None
        if os.environ.get("QRT_BLAS_THREADS_DISABLE", "") not in ("", "0"):
            _state["fns"] = None
            return None
        try:
            import numpy  # noqa: F401  (make sure numpy's BLAS is loaded first)
        except Exception:  # pragma: no cover
            pass
        for path in _candidates():
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            fns = _bind(lib)
            if fns is not None:
                _state["path"] = path
                break
        if fns is None:
            try:  # symbols visible in the global namespace (a BLAS loaded RTLD_GLOBAL)
                fns = _bind(ctypes.CDLL(None))
            except (OSError, TypeError):
                fns = None
        _state["fns"] = fns
        return fns


def available() -> bool:
    """True when numpy's BLAS thread count can be read and set."""
    return _find() is not None


def library_path() -> str | None:
    """The shared object whose thread count is controlled (None when not found)."""
    _find()
    return _state.get("path")


def get_blas_threads() -> int | None:
    """The BLAS thread count, or None when the BLAS is not controllable."""
    fns = _find()
    if fns is None:
        return None
    setter, getter = fns
    if getter is None:
        return _state.get("cur")
    return int(getter())


def set_blas_threads(n: int) -> int | None:
    """Set the BLAS thread count (process-wide); returns the previous count (None: not found,
    nothing done). Cheap when the count does not change (~1 us: one ctypes call)."""
    n = max(1, int(n))
    fns = _find()
    if fns is None:
        return None
    setter, getter = fns
    prev = int(getter()) if getter is not None else _state.get("cur")
    if prev != n:
        setter(n)
    _state["cur"] = n
    return prev


@contextlib.contextmanager
def limit(n: int):
    """Run the block with at most `n` BLAS threads, then restore the previous count."""
    prev = set_blas_threads(n)
    try:
        yield prev
    finally:
        if prev is not None and prev != n:
            set_blas_threads(prev)


__all__ = ["available", "get_blas_threads", "library_path", "limit", "set_blas_threads"]
