"""The prepared instance: one image ready to be perturbed (segments, the fudged image, lime's
0/1 rows and their distances), and how the fudged image is made."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from limefast import _loading, config
from limefast.kernels.segment_means import segment_means, segment_means_numpy


@dataclass
class Instance:
    """One image ready to be perturbed: what ``explain_instance`` knows before the model runs."""

    image: np.ndarray  # (H, W, C)
    segments: np.ndarray  # (H, W) labels 0..n-1
    n_features: int
    fudged: np.ndarray  # (H, W, C), the image's dtype
    data: np.ndarray  # (num_samples, n_features) 0/1 rows, row 0 all ones
    distances: np.ndarray  # (num_samples,)
    timings: dict = field(default_factory=dict)
    sampler: str = "lime"  # the rows' design (sampling.SAMPLERS)

    @property
    def unit(self) -> int:
        """Rows the design draws together (``sampling.design_unit``): 2 for complement
        pairs."""
        from limefast.core.sampling import design_unit

        return design_unit(self.sampler)


def fudged_image(image: np.ndarray, segments: np.ndarray, n_segments: int, hide_color):
    """The image hidden pixels take: per-segment mean colours, or ``hide_color`` everywhere."""
    fudged = image.copy()
    if hide_color is None:
        small = segments.size <= config.FIRST_CALL_NUMPY_PIXELS
        means = (segment_means_numpy if small and _loading.kernels_loading() else segment_means)(
            image, segments, n_segments)
        # numpy assignment semantics: means are cast to the image dtype (truncated for ints).
        fudged[...] = means[segments]
        return fudged
    try:
        fudged[:] = hide_color
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(
            f"hide_color must be a value or an array broadcastable to the image's shape "
            f"{image.shape} and representable in {image.dtype}; got {hide_color!r} ({exc})"
        ) from exc
    return fudged
