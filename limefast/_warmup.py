"""What the background load warms (``limefast/__init__`` hands ``steps`` to
``limefast._preload``, which runs them on its thread).

First the imports, each a step of its own: the drop-in's module (numpy and little else), so
that ``from limefast import lime_image`` right after ``import limefast`` never waits for Numba;
then what the first explanation imports (Numba and the kernels, scipy.linalg, scikit-image,
tqdm) and what a first call on the NumPy twins imports on its way (scikit-image's quickshift,
tqdm's lock, threadpoolctl), so that such a call needs no import while a later step runs. Then
Numba's typing and lowering registries, which it would otherwise import at the first compile or
cache load. Then tiny explanations of the thread's own (its own random state, one thread, no
progress bar, no warnings) that load the kernels for the image types users pass most: uint8,
float64 and float32 RGB, and lime's default quickshift once. They run on while the user's first
explanation runs (on two cores they share the CPU with it, for about a second). Nothing here
touches numpy's global random state or a user's explainer.
"""

from __future__ import annotations

import importlib
from functools import partial

import numpy as np

from limefast._preload import Step

# In order; limefast's own modules pull in the rest (numba, scipy.linalg, scikit-image, tqdm).
MODULES = ("limefast.lime_image", "limefast.core.rounds", "limefast.core.executor",
           "limefast.core.instance", "scipy.linalg", "skimage.color",
           "limefast.wrappers.scikit_image", "limefast.kernelshap",
           "multiprocessing.synchronize", "threadpoolctl")
OPTIONAL_MODULES = ("skimage.segmentation._quickshift_cy",)  # scikit-image's private module


def steps() -> list[Step]:
    """The background load, in order (see the module's docstring)."""
    imports = [Step(partial(importlib.import_module, name), imports=True) for name in MODULES]
    uint8, float64, float32 = (partial(_explain, dtype) for dtype in ("uint8", "float64",
                                                                        "float32"))
    return imports + [Step(_optional_imports, imports=True),
                      Step(_numba_registries, imports=True, numba=True),
                      Step(uint8, numba=True, ready=True),  # the common path's kernels loaded
                      Step(_quickshift, numba=True),
                      Step(float64, numba=True),
                      Step(float32, numba=True)]


def _optional_imports() -> None:
    for name in OPTIONAL_MODULES:
        try:
            importlib.import_module(name)
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
