"""On-disk cache of a model's graph after the passes, so that a new process starts fast.

`import onnx` alone takes 0.7-1.0 s on the development machine (its ml_dtypes dependency), and
loading + the pass pipeline another 0.1-1 s on real models: more than the whole budget of a cold
start. `qrt warmup MODEL` (or `InferenceSession(..., cache_graph=True)`) writes the lowered graph;
a later session of the same model bytes and options loads it instead, without importing onnx.

The key covers the model's bytes, the session options that shape the graph, qrt's own sources
(any edit of the importer, passes or ops invalidates every entry), Python and numpy versions.
A model with external data is never cached (its bytes do not pin the weights). A missing,
unreadable or stale entry is simply rebuilt; QRT_GRAPH_CACHE=0 turns reading off.
Entries are pickles: the cache folder must be as trusted as the code that reads it
(QRT_CACHE_DIR, default $XDG_CACHE_HOME/qrt or ~/.cache/qrt).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import sys
import tempfile

FORMAT = 1
_FINGERPRINT: list[str] = []


def cache_dir() -> str:
    root = os.environ.get("QRT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "qrt")
    return os.path.join(root, "graphs")


def enabled() -> bool:
    return os.environ.get("QRT_GRAPH_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def _code_fingerprint() -> str:
    """Digest of the qrt sources that decide a lowered graph (read once per process)."""
    if not _FINGERPRINT:
        import numpy as np
        here = os.path.dirname(os.path.abspath(__file__))
        h = hashlib.sha256(f"{FORMAT} {sys.version_info[:2]} {np.__version__}".encode())
        for sub in ("", "ops", "passes"):
            folder = os.path.join(here, sub)
            for name in sorted(os.listdir(folder)):
                if name.endswith(".py"):
                    with open(os.path.join(folder, name), "rb") as f:
                        h.update(name.encode() + b"\0" + f.read())
        _FINGERPRINT.append(h.hexdigest())
    return _FINGERPRINT[0]


def model_bytes(model) -> bytes | None:
    """The bytes of a model given as a path or as bytes (None for anything else)."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        try:
            with open(model, "rb") as f:
                return f.read()
        except OSError:
            return None  # the importer reports the problem
    return None


def key(data: bytes, **options) -> str | None:
    """The entry name for a model's bytes and session options; None when qrt's sources cannot be
    read to fingerprint them (a frozen or zipped install): then nothing is cached."""
    try:
        fp = _code_fingerprint()
    except OSError:
        return None
    h = hashlib.sha256(fp.encode())
    h.update(repr(sorted(options.items())).encode())
    h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def _path(k: str) -> str:
    return os.path.join(cache_dir(), k[:2], k + ".pkl")


def load(k: str):
    """The cached payload, or None (absent, unreadable or from another format)."""
    if not enabled():
        return None
    try:
        with open(_path(k), "rb") as f:
            payload = pickle.load(f)
    except Exception:  # a torn or foreign file is a miss, never an error
        return None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        return None
    return payload


def store(k: str, **payload) -> str | None:
    """Write an entry atomically; returns its path (None when the folder is not writable)."""
    path = _path(k)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(dict(payload, format=FORMAT), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        return path
    except OSError:
        return None
