"""What the background load warms (``limefast/__init__`` hands ``steps`` to
``limefast._preload``, which runs them on its thread).

First the drop-in's module alone (numpy and little else), so that ``from limefast import
lime_image`` right after ``import limefast`` never waits for Numba. Then, in one step, what the
first explanation imports (Numba and the kernels, scipy.linalg, scikit-image, tqdm) and what a
first call on the NumPy twins imports on its way (scikit-image's quickshift and the colour
conversions it loads on first use, tqdm's lock, threadpoolctl): the kernel steps after it must
import nothing, since they do not hold the import lock. One step rather than one per module: a
user's next import (a model's loader makes some) then waits for it once, and the explanation
that follows finds them done, rather than meeting the rest of them. Then Numba's typing and
lowering registries, which it would otherwise import at the first compile or cache load. Then
tiny explanations of the thread's own (its own random state, one thread, no progress bar, no
warnings) that load the kernels for the image types users pass most: uint8, float64 and float32
RGB, and lime's default quickshift once. They run on while the user's first explanation runs
(on two cores they share the CPU with it, for about a second). Last, the Shapley explainer's
modules. Nothing here touches numpy's global random state or a user's explainer.
"""

from __future__ import annotations

import importlib
from functools import partial

import numpy as np

from limefast._preload import Step

# The first explanation's imports: limefast's own modules pull in the rest (numba,
# scipy.linalg, scikit-image, tqdm).
MODULES = ("limefast.core.rounds", "limefast.core.executor", "limefast.core.instance",
           "scipy.linalg", "limefast.wrappers.scikit_image", "multiprocessing.synchronize",
           "threadpoolctl")
# Imported after the kernels are loaded: the Shapley explainer's own modules.
LATER_MODULES = ("limefast.kernelshap",)


def steps() -> list[Step]:
    """The background load, in order (see the module's docstring)."""
    return ([Step(partial(importlib.import_module, "limefast.lime_image"), imports=True),
             Step(_first_call_imports, imports=True),
             Step(_numba_registries, imports=True, numba=True)]
            + [Step(partial(_explain, "uint8"), numba=True), Step(_quickshift, numba=True)]
            + [Step(partial(_explain, dtype), numba=True) for dtype in ("float64", "float32")]
            + [Step(partial(importlib.import_module, name), imports=True)
               for name in LATER_MODULES])


def _first_call_imports() -> None:
    """``MODULES``, and what scikit-image loads on first use (its lazy loader) on a first
    call's way: the colour conversions (gray2rgb, quickshift's rgb2lab) and the private
    quickshift of the NumPy twin."""
    for name in MODULES:
        importlib.import_module(name)
    from skimage.color import gray2rgb, rgb2lab  # noqa: F401 - loaded by asking for them

    try:
        from skimage.segmentation import _quickshift_cy  # noqa: F401
    except ImportError:  # another scikit-image: the first call imports what it needs
        pass


def _numba_registries() -> None:
    from numba.core.registry import cpu_target

    cpu_target.typing_context.refresh()
    cpu_target.target_context.refresh()


def _image(dtype: str):
    """An (8, 8, 3) image of ``dtype``: uint8 values, or those over 255 for floats."""
    base = np.random.RandomState(0).randint(0, 256, size=(8, 8, 3))
    return base.astype(np.uint8) if dtype == "uint8" else (base / 255).astype(dtype)


def _explain(dtype: str) -> None:
    """A 12-sample explanation of an (8, 8) image in four fixed segments."""
    from limefast.lime_image import LimeImageExplainer

    segments = np.repeat(np.repeat(np.arange(4).reshape(2, 2), 4, 0), 4, 1)

    def classifier(batch):
        score = batch.reshape(len(batch), -1).astype(np.float64).mean(1)
        score = score / (1.0 + np.abs(score))
        return np.stack([score, 1.0 - score], axis=1)

    LimeImageExplainer(random_state=0).explain_instance(
        _image(dtype), classifier, top_labels=1, num_samples=12, batch_size=12,
        segmentation_fn=lambda _: segments, progress_bar=False)


def _quickshift() -> None:
    """lime's default segmentation, from its home (``SegmentationAlgorithm``), once."""
    from limefast.segmentation import LIME_QUICKSHIFT
    from limefast.wrappers.scikit_image import SegmentationAlgorithm

    SegmentationAlgorithm("quickshift", **LIME_QUICKSHIFT, random_seed=0)(_image("uint8"))
