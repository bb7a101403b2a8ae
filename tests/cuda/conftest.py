"""CUDA kernel tests run under numba's CUDA simulator (no GPU needed); see _sim.py."""
from tests.cuda import _sim  # noqa: F401  (imports numba.cuda as the simulator, once)
