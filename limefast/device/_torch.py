"""Small torch helpers every device module shares: a leaf, importing nothing of limefast's but
``optional`` (so the classifier and its executor no longer import each other)."""

from __future__ import annotations

import contextlib

from limefast.optional import require


def import_torch():
    """torch, or an ImportError with the install hint."""
    return require("torch", "limefast.TorchClassifier")


def device_guard(device):
    """Makes ``device`` the current CUDA device (streams, events and graphs follow it); nothing
    on the CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return import_torch().cuda.device(device)


def as_nchw(flat, shape, channels_last: bool):
    """(n, C, H, W) view of a flat (n, C*H*W) model-ready tensor written NHWC or NCHW."""
    n, h, w, c = shape
    if channels_last:
        return flat.view(n, h, w, c).permute(0, 3, 1, 2)
    return flat.view(n, c, h, w)


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's intra-op thread count set to ``count`` for the block, then restored (it is the
    calling thread's own OpenMP setting)."""
    torch = import_torch()
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def numba_device(index):
    """numba's context manager for CUDA device ``index``."""
    from numba import cuda

    return cuda.gpus[index]
