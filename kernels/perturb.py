"""Perturbation kernels: perturbed images written straight from the segment mask.

A perturbed image takes, for every pixel, the original value when the pixel's segment is switched
on in the sample's 0/1 row and the fudged value when it is switched off. Segments are stored as
runs of consecutive pixels in row-major order (a 224x224 quickshift segmentation has a few thousand
runs for 50 000 pixels), so no pixel is tested on its own: ``RunCopy`` copies whole runs, and is
the one run-copy kernel of the package (``PerturbPlan`` here and ``model_ready.RunPlan`` use it).

How a sample is copied (``_copy_runs_cpu``): the runs are cut once, when the plan is built, into
fixed blocks of ``_BLOCK`` bytes, each tagged with its run's segment; a block may run past the end
of its run, into the runs after it, which are copied after it and overwrite those bytes. Per
sample, a table gives each segment's source address (original or fudged, chosen by arithmetic on
the 0/1 value, not by a branch), and every block is one fixed-size copy from its segment's
source: no data-dependent branch and no variable-length copy, and a byte is written twice only
where a run's last block runs over into the next run. The blocks whose copy would cross the end
of the sample copy exactly up to it instead, so nothing outside the sample is touched. The
sample's memory is prefetched for writing ahead of the copies (``_prefetch_write``), so that
stores into lines not in the cache do not wait for memory one line at a time.

The kernel only moves bytes, so it works on a byte view of any image dtype.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .threads import TASK_BYTES, share_rows, task_rows

# Bytes of one block copy: a cache line's worth (one 64-byte vector register, or two 32-byte ones).
_BLOCK = 64
# How far ahead of the block being copied its sample's memory is prefetched for writing: far
# enough for a line's ownership to arrive from memory before the block that stores into it.
_PREFETCH = 8192


@njit(cache=True, nogil=True)
def _segment_runs_cpu(seg_flat):
    """Run-length encoding of a flat segment array: (starts, ends, labels) of equal-label runs."""
    n = seg_flat.shape[0]
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
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
    """``memcpy(dst, src, nbytes)`` on raw addresses: one llvm.memcpy, no array views."""
    sig = types.void(types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        dst, src, count = args
        byte_ptr = ir.IntType(8).as_pointer()
        cgutils.raw_memcpy(builder, builder.inttoptr(dst, byte_ptr),
                           builder.inttoptr(src, byte_ptr), count, 1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _copy_block(typingctx, dst_addr, src_addr):
    """Copy ``_BLOCK`` bytes between raw addresses: a constant-size llvm.memcpy, which LLVM
    turns into a few vector loads and stores (no call)."""
    sig = types.void(types.intp, types.intp)

    def codegen(context, builder, signature, args):
        dst, src = args
        byte_ptr = ir.IntType(8).as_pointer()
        cgutils.raw_memcpy(builder, builder.inttoptr(dst, byte_ptr),
                           builder.inttoptr(src, byte_ptr),
                           context.get_constant(types.intp, _BLOCK), 1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _prefetch_write(typingctx, addr):
    """``llvm.prefetch`` for writing: a hint, never a fault (any address may be given)."""
    sig = types.void(types.intp)

    def codegen(context, builder, signature, args):
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [byte_ptr], fnty)
        # write, keep in every cache level, data cache
        builder.call(fn, [builder.inttoptr(args[0], byte_ptr), i32(1), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def _run_blocks_cpu(starts, ends, labels, unit_bytes, planes, plane_bytes, shift):
    """The blocks of one image's runs, in every plane, in increasing address order.

    Block ``j`` is ``blocks[j] = offset << shift | label``: ``_BLOCK`` bytes from ``offset`` of
    the sample take segment ``label``'s source. Returns (blocks, n_fast): the first ``n_fast``
    blocks end within the sample; the others are cut at its end.
    """
    n_runs = starts.shape[0]
    count = 0
    for r in range(n_runs):
        count += ((ends[r] - starts[r]) * unit_bytes + _BLOCK - 1) // _BLOCK
    blocks = np.empty(count * planes, np.int64)
    sample_bytes = planes * plane_bytes
    n_fast = 0
    j = 0
    for plane in range(planes):
        for r in range(n_runs):
            o = plane * plane_bytes + starts[r] * unit_bytes
            end = plane * plane_bytes + ends[r] * unit_bytes
            while o < end:
                blocks[j] = (o << shift) | labels[r]
                j += 1
                if o + _BLOCK <= sample_bytes:
                    n_fast = j
                o += _BLOCK
    return blocks, n_fast


@njit(cache=True, nogil=True)
def _copy_runs_cpu(on, off, blocks, first, n_fast, shift, rows, inst, row0, out, lo, hi):
    """Write samples ``row0 + lo .. row0 + hi - 1`` into ``out[lo .. hi - 1]`` (serial; releases
    the GIL).

    Args:
        on, off: (G, S) uint8, contiguous: the bytes of each image's two sources.
        blocks: every image's blocks (``_run_blocks_cpu``), image ``g``'s at
            ``first[g] .. first[g + 1] - 1``, the first ``n_fast[g]`` of them whole.
        shift: bits of the label in a block.
        rows: (N, F) 0/1 rows, any integer dtype, F above every label.
        inst: (N,) image of each row, or empty: image 0 for every row.
        out: (>= hi, S) uint8, contiguous.
    """
    sample_bytes = on.shape[1]
    label_mask = (np.int64(1) << shift) - 1
    on_addr = np.int64(on.ctypes.data)
    off_addr = np.int64(off.ctypes.data)
    out_addr = np.int64(out.ctypes.data)
    row_stride = np.int64(out.strides[0])
    table = np.empty(rows.shape[1], np.int64)
    for i in range(lo, hi):
        s = row0 + i
        g = np.int64(inst[s]) if inst.shape[0] > 0 else np.int64(0)
        row = rows[s]
        src_off = off_addr + g * sample_bytes
        to_on = on_addr + g * sample_bytes - src_off
        for f in range(row.shape[0]):
            table[f] = src_off + np.int64(row[f] != 0) * to_on
        dst = out_addr + i * row_stride
        j0 = first[g]
        j_fast = j0 + n_fast[g]
        for j in range(j0, j_fast):
            packed = blocks[j]
            o = packed >> shift
            _prefetch_write(dst + o + _PREFETCH)
            _copy_block(dst + o, table[packed & label_mask] + o)
        for j in range(j_fast, first[g + 1]):
            packed = blocks[j]
            o = packed >> shift
            _memcpy(dst + o, table[packed & label_mask] + o, sample_bytes - o)


def segment_runs(segments: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, ends, labels) int64 of the runs of equal labels of ``segments``, flattened in
    row-major order: pixels ``starts[r] .. ends[r] - 1`` belong to segment ``labels[r]``."""
    return _segment_runs_cpu(np.ascontiguousarray(segments).reshape(-1))


class RunCopy:
    """Samples assembled from two sources per image by copying runs of pixels.

    For sample ``s`` of image ``g = inst[s]``, pixel ``p`` (its ``unit_bytes`` in each of
    ``planes`` planes) is copied from ``on[g]`` where ``rows[s, segments[g, p]] != 0`` and from
    ``off[g]`` elsewhere. A sample is ``planes * P * unit_bytes`` bytes, plane after plane.

    Args:
        segments: (G, ...) integer labels >= 0 of G images of P pixels each (flattened per image).
        unit_bytes: bytes of one pixel in one plane (an HWC image: C * itemsize, one plane).
        planes: planes per sample (an NCHW layout: C planes of P values).
        task_bytes, threads: samples are shared between up to ``threads`` threads (0: Numba's
            thread count) in blocks of about ``task_bytes``.
    """

    def __init__(self, segments: np.ndarray, unit_bytes: int, planes: int = 1, *,
                 task_bytes: int = TASK_BYTES, threads: int = 0):
        segments = np.asarray(segments)
        g = segments.shape[0]
        flat = segments.reshape(g, -1)
        self.n_images = g
        self.n_pixels = flat.shape[1]
        self.sample_bytes = planes * self.n_pixels * unit_bytes
        self.n_labels = int(flat.max()) + 1 if flat.size else 0
        if flat.size and flat.min() < 0:
            raise ValueError("segment labels must be >= 0")
        self.shift = max(1, self.n_labels.bit_length())
        if (self.sample_bytes << self.shift) >= 2**62:
            raise ValueError("image too large for the run-copy kernel")
        parts, n_fast = [], np.empty(g, np.int64)
        for i in range(g):
            starts, ends, labels = segment_runs(flat[i])
            blocks, n_fast[i] = _run_blocks_cpu(starts, ends, labels, unit_bytes, planes,
                                                self.n_pixels * unit_bytes, self.shift)
            parts.append(blocks)
        self.blocks = np.concatenate(parts) if parts else np.empty(0, np.int64)
        self.first = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        self.n_fast = n_fast
        self.task_bytes = task_bytes
        self.threads = threads

    def write(self, on: np.ndarray, off: np.ndarray, rows: np.ndarray, out: np.ndarray,
              inst: np.ndarray | None = None, row0: int = 0, n_rows: int | None = None) -> None:
        """Samples ``row0 .. row0 + n_rows - 1`` (all rows by default) into ``out[:n_rows]``.

        ``on``, ``off``: the (G, ...) sources, contiguous, ``sample_bytes`` per image; ``out``:
        C-contiguous, ``sample_bytes`` per row; ``inst``: the image of every row (image 0 for
        all when omitted).
        """
        n_rows = rows.shape[0] - row0 if n_rows is None else n_rows
        on_b, off_b = (self._image_bytes(a) for a in (on, off))
        if (out.ndim == 0 or not out.flags.c_contiguous or out.shape[0] < n_rows
                or out.itemsize * int(np.prod(out.shape[1:])) != self.sample_bytes):
            raise ValueError(f"out must be a C-contiguous buffer of at least {n_rows} rows of "
                             f"{self.sample_bytes} bytes")
        if rows.ndim != 2 or rows.shape[1] < self.n_labels or not 0 <= row0 <= row0 + n_rows <= (
                rows.shape[0]):
            raise ValueError(f"rows must be (N, >= {self.n_labels}) with the rows "
                             f"{row0}..{row0 + n_rows - 1}")
        if inst is None:
            if self.n_images != 1:
                raise ValueError("inst is needed for several images")
            inst = np.empty(0, np.int32)
        else:
            picked = inst[row0:row0 + n_rows]
            if picked.size and (picked.min() < 0 or picked.max() >= self.n_images):
                raise ValueError(f"inst must index the {self.n_images} images")
        if n_rows <= 0 or self.sample_bytes == 0:
            return
        flat = out.reshape(out.shape[0], -1).view(np.uint8)
        args = (on_b, off_b, self.blocks, self.first, self.n_fast, self.shift, rows, inst, row0,
                flat)
        share_rows(lambda lo, hi: _copy_runs_cpu(*args, lo, hi), n_rows,
                   task_rows(self.sample_bytes, self.task_bytes), self.threads)

    def _image_bytes(self, array: np.ndarray) -> np.ndarray:
        if not array.flags.c_contiguous or array.nbytes != self.n_images * self.sample_bytes:
            raise ValueError(f"the sources must be C-contiguous, {self.n_images} images of "
                             f"{self.sample_bytes} bytes")
        return array.reshape(self.n_images, -1).view(np.uint8)


def as_bytes_view(array: np.ndarray) -> np.ndarray:
    """Flat uint8 view of ``array``'s bytes (a copy only if not contiguous)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


class PerturbPlan:
    """What the perturbation kernel needs from one (image, fudged image, segments) triple.

    Built once per explanation; ``write(rows, out)`` then fills a chunk buffer. ``task_bytes``
    and ``threads`` share the samples between threads (``RunCopy``).
    """

    def __init__(self, image: np.ndarray, fudged: np.ndarray, segments: np.ndarray, *,
                 task_bytes: int = TASK_BYTES, threads: int = 0):
        self.shape = image.shape
        self.dtype = image.dtype
        self.image = as_bytes_view(image)
        self.fudged = as_bytes_view(fudged)
        self.segments = np.asarray(segments).reshape(-1)
        self._runs = None
        self._task = (task_bytes, threads)

    @property
    def runs(self) -> RunCopy:
        """The run-copy plan, cut at the first kernel write (``write_numpy`` needs none)."""
        if self._runs is None:
            pixels = self.segments.size
            unit = self.image.nbytes // pixels if pixels else 0
            task_bytes, threads = self._task
            self._runs = RunCopy(self.segments.reshape(1, -1), unit, task_bytes=task_bytes,
                                 threads=threads)
        return self._runs

    def new_buffer(self, n_rows: int) -> np.ndarray:
        """A (n_rows, H, W, C) buffer of the image dtype."""
        return np.empty((n_rows,) + self.shape, self.dtype)

    def write(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Fill ``out[:len(rows)]`` with the perturbed images of ``rows``."""
        if len(rows) > out.shape[0] or not out.flags.c_contiguous:
            raise ValueError("out must be a C-contiguous buffer with a row for every sample")
        self.runs.write(self.image, self.fudged, rows, out)

    def write_numpy(self, rows: np.ndarray, out: np.ndarray) -> None:
        """``write`` in NumPy, byte for byte the same: for the first explanation of a process,
        before the kernels are loaded (a pass over every sample's pixels per call, so slower
        than the kernel on large images)."""
        n = len(rows)
        if n > out.shape[0] or not out.flags.c_contiguous:
            raise ValueError("out must be a C-contiguous buffer with a row for every sample")
        pixels = self.segments.size
        if n == 0 or pixels == 0:
            return
        shown = np.asarray(rows)[:, self.segments].astype(bool)  # (n, P): the pixel's segment on
        dst = out[:n].reshape(n, pixels, -1).view(np.uint8)
        dst[...] = self.fudged.reshape(pixels, -1)
        np.copyto(dst, self.image.reshape(pixels, -1), where=shown[..., None])
