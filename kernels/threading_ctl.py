"""Thread count for Numba parallel kernels, set per calling thread for the duration of a run."""
from __future__ import annotations

import contextlib

import numba

_FAST: list = []  # [(get, set)] once resolved; [None] when numba's internals are not there


def _fast_fns():
    """numba's own C getter/setter of the calling thread's count, resolved once. The public
    numba.get/set_num_threads take two locks and re-check the threading layer on every call
    (~3 us each, twice per run); the C functions they end in take ~0.1 us. Falls back to the
    public functions when a numba version lacks them."""
    if not _FAST:
        fns = None
        try:
            from numba.np.ufunc import parallel as _par
            _par._launch_threads()
            get, set_ = getattr(_par, "_get_num_threads", None), getattr(_par, "_set_num_threads",
                                                                          None)
            if callable(get) and callable(set_) and int(get()) >= 1:
                fns = (get, set_)
        except Exception:  # pragma: no cover - depends on numba's internals
            fns = None
        _FAST.append(fns)
    return _FAST[0]


def get_num_threads() -> int:
    fns = _fast_fns()
    return int(fns[0]()) if fns else numba.get_num_threads()


def set_num_threads(n: int) -> None:
    fns = _fast_fns()
    if fns:
        fns[1](n)
    else:
        numba.set_num_threads(n)


def _clamp(n: int) -> int:
    return max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))


def call_with_threads(n: int, fn, *args):
    """fn(*args) with Numba's thread count set to n for the calling thread, then restored: what
    `num_threads` does, without a generator-based context (~3 us a call, a twentieth of a small
    model's run)."""
    n = _clamp(n)
    prev = get_num_threads()
    if prev == n:
        return fn(*args)
    set_num_threads(n)
    try:
        return fn(*args)
    finally:
        set_num_threads(prev)


@contextlib.contextmanager
def num_threads(n: int):
    # numba.set_num_threads is thread-local, so concurrent runs with different counts don't clash.
    n = _clamp(n)
    prev = get_num_threads()
    if prev == n:
        yield
        return
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(prev)
