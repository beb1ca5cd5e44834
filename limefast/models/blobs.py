"""A tiny residual CNN counting the bright blobs on a generated image: a held-out model to
explain, trained in seconds.

Each 40x40 RGB uint8 image holds 1, 2, 3 or 4 soft-edged bright blobs (discs of radius 3 to 6
pixels with a blurred rim, each of a random bright colour, drawn apart) on a dark, smoothly
varying background, with pixel noise; the label is the count less one. The data are generated
from a seed, so nothing is downloaded; the trained weights (about 60 KB) are cached beside the
other models' (``limefast.models.cache.cache_dir()``).

Unlike the other models it has residual blocks with batch normalisation, a stride-2 block with
a projected skip, a different image size and a counting task.
"""

from __future__ import annotations

import time

import numpy as np

from limefast.optional import require

torch = require("torch", "limefast.models.blobs")
nn = torch.nn

from limefast.models.data import Split, Trained, generated  # noqa: E402
from limefast.models.digits import DigitsClassifier, fit, load_trained  # noqa: E402

SIZE = 40
CLASSES = ("one", "two", "three", "four")  # blobs on the image: label + 1
RADIUS = (3.0, 6.0)
GAP = 3.0  # the least room between two blobs' rims, in pixels
NOISE = 8.0  # standard deviation of the pixel noise
# Bump when the data, the architecture or the training change: old cache files are then ignored.
MODEL_VERSION = 1
EPOCHS = 6
BATCH = 64
LR = 5e-3


BlobsData = Split


def blob_layout(rng: np.random.RandomState, count: int,
                size: int = SIZE) -> list[tuple[float, float, float]]:
    """``count`` blobs' (centre y, centre x, radius), each inside the image and apart from the
    others by at least ``GAP`` pixels between rims (drawn again until they fit)."""
    blobs: list[tuple[float, float, float]] = []
    while len(blobs) < count:
        r = rng.uniform(*RADIUS)
        cy, cx = rng.uniform(r + 1, size - r - 1, 2)
        if all(np.hypot(cy - y, cx - x) >= r + s + GAP for y, x, s in blobs):
            blobs.append((cy, cx, r))
    return blobs


def draw(rng: np.random.RandomState, label: int, size: int = SIZE,
         noise: float = NOISE) -> np.ndarray:
    """One (size, size, 3) uint8 image of ``label + 1`` blobs drawn with ``rng``.

    ``noise`` scales the pixel noise only: the same ``rng`` state gives the same background and
    blobs whatever it is (0 draws a noise-free image of them).
    """
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    # A dark background, a tilted gradient and a slow wave: smooth, never as bright as a blob.
    base = rng.uniform(5, 60, 3)
    angle, wave, phase = rng.uniform(0, 2 * np.pi), rng.uniform(6, 14), rng.uniform(0, 2 * np.pi)
    along = (np.cos(angle) * xx + np.sin(angle) * yy) / size
    smooth = rng.uniform(0, 25) * along + rng.uniform(5, 20) * np.sin(along * size / wave + phase)
    image = base + smooth[..., None]
    for cy, cx, r in blob_layout(rng, label + 1, size):
        colour = rng.uniform(60, 255, 3)
        colour[rng.randint(3)] = rng.uniform(200, 255)  # bright in one channel at least
        # A disc with a soft rim: 1 inside, 1/2 on the circle, fading over about a pixel.
        alpha = 1 / (1 + np.exp((np.hypot(yy - cy, xx - cx) - r) / 0.8))
        image = image * (1 - alpha[..., None]) + colour * alpha[..., None]
    image = image + noise * rng.normal(0, 1, (size, size, 3))
    return np.clip(image, 0, 255).round().astype(np.uint8)


def load_data(n_train: int = 3000, n_test: int = 400, seed: int = 0) -> BlobsData:
    """Generated train and test sets (balanced counts, seeded)."""
    return generated(draw, len(CLASSES), n_train, n_test, seed)


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (through a 1x1 convolution and BN where the stride or
    the channel count change), then ReLU."""

    def __init__(self, inputs: int, outputs: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(outputs), nn.ReLU(),
            nn.Conv2d(outputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs))
        self.skip = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.skip = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class BlobsResNet(nn.Module):
    """A 3x3 stem (12 channels), a residual block and a stride-2 one (24 channels), global
    average pooling and a linear head: (N, 3, 40, 40) float in [0, 1] -> (N, 4) logits."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU(),
            ResidualBlock(12, 12), ResidualBlock(12, 24, stride=2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(24, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def train_model(data: BlobsData, seed: int = 0, epochs: int = EPOCHS) -> BlobsResNet:
    """Train a BlobsResNet (Adam, seeded shuffles, one thread: the same weights every run)."""
    return fit(BlobsResNet, data, LR, epochs, seed)


def load_model(*, cache: bool = True, retrain: bool = False) -> Trained:
    """The trained blob-counting CNN: from the cache if it is there, else trained (and cached)."""
    t0 = time.perf_counter()
    return load_trained(load_data(), f"blobs-cnn-v{MODEL_VERSION}.pt", BlobsResNet, train_model,
                        "blobs", cache, retrain, t0)


BlobsClassifier = DigitsClassifier  # the same softmax of a (N, 3, H, W) module, in eval mode
