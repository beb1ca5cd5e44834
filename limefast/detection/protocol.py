"""The detector protocol and the targets' score: what turns a detector into the (N, n_targets)
score matrix every explainer of limefast already takes as a classifier's output.

A detector is any callable that takes a batch of images, (N, H, W, C) of the image's dtype, and
returns N detection sets, each torchvision's dict: ``boxes`` (K, 4) as x1, y1, x2, y2 in pixels,
``scores`` (K,), ``labels`` (K,) and, optionally, ``class_probs`` (K, n_classes). NumPy arrays,
torch tensors and lists are all taken.

A target's score on an image is D-RISE's affinity (Petsiuk et al., CVPR 2021): the largest, over
that image's detections, of IoU x class similarity x detection score, the class similarity being
the cosine of the class-probability vectors where both are given, else label equality.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Detector(Protocol):
    """A batch of images in, one detection set (a dict) per image out."""

    def __call__(self, images: np.ndarray) -> Sequence[dict]: ...


@dataclass
class Target:
    """What one column of the score matrix follows.

    Attributes:
        box: (x1, y1, x2, y2) in pixels.
        label: the class index.
        score: the detector's score for a detection; for a given box, its affinity with the
            detections on the image (0 for a box the model missed).
        class_probs: (n_classes,) class probabilities, when the detector gives them.
        given: True for a box passed in ``targets=``, False for a detection.
        region: (H, W) bool, the pixels of a segmentation target (None for a box).
    """

    box: tuple[float, float, float, float]
    label: int
    score: float = 1.0
    class_probs: np.ndarray | None = field(default=None, repr=False)
    given: bool = False
    region: np.ndarray | None = field(default=None, repr=False)


def _numpy(value) -> np.ndarray:
    """A torch tensor (any device) or array-like as a NumPy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


@dataclass
class Detections:
    """One image's detections as float64/int64 NumPy arrays (``class_probs`` may be None)."""

    boxes: np.ndarray  # (K, 4)
    scores: np.ndarray  # (K,)
    labels: np.ndarray  # (K,)
    class_probs: np.ndarray | None = None  # (K, n_classes)

    def __len__(self) -> int:
        return self.boxes.shape[0]


def check_detections(sets, n_images: int, where: str,
                     n_classes: int | None = None) -> list[Detections]:
    """A detector's answer for ``n_images`` images, checked and made NumPy.

    Args:
        sets: what the detector returned.
        n_images: how many images it was given.
        where: which batch it was, for the error (e.g. ``"batch 3 (images 20..29)"``).
        n_classes: the class count of earlier ``class_probs``, which must not change.

    Returns:
        One ``Detections`` per image.

    Raises:
        ValueError: the wrong structure, NaN or infinite values, a box of negative width or
            height, or a class count that differs from earlier batches'; the message names
            ``where``.
    """
    if isinstance(sets, dict) or not hasattr(sets, "__len__"):
        raise ValueError(
            f"the detector must return a list of {n_images} dicts (one per image) with "
            f"'boxes', 'scores' and 'labels'; got {type(sets).__name__} for {where}")
    if len(sets) != n_images:
        raise ValueError(f"the detector returned {len(sets)} detection sets for {n_images} "
                         f"images in {where}; it must return one per image")
    out = _plain_sets(sets)
    if out is None:  # the structure, set by set
        out = [_one_set(item, f"image {i} of {where}") for i, item in enumerate(sets)]
    # The values, every set's at once (a batch holds hundreds of sets of a few boxes); the
    # first set at fault is looked for only when something is.
    if out and not _values_ok(out, n_classes):
        for i, found in enumerate(out):
            n_classes = _check_values(found, f"image {i} of {where}", n_classes)
    for found in out:
        found.labels = found.labels.astype(np.int64, copy=False)
    return out


def _one_set(item, at: str) -> Detections:
    """One detection set's structure checked (``at`` names it), as ``Detections``."""
    if not isinstance(item, dict) or not {"boxes", "scores", "labels"} <= set(item):
        got = sorted(item) if isinstance(item, dict) else type(item).__name__
        raise ValueError(f"each detection set must be a dict with 'boxes', 'scores' and "
                         f"'labels' (optionally 'class_probs'); got {got} for {at}")
    boxes = _numpy(item["boxes"]).astype(np.float64, copy=False)
    scores = _numpy(item["scores"]).astype(np.float64, copy=False)
    labels = _numpy(item["labels"])
    k = scores.shape[0] if scores.ndim == 1 else -1
    if boxes.size == 0 and k == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or k != boxes.shape[0] \
            or labels.shape != (boxes.shape[0],):
        raise ValueError(f"boxes must be (K, 4), scores and labels (K,); got boxes "
                         f"{boxes.shape}, scores {scores.shape}, labels {labels.shape} "
                         f"for {at}")
    probs = item.get("class_probs")
    if probs is not None:
        probs = _numpy(probs).astype(np.float64, copy=False)
        if probs.ndim != 2 or probs.shape[0] != boxes.shape[0]:
            raise ValueError(f"class_probs must be (K, n_classes) with K = {len(boxes)} "
                             f"boxes; got {probs.shape} for {at}")
    return Detections(boxes, scores, labels, probs)


def _plain_sets(sets) -> list[Detections] | None:
    """The sets as ``Detections`` when each is a dict of NumPy arrays of the protocol's shapes
    (what most detectors return: a few steps a set), else None (``check_detections`` then
    looks at each set in full, and says what is wrong)."""
    out = []
    array = np.ndarray
    for item in sets:
        if type(item) is not dict:
            return None
        boxes, scores, labels = item.get("boxes"), item.get("scores"), item.get("labels")
        probs = item.get("class_probs")
        if not (type(boxes) is array and type(scores) is array and type(labels) is array
                and scores.ndim == 1):
            return None
        k = scores.shape[0]
        if boxes.shape != (k, 4) or labels.shape != (k,):
            return None
        if probs is not None and not (type(probs) is array and probs.ndim == 2
                                      and probs.shape[0] == k):
            return None
        out.append(Detections(boxes.astype(np.float64, copy=False),
                              scores.astype(np.float64, copy=False), labels,
                              None if probs is None else probs.astype(np.float64, copy=False)))
    return out


def _values_ok(sets: list[Detections], n_classes: int | None) -> bool:
    """Whether every set's values pass ``_check_values`` (a quick look at all of them)."""
    boxes = np.concatenate([d.boxes for d in sets])
    scores = np.concatenate([d.scores for d in sets])
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        return False
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        return False
    labels = [d.labels for d in sets if d.labels.size]
    if labels and not all(np.issubdtype(t, np.integer) for t in {lab.dtype for lab in labels}):
        if not np.all(np.mod(np.concatenate(labels).astype(np.float64), 1) == 0):
            return False
    probs = [d.class_probs for d in sets if d.class_probs is not None and len(d.class_probs)]
    if probs:
        widths = {p.shape[1] for p in probs} | ({n_classes} if n_classes is not None else set())
        if len(widths) > 1 or not np.isfinite(np.concatenate(probs)).all():
            return False
    return True


def _check_values(found: Detections, at: str, n_classes: int | None) -> int | None:
    """One set's values checked (``at`` names it); returns the class count seen so far."""
    boxes, probs, labels = found.boxes, found.class_probs, found.labels
    if not (np.isfinite(boxes).all() and np.isfinite(found.scores).all()):
        raise ValueError(f"the detector returned NaN or infinite boxes or scores for {at}")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        bad = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))[0]
        raise ValueError(f"box {bad} of {at} has a negative width or height: "
                         f"{boxes[bad].tolist()} (boxes are x1, y1, x2, y2 with x2 >= x1 "
                         "and y2 >= y1)")
    if probs is not None:
        if not np.isfinite(probs).all():
            raise ValueError(f"the detector returned NaN or infinite class_probs for {at}")
        if len(probs) and n_classes is not None and probs.shape[1] != n_classes:
            raise ValueError(f"class_probs has {probs.shape[1]} classes for {at}, "
                             f"{n_classes} before: the class count must not change")
        if len(probs):
            n_classes = probs.shape[1]
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.mod(labels, 1) == 0):
            raise ValueError(f"labels must be integers; got {labels.dtype} for {at}")
    return n_classes


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K, M) IoU of boxes ``a`` (K, 4) and ``b`` (M, 4), x1, y1, x2, y2; 0 where both are
    empty."""
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 2], b[None, :, 2])
    bottom = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


class TargetSet:
    """The targets as arrays, for the affinity of many detection sets."""

    def __init__(self, targets: Sequence[Target]):
        self.targets = list(targets)
        self.boxes = np.array([t.box for t in targets], dtype=np.float64).reshape(-1, 4)
        self.labels = np.array([t.label for t in targets], dtype=np.int64)
        probs = [t.class_probs for t in targets]
        self.class_probs = (np.stack([np.asarray(p, dtype=np.float64) for p in probs])
                            if probs and all(p is not None for p in probs) else None)

    def __len__(self) -> int:
        return len(self.targets)


def affinity(targets: TargetSet, detections: Detections) -> np.ndarray:
    """D-RISE's affinity of each target with one image's detections: (K,) float64.

    ``max_j IoU(target, det_j) * similarity(target, det_j) * score_j``, where the similarity
    is the cosine of the class-probability vectors when the targets and the detections both
    have them, else 1 for the same label and 0 for another; 0 when there are no detections.
    """
    if len(detections) == 0 or len(targets) == 0:
        return np.zeros(len(targets))
    return _pair_scores(targets, detections).max(axis=1)


def _pair_scores(targets: TargetSet, detections: Detections) -> np.ndarray:
    """(K, D): IoU x class similarity x detection score of every target with every
    detection (``affinity``'s terms before the maximum)."""
    iou = box_iou(targets.boxes, detections.boxes)
    if targets.class_probs is not None and detections.class_probs is not None:
        a, b = targets.class_probs, detections.class_probs
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"the targets' class_probs have {a.shape[1]} classes and the "
                             f"detections' {b.shape[1]}")
        norms = np.linalg.norm(a, axis=1)[:, None] * np.linalg.norm(b, axis=1)[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            similarity = np.where(norms > 0, (a @ b.T) / np.where(norms > 0, norms, 1), 0.0)
    else:
        similarity = (targets.labels[:, None] == detections.labels[None, :]).astype(np.float64)
    return iou * similarity * detections.scores[None, :]


def batch_affinity(targets: TargetSet, sets: Sequence[Detections]) -> np.ndarray:
    """``affinity`` of the targets with every image's detections: (N, K), computed on all the
    batch's detections at once (one IoU matrix, then each image's maximum)."""
    n, k = len(sets), len(targets)
    out = np.zeros((n, k))
    counts = np.array([len(d) for d in sets], dtype=np.int64)
    if k == 0 or counts.sum() == 0:
        return out
    full = [d for d in sets if len(d)]
    with_probs = [d.class_probs is not None for d in full]
    if targets.class_probs is not None and any(with_probs) and not all(with_probs):
        return np.stack([affinity(targets, d) for d in sets])  # mixed: one image at a time
    found = Detections(np.concatenate([d.boxes for d in full]),
                       np.concatenate([d.scores for d in full]),
                       np.concatenate([d.labels for d in full]),
                       np.concatenate([d.class_probs for d in full]) if all(with_probs)
                       else None)
    values = _pair_scores(targets, found)  # (K, all detections)
    rows = np.flatnonzero(counts)
    starts = np.concatenate([[0], np.cumsum(counts[rows])[:-1]])
    out[rows] = np.maximum.reduceat(values, starts, axis=1).T
    return out


AffinityFn = Callable[[Sequence[Target], Detections], np.ndarray]
