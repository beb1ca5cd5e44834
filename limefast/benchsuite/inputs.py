"""The inputs every benchmark (and the tests) explain: bundled photos and their segmentations.

Nothing is downloaded: the photos are scikit-image's bundled ones, resized.
"""

from __future__ import annotations

import numpy as np

from limefast.segmentation import LIME_QUICKSHIFT


def bundled(name: str, size: int = 64) -> np.ndarray:
    """A scikit-image bundled photo resized to (size, size), uint8 (2-D for camera)."""
    from skimage import data, transform

    image = getattr(data, name)()
    resized = transform.resize(image, (size, size) + image.shape[2:], anti_aliasing=True)
    return (resized * 255).round().astype(np.uint8)


def photo(side: int) -> np.ndarray:
    """The photo the suite explains: the astronaut, (side, side, 3) uint8."""
    return bundled("astronaut", side)


def grid_segments(side: int, n: int) -> np.ndarray:
    """A k x k grid of equal superpixels, k = round(sqrt(n))."""
    k = max(1, int(round(np.sqrt(n))))
    yy, xx = np.mgrid[0:side, 0:side]
    return (yy * k // side) * k + xx * k // side


def lime_segments(image: np.ndarray) -> np.ndarray:
    """lime's default segmentation: scikit-image's quickshift with ``LIME_QUICKSHIFT`` (a 2-D
    image is stacked to RGB first)."""
    from skimage.segmentation import quickshift

    rgb = image if image.ndim == 3 else np.stack([image] * 3, axis=-1)
    return quickshift(rgb, **LIME_QUICKSHIFT)


def limefast_segments(image: np.ndarray) -> np.ndarray:
    """limefast's default segmentation: its compiled quickshift with ``LIME_QUICKSHIFT`` (the
    same labels as ``lime_segments``)."""
    from limefast.segmentation import quickshift

    return quickshift(image, **LIME_QUICKSHIFT)
