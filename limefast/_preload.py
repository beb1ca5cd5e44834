"""Loads the explainer while the user loads a model.

An explanation's first call in a process used to pay for Numba: importing it, building its
typing and target contexts, and reading every kernel from its on-disk cache (``cache=True``)
before the first dispatch. None of it depends on the user's image or model, so ``import
limefast`` starts it on a background thread and returns. By the time the model is loaded the
kernels are ready. An explanation that comes sooner runs its small stages (quickshift, the
segment means and the perturbed images of small images: ``config.FIRST_CALL_NUMPY_*``) in
NumPy, with the same results (scikit-image's own quickshift, lime's own means, a masked copy),
rather than wait; larger work waits for the step under way and then uses the kernels.

The first step imports (the explainer, Numba's registries) under Python's global import lock,
taken at a moment when no other thread is importing (``alone`` says why): a user's import
meanwhile waits for it rather than meeting a half-imported package. The later steps only load
kernels, holding Numba's compiler lock: tiny explanations of the thread's own (its own random
state, one thread, no progress bar, no warnings) for the image types users pass most: uint8,
float64 and float32 RGB, and lime's default quickshift once. They run on while the user's first
explanation runs (on two cores they share the CPU with it, for about a second). The thread
never touches numpy's global random state or a user's explainer.

``LIMEFAST_PRELOAD=0`` turns it off (the first explanation then pays the load itself). A fork
waits for the step under way (``_before_fork``), so a child never inherits a lock a step holds;
the child has no preload. At exit no further step starts and the interpreter waits for the one
under way (a fraction of a second; a whole compile only while Numba fills an empty cache, once
after an install).
"""

from __future__ import annotations

import atexit
import importlib
import os
import threading
import time

_THREAD: threading.Thread | None = None
_ERROR: BaseException | None = None
# Set at exit: the warm-up stops after its current step.
_STOP = threading.Event()
# Set once Numba and the kernels are loaded (the first warm-up explanation is done), or the
# thread has ended.
_READY = threading.Event()
# Held through every step; a fork takes it first (``_before_fork``), so a child never inherits a
# lock a step holds (Numba's compiler lock, above all) from a thread the child does not have.
_STEP = threading.Lock()
# How long wait() and the exit wait for the thread; it takes about a second on a warm cache.
_JOIN_SECONDS = 60.0
# What the explainer's first call imports (limefast's own modules pull in the rest: numba,
# scipy.linalg, scikit-image, tqdm, Pillow), and what a first call on the NumPy twins imports
# on its way (scikit-image's quickshift; tqdm's lock; threadpoolctl), so that such a call needs
# no import while a warm-up step holds the import lock.
_MODULES = ("limefast.lime_image", "limefast.kernelshap", "limefast.wrappers.scikit_image",
            "multiprocessing.synchronize", "threadpoolctl")
_OPTIONAL_MODULES = ("skimage.segmentation._quickshift_cy",)  # scikit-image's private module
# How long the thread waits for another thread's import to finish before giving up the imports.
_IMPORT_WAIT_SECONDS = 30.0


def enabled() -> bool:
    """Whether ``LIMEFAST_PRELOAD`` allows the background load (on unless 0, false, no, off)."""
    return os.environ.get("LIMEFAST_PRELOAD", "1").strip().lower() not in ("0", "false", "no",
                                                                            "off")


def start() -> None:
    """Start the background load once per process, unless ``LIMEFAST_PRELOAD`` says no."""
    global _THREAD
    if _THREAD is not None or not enabled():
        return
    _THREAD = threading.Thread(target=_run, name="limefast-preload", daemon=True)
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


def kernels_loading() -> bool:
    """Whether the background load is still on its way to Numba and the kernels (never in the
    load's own thread): an explanation's small stages then run in NumPy instead of waiting
    (``config.FIRST_CALL_NUMPY_PIXELS`` / ``_BYTES``)."""
    thread = _THREAD
    return (thread is not None and not _READY.is_set() and thread.is_alive()
            and threading.current_thread() is not thread)


def _run() -> None:
    global _ERROR
    try:
        warm()
    except BaseException as exc:  # noqa: BLE001 - kept for error(); never raised in a thread
        _ERROR = exc
    finally:
        _READY.set()


def alone(step, wait_seconds: float = _IMPORT_WAIT_SECONDS, hold_imports: bool = True) -> bool:
    """Run ``step()`` while no other thread imports a module or compiles a Numba function;
    False (and ``step`` not run) if that moment did not come.

    Two threads importing one package at once can see each other's half-initialised modules
    (Python's deadlock avoidance for circular imports hands one of them a partial module: an
    ImportError in the user's thread, for scipy or numpy, say). So for a step that imports
    (``hold_imports``) the thread takes Python's global import lock, which every thread needs to
    begin importing a module, and goes on only when no other thread is in the middle of an
    import; it then takes Numba's compiler lock without waiting for it. Holding both, it runs
    ``step``: another thread that wants to import or compile meanwhile waits for it, as if the
    work had been its own, and holds nothing ``step`` could wait for (it was importing nothing
    and compiling nothing when the locks were taken), so neither can deadlock. A step that only
    loads kernels (its imports made by an earlier step) takes the compiler lock alone, so the
    user's imports (a model's first call makes some) never wait for it. Otherwise the thread
    lets go and looks again every 20 ms, until the interpreter exits or ``wait_seconds`` pass.
    """
    import _imp

    deadline = time.monotonic() + wait_seconds
    while not _STOP.is_set() and time.monotonic() < deadline:
        if hold_imports:
            _imp.acquire_lock()
        try:
            if not _others_importing() and _STEP.acquire(blocking=False):
                try:
                    compiler = _compiler_lock()
                    if compiler.acquire(blocking=False):
                        try:
                            with calling_thread_only():  # a pool worker would wait on our locks
                                step()
                            return True
                        finally:
                            compiler.release()
                finally:
                    _STEP.release()
        finally:
            if hold_imports:
                _imp.release_lock()
        time.sleep(0.02)
    return False


def calling_thread_only():
    """The kernels' switch that keeps this thread's kernel calls on it (``limefast.kernels``
    imported under the caller's import lock)."""
    from limefast.kernels.threads import calling_thread_only as only

    return only()


def _compiler_lock():
    """Numba's global compiler lock (an RLock), imported under the caller's import lock."""
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


def warm() -> None:
    """Import the CPU explainer, then load its kernels for the common image types: each step
    alone (``alone``); no step starts once the interpreter is exiting."""
    import limefast  # noqa: F401 - waits for the import that started this thread to finish

    if not alone(_import_modules):
        return
    import numpy as np

    from limefast.lime_image import LimeImageExplainer
    from limefast.segmentation import LIME_QUICKSHIFT
    from limefast.wrappers.scikit_image import SegmentationAlgorithm  # lime's default's home

    explainer = LimeImageExplainer(random_state=0)
    segments = np.repeat(np.repeat(np.arange(4).reshape(2, 2), 4, 0), 4, 1)  # (8, 8), 4 segments

    def classifier(batch):
        score = batch.reshape(len(batch), -1).astype(np.float64).mean(1)
        score = score / (1.0 + np.abs(score))
        return np.stack([score, 1.0 - score], axis=1)

    def explain(image):
        explainer.explain_instance(image, classifier, top_labels=1, num_samples=12,
                                   batch_size=12, segmentation_fn=lambda _: segments,
                                   progress_bar=False)

    base = np.random.RandomState(0).randint(0, 256, size=(8, 8, 3))
    steps = [lambda: explain(base.astype(np.uint8)),
             lambda: SegmentationAlgorithm("quickshift", **LIME_QUICKSHIFT, random_seed=0)(
                 base.astype(np.uint8)),
             lambda: explain(base / 255),
             lambda: explain((base / 255).astype(np.float32))]
    for i, step in enumerate(steps):
        if _STOP.is_set() or not alone(step, hold_imports=False):
            return
        if i == 0:
            _READY.set()  # Numba's contexts built, the uint8 path's kernels loaded


def _import_modules() -> None:
    for name in _MODULES:
        importlib.import_module(name)
    # Numba imports its typing and lowering registries (numba.np.*, numba.cpython.*) at the
    # first compile or cache load: here, under the import lock, rather than in a later step.
    from numba.core.registry import cpu_target

    cpu_target.typing_context.refresh()
    cpu_target.target_context.refresh()
    for name in _OPTIONAL_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # another scikit-image: the first call imports what it needs
            pass


def _before_fork() -> None:
    _STEP.acquire()  # waits for the step under way; none starts until the fork is done


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
