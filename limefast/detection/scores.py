"""A detector and its targets as a classifier: ``TargetScores(images) -> (N, n_targets)``.

This is the whole seam between detection and limefast's machinery (pytorch-grad-cam's model
targets and Xplique's operators play the same part): the explainers, rounds, ``"auto"``,
``dedupe``, ``time_budget`` and the surrogate see a ``classifier_fn`` whose "labels" are the
targets, and run unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from limefast.detection.protocol import (
    AffinityFn,
    Detections,
    Target,
    TargetSet,
    batch_affinity,
    check_detections,
)


class TargetScores:
    """``classifier_fn`` of a detector: each image's affinity with every target.

    Args:
        detector: a callable of the detector protocol (``limefast.detection.protocol``).
        targets: the targets, in column order.
        affinity_fn: ``affinity_fn(targets, detections) -> (K,)`` in place of D-RISE's
            affinity; ``targets`` a list of ``Target``, ``detections`` a ``Detections``.

    Attributes:
        calls, images: detector calls made and images seen.
        low, high: (K,) the least and greatest score each target has had (a target whose
            two are equal never moved: its explanation is flat).
    """

    def __init__(self, detector, targets: Sequence[Target], affinity_fn: AffinityFn | None = None,
                 n_classes: int | None = None):
        if not callable(detector):
            raise TypeError(f"the detector must be callable (a batch of images -> detection "
                            f"sets); got {type(detector).__name__}")
        self.detector = detector
        self.targets = list(targets)
        self._set = TargetSet(self.targets)
        self.affinity_fn = affinity_fn
        self.n_classes = n_classes
        self.calls = self.images = 0
        self.low = np.full(len(self.targets), np.inf)
        self.high = np.full(len(self.targets), -np.inf)

    def detections(self, images: np.ndarray) -> list[Detections]:
        """The detector's checked answer for ``images`` (N, H, W, C)."""
        return self.checked(self.detector(images), images.shape[0])

    def checked(self, sets, n: int) -> list[Detections]:
        """The detector's answer ``sets`` for the next ``n`` images, checked and counted."""
        where = f"batch {self.calls} (images {self.images}..{self.images + n - 1})"
        sets = check_detections(sets, n, where, self.n_classes)
        for found in sets:
            if found.class_probs is not None and len(found):
                self.n_classes = found.class_probs.shape[1]
        self.calls += 1
        self.images += n
        return sets

    def scores(self, sets: Sequence[Detections], track: bool = True) -> np.ndarray:
        """(N, K) float64 affinities of the detection sets with the targets (with ``track``,
        counted in ``low`` and ``high``)."""
        k = len(self.targets)
        out = np.empty((len(sets), k))
        if self.affinity_fn is None:
            out = batch_affinity(self._set, sets)
        else:
            for row, found in enumerate(sets):
                values = np.asarray(self.affinity_fn(self.targets, found),
                                    dtype=np.float64)
                if values.shape != (k,) or not np.isfinite(values).all():
                    raise ValueError(f"affinity must return {k} finite scores (one per "
                                     f"target); got {values.shape} {values!r:.80}")
                out[row] = values
        if track and len(sets):
            np.minimum(self.low, out.min(axis=0), out=self.low)
            np.maximum(self.high, out.max(axis=0), out=self.high)
        return out

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.scores(self.detections(np.asarray(images)))

    def limefast_executor(self):
        """The explainers' hook (``limefast.core.executor.executor_for``): a ``TorchDetector``
        is explained on its device (``limefast.detection.device``); any other detector on the
        CPU executor."""
        from limefast.core.executor import CPU_EXECUTOR
        from limefast.detection.torch_detector import TorchDetector

        if not isinstance(self.detector, TorchDetector):
            return CPU_EXECUTOR
        from limefast.detection.device import BoundExecutor

        return BoundExecutor(self.detector, self)

    def flat(self) -> np.ndarray:
        """(K,) bool: targets whose score never changed over the images seen."""
        return ~(self.high > self.low)
