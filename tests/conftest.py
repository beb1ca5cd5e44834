"""Shared fixtures: bundled images, cheap classifiers, and the reference lime."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, transform


def bundled(name: str, size: int = 64) -> np.ndarray:
    """A scikit-image bundled photo resized to (size, size), uint8 (2-D for camera)."""
    image = getattr(data, name)()
    resized = transform.resize(image, (size, size) + image.shape[2:], anti_aliasing=True)
    return (resized * 255).round().astype(np.uint8)


class GridClassifier:
    """A model that costs next to nothing: softmax of a fixed linear map of a pixel grid.

    Reads a grid x grid subsample of the image, scaled to [0, 1] for integer images.
    """

    def __init__(self, n_classes: int = 10, grid: int = 14, seed: int = 0, channels: int = 3):
        self.n_classes, self.grid = n_classes, grid
        self.weights = np.random.RandomState(seed).randn(grid * grid * channels, n_classes) * 4

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        h, w = batch.shape[1:3]
        rows = np.linspace(0, h - 1, self.grid).astype(int)
        cols = np.linspace(0, w - 1, self.grid).astype(int)
        x = batch[:, rows][:, :, cols].reshape(len(batch), -1).astype(np.float64)
        if batch.dtype.kind in "iu":
            x = x / 255.0
        # einsum, not BLAS: each row's result must not depend on how many rows come with it.
        z = np.einsum("nk,kc->nc", x, self.weights[: x.shape[1]], optimize=False)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def grid_classifier():
    return GridClassifier()


def quickshift_segments(image: np.ndarray) -> np.ndarray:
    from skimage.segmentation import quickshift

    from limefast.segmentation import LIME_QUICKSHIFT

    rgb = image if image.ndim == 3 else np.stack([image] * 3, axis=-1)
    return quickshift(rgb, **LIME_QUICKSHIFT)


def _gpu_available() -> bool:
    """A real CUDA GPU, usable by numba and (when installed) PyTorch; the simulator is not one."""
    import os

    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return False
    try:
        from numba import cuda

        if not cuda.is_available():
            return False
    except Exception:  # noqa: BLE001 - no driver, no toolkit: no GPU
        return False
    try:
        import torch
    except ImportError:
        return True
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """Skip ``cuda``-marked tests where there is no GPU (torchvision's ``cpu_and_cuda``)."""
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked or _gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible; the simulator is not one)")
    for item in marked:
        item.add_marker(skip)
