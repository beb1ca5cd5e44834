"""Model-ready batches: perturbed images written scaled, normalised and laid out for the model.

For sample ``s`` (0/1 row ``rows[s]`` of image ``inst[s]``), pixel ``p`` and channel ``c``::

    src = image if rows[s, segments[p]] else fudged
    out[s, c, p] (NCHW) or out[s, p, c] (channels_last) = float32(src[p, c]) * k[c] + b[c]

with ``k = scale / std`` and ``b = -mean / std`` rounded to float32, and the product rounded
before the sum (no fused multiply-add), so every backend writes the same bits. The result is
stored in the output's dtype (float32, or float16 on CUDA).

- ``_model_ready_cpu``: the conversion on the CPU (scale, normalise, lay out), image by image
  (serial and GIL-free; ``threads.share_rows`` spreads images over cores); it also writes the
  ``TorchClassifier``'s NumPy batches.
- ``RunPlan``: the CPU explainer's writer. The two model-ready source images (original and
  fudged) are converted once per image; every sample is then copied from them by segment runs
  with the package's one run-copy kernel (``perturb.RunCopy``). The conversion is per value, so
  converting then selecting writes the same bits as selecting then converting.
- ``_model_ready_cuda``: the fused CUDA kernel, selection and conversion in one pass, one thread
  per (pixel, sample); ``launch_model_ready_cpu`` is its CPU twin, with the same arguments.

The tunables (task size and threads on the CPU, block and grid sizes on CUDA) are arguments;
``limefast`` passes its ``limefast.config`` values.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda, float32, njit
from numba.core import config as numba_config

from .perturb import RunCopy
from .threads import TASK_BYTES, share_rows, task_rows

# CUDA launch defaults: threads per block, and the most blocks on the grid's y axis (samples).
THREADS_PER_BLOCK = 256
MAX_GRID_Y = 65535

# -- CPU ------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _model_ready_cpu(images, k, b, out, n_pixels, channels_last, lo, hi):
    """Write images ``lo .. hi - 1`` model-ready into ``out[lo .. hi - 1]``.

    Serial and GIL-free: the host function shares the images between threads.

    Args:
        images: (N, P * C) row-major HWC images, any numeric dtype.
        k, b: (C,) float32 scale and offset per channel.
        out: (>= hi, C * P) float32, flat NCHW or NHWC.
        n_pixels: P.
        channels_last: NHWC if true, else NCHW.
    """
    channels = k.shape[0]
    for i in range(lo, hi):
        src = images[i]
        dst = out[i]
        for p in range(n_pixels):
            for c in range(channels):
                value = np.float32(src[p * channels + c]) * k[c] + b[c]
                if channels_last:
                    dst[p * channels + c] = value
                else:
                    dst[c * n_pixels + p] = value


def normalise_coefficients(scale: float, mean, std) -> tuple[np.ndarray, np.ndarray]:
    """(k, b) float32 with ``x * k + b == (x * scale - mean) / std`` up to rounding."""
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    return (np.ascontiguousarray(scale / std, dtype=np.float32),
            np.ascontiguousarray(-mean / std, dtype=np.float32))


def kernel_input(images: np.ndarray) -> np.ndarray:
    """Images as the kernels take them: contiguous, float16 widened to float32 (exactly)."""
    images = np.ascontiguousarray(images)
    return images.astype(np.float32) if images.dtype == np.float16 else images


def model_ready_cpu(batch: np.ndarray, k: np.ndarray, b: np.ndarray, out: np.ndarray,
                    channels_last: bool, *, task_bytes: int = TASK_BYTES,
                    threads: int = 0) -> None:
    """Scale, normalise and lay out a (N, H, W, C) batch into ``out`` (>= N, C * H * W) float32.

    The images are shared between up to ``threads`` threads (0: Numba's thread count) in blocks
    of about ``task_bytes`` of output.
    """
    n = batch.shape[0]
    flat = kernel_input(batch).reshape(n, -1)
    n_pixels = batch.shape[1] * batch.shape[2]
    share_rows(lambda lo, hi: _model_ready_cpu(flat, k, b, out, n_pixels, channels_last, lo, hi),
               n, task_rows(out.shape[1] * out.itemsize, task_bytes), threads)


def launch_model_ready_cpu(images, fudged, segments, rows, inst, row0, n_rows, k, b, out,
                           channels_last, *, task_bytes: int = TASK_BYTES,
                           threads: int = 0) -> None:
    """The CPU twin of ``launch_model_ready_cuda``, with its arguments: samples
    ``row0 .. row0 + n_rows - 1`` into ``out[:n_rows]``, by ``RunPlan``.

    Args:
        images, fudged: (G, P * C) original and fudged images, row-major HWC.
        segments: (G, P) integer labels 0..F-1, or (1, P) shared by all images.
        rows, inst: (N, F' >= F) 0/1 rows and the image of each, row0 and n_rows: the samples.
        k, b, out, channels_last: as ``model_ready_cpu``.
    """
    g = images.shape[0]
    n_pixels = segments.shape[1]
    channels = images.shape[1] // max(1, n_pixels)
    shape = (g, n_pixels, 1, channels)
    segments = np.broadcast_to(segments, (g, n_pixels))
    plan = RunPlan(np.reshape(images, shape), np.reshape(fudged, shape), segments, k, b,
                   channels_last, task_bytes=task_bytes, threads=threads)
    plan.write(rows, inst, row0, n_rows, out)


class RunPlan:
    """The CPU explainer's model-ready writer for a group of images of one shape.

    Args:
        images, fudged: (G, H, W, C) originals and fudged images.
        segments: (G, H, W) integer labels 0..F_g-1.
        k, b: (C,) float32 coefficients.
        channels_last: layout of the written samples.
        planes: optional (2, >= G, C * H * W) float32 scratch to reuse.
        task_bytes, threads: how the work is shared between threads (``RunCopy``).
    """

    def __init__(self, images, fudged, segments, k, b, channels_last, planes=None, *,
                 task_bytes: int = TASK_BYTES, threads: int = 0):
        g, h, w, c = images.shape
        length = h * w * c
        if planes is None or planes.shape[1] < g or planes.shape[2] != length:
            planes = np.empty((2, g, length), np.float32)
        self.planes = planes  # the scratch, for the next plan of this shape to reuse
        self.on, self.off = planes[0, :g], planes[1, :g]
        # The two source images of every sample, model-ready.
        model_ready_cpu(images, k, b, self.on, channels_last, task_bytes=task_bytes,
                        threads=threads)
        model_ready_cpu(fudged, k, b, self.off, channels_last, task_bytes=task_bytes,
                        threads=threads)
        value_bytes = self.on.itemsize
        # NHWC: one plane, C values per pixel; NCHW: C planes of one value per pixel.
        unit, n_planes = (c * value_bytes, 1) if channels_last else (value_bytes, c)
        self.runs = RunCopy(np.reshape(segments, (g, h * w)), unit, n_planes,
                            task_bytes=task_bytes, threads=threads)

    def write(self, rows: np.ndarray, inst: np.ndarray, row0: int, n_rows: int,
              out: np.ndarray) -> None:
        """Samples ``row0 .. row0 + n_rows - 1`` into ``out[:n_rows]`` (flat, float32)."""
        if not out.flags.c_contiguous or out.shape[0] < n_rows or out.shape[1] != self.on.shape[1]:
            raise ValueError("out must be a C-contiguous (>= n_rows, C * H * W) buffer")
        if out.dtype != self.on.dtype:
            raise ValueError(f"out must be {self.on.dtype}; got {out.dtype}")
        self.runs.write(self.on, self.off, rows, out, inst, row0, n_rows)


# -- CUDA -----------------------------------------------------------------------------------

if numba_config.ENABLE_CUDASIM:
    def _mul_rn(a, b):  # the simulator computes in NumPy float32: already rounded
        return a * b
else:
    from numba.cuda import libdevice

    _mul_rn = libdevice.fmul_rn  # a rounded product, never contracted into an FMA


def _model_ready_cuda(images, fudged, segments, rows, inst, row0, n_rows, k, b, out,
                      channels_last):
    """Samples ``row0 .. row0 + n_rows - 1`` model-ready into ``out[:n_rows]`` (selection and
    conversion fused): thread (x, y) writes pixel x of samples y, y + gridDim.y, ...

    The arguments are ``launch_model_ready_cpu``'s. ``out`` may be float32 or float16 (rounded
    to nearest from the float32 value).
    """
    p = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    n_pixels = segments.shape[1]
    if p >= n_pixels:
        return
    channels = k.shape[0]
    for i in range(cuda.blockIdx.y, n_rows, cuda.gridDim.y):
        s = row0 + i
        g = inst[s]
        on = rows[s, segments[g if segments.shape[0] > 1 else 0, p]] != 0
        for c in range(channels):
            if on:
                v = images[g, p * channels + c]
            else:
                v = fudged[g, p * channels + c]
            value = _mul_rn(float32(v), k[c]) + b[c]
            if channels_last:
                out[i, p * channels + c] = value
            else:
                out[i, c * n_pixels + p] = value


def model_ready_signature(image_dtype, out_dtype, segment_dtype=np.int32, row_dtype=np.uint8):
    """The numba signature ``_model_ready_cuda`` is compiled for."""
    from numba import from_dtype, types

    def arr(dtype, ndim):
        return types.Array(from_dtype(np.dtype(dtype)), ndim, "C")

    return types.void(arr(image_dtype, 2), arr(image_dtype, 2), arr(segment_dtype, 2),
                      arr(row_dtype, 2), arr(np.int32, 1), types.int64, types.int64,
                      arr(np.float32, 1), arr(np.float32, 1), arr(out_dtype, 2), types.boolean)


@functools.cache
def model_ready_kernel_for(device_id: int, image_dtype: str, out_dtype: str):
    """``_model_ready_cuda`` compiled for one device, image dtype and output dtype (cached)."""
    return cuda.jit(model_ready_signature(image_dtype, out_dtype))(_model_ready_cuda)


def launch_model_ready_cuda(images, fudged, segments, rows, inst, row0, n_rows, k, b, out,
                            channels_last, stream=0, device_id=0, *,
                            threads_per_block: int = THREADS_PER_BLOCK,
                            max_grid_y: int = MAX_GRID_Y):
    """Launch ``_model_ready_cuda`` on ``stream``; arrays are numba device arrays (or NumPy in
    the simulator). Blocks of ``threads_per_block`` threads, at most ``max_grid_y`` blocks on
    the samples' axis."""
    if n_rows <= 0:
        return
    kernel = model_ready_kernel_for(device_id, str(np.dtype(images.dtype)),
                                    str(np.dtype(out.dtype)))
    threads = threads_per_block
    n_pixels = segments.shape[1]
    grid = ((n_pixels + threads - 1) // threads, min(n_rows, max_grid_y))
    kernel[grid, threads, stream](images, fudged, segments, rows, inst, row0, n_rows, k, b, out,
                                  channels_last)


def as_cuda_array(array, sync: bool = False):
    """A numba device view of a CUDA array, without a copy.

    Takes anything with ``__cuda_array_interface__`` (PyTorch, CuPy, numba) or DLPack
    (``__dlpack__``); NumPy arrays are copied to the device (in the simulator too).
    """
    if isinstance(array, np.ndarray):
        return cuda.to_device(np.ascontiguousarray(array))
    if hasattr(array, "__cuda_array_interface__"):
        return cuda.as_cuda_array(array, sync=sync)
    if hasattr(array, "__dlpack__"):
        kind = array.__dlpack_device__()[0] if hasattr(array, "__dlpack_device__") else None
        if kind not in (2, 13):  # kDLCUDA, kDLCUDAManaged
            raise TypeError(f"expected an array on a CUDA device; got a {type(array).__name__} "
                            f"on DLPack device type {kind} (move it with .cuda() / cupy.asarray)")
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - DLPack without torch
            raise TypeError(
                f"a DLPack array of type {type(array).__name__} needs torch to be read without "
                "a copy (pip install 'limefast[torch]'), or pass a CuPy/numba array"
            ) from exc
        return cuda.as_cuda_array(torch.from_dlpack(array), sync=sync)
    raise TypeError(
        f"expected a CUDA array (__cuda_array_interface__ or DLPack); got {type(array).__name__}"
    )
