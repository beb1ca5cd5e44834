"""Runs a background load while the user loads a model: the steps it is given, one at a time.

An explanation's first call in a process used to pay for Numba: importing it, building its
typing and target contexts, and reading every kernel from its on-disk cache (``cache=True``)
before the first dispatch. None of it depends on the user's image or model, so ``import
limefast`` starts this thread and returns; by the time the model is loaded the kernels are
ready. What to warm is not known here: whoever starts the thread hands over a plan
(``limefast/__init__`` hands over ``limefast._warmup``'s), so this module imports nothing from
limefast but two leaves (the kernels-loading flag, the kernels' thread switch).

Each step runs alone (``alone``). A step that imports holds Python's global import lock, taken
at a moment when no other thread is importing: a user's import meanwhile waits for it rather
than meeting a half-imported package. A step that touches Numba (its registries, a kernel's
cache) holds Numba's compiler lock, and its kernel calls stay on this thread. A step that only
loads kernels leaves the import lock alone, so the user's imports never wait for it.

``LIMEFAST_PRELOAD=0`` turns it off (the first explanation then pays the load itself). A fork
waits for the step under way (``_before_fork``), so a child never inherits a lock a step holds;
the child has no preload. At exit no further step starts and the interpreter waits for the one
under way (a fraction of a second; a whole compile only while Numba fills an empty cache, once
after an install).
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 - see _before_fork
import contextlib
import logging  # noqa: F401 - see _before_fork
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from limefast import _loading

_THREAD: threading.Thread | None = None
_ERROR: BaseException | None = None
# Set at exit: the load stops after its current step.
_STOP = threading.Event()
# Held through every step; a fork takes it first (``_before_fork``), so a child never inherits a
# lock a step holds (Numba's compiler lock, above all) from a thread the child does not have.
_STEP = threading.Lock()
# How long wait() and the exit wait for the thread; it takes about a second on a warm cache.
_JOIN_SECONDS = 60.0
# How long a step waits for other threads' imports to finish before the load gives up.
_IMPORT_WAIT_SECONDS = 30.0
# The pause after a step that held the import lock: the user's thread, if it waited on that
# lock (``from limefast import lime_image`` during the first step), wakes and takes it before
# the next step could, rather than waiting for that step too.
_HANDOVER_SECONDS = 0.005


@dataclass(frozen=True)
class Step:
    """One piece of the background load.

    Attributes:
        run: the work; its return value is ignored.
        imports: it imports modules, so it holds Python's import lock.
        numba: it touches Numba (registries, kernel caches, compiles), so it holds Numba's
            compiler lock and keeps its kernel calls on this thread. Numba must be imported by
            an earlier step, and a step that does not hold the import lock must import nothing
            (another thread may be importing meanwhile).
    """

    run: Callable[[], object]
    imports: bool = False
    numba: bool = False


def enabled() -> bool:
    """Whether ``LIMEFAST_PRELOAD`` allows the background load (on unless 0, false, no, off)."""
    return os.environ.get("LIMEFAST_PRELOAD", "1").strip().lower() not in ("0", "false", "no",
                                                                            "off")


def start(plan: Callable[[], Sequence[Step]]) -> None:
    """Start the background load once per process, unless ``LIMEFAST_PRELOAD`` says no.

    Args:
        plan: called on the thread, alone and holding the import lock (it may import the
            module that knows what to warm); returns the steps, run in order.
    """
    global _THREAD
    if _THREAD is not None or not enabled():
        return
    _THREAD = threading.Thread(target=_run, args=(plan,), name="limefast-preload", daemon=True)
    _loading.begin(_THREAD)
    _THREAD.start()


def wait(timeout: float | None = _JOIN_SECONDS) -> bool:
    """Wait for the background load; True when it has finished (or never started)."""
    thread = _THREAD
    if thread is None or thread is threading.current_thread():
        return True
    thread.join(timeout)
    return not thread.is_alive()


def error() -> BaseException | None:
    """What stopped the background load, if anything did (the first explanation then meets the
    same problem itself and reports it)."""
    return _ERROR


def _run(plan: Callable[[], Sequence[Step]]) -> None:
    global _ERROR
    try:
        steps: list[Step] = []
        if not _turn(Step(lambda: steps.extend(plan()), imports=True)):
            return
        for step in steps:
            if not _turn(step):
                return
    except BaseException as exc:  # noqa: BLE001 - kept for error(); never raised in a thread
        _ERROR = exc


def _turn(step: Step) -> bool:
    """Run ``step`` alone; False when the load is to stop (the interpreter is exiting, or the
    moment did not come)."""
    if _STOP.is_set() or not alone(step):
        return False
    if step.imports:  # a thread that waited for the import lock takes it first
        time.sleep(_HANDOVER_SECONDS)
    return True


def alone(step: Step, wait_seconds: float = _IMPORT_WAIT_SECONDS) -> bool:
    """Run ``step.run()`` while no other thread imports a module (nor, for a Numba step,
    compiles); False (and the step not run) if that moment did not come.

    Two threads importing one package at once can see each other's half-initialised modules
    (Python's deadlock avoidance for circular imports hands one of them a partial module: an
    ImportError in the user's thread, for scipy or numpy, say). So an importing step takes
    Python's global import lock, which every thread needs to begin importing a module, and goes
    on only when no other thread is in the middle of an import; a Numba step then takes Numba's
    compiler lock without waiting for it. Holding them, it runs: another thread that wants to
    import or compile meanwhile waits for it, as if the work had been its own, and holds
    nothing the step could wait for (it was importing nothing and compiling nothing when the
    locks were taken), so neither can deadlock. A step that only loads kernels (its imports
    made by earlier steps) takes the compiler lock alone, so the user's imports (a model's first
    call makes some) never wait for it. Otherwise the thread lets go and looks again every
    20 ms, until the interpreter exits or ``wait_seconds`` pass.
    """
    import _imp

    deadline = time.monotonic() + wait_seconds
    while not _STOP.is_set() and time.monotonic() < deadline:
        if step.imports:
            _imp.acquire_lock()
        try:
            if not _others_importing() and _STEP.acquire(blocking=False):
                try:
                    compiler = _compiler_lock() if step.numba else None
                    if compiler is None or compiler.acquire(blocking=False):
                        try:
                            with _kernels_on_this_thread(step.numba):
                                step.run()
                            return True
                        finally:
                            if compiler is not None:
                                compiler.release()
                finally:
                    _STEP.release()
        finally:
            if step.imports:
                _imp.release_lock()
        time.sleep(0.02)
    return False


def _kernels_on_this_thread(numba: bool):
    """The kernels' switch that keeps this thread's kernel calls on it (a pool worker would
    wait on the locks the step holds); nothing for a step that runs no kernel."""
    if not numba:
        return contextlib.nullcontext()
    from limefast.kernels.threads import calling_thread_only

    return calling_thread_only()


def _compiler_lock():
    """Numba's global compiler lock (an RLock)."""
    from numba.core.compiler_lock import global_compiler_lock

    return global_compiler_lock._lock


def _others_importing() -> bool:
    """Whether any thread is importing: any module lock alive, held or not (True where that
    cannot be known). A lock that is not held yet counts too: a thread fetches it under the
    import lock and takes it only after letting go of that, and in between it already counts
    on the import lock to go on (it will need it to find the module)."""
    try:
        from importlib import _bootstrap

        return any(ref() is not None for ref in list(_bootstrap._module_locks.values()))
    except Exception:  # noqa: BLE001 - another Python's internals: assume the worst
        return True


def _before_fork() -> None:
    """Wait for the step under way; none starts until the fork is done.

    ``os.register_at_fork`` runs "before" handlers in the reverse order of their registration,
    and Python takes the import lock after all of them. A handler registered after this one
    runs first, and if it takes a lock that the step under way needs, the fork waits for the
    step and the step for that lock. Logging's handler takes logging's module lock, which every
    ``logging.getLogger`` of a module the step imports needs, and the thread pools' takes their
    shutdown lock: both modules are imported above, before this handler is registered, so that
    theirs run after it, once the step is done.
    """
    _STEP.acquire()


def _after_fork_in_parent() -> None:
    _STEP.release()


def _after_fork_in_child() -> None:
    global _STEP
    _STEP = threading.Lock()  # the child has no preload thread: nothing holds it


def _at_exit() -> None:
    _STOP.set()  # no further step
    wait()


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
