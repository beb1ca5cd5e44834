"""The buffers a ``TorchExecutor`` writes model-ready batches into, one workspace per (image
shape, dtype): ``_CpuWorkspace`` copies by segment runs (``kernels.model_ready.RunPlan``),
``_CudaWorkspace`` launches the fused CUDA kernel and times it with CUDA events."""

from __future__ import annotations

import time

import numpy as np
import torch

from limefast import config
from limefast.device._torch import as_nchw, numba_device
from limefast.kernels.model_ready import (
    RunPlan,
    as_cuda_array,
    kernel_input,
    launch_model_ready_cuda,
)


class _Workspace:
    """Buffers for images of one shape and dtype: the model-ready batch and the staged images."""

    def __init__(self, clf, shape, dtype):
        self.clf = clf
        self.shape = shape
        self.dtype = dtype
        self.batch = clf.batch_for(shape)
        h, w, c = shape
        self.k, self.b = clf.coefficients(dtype)
        self.flat = torch.empty((self.batch, h * w * c), dtype=clf.input_dtype,
                                device=clf.device)
        self.x = as_nchw(self.flat, (self.batch, h, w, c), clf.channels_last)
        self.model_ready_time = self.forward_time = 0.0

    def run(self, g0, g1, probs, total, bar):
        """Write, forward and store rows g0..g1-1 of the staged group; returns the
        (total, n_classes) probabilities (created at the first batch: its width is the
        model's)."""
        with self.clf.inference():
            for b0 in range(g0, g1, self.batch):
                n = min(self.batch, g1 - b0)
                self.write(b0, n)
                out = self.forward(n)
                if probs is None:  # float32 probabilities (a detector's scores: float64)
                    probs = torch.empty((total, out.shape[1]), dtype=out.dtype,
                                        device=self.clf.device)
                elif out.shape[1] != probs.shape[1]:
                    raise ValueError(f"the model returned {out.shape[1]} classes for images of "
                                     f"shape {self.shape} but {probs.shape[1]} for earlier ones")
                self.store(probs, b0, n, out)
                bar.update(n)
        return probs

    def store(self, probs, b0, n, out):
        probs[b0:b0 + n].copy_(out)

    def add_timings(self, timings):
        timings["model_ready"] += self.model_ready_time
        timings["forward"] += self.forward_time
        self.model_ready_time = self.forward_time = 0.0


class _CpuWorkspace(_Workspace):
    def __init__(self, clf, shape, dtype):
        super().__init__(clf, shape, dtype)
        self.flat_np = self.flat.numpy()
        self.planes = None
        self.plan = self.rows = self.inst = None

    def stage(self, group, rows, inst):
        images = np.stack([item.image for item in group])
        fudged = np.stack([item.fudged for item in group])
        segments = np.stack([item.segments for item in group])
        self.plan = RunPlan(images, fudged, segments, self.k, self.b, self.clf.channels_last,
                            self.planes, task_bytes=config.TASK_BYTES,
                            threads=config.CPU_THREADS)
        self.planes = self.plan.planes
        self.rows, self.inst = rows.numpy(), inst.numpy()

    def write(self, b0, n):
        t0 = time.perf_counter()
        self.plan.write(self.rows, self.inst, b0, n, self.flat_np)
        self.model_ready_time += time.perf_counter() - t0

    def forward(self, n):
        t0 = time.perf_counter()
        out = self.clf.forward(self.x[:n])
        self.forward_time += time.perf_counter() - t0
        return out


class _CudaWorkspace(_Workspace):
    def __init__(self, clf, shape, dtype):
        super().__init__(clf, shape, dtype)
        self.device_index = clf.device.index
        # On the classifier's GPU (numba's to_device would use its own current context).
        self.k_t = torch.from_numpy(self.k).to(clf.device)
        self.b_t = torch.from_numpy(self.b).to(clf.device)
        self.k_dev, self.b_dev = as_cuda_array(self.k_t), as_cuda_array(self.b_t)
        self.out_nb = as_cuda_array(self.flat)
        self.stream = None
        self.images = self.fudged = self.segments = None
        self.views = None
        self.graph = None
        self.events = []

    def stage(self, group, rows, inst):
        from numba import cuda

        self.events = []  # a call that failed may have left some
        # The kernels go on PyTorch's current stream, in order with the forwards.
        self.stream = cuda.external_stream(torch.cuda.current_stream(self.clf.device).cuda_stream)
        g = len(group)
        h, w, c = self.shape
        if self.images is None or self.images.shape[0] < g:
            t_dtype = torch.from_numpy(kernel_input(np.empty(0, self.dtype))).dtype
            self.images = torch.empty((g, h * w * c), dtype=t_dtype, device=self.clf.device)
            self.fudged = torch.empty_like(self.images)
            self.segments = torch.empty((g, h * w), dtype=torch.int32, device=self.clf.device)
        for j, item in enumerate(group):
            for dst, src in ((self.images, kernel_input(item.image)),
                             (self.fudged, kernel_input(item.fudged)),
                             (self.segments, item.segments.astype(np.int32, copy=False))):
                dst[j].copy_(torch.from_numpy(np.ascontiguousarray(src).reshape(-1)))
        self.views = (as_cuda_array(self.images[:g]), as_cuda_array(self.fudged[:g]),
                      as_cuda_array(self.segments[:g]), as_cuda_array(rows),
                      as_cuda_array(inst))

    def write(self, b0, n):
        start = torch.cuda.Event(enable_timing=True)
        start.record()
        self.events.append(start)
        with numba_device(self.device_index):
            launch_model_ready_cuda(*self.views, b0, n, self.k_dev, self.b_dev, self.out_nb,
                                    self.clf.channels_last, stream=self.stream,
                                    device_id=self.device_index,
                                    threads_per_block=config.CUDA_THREADS_PER_BLOCK,
                                    max_grid_y=config.CUDA_MAX_GRID_Y)

    def forward(self, n):
        mid = torch.cuda.Event(enable_timing=True)
        mid.record()
        self.events.append(mid)
        if not self.clf.cuda_graph:
            return self.clf.forward(self.x[:n])
        if self.graph is None:
            from limefast.device.cuda import GraphForward

            self.graph = GraphForward(self.clf, self.x)
        return self.graph(n)

    def store(self, probs, b0, n, out):
        probs[b0:b0 + n].copy_(out)
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        self.events.append(end)

    def add_timings(self, timings):
        # The results are needed next (first_row, fit): the one wait for the device.
        torch.cuda.current_stream(self.clf.device).synchronize()
        events, self.events = self.events, []
        for i in range(0, len(events) - 2, 3):
            timings["model_ready"] += events[i].elapsed_time(events[i + 1]) / 1e3
            timings["forward"] += events[i + 1].elapsed_time(events[i + 2]) / 1e3
