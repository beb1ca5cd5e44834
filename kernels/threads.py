"""Work sharing for the CPU kernels: row blocks taken from a shared counter.

The kernels are serial and release the GIL. A call splits its rows into blocks; the calling
thread and up to ``threads - 1`` pool workers take blocks from one counter until none are left,
and the call returns once every block taken has been written. The caller never waits for a
worker that has not started: if the other cores are busy (a loaded machine, or other explainers
running in other threads) the caller simply does the work itself. Numba's own ``parallel=True``
would instead wait at a barrier for every thread, and its workqueue layer aborts the process when
two Python threads launch kernels at once.

The tunables are arguments: this package imports nothing else of limefast (``limefast.config``
holds the library's values and its callers pass them in). The defaults below are for a call
that gives none.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba

# Rows of a call are shared between threads in blocks of about this many bytes.
TASK_BYTES = 512 * 1024

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
# Per calling thread: whether its kernel calls keep to it (``calling_thread_only``).
_LOCAL = threading.local()


@contextlib.contextmanager
def calling_thread_only():
    """Within the block, the kernel calls this thread makes run on it alone, no pool worker
    taking a block (a caller holding locks a worker would need: the import lock, say)."""
    previous = getattr(_LOCAL, "alone", False)
    _LOCAL.alone = True
    try:
        yield
    finally:
        _LOCAL.alone = previous


def worker_threads(threads: int = 0) -> int:
    """Threads a kernel call may use (the caller included): ``threads``, or Numba's thread count
    (``NUMBA_NUM_THREADS``, all cores by default) when it is 0."""
    wanted = threads or numba.config.NUMBA_NUM_THREADS
    return max(1, int(wanted))


def task_rows(row_bytes: int, task_bytes: int = TASK_BYTES) -> int:
    """Rows of ``row_bytes`` each in a block of about ``task_bytes`` (at least one)."""
    return max(1, int(task_bytes) // max(1, int(row_bytes)))


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="limefast")
        return _POOL


_STARTED: set = set()  # the call sites (kernel code objects) share_rows has run


def share_rows(kernel: Callable[[int, int], None], n_rows: int, rows_per_task: int,
               threads: int = 0) -> None:
    """Run ``kernel(lo, hi)`` over row blocks covering ``0..n_rows``, on up to
    ``worker_threads(threads)`` threads."""
    tasks = -(-n_rows // rows_per_task)
    threads = 1 if getattr(_LOCAL, "alone", False) else min(worker_threads(threads), tasks)
    if threads <= 1:
        kernel(0, n_rows)
        return
    first = 0
    site = getattr(kernel, "__code__", kernel)
    if site not in _STARTED:
        # The first call from a call site runs its first block alone: a Numba dispatcher's
        # first call types its arguments through functools.singledispatch, whose registry
        # another thread's first call may be changing ("dictionary changed size during
        # iteration", seen in a fresh process).
        kernel(0, min(n_rows, rows_per_task))
        _STARTED.add(site)
        first = 1
    counter = itertools.count(first)
    finished = threading.Event()
    lock = threading.Lock()
    state = {"done": first, "error": None}

    def work():
        while True:
            t = next(counter)  # atomic under the GIL
            if t >= tasks:
                return
            try:
                kernel(t * rows_per_task, min(n_rows, (t + 1) * rows_per_task))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                state["error"] = exc
            with lock:
                state["done"] += 1
                if state["done"] == tasks:
                    finished.set()

    pool = _pool(threads - 1)
    for _ in range(threads - 1):
        pool.submit(work)
    work()
    finished.wait()
    if state["error"] is not None:
        raise state["error"]
