"""qrt's kernels (installed as ``qrt.kernels``): numpy reference twins, Numba CPU paths, numba.cuda.

Importing this package first makes sure Numba's on-disk cache cannot serve stale machine code.
Numba keys a cached function on its own source file only, but kernels inline helpers from other
files (the epilogue, im2col and micro-kernels live in common.py / avx2.py): after an edit to one of
those, or a partial upgrade, a cached caller would keep the old inlined code, which has been seen
to compute garbage and crash the process. So the cache files under this package are dropped
whenever the kernels' sources (or Numba's version) change.
"""
from __future__ import annotations

import hashlib
import os

_STAMP = "qrt-kernels.fingerprint"


def _fingerprint(root: str) -> str:
    import numba

    h = hashlib.sha1(numba.__version__.encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(filenames):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                h.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()


def _guard_numba_cache(root: str | None = None) -> None:
    root = root or os.path.dirname(os.path.abspath(__file__))
    try:
        stamp = os.path.join(root, "__pycache__", _STAMP)
        want = _fingerprint(root)
        try:
            with open(stamp) as fh:
                if fh.read().strip() == want:
                    return
        except OSError:
            pass
        for dirpath, dirnames, filenames in os.walk(root):
            if os.path.basename(dirpath) != "__pycache__":
                continue
            for f in filenames:
                if f.endswith((".nbi", ".nbc")):
                    os.remove(os.path.join(dirpath, f))
        os.makedirs(os.path.dirname(stamp), exist_ok=True)
        with open(stamp, "w") as fh:
            fh.write(want)
    except OSError:  # a read-only install: Numba then caches elsewhere (or not at all)
        pass


if os.environ.get("QRT_KEEP_NUMBA_CACHE", "0") in ("", "0"):
    _guard_numba_cache()
