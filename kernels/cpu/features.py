"""CPU feature detection, done from llvmlite's host feature table *before* any kernel is compiled.

Compiling the VNNI intrinsic on a CPU without AVX-512 VNNI aborts the whole process inside LLVM
(PERF-NOTES), so the path is chosen here from the host features, and the vnni module compiles its
hardware kernel only after :func:`vnni_implementation` said ``"hardware"``.

Paths, best first:
- ``vnni``: AVX-512 ``vpdpbusd`` (needs avx512vnni + avx512bw)
- ``avx2``: ``vpmaddwd`` on i16 pairs (exact; needs avx2)
- ``portable``: plain Numba (any CPU)
- ``ref``: the numpy reference twins (ref.py)

``QRT_KERNEL_PATH=vnni|avx2|portable|ref`` overrides the choice; asking for a path this CPU cannot run
raises :class:`KernelPathError` naming the missing features.

VNNI emulation (``QRT_VNNI_EMULATE=1``, or :func:`emulate_vnni` in code): the vnni path's kernels are
compiled with a plain-LLVM-IR twin of ``vpdpbusd`` (same u8 x s8 -> 4-product int32 wrapping sums)
instead of the instruction, so the path's packing, tiling, micro-kernels, s8 shift / column
correction and epilogue run, slowly, on any CPU. It makes ``vnni`` *runnable* but never *chosen*:
ask for it with ``QRT_KERNEL_PATH=vnni`` or ``path="vnni"``. While it is on, the vnni path emulates
even on a CPU that has the instruction; while it is off (the default), the real instruction runs
where the CPU has it and the vnni path is refused elsewhere. Emulation proves the kernel logic, not
the instruction: the hardware path still needs a VNNI CPU to be tested.
"""
from __future__ import annotations

import contextlib
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
EMULATE_ENV_VAR = "QRT_VNNI_EMULATE"
_TRUE = ("1", "true", "yes", "on")
_emulate_override: bool | None = None  # set by emulate_vnni(); wins over the environment


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
    """The CPU features `path` needs in hardware that the host (or NUMBA_CPU_FEATURES) lacks."""
    if path not in REQUIRED_FEATURES:
        raise KernelPathError(f"unknown kernel path {path!r}; choose one of {', '.join(PATHS)}")
    have = host_features()
    override = _numba_features_override()
    if override is not None:
        have = have & override
    return tuple(f for f in REQUIRED_FEATURES[path] if f not in have)


# ---------------------------------------------------------------- VNNI emulation switch
def vnni_emulated() -> bool:
    """True when the vnni path is to be compiled with the emulated vpdpbusd (QRT_VNNI_EMULATE=1 or
    inside emulate_vnni(True))."""
    if _emulate_override is not None:
        return _emulate_override
    return os.environ.get(EMULATE_ENV_VAR, "").strip().lower() in _TRUE


@contextlib.contextmanager
def emulate_vnni(on: bool = True):
    """Switch the VNNI emulation on (or force it off) for the duration of the block, whatever the
    environment says. Process-wide, not per thread (meant for tests and debugging)."""
    global _emulate_override
    old = _emulate_override
    _emulate_override = bool(on)
    try:
        yield
    finally:
        _emulate_override = old


def vnni_implementation() -> str:
    """How the vnni path runs now: 'emulated' (switch on) or 'hardware' (the CPU has VNNI).
    Raises KernelPathError otherwise: the hardware kernel must never be compiled here."""
    if vnni_emulated():
        return "emulated"
    missing = missing_features("vnni")
    if missing:
        raise KernelPathError(
            f"kernel path 'vnni' needs CPU features {', '.join(missing)} that this CPU "
            f"({_cpu_name()}) lacks; set {EMULATE_ENV_VAR}=1 to run it through the emulated "
            f"vpdpbusd (tests/debugging; slow)")
    return "hardware"


# ---------------------------------------------------------------- paths
def native_paths() -> tuple:
    """Paths this CPU runs in hardware, best first (always ends with 'portable', 'ref')."""
    return tuple(p for p in PATHS if not missing_features(p))


def can_run(path: str) -> bool:
    """True if `path` can run here: natively, or (vnni only) through the emulation switch."""
    return not missing_features(path) or (path == "vnni" and vnni_emulated())


def available_paths() -> tuple:
    """Paths that can run here, best first (always ends with 'portable', 'ref'); includes an
    emulated 'vnni' while the emulation switch is on."""
    return tuple(p for p in PATHS if can_run(p))


def check_path(path: str) -> str:
    """Return `path` if it can run here, else raise KernelPathError with the reason."""
    missing = missing_features(path)
    if missing and not (path == "vnni" and vnni_emulated()):
        hint = f" (or set {EMULATE_ENV_VAR}=1 to emulate it)" if path == "vnni" else ""
        raise KernelPathError(
            f"kernel path {path!r} needs CPU features {', '.join(missing)} that this CPU "
            f"({_cpu_name()}) lacks{hint}; available paths: {', '.join(available_paths())}")
    return path


def _cpu_name() -> str:
    try:
        import llvmlite.binding as llb
        return llb.get_host_cpu_name()
    except Exception:  # pragma: no cover
        return "unknown"


@functools.lru_cache(maxsize=None)
def _default_path(env_value: str | None, emulated: bool, numba_features: str | None) -> str:
    if env_value:
        return check_path(env_value.strip().lower())
    return native_paths()[0]  # never the emulation: it is for explicit requests only


def default_path() -> str:
    """The path used when none is given: QRT_KERNEL_PATH if set (checked), else the best path the
    CPU runs natively."""
    return _default_path(os.environ.get(ENV_VAR) or None, vnni_emulated(),
                         os.environ.get("NUMBA_CPU_FEATURES"))


def resolve(path: str | None) -> str:
    return default_path() if path is None else check_path(path)
