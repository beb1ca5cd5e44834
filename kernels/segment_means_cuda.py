"""Per-segment mean colours on a CUDA device: the twin of ``segment_means._segment_means_cpu``.

The CPU twin reproduces numpy's means bit for bit by summing each segment's pixels, in pixel
order, with numpy's pairwise summation (float32 for float32 images, float64 otherwise). The CUDA
kernels do the same, so both give identical means for every dtype:

1. ``_segment_counts_cuda``: pixels per segment (one thread per pixel, atomic adds);
2. ``_segment_offsets_cuda``: their exclusive prefix sum (one thread; a few hundred segments);
3. ``_segment_order_cuda``: the pixels of each segment in pixel order (a stable counting sort:
   one block per segment, each thread owns a contiguous range of pixels, a block-wide prefix sum
   of the threads' counts places them);
4. ``_segment_sums_cuda``: one thread per (segment, channel) runs numpy's pairwise sum over its
   pixels (an explicit stack replaces the recursion) and divides in float64.

The kernels are compiled per accumulation dtype (``segment_sums_kernel_for``) and cached per
device. Inputs may be PyTorch, CuPy or numba CUDA arrays, taken without copies.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda, float32, float64, int32, int64

from .model_ready import THREADS_PER_BLOCK, as_cuda_array

_STACK = 64  # pairwise recursion depth bound: log2(pixels / 128) + 2 < 64 for any image


def _segment_counts_cuda(segments, counts):
    """counts[k] += 1 for every pixel of segment k (counts zeroed by the caller)."""
    p = cuda.grid(1)
    if p < segments.shape[0]:
        cuda.atomic.add(counts, segments[p], 1)


def _segment_offsets_cuda(counts, offsets):
    """offsets[k] = counts[0] + ... + counts[k - 1], for k in 0..n (one thread)."""
    if cuda.grid(1) == 0:
        total = 0
        for k in range(counts.shape[0]):
            offsets[k] = total
            total += counts[k]
        offsets[counts.shape[0]] = total


def _make_order_kernel(threads):
    def _segment_order_cuda(segments, offsets, order):
        """Block k writes the pixels of segment k, in increasing order, to order[offsets[k]:]."""
        k = cuda.blockIdx.x
        t = cuda.threadIdx.x
        n = segments.shape[0]
        per_thread = (n + threads - 1) // threads
        # (no builtin min: numba's CUDA target resolves it through a device dispatcher,
        # which compile_ptx cannot build without a GPU)
        lo = t * per_thread
        if lo > n:
            lo = n
        hi = lo + per_thread
        if hi > n:
            hi = n
        found = 0
        for p in range(lo, hi):
            if segments[p] == k:
                found += 1
        # Inclusive prefix sum of the threads' counts (Hillis-Steele, double-buffered).
        scan = cuda.shared.array((2, threads), int32)
        scan[0, t] = found
        cuda.syncthreads()
        src = 0
        step = 1
        while step < threads:
            value = scan[src, t]
            if t >= step:
                value += scan[src, t - step]
            scan[1 - src, t] = value
            src = 1 - src
            cuda.syncthreads()
            step *= 2
        at = offsets[k] + scan[src, t] - found
        for p in range(lo, hi):
            if segments[p] == k:
                order[at] = p
                at += 1

    return _segment_order_cuda


def _make_sums_kernel(acc):
    def _segment_sums_cuda(image, order, offsets, means):
        """means[k, c]: numpy's pairwise sum of segment k's channel c, divided in float64.

        The recursion ``sum(a[:n2]) + sum(a[n2:])`` (n2 = n // 2 rounded down to a multiple
        of 8) is walked with an explicit stack, left before right, so the additions happen in
        numpy's order; leaves of <= 128 values use numpy's 8 accumulators. (Written inline:
        numba's CUDA target compiles device-function calls through a dispatcher that needs a
        GPU, and the kernels must also compile to PTX without one.)
        """
        j = cuda.grid(1)
        n_segments, channels = means.shape
        if j >= n_segments * channels:
            return
        k = j // channels
        c = j - k * channels
        start = offsets[k]
        st_lo = cuda.local.array(_STACK, int64)
        st_n = cuda.local.array(_STACK, int64)
        st_state = cuda.local.array(_STACK, int32)
        values = cuda.local.array(_STACK, acc)
        st_lo[0] = start
        st_n[0] = offsets[k + 1] - start
        st_state[0] = 0
        sp = 1
        vp = 0
        while sp > 0:
            t = sp - 1
            n = st_n[t]
            lo = st_lo[t]
            if n < 8:
                res = acc(0)
                for i in range(n):
                    res += acc(image[order[lo + i], c])
                values[vp] = res
                vp += 1
                sp -= 1
            elif n <= 128:
                r0 = acc(image[order[lo], c])
                r1 = acc(image[order[lo + 1], c])
                r2 = acc(image[order[lo + 2], c])
                r3 = acc(image[order[lo + 3], c])
                r4 = acc(image[order[lo + 4], c])
                r5 = acc(image[order[lo + 5], c])
                r6 = acc(image[order[lo + 6], c])
                r7 = acc(image[order[lo + 7], c])
                i = 8
                end = n - (n % 8)
                while i < end:
                    r0 += acc(image[order[lo + i], c])
                    r1 += acc(image[order[lo + i + 1], c])
                    r2 += acc(image[order[lo + i + 2], c])
                    r3 += acc(image[order[lo + i + 3], c])
                    r4 += acc(image[order[lo + i + 4], c])
                    r5 += acc(image[order[lo + i + 5], c])
                    r6 += acc(image[order[lo + i + 6], c])
                    r7 += acc(image[order[lo + i + 7], c])
                    i += 8
                res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
                while i < n:
                    res += acc(image[order[lo + i], c])
                    i += 1
                values[vp] = res
                vp += 1
                sp -= 1
            else:
                half = n // 2
                half -= half % 8
                state = st_state[t]
                if state == 0:
                    st_state[t] = 1
                    st_lo[sp] = lo
                    st_n[sp] = half
                    st_state[sp] = 0
                    sp += 1
                elif state == 1:
                    st_state[t] = 2
                    st_lo[sp] = lo + half
                    st_n[sp] = n - half
                    st_state[sp] = 0
                    sp += 1
                else:
                    values[vp - 2] = values[vp - 2] + values[vp - 1]
                    vp -= 1
                    sp -= 1
        means[k, c] = float64(values[0]) / (offsets[k + 1] - start)

    return _segment_sums_cuda


def accumulator_for(image_dtype) -> type:
    """The sum's numba type: numpy sums float32 (and float16) in float32, the rest in float64."""
    return float32 if np.dtype(image_dtype) in (np.float32, np.float16) else float64


@functools.cache
def segment_sums_kernel_for(device_id: int, accumulator: str):
    """``_segment_sums_cuda`` for one device and accumulation dtype ('float32' or 'float64')."""
    return cuda.jit(_make_sums_kernel(float32 if accumulator == "float32" else float64))


@functools.cache
def segment_order_kernel_for(device_id: int, threads: int):
    """``_segment_order_cuda`` for one device and block size."""
    return cuda.jit(_make_order_kernel(threads))


@functools.cache
def _plain_kernel_for(device_id: int, name: str):
    return cuda.jit({"counts": _segment_counts_cuda, "offsets": _segment_offsets_cuda}[name])


def segment_means_cuda(image, segments, n_segments: int, stream=0, device_id: int = 0, *,
                       threads_per_block: int = THREADS_PER_BLOCK):
    """(n_segments, C) float64 per-segment means on the device, equal to the CPU twin's.

    Args:
        image: (H, W, C) CUDA (or NumPy) array, integer or float.
        segments: (H, W) integer labels 0..n_segments-1, every label present.
        n_segments: number of segments.
        stream: numba stream to launch on.
        threads_per_block: the kernels' block size.

    Returns:
        A numba device array (n_segments, C) float64.
    """
    shape, seg_shape = tuple(image.shape), tuple(segments.shape)
    if len(shape) != 3 or seg_shape != shape[:2]:
        raise ValueError(
            f"image must be (H, W, C) and segments (H, W); got {shape} and {seg_shape}"
        )
    if str(image.dtype) in ("float16", "torch.float16"):
        raise TypeError("float16 images: convert to float32 first (numpy sums them in float32)")
    image = as_cuda_array(image)
    segments = as_cuda_array(segments)
    n_pixels, channels = shape[0] * shape[1], shape[2]
    flat = image.reshape(n_pixels, channels)
    seg = segments.reshape(n_pixels)
    threads = threads_per_block
    counts = cuda.to_device(np.zeros(n_segments, np.int32), stream=stream)
    offsets = cuda.device_array(n_segments + 1, np.int32, stream=stream)
    order = cuda.device_array(n_pixels, np.int32, stream=stream)
    means = cuda.device_array((n_segments, channels), np.float64, stream=stream)
    blocks = (n_pixels + threads - 1) // threads
    _plain_kernel_for(device_id, "counts")[blocks, threads, stream](seg, counts)
    _plain_kernel_for(device_id, "offsets")[1, 1, stream](counts, offsets)
    segment_order_kernel_for(device_id, threads)[n_segments, threads, stream](seg, offsets, order)
    acc = str(accumulator_for(image.dtype))
    jobs = n_segments * channels
    segment_sums_kernel_for(device_id, acc)[(jobs + threads - 1) // threads, threads, stream](
        flat, order, offsets, means)
    return means

