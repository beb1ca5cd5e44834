"""What the trained models share: their data split into train and test, the seeded split of a
bundled set and of a generated one, and the record of a trained model. NumPy only (each model
module imports its own framework)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Split:
    """Images (N, H, W, 3) uint8 and their labels (N,), split into train and test."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


@dataclass
class Trained:
    """A trained model, its data, where it came from and its test accuracy."""

    model: object
    data: Split
    accuracy: float
    path: Path | None
    trained: bool  # False when loaded from the cache
    seconds: float


def random_split(images: np.ndarray, labels: np.ndarray, test_fraction: float,
                 seed: int) -> Split:
    """``images`` and ``labels`` split at random (seeded): ``test_fraction`` of them held out."""
    order = np.random.RandomState(seed).permutation(len(images))
    n_test = int(round(len(images) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return Split(images[train], labels[train], images[test], labels[test])


def generated(draw: Callable[[np.random.RandomState, int], np.ndarray], n_classes: int,
              n_train: int, n_test: int, seed: int) -> Split:
    """Generated train and test sets, the classes balanced and shuffled (seeded):
    ``draw(rng, label)`` makes one image."""
    rng = np.random.RandomState(seed)
    labels = np.arange(n_train + n_test) % n_classes
    rng.shuffle(labels)
    images = np.stack([draw(rng, int(label)) for label in labels])
    return Split(images[:n_train], labels[:n_train], images[n_train:], labels[n_train:])
