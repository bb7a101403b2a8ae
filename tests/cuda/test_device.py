"""qrt.cuda_device.require_cuda and import hygiene (no GPU needed)."""
import os
import subprocess
import sys

import pytest

import qrt.cuda_device as cd
from qrt.errors import QrtError
from tests.cuda._sim import PREV_ENV, SIMULATOR, SKIP_REASON


def _clean_env():
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    return env


def test_importing_qrt_does_not_import_numba_cuda():
    code = ("import sys, qrt, qrt.kernels, qrt.kernels.qlinear, qrt.kernels.cuda, qrt.cuda_device\n"
            "bad = sorted(m for m in sys.modules if m == 'numba.cuda' or m.startswith('numba.cuda.'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=_clean_env(), timeout=120)


def test_simulator_env_does_not_leak():
    """tests/cuda set NUMBA_ENABLE_CUDASIM only while importing numba.cuda."""
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") == PREV_ENV


def test_require_cuda_without_numba_cuda(monkeypatch):
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    monkeypatch.setattr(cd, "_numba_cuda_version", lambda: None)
    with pytest.raises(QrtError, match=r"pip install 'qrt\[cuda\]'"):
        cd.require_cuda()
    assert cd.cuda_available() is False


def test_require_cuda_real_device_or_clear_error():
    """In a fresh process (no simulator): either a GPU is described, or the error says why not."""
    code = ("import qrt.cuda_device as cd\n"
            "from qrt.errors import QrtError\n"
            "try:\n    print('OK', cd.require_cuda().describe())\n"
            "except QrtError as e:\n    print('ERR', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=_clean_env(), timeout=120)
    out = r.stdout.strip()
    assert r.returncode == 0, r.stderr
    assert out.startswith("OK ") or "no CUDA GPU found" in out or "qrt[cuda]" in out, out


@pytest.mark.skipif(bool(SKIP_REASON) or not SIMULATOR, reason=SKIP_REASON or "real GPU run")
def test_require_cuda_simulator(monkeypatch):
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    info = cd.require_cuda(check_rounding=True)
    assert info.simulator and "simulator" in info.describe()
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM")
    with pytest.raises(QrtError, match="no CUDA GPU found: numba.cuda was already imported as the|needs the numba-cuda package"):
        cd.require_cuda()


def test_every_kernel_lowers_for_a_real_gpu():
    """The simulator never compiles kernels: lower them for sm_80 in a clean process."""
    script = os.path.join(os.path.dirname(__file__), "lower_for_gpu.py")
    r = subprocess.run([sys.executable, script], capture_output=True, text=True, env=_clean_env(),
                       timeout=300)
    if r.returncode == 3:
        pytest.skip(r.stdout.strip())
    assert r.returncode == 0, r.stdout + r.stderr
