"""Is there a usable CUDA device? One function, `require_cuda()`, answers with a CudaInfo or a
QrtError that says what is missing and how to fix it. Used by InferenceSession(device="cuda").

Nothing here imports numba.cuda at module import: `import qrt` stays free of it.

The CUDA simulator counts as a device when NUMBA_ENABLE_CUDASIM=1 is set (numba's own switch:
kernels then run, slowly, as Python threads). That is how the CUDA kernels are tested without a GPU.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass

from qrt.errors import QrtError

INSTALL_HINT = "pip install 'qrt[cuda]'  (installs numba-cuda)"


@dataclass(frozen=True)
class CudaInfo:
    name: str  # device name, or "CUDA simulator"
    compute_capability: tuple  # (major, minor); (0, 0) for the simulator
    simulator: bool
    numba_cuda: str  # "numba-cuda X.Y.Z" or "numba X.Y.Z built-in numba.cuda"

    def describe(self) -> str:
        if self.simulator:
            return f"CUDA simulator (NUMBA_ENABLE_CUDASIM=1, {self.numba_cuda})"
        cc = ".".join(str(v) for v in self.compute_capability)
        return f"{self.name} (compute capability {cc}, {self.numba_cuda})"


def _simulator_requested() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0").strip() not in ("", "0")


def _is_simulator(mod) -> bool:
    return getattr(getattr(mod, "is_available", None), "__module__", "").endswith("simulator_init")


def _numba_cuda_version() -> str | None:
    if importlib.util.find_spec("numba_cuda") is None:
        return None
    try:
        from importlib.metadata import version
        return version("numba-cuda")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        return "?"


def _which(ncv: str | None) -> str:
    if ncv is not None:
        return f"numba-cuda {ncv}"
    import numba
    return f"numba {numba.__version__} built-in numba.cuda"


def require_cuda(check_rounding: bool = False) -> CudaInfo:
    """Return what CUDA device qrt would use, or raise QrtError naming what was (not) found.

    check_rounding: also run a tiny kernel that checks the device rounds ties to even like numpy
    (the contract of every quantizing kernel); costs one compile (~1 s) on a real GPU.
    """
    ncv = _numba_cuda_version()
    sim = _simulator_requested()
    if ncv is None and not sim:
        try:
            import numba
            found = f"numba {numba.__version__} without the numba-cuda package"
        except ImportError:
            found = "numba is not installed"
        raise QrtError(f"device='cuda' needs the numba-cuda package: {INSTALL_HINT}. Found: {found}.")

    loaded = sys.modules.get("numba.cuda")
    if loaded is not None and _is_simulator(loaded) and not sim:
        raise QrtError("no CUDA GPU found: numba.cuda was already imported as the CUDA simulator in "
                       "this process (NUMBA_ENABLE_CUDASIM was set then); start a new process "
                       "without NUMBA_ENABLE_CUDASIM to use a GPU")
    try:
        cuda = importlib.import_module("numba.cuda")
    except Exception as e:  # ImportError, or numba-cuda's check for the CUDA Python bindings
        raise QrtError(f"device='cuda': numba.cuda cannot be imported ({type(e).__name__}: "
                       f"{str(e).strip()}); reinstall with {INSTALL_HINT}") from e
    which = _which(ncv)

    if _is_simulator(cuda):
        info = CudaInfo("CUDA simulator", (0, 0), True, which)
    else:
        try:
            ok = cuda.is_available()
            reason = None if ok else cuda.cuda_error()
        except Exception as e:  # driver found but broken
            ok, reason = False, e
        if not ok:
            why = " ".join(str(reason).split()) if reason else "numba.cuda.is_available() is False"
            raise QrtError(f"no CUDA GPU found: {why} (using {which}; set NUMBA_CUDA_DRIVER if the "
                           "driver library is installed somewhere unusual)")
        try:
            dev = cuda.get_current_device()
            name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
            info = CudaInfo(name, tuple(dev.compute_capability), False, which)
        except Exception as e:
            raise QrtError(f"no CUDA GPU found: a driver is present but no device could be opened "
                           f"({type(e).__name__}: {str(e).strip()}; using {which})") from e

    if check_rounding:
        from qrt.kernels.cuda import api
        try:
            api.check_rounding()
        except Exception as e:
            raise QrtError(f"CUDA device {info.describe()} failed the rounding self-check: {e}") from e
    return info


def cuda_available() -> bool:
    """True when require_cuda() would succeed (never raises)."""
    try:
        require_cuda()
        return True
    except QrtError:
        return False
