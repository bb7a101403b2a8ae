"""CPU kernels, one module per path: ``vnni`` (AVX-512 vpdpbusd), ``avx2`` (vpmaddwd), ``portable``
(plain Numba); ``ref`` is the numpy twin (kernels/ref.py).

The path is chosen from the host CPU features (llvmlite) before anything is compiled; modules are
imported lazily and only when the CPU can run them (compiling the VNNI intrinsic elsewhere aborts the
process). ``QRT_KERNEL_PATH`` overrides the default; every entry point also takes an explicit path.
"""
from __future__ import annotations

import importlib

from qrt.kernels.cpu.features import (  # noqa: F401
    ENV_VAR, PATHS, KernelPathError, available_paths, can_run, check_path, default_path,
    host_features, missing_features, resolve)


def chosen_path() -> str:
    """The path used when none is given (QRT_KERNEL_PATH if set and runnable, else the best)."""
    return default_path()


def backend(path: str):
    """The module implementing `path` (checked against the CPU first); None for 'ref'."""
    path = check_path(path)
    if path == "ref":
        return None
    return importlib.import_module(f"qrt.kernels.cpu.{path}")


def compiled_entry(fn, args):
    """The compiled entry point of Numba dispatcher `fn` for the types of `args` (compiled or
    loaded from the cache now). Calling it skips the dispatcher's per-call type resolution, about
    1 us for the ~20 arguments of a one-call conv, a fifth of a small layer's whole call. The
    caller must pass arguments of exactly these types (the entry point only checks array item
    sizes). `fn` itself when it is not a CPU dispatcher."""
    try:
        sig = tuple(fn.typeof_pyval(a) for a in args)
        return fn.compile(sig)
    except Exception:  # not a dispatcher (e.g. a plain function in tests), or no compiler
        return fn
