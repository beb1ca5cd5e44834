"""The study's models, segmentations and cases, and which half each case belongs to.

The tuning half is the 72 cases of ``build_cases(.., seed=TUNING_SEED)``: 4 models x 3
segmenters x 2 fills x 3 images. (They were once split in two alternating halves; the rule of
the first "auto" was tuned on one and checked on the other three times, so both are tuning
data now.) The held-out half is fresh: other test images of the same 4 models
(``HELD_OUT_SEED``, none of the tuning half's images) and a fifth model, ``blobs-cnn``, that
no tuning run ever sees. Nothing is chosen on it: ``python -m limefast.benchsuite.study --tune``
never loads it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

HALVES = ("tuning", "held-out")
TUNING_SEED, HELD_OUT_SEED = 0, 1  # the seeds of the halves' image orders
TUNING_PER_CELL = 3  # the tuning half's full size: the held-out half never uses its images
HELD_OUT_ONLY = ("blobs-cnn", "faces-cnn")  # models no tuning run sees
FILLS = {"zero": 0, "mean": None}  # hide_color
SUPERPIXELS = (15, 60)  # the study's range of superpixel counts
# Parameter ladders tried in order until the count falls in SUPERPIXELS.
LADDERS = {
    "slic": [dict(n_segments=n, compactness=10, start_label=0) for n in (40, 30, 55, 22)],
    "quickshift": [dict(kernel_size=k, max_dist=d, ratio=0.5)
                   for k, d in ((2, 6), (2, 4), (1, 4), (3, 8), (1, 2))],
    "felzenszwalb": [dict(scale=s, sigma=0.5, min_size=m)
                     for s, m in ((30, 8), (15, 6), (60, 10), (8, 4), (100, 12))],
}


@dataclass
class StudyModel:
    """One trained model: its classifier_fn, test images and labels."""

    name: str
    description: str
    classifier: Callable
    test_images: np.ndarray
    test_labels: np.ndarray
    accuracy: float
    n_classes: int


@dataclass
class Case:
    """One image of the study, segmented one way, with one fill."""

    index: int
    model: str
    test_index: int
    segmenter: str
    params: dict
    fill: str
    superpixels: int
    half: str

    @property
    def key(self) -> str:
        return f"{self.model}-{self.test_index}-{self.segmenter}-{self.fill}"


# name -> (module of limefast.models, its classifier_fn's class, description, classes[, the
# module's loader, default load_model])
MODELS = {
    "digits-cnn": ("digits", "DigitsClassifier",
                   "4-conv CNN, pooled head, 32x32 digits, 10 classes", 10),
    "faces-mlp": ("faces", "FacesClassifier", "625-32-2 MLP, 50x50 lfw_subset, face/non-face", 2),
    "shapes-cnn": ("shapes", "ShapesClassifier",
                   "3-conv CNN, flattened head, generated shapes, 4 classes", 4),
    "stripes-keras": ("stripes", "StripesClassifier",
                      "Keras 3 (torch backend) 2-conv CNN, global max, generated stripes, "
                      "4 classes", 4),
    "blobs-cnn": ("blobs", "BlobsClassifier",
                  "residual CNN with batch norm, 40x40 generated blobs, counts 1-4", 4),
    "faces-cnn": ("faces", "FacesClassifier",
                  "2-conv CNN, max pooling, pooled head, 50x50 lfw_subset, face/non-face", 2,
                  "load_cnn"),
}


def load_models(names) -> dict[str, StudyModel]:
    """The study's trained models, by name (each module imported only when asked for)."""
    out = {}
    for name in names:
        if name not in MODELS:
            raise ValueError(f"unknown study model {name!r}")
        module_name, classifier, description, n_classes, *loader = MODELS[name]
        m = importlib.import_module(f"limefast.models.{module_name}")
        t = getattr(m, loader[0] if loader else "load_model")()
        out[name] = StudyModel(name, description, getattr(m, classifier)(t.model),
                               t.data.test_images, t.data.test_labels, t.accuracy, n_classes)
    return out


def data_set(name: str) -> str:
    """The data a study model was trained on (its ``limefast.models`` module): models of one
    data set share test images, so the held-out half skips those any tuning case used."""
    return MODELS[name][0]


def segment(image: np.ndarray, method: str, params: dict) -> np.ndarray:
    """(H, W) labels 0..n-1 of ``method`` (scikit-image) with ``params``."""
    from skimage import segmentation

    labels = getattr(segmentation, method)(image, **params)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)


def segment_in_range(image: np.ndarray, method: str):
    """(labels, params) of the first rung of the ladder giving 15-60 superpixels, else None."""
    for params in LADDERS[method]:
        labels = segment(image, method, params)
        if SUPERPIXELS[0] <= labels.max() + 1 <= SUPERPIXELS[1]:
            return labels, params
    return None


def build_cases(models: dict[str, StudyModel], per_cell: int, seed: int = TUNING_SEED,
                half: str = "tuning", skip=frozenset(), start: int = 0) -> list[Case]:
    """``per_cell`` images per (model, segmenter, fill), each a different test image, taken in
    a seeded random order (skipping images the segmenter cannot cut into 15-60 superpixels and
    the (data set, test index) pairs in ``skip``), numbered from ``start``."""
    cases = []
    for name, model in models.items():
        order = [int(i) for i in np.random.RandomState(seed).permutation(len(model.test_images))
                 if (data_set(name), int(i)) not in skip]
        for method in LADDERS:
            for fill in FILLS:
                taken = 0
                while taken < per_cell and order:
                    i = int(order.pop(0))
                    found = segment_in_range(model.test_images[i], method)
                    if found is None:
                        continue
                    labels, params = found
                    cases.append(Case(start + len(cases), name, i, method, params, fill,
                                      int(labels.max()) + 1, half))
                    taken += 1
    return cases


def study_cases(models: dict[str, StudyModel], per_cell: int, halves=HALVES) -> list[Case]:
    """The cases of ``halves``: the tuning half on the models not in ``HELD_OUT_ONLY``, the
    held-out half on every model in ``models``, on test images the tuning half does not use."""
    tuned = {k: m for k, m in models.items() if k not in HELD_OUT_ONLY}
    tuning = build_cases(tuned, per_cell)
    if "held-out" not in halves:
        return tuning
    # every image a tuning run of any size has seen (smaller runs take a prefix of these)
    seen = tuning if per_cell >= TUNING_PER_CELL else build_cases(tuned, TUNING_PER_CELL)
    used = {(data_set(c.model), c.test_index) for c in seen}
    held = build_cases(models, per_cell, HELD_OUT_SEED, "held-out", used, len(tuning))
    return (tuning if "tuning" in halves else []) + held
