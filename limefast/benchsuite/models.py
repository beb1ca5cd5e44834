"""The models the benchmarks (and the tests) explain: a grid model that costs next to nothing,
lime's tutorial classifier for torchvision models, and those models with seeded random weights.
"""

from __future__ import annotations

import time

import numpy as np

from limefast.imagenet import MEAN, STD
from limefast.optional import require


class GridModel:
    """A model that costs next to nothing: softmax of a fixed linear map of a grid x grid
    subsample of the image (scaled to [0, 1] for integer images).

    Each row's output depends on that row alone, bit for bit (the map is an ``einsum``, not a
    BLAS product, whose blocking follows the batch size): lime and limefast see the same
    outputs whatever batches they call it with.
    """

    def __init__(self, n_classes: int = 10, grid: int = 14, seed: int = 0, channels: int = 3):
        self.n_classes, self.grid = n_classes, grid
        self.weights = np.random.RandomState(seed).randn(grid * grid * channels, n_classes) * 4
        self._index = {}

    def index(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows (grid, 1) and columns (1, grid) the model reads on a height x width image."""
        if (height, width) not in self._index:
            self._index[height, width] = (
                np.linspace(0, height - 1, self.grid).astype(int)[:, None],
                np.linspace(0, width - 1, self.grid).astype(int)[None, :])
        return self._index[height, width]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        rows, cols = self.index(*batch.shape[1:3])
        x = batch[:, rows, cols].reshape(len(batch), -1).astype(np.float64)
        if batch.dtype.kind in "iu":
            x = x / 255.0
        z = np.einsum("nk,kc->nc", x, self.weights[: x.shape[1]], optimize=False)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def torch_forward(self, x):
        """The same model on (N, C, H, W) float tensors of 0-255 values (for captum)."""
        torch = require("torch", "GridModel.torch_forward")
        rows, cols = (torch.from_numpy(i) for i in self.index(*x.shape[2:]))
        sub = x[:, :, rows, cols].permute(0, 2, 3, 1).reshape(len(x), -1).double() / 255.0
        z = sub @ torch.from_numpy(self.weights[: sub.shape[1]])
        return torch.softmax(z, dim=1)


class TutorialClassifier:
    """lime's PyTorch tutorial classifier: torchvision's ToTensor + Normalize (ImageNet's
    statistics) image by image in Python, a stacked fp32 NCHW batch under ``torch.no_grad``,
    softmax, back to NumPy. Adds up the seconds of its forwards in ``forward_seconds``
    (synchronised on a GPU)."""

    def __init__(self, model, device="cpu"):
        self.torch = require("torch", "TutorialClassifier")
        transforms = require("torchvision.transforms", "TutorialClassifier")
        self.model, self.device = model, self.torch.device(device)
        self.preprocess = transforms.Compose([transforms.ToTensor(),
                                              transforms.Normalize(mean=MEAN, std=STD)])
        self.forward_seconds = 0.0

    def __call__(self, images):
        torch = self.torch
        batch = torch.stack([self.preprocess(image) for image in images]).to(self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            logits = self.model(batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.forward_seconds += time.perf_counter() - t0
        return torch.softmax(logits, dim=1).cpu().numpy()


def torchvision_model(name: str = "resnet18", seed: int = 0, device="cpu"):
    """A torchvision model (``resnet18``, ``resnet50``, ...) with random weights drawn after
    ``torch.manual_seed(seed)``, in eval mode."""
    torch = require("torch", "the benchmarks' torchvision models")
    torchvision = require("torchvision", "the benchmarks' torchvision models")
    torch.manual_seed(seed)
    return getattr(torchvision.models, name)(weights=None).eval().to(device)


class FixedCost:
    """A model behind a fixed cost per call, whatever the batch (a Keras model's ``predict``:
    its per-call overhead dominates small batches); the grid model by default."""

    def __init__(self, seconds: float, model=None):
        self.model, self.seconds = (GridModel() if model is None else model), seconds

    def __call__(self, batch):
        time.sleep(self.seconds)
        return self.model(batch)


def tiny_cnn(n_classes: int = 5, seed: int = 7):
    """A small CNN with seeded random weights (two 3x3 convolutions of 8 channels, global
    pooling), what the command-line and server tests load as a torch model."""
    torch = require("torch", "the tests' tiny CNN")
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, n_classes),
    )
