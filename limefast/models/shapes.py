"""A small CNN naming the shape on a generated image: a model to explain, trained in seconds.

Each 32x32 RGB uint8 image holds one shape (disc, square, triangle or cross) of a random
bright colour, size and place on a darker textured background, with pixel noise. The data
are generated from a seed, so nothing is downloaded; the trained weights (about 20 KB) are
cached beside the digits model's (``limefast.models.cache.cache_dir()``).
"""

from __future__ import annotations

import time

import numpy as np

from limefast.optional import require

torch = require("torch", "limefast.models.shapes")
nn = torch.nn

from limefast.models.data import Split, Trained, generated  # noqa: E402
from limefast.models.digits import DigitsClassifier, fit, load_trained  # noqa: E402

SIZE = 32
CLASSES = ("disc", "square", "triangle", "cross")
MODEL_VERSION = 1
EPOCHS = 5
BATCH = 64


ShapesData = Split  # the old name


def draw(rng: np.random.RandomState, label: int, size: int = SIZE) -> np.ndarray:
    """One (size, size, 3) uint8 image of shape ``label`` drawn with ``rng``."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    r = rng.uniform(0.18, 0.32) * size
    cy, cx = rng.uniform(r, size - r, 2)
    dy, dx = (yy - cy) / r, (xx - cx) / r
    if label == 0:
        mask = dy ** 2 + dx ** 2 <= 1
    elif label == 1:
        mask = (np.abs(dy) <= 0.85) & (np.abs(dx) <= 0.85)
    elif label == 2:
        mask = (dy <= 0.9) & (dy >= 2 * np.abs(dx) - 1.1)
    else:
        mask = ((np.abs(dy) <= 1) & (np.abs(dx) <= 0.3)) | ((np.abs(dx) <= 1) & (np.abs(dy) <= 0.3))
    background = rng.uniform(0, 110, 3)
    texture = 20 * np.sin(xx / rng.uniform(2, 6) + rng.uniform(0, 6))[..., None]
    image = background + texture + rng.normal(0, 10, (size, size, 3))
    image[mask] = rng.uniform(150, 255, 3) + rng.normal(0, 10, (int(mask.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def load_data(n_train: int = 3000, n_test: int = 400, seed: int = 0) -> ShapesData:
    """Generated train and test sets (balanced classes, seeded)."""
    return generated(draw, len(CLASSES), n_train, n_test, seed)


class ShapesCNN(nn.Module):
    """Three 3x3 convolutions (8, 16, 16 channels, ReLU, max-pooling) and a linear head on the
    8x8 maps: (N, 3, 32, 32) float in [0, 1] -> (N, 4) logits (a flattened head, unlike the
    digits CNN's pooled one)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.classifier = nn.Linear(16 * 8 * 8, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def train_model(data: ShapesData, seed: int = 0, epochs: int = EPOCHS) -> ShapesCNN:
    """Train a ShapesCNN (Adam, seeded shuffles, one thread: the same weights every run)."""
    return fit(ShapesCNN, data, 4e-3, epochs, seed)


TrainedShapes = Trained  # the old name


def load_model(*, cache: bool = True, retrain: bool = False) -> TrainedShapes:
    """The trained shapes CNN: from the cache if it is there, else trained (and cached)."""
    t0 = time.perf_counter()
    return load_trained(load_data(), f"shapes-cnn-v{MODEL_VERSION}.pt", ShapesCNN, train_model,
                        "shapes", cache, retrain, t0)


ShapesClassifier = DigitsClassifier  # the same softmax of a (N, 3, H, W) module
