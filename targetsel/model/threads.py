"""Thread control: targetsel's own tensor work runs on the calling thread.

The index's tensors are small (one entry per module); torch's intra-op thread pool only adds
overhead to them, and on a busy machine its spinning workers made a first query 4× slower
(benchmarks/). User code inside a selection (`.where(fn)`) gets the caller's thread count back.
"""

from __future__ import annotations

import functools
import threading
from contextlib import contextmanager

import torch

# The thread count the caller had, while targetsel runs single-threaded (0: not inside).
_callers_threads = threading.local()


@contextmanager
def one_thread():
    """Run the body with torch on one thread, restoring the caller's count afterwards."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    outer, _callers_threads.n = getattr(_callers_threads, "n", 0), n
    try:
        yield
    finally:
        _callers_threads.n = outer
        torch.set_num_threads(n)


@contextmanager
def callers_threads():
    """Give user code (`.where(fn)`) back the thread count its caller had: fn may do real tensor work."""
    n = getattr(_callers_threads, "n", 0)
    if not n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(1)


def single_threaded(fn):
    """Decorator: `fn` runs inside `one_thread()`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with one_thread():
            return fn(*args, **kwargs)

    return wrapper
