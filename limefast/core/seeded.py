"""What every limefast explainer shares before its own weights: a random state that threads
take turns drawing from, pickling without the lock, the segmentation step in lime's draw order,
and ``batch_size="auto"``'s per-classifier batch sizers.

``LimeImageExplainer`` and ``KernelShapImageExplainer`` both derive from ``SeededExplainer``.
"""

from __future__ import annotations

import numbers
import threading
import time

import numpy as np

from limefast.core import checks

# Draws from numpy's global RandomState (random_state=None) are serialised across explainers.
_GLOBAL_RNG_LOCK = threading.RLock()

# batch_size="auto" keeps one sizer per (classifier, image kind); a new lambda per call must
# not grow the table without end.
_MAX_SIZERS = 16


def check_random_state(seed) -> np.random.RandomState:
    """lime's random state from ``seed``, as ``sklearn.utils.check_random_state`` makes it
    (here so an explanation does not import scikit-learn): None is numpy's global state, an int
    a new ``RandomState``, a ``RandomState`` itself."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral):
        return np.random.RandomState(seed)
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"{seed!r} cannot be used to seed a numpy.random.RandomState instance")


class SeededExplainer:
    """An explainer whose explanations are its random state's draws.

    Args:
        random_state: an int, a ``np.random.RandomState``, or None for numpy's global state.
            It advances with every explanation, so two calls on one explainer differ.
    """

    def __init__(self, random_state=None):
        self.random_state = check_random_state(random_state)
        self._lock = threading.RLock()

    def _draw_lock(self):
        """The lock draws are made under: threads sharing a random state take turns, so each
        explanation equals what sequential calls in that order would give."""
        return _GLOBAL_RNG_LOCK if self.random_state is np.random.mtrand._rand else self._lock

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_lock"]
        state.pop("_sizers", None)  # timings of this process's classifiers
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def _segment(self, image, segmentation_fn, random_seed):
        """The RGB image, its segments 0..n-1, their count and the seconds taken. Draws
        ``random_seed`` from the random state when it is None, even when a segmentation is
        given (lime's draw 1); the default segmentation is lime's quickshift."""
        t0 = time.perf_counter()
        if image.ndim == 2:
            from skimage.color import gray2rgb  # on use: the drop-in's import stays light

            image = gray2rgb(image)
        if random_seed is None:
            random_seed = self.random_state.randint(0, high=1000)
        if segmentation_fn is None:
            from limefast.segmentation import LIME_QUICKSHIFT
            from limefast.wrappers.scikit_image import SegmentationAlgorithm

            segmentation_fn = SegmentationAlgorithm('quickshift', **LIME_QUICKSHIFT,
                                                    random_seed=random_seed)
        segments, n_features = checks.segments_array(segmentation_fn(image), image.shape)
        return image, segments, n_features, time.perf_counter() - t0

    def _batches(self, batch_size, image, classifier_fn):
        """An int, or the explainer's ``BatchSizer`` for this classifier and image kind (the
        probe runs once; later explanations start from the size it chose)."""
        if batch_size != "auto":
            return batch_size
        key = (id(classifier_fn), image.shape, image.dtype.str)
        sizers = self.__dict__.setdefault("_sizers", {})
        if key not in sizers:
            from limefast.core import sampling

            while len(sizers) >= _MAX_SIZERS:
                sizers.pop(next(iter(sizers)))
            sizers[key] = sampling.BatchSizer(image.nbytes)
        return sizers[key]


def check_arguments(classifier_fn, segmentation_fn, batch_size, labels, top_labels):
    """The arguments every explainer takes, checked before any work: the callables, the batch
    size and the labels (their types now; their range once the classifier has said how many
    classes it has). Returns ``(batch_size, labels, top_labels)`` normalised."""
    if not callable(classifier_fn):
        raise TypeError(f"classifier_fn must be callable; got {type(classifier_fn).__name__}")
    batch_size = checks.int_or_auto("batch_size", batch_size)
    if top_labels:
        top_labels = checks.positive_int("top_labels", top_labels)
    else:
        labels = checks.label_list(labels, n_classes=None)
    if segmentation_fn is not None and not callable(segmentation_fn):
        raise TypeError(f"segmentation_fn must be callable; got {segmentation_fn!r}")
    return batch_size, labels, top_labels
