"""Per-segment mean colours (lime's fudged image for ``hide_color=None``) in one compiled pass.

lime computes ``np.mean(image[segments == x][:, c])`` per segment and channel. For float32 images
numpy accumulates in float32 with its pairwise summation, so a plain float64 sum would differ from
lime's means in the last bits, and the fudged pixels (and every weight after them) with them. The
kernel groups each segment's pixels in pixel order (a counting sort) and sums them with a port of
numpy's ``pairwise_sum``, in float32 for float32 images and float64 otherwise, which reproduces
numpy's means bit for bit (integer sums are exact in any order).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _pairwise_sum(a, lo, n):
    """numpy's pairwise_sum (npy_math, loops_utils.h) over a[lo:lo + n], in a's dtype."""
    if n < 8:
        res = a[lo] - a[lo] if n > 0 else a[0] - a[0]
        for i in range(n):
            res += a[lo + i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
        r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
        i = 8
        end = n - (n % 8)
        while i < end:
            r0 += a[lo + i]
            r1 += a[lo + i + 1]
            r2 += a[lo + i + 2]
            r3 += a[lo + i + 3]
            r4 += a[lo + i + 4]
            r5 += a[lo + i + 5]
            r6 += a[lo + i + 6]
            r7 += a[lo + i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[lo + i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(a, lo, n2) + _pairwise_sum(a, lo + n2, n - n2)


@njit(cache=True, nogil=True)
def _segment_means_cpu(image, seg_flat, n_segments, scratch):
    """(n_segments, C) float64 means of a (P, C) image; ``scratch`` (P,) sets the sum dtype."""
    n_pixels, channels = image.shape
    counts = np.zeros(n_segments, np.int64)
    for p in range(n_pixels):
        counts[seg_flat[p]] += 1
    offsets = np.zeros(n_segments + 1, np.int64)
    for k in range(n_segments):
        offsets[k + 1] = offsets[k] + counts[k]
    cursor = np.empty(n_segments, np.int64)
    means = np.empty((n_segments, channels), np.float64)
    for c in range(channels):
        cursor[:] = offsets[:n_segments]
        for p in range(n_pixels):
            k = seg_flat[p]
            scratch[cursor[k]] = image[p, c]
            cursor[k] += 1
        for k in range(n_segments):
            # float64 division of a float32 sum rounds, once cast back, to the float32 quotient.
            means[k, c] = np.float64(_pairwise_sum(scratch, offsets[k], counts[k])) / counts[k]
    return means


def segment_means(image: np.ndarray, segments: np.ndarray, n_segments: int) -> np.ndarray:
    """(n_segments, C) float64 mean colour of every segment, equal to lime's per-segment np.mean.

    Args:
        image: (H, W, C) image, integer or float.
        segments: (H, W) labels 0..n_segments-1, every label present.
    """
    channels = image.shape[-1]
    if image.dtype == np.float16:  # numpy sums float16 in float32
        image = image.astype(np.float32)
    acc = np.float32 if image.dtype == np.float32 else np.float64
    flat = np.ascontiguousarray(image).reshape(-1, channels)
    return _segment_means_cpu(flat, np.ascontiguousarray(segments).reshape(-1), n_segments,
                              np.empty(flat.shape[0], acc))


def segment_means_numpy(image: np.ndarray, segments: np.ndarray, n_segments: int) -> np.ndarray:
    """``segment_means`` in NumPy, the same values: each segment's channel summed by numpy's
    own pairwise sum in the kernel's dtype (float32 for float16 and float32 images, else
    float64), then divided in float64. One pass over the image per segment: for the first
    explanation of a process, before the kernel is loaded."""
    channels = image.shape[-1]
    acc = np.float32 if image.dtype in (np.float16, np.float32) else np.float64
    pixels = np.asarray(image).reshape(-1, channels)
    flat = np.asarray(segments).reshape(-1)
    out = np.empty((n_segments, channels))
    for s in range(n_segments):
        values = pixels[flat == s]
        for c in range(channels):
            column = np.ascontiguousarray(values[:, c], dtype=acc)
            out[s, c] = np.float64(np.add.reduce(column)) / len(column)
    return out
