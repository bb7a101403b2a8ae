"""CPU feature detection, done from llvmlite's host feature table *before* any kernel is compiled.

Compiling the VNNI intrinsic on a CPU without AVX-512 VNNI aborts the whole process inside LLVM
(PERF-NOTES), so the path is chosen here from the host features and the vnni module is never even
compiled unless `vnni` is available.

Paths, best first:
- ``vnni``: AVX-512 ``vpdpbusd`` (needs avx512vnni + avx512bw)
- ``avx2``: ``vpmaddwd`` on i16 pairs (exact; needs avx2)
- ``portable``: plain Numba (any CPU)
- ``ref``: the numpy reference twins (ref.py)

``QRT_KERNEL_PATH=vnni|avx2|portable|ref`` overrides the choice; asking for a path this CPU cannot run
raises :class:`KernelPathError` naming the missing features.
"""
from __future__ import annotations

import functools
import os

PATHS = ("vnni", "avx2", "portable", "ref")
REQUIRED_FEATURES = {
    "vnni": ("avx512f", "avx512bw", "avx512vnni"),
    "avx2": ("avx2",),
    "portable": (),
    "ref": (),
}
ENV_VAR = "QRT_KERNEL_PATH"


class KernelPathError(RuntimeError):
    """A kernel path was requested that is unknown or that this CPU cannot run."""


@functools.lru_cache(maxsize=1)
def host_features() -> frozenset:
    """The host CPU features LLVM will compile for (names as llvmlite spells them)."""
    import llvmlite.binding as llb

    try:
        feats = llb.get_host_cpu_features()
        return frozenset(k for k, v in feats.items() if v)
    except Exception:  # pragma: no cover - llvmlite cannot tell on this platform
        return frozenset()


def _numba_features_override() -> frozenset | None:
    """NUMBA_CPU_FEATURES (used to test portable paths) makes Numba compile for those features only;
    honour it so we never pick a path the compiler was told not to use."""
    spec = os.environ.get("NUMBA_CPU_FEATURES", "").strip()
    if not spec:
        return None
    on = set()
    for tok in spec.split(","):
        tok = tok.strip()
        if tok.startswith("+"):
            on.add(tok[1:])
    return frozenset(on)


def missing_features(path: str) -> tuple:
    if path not in REQUIRED_FEATURES:
        raise KernelPathError(f"unknown kernel path {path!r}; choose one of {', '.join(PATHS)}")
    have = host_features()
    override = _numba_features_override()
    if override is not None:
        have = have & override
    return tuple(f for f in REQUIRED_FEATURES[path] if f not in have)


def can_run(path: str) -> bool:
    return not missing_features(path)


def available_paths() -> tuple:
    """Paths this CPU can run, best first (always ends with 'portable', 'ref')."""
    return tuple(p for p in PATHS if can_run(p))


def check_path(path: str) -> str:
    """Return `path` if this CPU can run it, else raise KernelPathError with the reason."""
    missing = missing_features(path)
    if missing:
        raise KernelPathError(
            f"kernel path {path!r} needs CPU features {', '.join(missing)} that this CPU "
            f"({_cpu_name()}) lacks; available paths: {', '.join(available_paths())}")
    return path


def _cpu_name() -> str:
    try:
        import llvmlite.binding as llb
        return llb.get_host_cpu_name()
    except Exception:  # pragma: no cover
        return "unknown"


@functools.lru_cache(maxsize=None)
def _default_path(env_value: str | None) -> str:
    if env_value:
        return check_path(env_value.strip().lower())
    return available_paths()[0]


def default_path() -> str:
    """The path used when none is given: QRT_KERNEL_PATH if set (checked), else the best available."""
    return _default_path(os.environ.get(ENV_VAR) or None)


def resolve(path: str | None) -> str:
    return default_path() if path is None else check_path(path)
