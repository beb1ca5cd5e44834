"""Perturbation kernels: perturbed images written straight from the segment mask.

A perturbed image takes, for every pixel, the original value when the pixel's segment is switched
on in the sample's 0/1 row and the fudged value when it is switched off. Segments are stored as
runs of consecutive pixels in row-major order (a 224x224 quickshift segmentation has a few thousand
runs for 50 000 pixels), so the kernel copies whole runs instead of testing every pixel.

The kernel only moves bytes, so it works on an unsigned-integer view of any image dtype with the
same item size: four specialisations cover uint8 to float64 (and float16, int16, ...).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_UINT_BY_ITEMSIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


@njit(cache=True, nogil=True)
def _segment_runs_cpu(seg_flat):
    """Run-length encoding of a flat segment array: (starts, ends, labels) of equal-label runs."""
    n = seg_flat.shape[0]
    count = 1
    for p in range(1, n):
        if seg_flat[p] != seg_flat[p - 1]:
            count += 1
    starts = np.empty(count, np.int64)
    ends = np.empty(count, np.int64)
    labels = np.empty(count, np.int64)
    r = 0
    starts[0] = 0
    labels[0] = seg_flat[0]
    for p in range(1, n):
        if seg_flat[p] != seg_flat[p - 1]:
            ends[r] = p
            r += 1
            starts[r] = p
            labels[r] = seg_flat[p]
    ends[r] = n
    return starts, ends, labels


@njit(cache=True, nogil=True, parallel=True)
def _perturb_cpu(image, fudged, starts, ends, labels, rows, out):
    """Write one chunk of perturbed images.

    Each image starts as a bulk copy of whichever source (original or fudged) most of its segments
    take; then the spans of consecutive runs that take the other source are copied over it. Bulk
    copies run at memory speed, and merging adjacent runs halves the number of small copies.

    Args:
        image: (P * C,) unsigned view of the original image, row-major.
        fudged: (P * C,) same view of the fudged image.
        starts, ends, labels: (R,) runs of pixels [start, end) belonging to segment ``label``.
        rows: (N, F) 0/1 rows of the chunk, any integer dtype.
        out: (N', P * C) with N' >= N; rows 0..N-1 are written completely.
    """
    n_runs = starts.shape[0]
    channels = image.shape[0] // ends[n_runs - 1]
    for s in prange(rows.shape[0]):
        row = rows[s]
        dst = out[s]
        n_on = 0
        for k in range(row.shape[0]):
            n_on += row[k] != 0
        base_on = 2 * n_on >= row.shape[0]
        if base_on:
            dst[:] = image
            other = fudged
        else:
            dst[:] = fudged
            other = image
        r = 0
        while r < n_runs:
            if (row[labels[r]] != 0) != base_on:
                a = starts[r] * channels
                r += 1
                while r < n_runs and (row[labels[r]] != 0) != base_on:
                    r += 1
                b = ends[r - 1] * channels
                dst[a:b] = other[a:b]
            else:
                r += 1


def as_bytes_view(array: np.ndarray) -> np.ndarray:
    """Flat unsigned-integer view with the item size of ``array`` (a copy only if not contiguous)."""
    array = np.ascontiguousarray(array)
    return array.reshape(-1).view(_UINT_BY_ITEMSIZE[array.dtype.itemsize])


class PerturbPlan:
    """What the perturbation kernel needs from one (image, fudged image, segments) triple.

    Built once per explanation; ``write(rows, out)`` then fills a chunk buffer.
    """

    def __init__(self, image: np.ndarray, fudged: np.ndarray, segments: np.ndarray):
        self.shape = image.shape
        self.dtype = image.dtype
        self.image = as_bytes_view(image)
        self.fudged = as_bytes_view(fudged)
        seg_flat = np.ascontiguousarray(segments).reshape(-1)
        self.starts, self.ends, self.labels = _segment_runs_cpu(seg_flat)

    def new_buffer(self, n_rows: int) -> np.ndarray:
        """A (n_rows, H, W, C) buffer of the image dtype."""
        return np.empty((n_rows,) + self.shape, self.dtype)

    def write(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Fill ``out[:len(rows)]`` with the perturbed images of ``rows``."""
        flat = out.reshape(out.shape[0], -1).view(self.image.dtype)
        _perturb_cpu(self.image, self.fudged, self.starts, self.ends, self.labels, rows, flat)
