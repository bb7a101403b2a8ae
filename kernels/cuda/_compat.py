"""Compatibility with numba-cuda releases older than the installed numpy.

numba-cuda 0.30 still refers to `np.row_stack` when it types a kernel launch; numpy 2.5 removed
that alias (it was `np.vstack`), so every launch failed with AttributeError on a real GPU (seen
with numba-cuda 0.30.4 + numpy 2.5.2). Restoring the alias is harmless: it is the same function
numpy shipped under that name until 2.4. Imported before numba.cuda by the kernel modules.
"""
from __future__ import annotations

import numpy as np

if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack
