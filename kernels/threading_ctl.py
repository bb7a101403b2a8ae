"""Thread count for Numba parallel kernels, set per calling thread for the duration of a run."""
from __future__ import annotations

import contextlib

import numba


@contextlib.contextmanager
def num_threads(n: int):
    # numba.set_num_threads is thread-local, so concurrent runs with different counts don't clash.
    limit = numba.config.NUMBA_NUM_THREADS
    n = max(1, min(int(n), limit))
    prev = numba.get_num_threads()
    if prev == n:
        yield
        return
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(prev)
