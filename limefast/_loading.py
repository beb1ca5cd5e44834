"""Whether the compiled kernels are still loading in the background: the one flag between the
thread that loads them (``limefast._preload``) and the stages that read it.

While the loader runs, an explanation's small stages (quickshift, the segment means and the
perturbed images of small images: ``config.FIRST_CALL_NUMPY_*``) run on their NumPy twins, with
the same results, rather than wait for Numba; larger work waits for the step under way and then
uses the kernels. A leaf: it imports nothing from limefast, so the pipeline depends on this flag
and not on the thread, and the thread on neither.
"""

from __future__ import annotations

import threading

_LOADER: threading.Thread | None = None


def begin(thread: threading.Thread) -> None:
    """``thread`` loads the kernels until it ends (called before it starts)."""
    global _LOADER
    _LOADER = thread


def kernels_loading() -> bool:
    """Whether a loader is still at work (never true in the loader's own thread, whose tiny
    explanations are what load the kernels)."""
    thread = _LOADER
    return (thread is not None and thread.is_alive()
            and threading.current_thread() is not thread)
