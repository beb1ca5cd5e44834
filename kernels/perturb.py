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
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .threads import TASK_BYTES, share_rows, task_rows

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


@intrinsic
def _memcpy(typingctx, dst_addr, src_addr, nbytes):
    """``memcpy(dst, src, nbytes)`` on raw addresses: one llvm.memcpy, no array views.

    Copying a run through a slice assignment costs numba two array views and a generic loop,
    which for runs of ~60 bytes is most of the kernel's time.
    """
    sig = types.void(types.uintp, types.uintp, types.intp)

    def codegen(context, builder, signature, args):
        dst, src, count = args
        byte_ptr = ir.IntType(8).as_pointer()
        cgutils.raw_memcpy(builder, builder.inttoptr(dst, byte_ptr),
                           builder.inttoptr(src, byte_ptr), count, 1)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def _perturb_cpu(image, fudged, starts, ends, labels, rows, out, lo, hi):
    """Write perturbed images ``lo..hi-1`` of a chunk (serial; releases the GIL).

    Each image starts as a bulk copy of whichever source (original or fudged) most of its segments
    take; then the spans of consecutive runs that take the other source are copied over it. The
    spans are found without data-dependent branches (the 0/1 rows are random, so a branch per
    run mispredicts half the time): every run writes its start and end into the span lists and
    only advances the list where a span begins or ends.

    Args:
        image: (P * C,) unsigned view of the original image, row-major, contiguous.
        fudged: (P * C,) same view of the fudged image.
        starts, ends, labels: (R,) runs of pixels [start, end) belonging to segment ``label``.
        rows: (N, F) 0/1 rows of the chunk, any integer dtype.
        out: (N', P * C) contiguous, N' >= N; rows lo..hi-1 are written completely.
    """
    n_runs = starts.shape[0]
    pixel_bytes = image.shape[0] // ends[n_runs - 1] * image.itemsize
    image_bytes = image.shape[0] * image.itemsize
    image_addr = image.ctypes.data
    fudged_addr = fudged.ctypes.data
    out_addr = out.ctypes.data
    row_stride = out.strides[0]
    span_lo = np.empty(n_runs + 1, np.int64)
    span_hi = np.empty(n_runs + 1, np.int64)
    for s in range(lo, hi):
        row = rows[s]
        dst = out_addr + s * row_stride
        n_on = 0
        for k in range(row.shape[0]):
            n_on += row[k] != 0
        base_on = np.int64(2 * n_on >= row.shape[0])
        if base_on:
            _memcpy(dst, image_addr, image_bytes)
            other = fudged_addr
        else:
            _memcpy(dst, fudged_addr, image_bytes)
            other = image_addr
        n_spans = 0
        n_ends = 0
        prev = np.int64(0)
        for r in range(n_runs):
            flip = np.int64(row[labels[r]] != 0) ^ base_on  # 1: this run takes `other`
            span_lo[n_spans] = starts[r]
            n_spans += flip & (1 - prev)
            span_hi[n_ends] = starts[r]  # a span that ended at run r-1 ends where r starts
            n_ends += prev & (1 - flip)
            prev = flip
        span_hi[n_ends] = ends[n_runs - 1]
        for i in range(n_spans):
            a = span_lo[i] * pixel_bytes
            _memcpy(dst + a, other + a, span_hi[i] * pixel_bytes - a)


def as_bytes_view(array: np.ndarray) -> np.ndarray:
    """Flat unsigned-integer view of ``array``'s bytes (a copy only if not contiguous)."""
    array = np.ascontiguousarray(array)
    return array.reshape(-1).view(_UINT_BY_ITEMSIZE[array.dtype.itemsize])


class PerturbPlan:
    """What the perturbation kernel needs from one (image, fudged image, segments) triple.

    Built once per explanation; ``write(rows, out)`` then fills a chunk buffer. The samples are
    shared between up to ``threads`` threads (0: Numba's thread count) in blocks of about
    ``task_bytes``.
    """

    def __init__(self, image: np.ndarray, fudged: np.ndarray, segments: np.ndarray, *,
                 task_bytes: int = TASK_BYTES, threads: int = 0):
        self.shape = image.shape
        self.dtype = image.dtype
        self.image = as_bytes_view(image)
        self.fudged = as_bytes_view(fudged)
        seg_flat = np.ascontiguousarray(segments).reshape(-1)
        self.starts, self.ends, self.labels = _segment_runs_cpu(seg_flat)
        self.task_bytes = task_bytes
        self.threads = threads

    def new_buffer(self, n_rows: int) -> np.ndarray:
        """A (n_rows, H, W, C) buffer of the image dtype."""
        return np.empty((n_rows,) + self.shape, self.dtype)

    def write(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Fill ``out[:len(rows)]`` with the perturbed images of ``rows``."""
        if len(rows) > out.shape[0] or not out.flags.c_contiguous:
            raise ValueError("out must be a C-contiguous buffer with a row for every sample")
        flat = out.reshape(out.shape[0], -1).view(self.image.dtype)
        args = (self.image, self.fudged, self.starts, self.ends, self.labels, rows, flat)
        share_rows(lambda lo, hi: _perturb_cpu(*args, lo, hi), len(rows),
                   task_rows(self.image.nbytes, self.task_bytes), self.threads)
