"""What only CUDA needs: a forward captured in a CUDA graph, the NumPy call path's upload, and
per-segment means of an image already on a GPU."""

from __future__ import annotations

import numpy as np
import torch

from limefast import config
from limefast.device._torch import as_nchw, device_guard, numba_device
from limefast.kernels.model_ready import as_cuda_array, kernel_input, launch_model_ready_cuda


class GraphForward:
    """The fixed-shape forward of a (batch, C, H, W) buffer captured in a CUDA graph.

    Replays run the whole batch; a short last batch reads the first ``n`` rows of the output
    (the rows past ``n`` hold the previous batch's images: the model treats rows independently
    in eval mode).
    """

    def __init__(self, clf, x):
        side = torch.cuda.Stream(clf.device)
        side.wait_stream(torch.cuda.current_stream(clf.device))
        with torch.cuda.stream(side):
            for _ in range(3):  # let cuDNN pick its algorithms before capture
                clf.forward(x)
        torch.cuda.current_stream(clf.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: another thread's allocations (explanations sharing the classifier fit
        # their surrogates outside its lock) do not invalidate the capture.
        # On a stream of the classifier's device: torch's own capture stream is made once per
        # process, on whichever device was current at the first capture.
        with torch.cuda.device(clf.device), torch.cuda.graph(
                self.graph, stream=side, capture_error_mode="thread_local"):
            self.out = clf.forward(x)

    def __call__(self, n):
        self.graph.replay()
        return self.out[:n]


def model_ready_numpy_cuda(clf, chunk: np.ndarray, k: np.ndarray, b: np.ndarray):
    """The NumPy call path on CUDA: upload a (n, H, W, C) batch, write it model-ready there."""
    n, h, w, c = chunk.shape
    raw = torch.from_numpy(kernel_input(chunk).reshape(n, -1)).to(clf.device)
    flat = torch.empty((n, h * w * c), dtype=clf.input_dtype, device=clf.device)
    segments = torch.zeros((1, h * w), dtype=torch.int32, device=clf.device)
    ones = torch.ones((n, 1), dtype=torch.uint8, device=clf.device)
    inst = torch.arange(n, dtype=torch.int32, device=clf.device)
    from numba import cuda

    stream = cuda.external_stream(torch.cuda.current_stream(clf.device).cuda_stream)
    raw_nb = as_cuda_array(raw)
    with numba_device(clf.device.index):
        launch_model_ready_cuda(raw_nb, raw_nb, as_cuda_array(segments), as_cuda_array(ones),
                                as_cuda_array(inst), 0, n, as_cuda_array(k), as_cuda_array(b),
                                as_cuda_array(flat), clf.channels_last, stream=stream,
                                device_id=clf.device.index,
                                threads_per_block=config.CUDA_THREADS_PER_BLOCK,
                                max_grid_y=config.CUDA_MAX_GRID_Y)
    return as_nchw(flat, (n, h, w, c), clf.channels_last)


def segment_means(image, segments, n_segments: int):
    """(n_segments, C) float64 per-segment means of an image already on a CUDA device.

    The same means as ``limefast.kernels.segment_means.segment_means`` (and lime's), bit for
    bit, computed where the image is, on PyTorch's current stream of that device. Takes PyTorch
    tensors and CuPy (or any DLPack / ``__cuda_array_interface__``) CUDA arrays without a copy
    when they are contiguous, and returns a torch tensor on the image's device.

    Args:
        image: (H, W, C) CUDA array, integer or float32/float64.
        segments: (H, W) integer labels 0..n_segments-1, every label present: a CUDA array
            or a host array (uploaded to the image's device).
        n_segments: the number of segments.
    """
    from numba import cuda

    from limefast.kernels.segment_means_cuda import segment_means_cuda

    if isinstance(image, np.ndarray) or not (hasattr(image, "__cuda_array_interface__")
                                             or hasattr(image, "__dlpack__")):
        raise TypeError(
            f"segment_means takes a CUDA array; got {type(image).__name__} (for host arrays use "
            "limefast.kernels.segment_means.segment_means)"
        )
    if isinstance(n_segments, bool) or not isinstance(n_segments, (int, np.integer)) or (
            n_segments < 1):
        raise ValueError(f"n_segments must be a positive integer; got {n_segments!r}")
    image = _as_torch_cuda(image)
    if image.device.type != "cuda":
        raise TypeError(f"segment_means takes a CUDA array; got one on {image.device} (for host "
                        "arrays use limefast.kernels.segment_means.segment_means)")
    if image.dtype in (torch.float16, torch.bfloat16) or image.is_complex() or (
            image.dtype == torch.bool):
        raise TypeError(f"segment_means takes integer or float32/float64 images; got "
                        f"{image.dtype} (convert with image.float())")
    device = image.device
    segments = (torch.from_numpy(np.ascontiguousarray(segments))
                if isinstance(segments, np.ndarray) else _as_torch_cuda(segments))
    if segments.is_floating_point() or segments.is_complex() or segments.dtype == torch.bool:
        raise TypeError(f"segments must hold integer labels; got {segments.dtype}")
    if segments.shape != image.shape[:2]:
        raise ValueError(f"image must be (H, W, C) and segments (H, W); got "
                         f"{tuple(image.shape)} and {tuple(segments.shape)}")
    with device_guard(device), numba_device(device.index):
        segments = segments.to(device=device)
        # Checked before the cast to int32 (which could wrap): labels index the kernels' arrays.
        lo, hi = (int(v) for v in torch.aminmax(segments))
        if lo < 0 or hi >= n_segments:
            raise ValueError(f"segment labels must lie in 0..{n_segments - 1}; got {lo}..{hi}")
        segments = segments.to(torch.int32).contiguous()
        stream = cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)
        means = segment_means_cuda(image.contiguous(), segments, int(n_segments), stream=stream,
                                   device_id=device.index,
                                   threads_per_block=config.CUDA_THREADS_PER_BLOCK)
        return torch.as_tensor(means, device=device)


def _as_torch_cuda(array) -> torch.Tensor:
    """A torch view of a CUDA array: DLPack first (it orders the producer's stream before
    torch's), else ``__cuda_array_interface__``."""
    if torch.is_tensor(array):
        return array
    if hasattr(array, "__dlpack__"):
        return torch.from_dlpack(array)
    return torch.as_tensor(array)  # on the device the interface's pointer belongs to
