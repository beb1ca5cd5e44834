"""Whether the compiled kernels are still loading in the background: the one flag between the
thread that loads them (``limefast._preload``) and the stages that read it.

While it holds, an explanation's small stages (quickshift, the segment means and the perturbed
images of small images: ``config.FIRST_CALL_NUMPY_*``) run on their NumPy twins, with the same
results, rather than wait for Numba. A leaf: it imports nothing from limefast, so the pipeline
depends on this flag and not on the thread, and the thread on neither.
"""

from __future__ import annotations

import threading

_LOADER: threading.Thread | None = None
# Set once the kernels a first explanation needs are loaded, or the loader has stopped.
_LOADED = threading.Event()


def begin(thread: threading.Thread) -> None:
    """``thread`` is the one loading the kernels (called before it starts)."""
    global _LOADER
    _LOADER = thread


def done() -> None:
    """The kernels are loaded (or the loader gave up): stages use them from now on."""
    _LOADED.set()


def kernels_loading() -> bool:
    """Whether a loader is still on its way to the kernels (never true in the loader's own
    thread, whose tiny explanations are what load them)."""
    thread = _LOADER
    return (thread is not None and not _LOADED.is_set() and thread.is_alive()
            and threading.current_thread() is not thread)
