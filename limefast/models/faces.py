"""A small MLP telling faces from non-faces: a second model to explain, nothing downloaded.

scikit-image ships 200 grayscale 25x25 crops from Labeled Faces in the Wild
(``skimage.data.lfw_subset``): the first 100 are faces, the other 100 are not. They are upscaled
to ``size x size`` RGB uint8 images, the form a ``classifier_fn`` gets from the explainer, and a
two-layer perceptron (no convolutions: a different architecture from
``limefast.models.digits``'s CNN) is trained on 70% of them in about a second. The weights
(about 80 KB) are cached as a state-dict file beside the digits model's
(``limefast.models.cache.cache_dir()``).

Training is seeded: the same machine gives the same weights.
"""

from __future__ import annotations

import time

import numpy as np

from limefast.optional import require

torch = require("torch", "limefast.models.faces")
nn = torch.nn

from limefast.device._torch import torch_threads  # noqa: E402 - after torch
from limefast.models.cache import cache_dir, cached_model  # noqa: E402
from limefast.models.data import Split, Trained, random_split  # noqa: E402
from limefast.models.digits import (  # noqa: E402 - after torch
    DigitsClassifier,
    test_accuracy,
    to_tensor,
    upscaled_rgb,
)

SIZE = 50
SOURCE_SIZE = 25  # lfw_subset's side: the model averages its input back down to it
# Bump when the data, the architecture or the training change: old cache files are then ignored.
MODEL_VERSION = 1
EPOCHS = 40
BATCH = 32
HIDDEN = 32
CLASSES = ("non-face", "face")


FacesData = Split  # the old name


def load_data(size: int = SIZE, test_fraction: float = 0.3, seed: int = 0) -> FacesData:
    """scikit-image's ``lfw_subset`` as RGB uint8 images of ``size x size``, split at random.

    Args:
        size: side of the upscaled images (bilinear from 25x25).
        test_fraction: share of the 200 crops held out for testing.
        seed: seed of the split.

    Returns:
        A FacesData.
    """
    from skimage.data import lfw_subset

    crops = lfw_subset()
    images = upscaled_rgb(crops, size)
    labels = (np.arange(len(crops)) < len(crops) // 2).astype(np.int64)
    return random_split(images, labels, test_fraction, seed)


class FacesMLP(nn.Module):
    """Grey level, averaged down to 25x25, then a 625-32-2 perceptron.

    The average pooling makes the model take any image side while keeping its weights the size
    of the source crops.
    """

    def __init__(self, hidden: int = HIDDEN):
        super().__init__()
        self.classifier = nn.Sequential(nn.Linear(SOURCE_SIZE * SOURCE_SIZE, hidden), nn.ReLU(),
                                        nn.Linear(hidden, len(CLASSES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float in [0, 1] -> (N, 2) logits (class 1: face)."""
        grey = nn.functional.adaptive_avg_pool2d(x.mean(1, keepdim=True), SOURCE_SIZE)
        return self.classifier(grey.flatten(1) * 2 - 1)


def train_model(data: FacesData, seed: int = 0, epochs: int = EPOCHS) -> FacesMLP:
    """Train a FacesMLP on ``data``'s training images (Adam, seeded shuffles and flips)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    with torch_threads(1):  # as limefast.models.digits: the same weights whatever the cores
        return _train(data, generator, epochs)


def _train(data: FacesData, generator: torch.Generator, epochs: int,
           build=FacesMLP) -> nn.Module:
    model = build()
    x = to_tensor(data.train_images)
    y = torch.from_numpy(data.train_labels)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(BATCH):
            # Mirrored faces are faces: 140 training crops need the help.
            flip = torch.rand(len(idx), generator=generator) < 0.5
            batch = torch.where(flip[:, None, None, None], x[idx].flip(3), x[idx])
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(batch), y[idx]).backward()
            optimiser.step()
    return model.eval()


TrainedFaces = Trained  # the old name


def load_model(size: int = SIZE, *, cache: bool = True, retrain: bool = False) -> TrainedFaces:
    """The trained faces MLP: from the cache if it is there, else trained (and cached).

    Args:
        size: side of the images (the model itself takes any side).
        cache: read and write the cached state dict under ``limefast.models.cache.cache_dir()``.
        retrain: train even if a cached model exists (and overwrite it).

    Returns:
        A TrainedFaces with the model in eval mode.
    """
    t0 = time.perf_counter()
    data = load_data(size)
    path = cache_dir() / f"faces-mlp-v{MODEL_VERSION}.pt" if cache else None
    model, trained = cached_model(path, FacesMLP, lambda: train_model(data), "faces", retrain)
    return Trained(model, data, test_accuracy(model, data), path, trained,
                   time.perf_counter() - t0)


FacesClassifier = DigitsClassifier  # the same softmax of a (N, 3, H, W) module


# -- a convolutional twin: a model of the sampling study's held-out half only ------------------
CNN_VERSION = 1
CNN_EPOCHS = 30


class FacesCNN(nn.Module):
    """Grey level, then two 3x3 convolutions with max pooling (50 -> 25 -> 12) and a pooled
    linear head: the faces task with local, translation-equivariant features, unlike the
    MLP's one dense layer over the whole crop."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4))
        self.head = nn.Linear(16 * 16, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float in [0, 1] -> (N, 2) logits (class 1: face)."""
        return self.head(self.features(x.mean(1, keepdim=True) * 2 - 1).flatten(1))


def train_cnn(data: FacesData, seed: int = 0, epochs: int = CNN_EPOCHS) -> FacesCNN:
    """Train a FacesCNN as ``train_model`` trains the MLP (seeded shuffles and flips)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    with torch_threads(1):
        return _train(data, generator, epochs, FacesCNN)


def load_cnn(size: int = SIZE, *, cache: bool = True, retrain: bool = False) -> TrainedFaces:
    """The trained faces CNN (``load_model``'s arguments): from the cache, else trained."""
    t0 = time.perf_counter()
    data = load_data(size)
    path = cache_dir() / f"faces-cnn-v{CNN_VERSION}.pt" if cache else None
    model, trained = cached_model(path, FacesCNN, lambda: train_cnn(data), "faces CNN",
                                  retrain)
    return Trained(model, data, test_accuracy(model, data), path, trained,
                   time.perf_counter() - t0)
