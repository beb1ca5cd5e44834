"""A small CNN on scikit-learn's bundled handwritten digits: a model to explain, nothing downloaded.

scikit-learn ships 1797 8x8 digits (``sklearn.datasets.load_digits``). They are upscaled to
``size x size`` RGB uint8 images, the form a ``classifier_fn`` gets from the explainer, and a
small CNN is trained on 80% of them in a few seconds on two CPU cores. The trained weights
are cached as a small state-dict file (``$LIMEFAST_CACHE``, else ``$XDG_CACHE_HOME/limefast`` or
``~/.cache/limefast``), so only the first run trains.

Training is seeded: the same machine and thread count give the same weights.
"""

from __future__ import annotations

import time

import numpy as np

from limefast.optional import require

torch = require("torch", "limefast.models.digits")
nn = torch.nn

from limefast.device._torch import torch_threads  # noqa: E402 - after torch
from limefast.models.cache import cache_dir, cached_model  # noqa: E402,F401 - the old names
from limefast.models.data import Split, Trained, random_split  # noqa: E402

SIZE = 32
# Bump when the data, the architecture or the training change: old cache files are then ignored.
MODEL_VERSION = 2
EPOCHS = 6
BATCH = 64


DigitsData = Split  # the old name


def load_data(size: int = SIZE, test_fraction: float = 0.2, seed: int = 0) -> DigitsData:
    """scikit-learn's digits as RGB uint8 images of ``size x size``, split at random (seeded).

    Args:
        size: side of the upscaled images (bilinear from 8x8).
        test_fraction: share of the 1797 digits held out for testing.
        seed: seed of the split.

    Returns:
        A DigitsData.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = upscaled_rgb(digits.images / 16.0, size)
    return random_split(images, digits.target.astype(np.int64), test_fraction, seed)


def upscaled_rgb(grey: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) grey images in [0, 1] as (N, size, size, 3) RGB uint8, upscaled bilinearly."""
    small = torch.from_numpy(np.asarray(grey, dtype=np.float32))[:, None]
    big = nn.functional.interpolate(small, size=(size, size), mode="bilinear",
                                    align_corners=False)
    out = (big[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return np.repeat(out[..., None], 3, axis=-1)


def _block(inputs: int, outputs: int) -> list:
    return [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs),
            nn.ReLU()]


class DigitsCNN(nn.Module):
    """Four 3x3 convolutions, global average pooling and a linear layer.

    The pooled head keeps Grad-CAM meaningful: with it, a class score is a weighted sum of the
    last feature maps' means (a flattened head weighs every position apart, and Grad-CAM's
    per-map averages of those weights mostly cancel out).
    """

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            *_block(3, 8), nn.MaxPool2d(2), *_block(8, 16), nn.MaxPool2d(2),
            *_block(16, 32), *_block(32, 32),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float in [0, 1] -> (N, 10) logits."""
        return self.classifier(self.pool(self.features(x)).flatten(1))


def to_tensor(batch: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 images -> (N, 3, H, W) float32 in [0, 1], the model's input."""
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 255.0


def train_model(data: DigitsData, seed: int = 0, epochs: int = EPOCHS) -> DigitsCNN:
    """Train a DigitsCNN on ``data``'s training images (Adam, seeded shuffles)."""
    return fit(DigitsCNN, data, 3e-3, epochs, seed)


def fit(build, data, lr: float, epochs: int, seed: int = 0, batch: int = BATCH):
    """``build()`` trained on ``data``'s training images with cross-entropy, Adam at ``lr``
    and seeded shuffles in batches of ``batch``; returned in eval mode.

    One thread: the same weights from run to run whatever the core count, and no OpenMP
    spinning against other processes on a busy CPU (two threads were 10x slower under load).
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # before build(): its initial weights
    with torch_threads(1):
        model = build()
        x, y = to_tensor(data.train_images), torch.from_numpy(data.train_labels)
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=generator).split(batch):
                optimiser.zero_grad()
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                optimiser.step()
    return model.eval()


TrainedDigits = Trained  # the old name


def load_model(size: int = SIZE, *, cache: bool = True, retrain: bool = False) -> TrainedDigits:
    """The trained digits CNN: from the cache if it is there, else trained (and cached).

    Args:
        size: side of the images the model takes.
        cache: read and write the cached state dict under ``cache_dir()``.
        retrain: train even if a cached model exists (and overwrite it).

    Returns:
        A TrainedDigits with the model in eval mode.
    """
    t0 = time.perf_counter()
    return load_trained(load_data(size), f"digits-cnn-{size}px-v{MODEL_VERSION}.pt", DigitsCNN,
                        train_model, "digits", cache, retrain, t0)


def load_trained(data: Split, file_name: str, build, train, what: str, cache: bool,
                 retrain: bool, t0: float) -> Trained:
    """A torch classifier of ``data`` from the cached state dict ``file_name`` under
    ``cache_dir()``, else ``train(data)`` (and cached), with its test accuracy; ``t0`` is
    when the loading began."""
    path = cache_dir() / file_name if cache else None
    model, trained = cached_model(path, build, lambda: train(data), what, retrain)
    return Trained(model, data, test_accuracy(model, data), path, trained,
                   time.perf_counter() - t0)


def test_accuracy(model, data: Split) -> float:
    """The share of ``data``'s test images a (N, 3, H, W) -> (N, classes) module gets right."""
    with torch.no_grad():
        predicted = model(to_tensor(data.test_images)).argmax(1).numpy()
    return float(np.mean(predicted == data.test_labels))


class DigitsClassifier:
    """``classifier_fn`` of a model taking (N, 3, H, W) floats in [0, 1], such as the digits
    CNN: (N, H, W, 3) uint8 -> (N, classes) float64 softmax.

    Args:
        model: a trained module.
    """

    def __init__(self, model: nn.Module):
        self.model = model.eval()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = self.model(to_tensor(batch))
        return torch.softmax(logits.double(), dim=1).numpy()
