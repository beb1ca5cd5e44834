"""Quickshift segmentation, label for label scikit-image's, from compiled kernels.

``quickshift`` has ``skimage.segmentation.quickshift``'s signature and returns the same labels
(``np.array_equal``, same dtype) for the same arguments and ``rng``. The cheap preprocessing
(``img_as_float``, ``rgb2lab``, the optional Gaussian smoothing, the ``ratio`` scaling) stays in
scikit-image and NumPy; the mode seeking runs in ``limefast.kernels.quickshift``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from limefast import _loading, config
from limefast.kernels.quickshift import _quickshift_cpu

# 3 * kernel_size must fit scikit-image's C int window width.
_MAX_KERNEL_SIZE = (2**31 - 1) / 3


def _real(name: str, value, fix: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r} ({fix})")
    return value


def _check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        try:
            image = np.asarray(image)
        except Exception as exc:  # noqa: BLE001 - anything unconvertible is not an image
            raise TypeError(f"image must be a NumPy array; got {type(image).__name__}") from exc
    if image.dtype.kind not in "biuf":
        raise TypeError(
            f"image must have a bool, integer or float dtype; got {image.dtype} "
            "(convert it with image.astype(np.float64))"
        )
    if image.ndim not in (2, 3):
        raise ValueError(
            f"image must be (H, W) or (H, W, C) (only 2-D images are supported); "
            f"got shape {image.shape}"
        )
    return image


def _check_rng(rng) -> np.random.Generator:
    # scikit-image 0.26 types its seed as a C int (a Generator raises TypeError there, though its
    # docstring promises one); a Generator is accepted here and drawn from as scikit-image's
    # default_rng(seed) would be.
    if isinstance(rng, np.random.Generator):
        return rng
    if not isinstance(rng, numbers.Integral):
        raise TypeError(
            f"rng must be an int seed (e.g. rng=42) or a numpy.random.Generator; got {rng!r}"
        )
    if rng < 0:
        raise ValueError(f"rng must be a non-negative int seed; got {rng}")
    return np.random.default_rng(int(rng))


def quickshift(
    image: np.ndarray,
    ratio: float = 1.0,
    kernel_size: float = 5,
    max_dist: float = 10,
    return_tree: bool = False,
    sigma: float = 0,
    convert2lab: bool = True,
    rng: int | np.random.Generator = 42,
    *,
    channel_axis: int = -1,
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segment an image by quickshift clustering in colour-(x, y) space.

    A drop-in for ``skimage.segmentation.quickshift`` (scikit-image 0.26): same arguments, same
    labels, same use of ``rng``.

    Args:
        image: (H, W) or (H, W, C) image (channels on ``channel_axis``), any real dtype; integers
            are scaled to [0, 1] as ``img_as_float`` does.
        ratio: balances colour-space proximity (higher) against image-space proximity.
        kernel_size: width of the Gaussian kernel that smooths the sample density, >= 1. Higher
            means fewer segments.
        max_dist: cut-off for the distance to a parent. Higher means fewer segments.
        return_tree: also return the parent of every pixel and the distance to it.
        sigma: width of the Gaussian smoothing applied first; 0 means none.
        convert2lab: convert the (RGB) image to Lab first.
        rng: int seed (as scikit-image's ``default_rng(rng)``) or ``numpy.random.Generator``
            (drawn from, so advanced) of the noise that breaks density ties.
        channel_axis: the axis of ``image`` holding the channels.

    Returns:
        (H, W) intp labels 0..n-1. With ``return_tree``: ``(labels, parent, dist_parent)``, where
        ``parent`` is (H, W) intp (flat index of each pixel's parent, before the ``max_dist`` cut)
        and ``dist_parent`` (H, W) float32/float64; scikit-image returns these two as Cython
        memoryviews, here they are NumPy arrays with the same values.

    Raises:
        TypeError: non-numeric image or arguments, ``rng`` neither an int nor a Generator.
        ValueError: image not 2-D or 3-D, ``channel_axis`` out of range, ``convert2lab`` with a
            non-RGB image, ``kernel_size`` < 1 or not finite, negative ``sigma`` or ``rng``.
    """
    from skimage.color import rgb2lab
    from skimage.util import img_as_float

    image = _check_image(image)
    ratio = _real("ratio", ratio, "the colour weight, e.g. 0.2")
    kernel_size = _real("kernel_size", kernel_size, "the density kernel width, >= 1")
    max_dist = _real("max_dist", max_dist, "the parent distance cut-off")
    sigma = _real("sigma", sigma, "the pre-smoothing width; 0 for none")
    if not isinstance(channel_axis, numbers.Integral) or isinstance(channel_axis, bool):
        raise TypeError(f"channel_axis must be an int; got {channel_axis!r}")
    if not -3 <= channel_axis <= 2:
        raise ValueError(
            f"channel_axis must be in [-3, 2] (the image is taken as (H, W, C)); "
            f"got {channel_axis}"
        )
    if kernel_size > _MAX_KERNEL_SIZE or not math.isfinite(kernel_size):
        raise ValueError(
            f"kernel_size must be a finite number in [1, {_MAX_KERNEL_SIZE:.0f}]; "
            f"got {kernel_size}"
        )
    if kernel_size < 1:
        raise ValueError(f"kernel_size should be >= 1; got {kernel_size} (try kernel_size=1)")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0 (0 means no smoothing); got {sigma}")

    image = img_as_float(np.atleast_3d(image))
    float_dtype = np.float32 if image.dtype in (np.float16, np.float32) else np.float64
    image = np.moveaxis(image.astype(float_dtype, copy=False), source=channel_axis,
                        destination=-1)
    if convert2lab:
        if image.shape[-1] != 3:
            raise ValueError(
                f"convert2lab=True needs an RGB image (3 channels on channel_axis="
                f"{channel_axis}); got {image.shape[-1]} channel(s): pass convert2lab=False "
                "for grey or other multichannel images"
            )
        image = rgb2lab(image)
    if sigma > 0:  # sigma 0 is scikit-image's gaussian_filter copying the image: no scipy import
        from skimage.filters import gaussian

        image = gaussian(image, sigma=[sigma, sigma, 0], mode="reflect", channel_axis=-1)
    image = np.ascontiguousarray(image * ratio)
    if image.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"ratio={ratio!r} turned the image into {image.dtype}; pass a Python float"
        )
    if (not return_tree and isinstance(rng, numbers.Integral) and rng >= 0
            and image.shape[0] * image.shape[1] <= config.FIRST_CALL_NUMPY_PIXELS
            and _loading.kernels_loading() and np.isfinite(image).all()):
        # The kernels are still loading: scikit-image's own quickshift, label for label (its
        # private Cython core; another scikit-image's signature falls back to the kernel).
        try:
            from skimage.segmentation._quickshift_cy import _quickshift_cython

            return np.asarray(_quickshift_cython(image, kernel_size=kernel_size,
                                                 max_dist=max_dist, return_tree=False,
                                                 rng=int(rng)), dtype=np.intp)
        except (ImportError, TypeError):
            pass
    noise = _check_rng(rng).normal(scale=0.00001, size=image.shape[:2])
    labels, parent, dist_parent = _quickshift_cpu(
        image, kernel_size, max_dist, noise.astype(image.dtype, copy=False),
        exact=not np.isfinite(image).all(), threads=config.CPU_THREADS,
    )
    if return_tree:
        return labels, parent, dist_parent
    return labels
