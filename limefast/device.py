"""The device executor: a ``TorchClassifier``'s explanations run on its device.

The stages are the CPU executor's (``limefast.executor``), on device arrays:

1. The 0/1 rows of every image of a group (images of one shape) go up once, as one (rows, F)
   uint8 tensor, with the index of each row's image; the images, fudged images and segments go
   up once per image.
2. For each batch a fused kernel writes the samples model-ready (original or fudged pixel by
   segment, scaled, normalised, NCHW or channels_last, in the forward's dtype) into one reused
   buffer: ``_model_ready_cuda`` on CUDA; on the CPU the two model-ready sources are written once
   per image and every sample is then a copy by segment runs (``kernels.model_ready.RunPlan``).
3. The forward runs under inference mode and autocast (or replays a CUDA graph); the
   probabilities are copied into one device tensor. Nothing waits for the device inside the
   loop.
4. The surrogate for every label is solved on the device (``limefast.surrogate_torch``); only
   the coefficients come back.

The batch buffer and the staged images are cached per (image shape, dtype), the host staging of
the rows grows to the largest call; each call's outputs (its rows on the device, probabilities)
are tensors of its own, which on CUDA torch's caching allocator serves from memory it already
holds. So after the first call for a shape nothing is allocated from the device and nothing is
compiled, and explanations in several threads may share a classifier (``predict`` holds the
classifier's lock; the surrogates of finished calls read only their own tensors).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from itertools import groupby

import numpy as np
import torch

from . import sampling
from .kernels.model_ready import RunPlan, as_cuda_array, kernel_input, launch_model_ready_cuda
from .surrogate import WeightedProblem, resolve_method
from .surrogate_torch import DEVICE_METHODS, fit_labels
from .torch_classifier import as_nchw, device_guard


@dataclass
class DevicePrediction:
    """One image's classifier outputs, on the device."""

    probs: torch.Tensor  # (N, n_classes) float32
    rows: torch.Tensor  # (N, F) uint8 0/1 rows, the same device


class TorchExecutor:
    """Executor of a ``TorchClassifier`` (see ``limefast.executor`` for the protocol).

    ``timings`` holds the seconds of the last ``predict``: 'upload' (rows and images to the
    device), 'model_ready' (the kernel writing the batches) and 'forward' (model, output
    activation, copy of the probabilities). On CUDA the last two come from CUDA events.
    """

    name = "torch"

    def __init__(self, classifier):
        self.classifier = classifier
        self.device = classifier.device
        self._workspaces: dict = {}
        self._rows = _Staging(np.uint8, classifier.device)
        self._inst = _Staging(np.int32, classifier.device)
        self.timings: dict = {}

    # -- the protocol --------------------------------------------------------------------------
    def predict(self, instances, classifier_fn, batch_size, progress_bar, stats=None):
        """Probabilities of every row of every instance, as ``DevicePrediction``s.

        ``classifier_fn`` is this executor's classifier and ``batch_size`` is ignored: the
        classifier's own batch (``TorchClassifier.batch_for``) is used.
        """
        clf = self.classifier
        for inst in instances:  # before any device work
            clf.check_image_shape(inst.image.shape)
            clf.scale_for(inst.image.dtype)
        with clf.lock, device_guard(clf.device):
            out = self._predict(instances, progress_bar)
            if stats is not None:
                stats.add(sum(inst.data.shape[0] for inst in instances), self.timings["forward"])
            return out

    def _predict(self, instances, progress_bar):
        t0 = time.perf_counter()
        # Images of one shape and dtype share batches; a new shape starts new batches.
        groups = [[i for i, _ in g] for _, g in groupby(
            enumerate(instances), key=lambda e: (e[1].image.shape, e[1].image.dtype))]
        offsets = np.concatenate([[0], np.cumsum([inst.data.shape[0] for inst in instances])])
        total = int(offsets[-1])
        width = max(inst.n_features for inst in instances)
        rows_host = self._rows.host_view((total, width))
        inst_host = self._inst.host_view((total,))
        for group in groups:
            for j, i in enumerate(group):
                rows_host[offsets[i]:offsets[i + 1], :instances[i].n_features] = instances[i].data
                inst_host[offsets[i]:offsets[i + 1]] = j  # the row's image within its group
        # The outputs are this call's own (the caching allocator serves them on CUDA): an
        # explanation in another thread may start before this one's surrogates are fitted.
        rows, inst_index = self._rows.to_device(rows_host), self._inst.to_device(inst_host)
        self.timings = {"upload": time.perf_counter() - t0, "model_ready": 0.0, "forward": 0.0}
        probs = None
        with sampling._progress(progress_bar, total) as bar:
            for group in groups:
                first = instances[group[0]]
                ws = self._workspace(first.image.shape, first.image.dtype)
                t0 = time.perf_counter()
                ws.stage([instances[i] for i in group], rows, inst_index)
                self.timings["upload"] += time.perf_counter() - t0
                g0, g1 = int(offsets[group[0]]), int(offsets[group[-1] + 1])
                probs = ws.run(g0, g1, probs, total, bar)
                ws.add_timings(self.timings)
        if not bool(torch.isfinite(probs).all()):
            raise ValueError("the model returned NaN or infinite values on the perturbed images")
        share = {k: v / len(instances) for k, v in self.timings.items()}
        for inst in instances:
            inst.timings.update(share)
        return [DevicePrediction(probs[offsets[i]:offsets[i + 1]],
                                 rows[offsets[i]:offsets[i + 1], :inst.n_features])
                for i, inst in enumerate(instances)]

    def first_row(self, predictions: DevicePrediction) -> np.ndarray:
        return predictions.probs[0].cpu().numpy()

    def to_numpy(self, predictions: DevicePrediction, columns=None) -> np.ndarray:
        probs = predictions.probs
        if columns is not None:
            probs = probs.index_select(1, torch.as_tensor(columns, device=probs.device))
        return probs.double().cpu().numpy()

    def concat(self, predictions_list) -> DevicePrediction:
        if len(predictions_list) == 1:
            return predictions_list[0]
        return DevicePrediction(torch.cat([p.probs for p in predictions_list]),
                                torch.cat([p.rows for p in predictions_list]))

    def take(self, predictions: DevicePrediction, index: np.ndarray) -> DevicePrediction:
        index = torch.from_numpy(np.ascontiguousarray(index, dtype=np.int64)).to(
            predictions.probs.device)
        return DevicePrediction(predictions.probs.index_select(0, index),
                                predictions.rows.index_select(0, index))

    def fit(self, instance, predictions: DevicePrediction, weights, labels, num_features,
            method, model_regressor=None) -> dict:
        """Every label's surrogate, solved on the device in float64.

        ``lasso_path`` (scikit-learn's LARS) and a user's ``model_regressor`` are host code: for
        those the (samples x labels) outputs come to the host and the CPU ``WeightedProblem``
        fits them, exactly as the CPU executor does.
        """
        columns = list(dict.fromkeys(int(label) for label in labels))
        resolved = resolve_method(method, num_features)
        index = torch.as_tensor(columns, device=predictions.probs.device)
        targets = predictions.probs.index_select(1, index)
        if model_regressor is not None or resolved not in DEVICE_METHODS:
            problem = WeightedProblem(instance.data, targets.double().cpu().numpy(), weights)
            return {label: problem.fit_label(columns.index(int(label)), num_features, method,
                                             model_regressor)
                    for label in labels}
        with _one_cpu_thread(self.device):
            fits = fit_labels(predictions.rows, targets, weights, resolved, num_features)
        return {label: fits[columns.index(int(label))] for label in labels}

    # -- latency -------------------------------------------------------------------------------
    def warmup(self, image_shape, dtype, num_samples: int, max_features: int = 256) -> int:
        """Allocate the buffers of explanations of ``num_samples`` samples of images of
        ``image_shape`` and ``dtype``, and run the forward once at the full batch.

        Returns the number of samples of an explanation that runs the forward at every batch
        shape such an explanation uses (a full batch and the remainder), to be run next.
        """
        shape = tuple(int(s) for s in image_shape)
        clf = self.classifier
        clf.check_image_shape(shape)
        with clf.lock, device_guard(clf.device):
            ws = self._workspace(shape, np.dtype(dtype))
            self._rows.host_view((num_samples, max_features))
            self._inst.host_view((num_samples,))
            with clf.inference():
                ws.flat.zero_()
                clf.forward(ws.x)
        if num_samples <= ws.batch:
            return num_samples
        return ws.batch + num_samples % ws.batch

    def _workspace(self, shape, dtype):
        key = (tuple(shape), np.dtype(dtype))
        if key not in self._workspaces:
            cls = _CudaWorkspace if self.device.type == "cuda" else _CpuWorkspace
            self._workspaces[key] = cls(self.classifier, *key)
        return self._workspaces[key]


class _Staging:
    """A host buffer grown to the largest size asked (pinned for CUDA), for uploads."""

    def __init__(self, dtype, device):
        self.dtype = np.dtype(dtype)
        self.device = device
        self.host = np.empty(0, self.dtype)
        self.tensor = torch.from_numpy(self.host)

    def host_view(self, shape) -> np.ndarray:
        need = int(np.prod(shape))
        if self.host.size < need:
            self.tensor = torch.empty(need, dtype=self.tensor.dtype,
                                      pin_memory=self.device.type == "cuda")
            self.host = self.tensor.numpy()
        return self.host[:need].reshape(shape)

    def to_device(self, view: np.ndarray) -> torch.Tensor:
        """A new tensor on the device holding ``view`` (a view returned by ``host_view``)."""
        if self.device.type != "cuda":
            return torch.from_numpy(view.copy())
        out = torch.empty(view.shape, dtype=self.tensor.dtype, device=self.device)
        # Pinned source: an asynchronous copy; the staging is rewritten only by the next
        # predict, after this one has waited for the device.
        return out.copy_(self.tensor[:view.size].view(view.shape), non_blocking=True)


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
                if probs is None:
                    probs = torch.empty((total, out.shape[1]), dtype=torch.float32,
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
                            self.planes)
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
        with _numba_device(self.device_index):
            launch_model_ready_cuda(*self.views, b0, n, self.k_dev, self.b_dev, self.out_nb,
                                    self.clf.channels_last, stream=self.stream,
                                    device_id=self.device_index)

    def forward(self, n):
        mid = torch.cuda.Event(enable_timing=True)
        mid.record()
        self.events.append(mid)
        if not self.clf.cuda_graph:
            return self.clf.forward(self.x[:n])
        if self.graph is None:
            self.graph = _GraphForward(self.clf, self.x)
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


@contextlib.contextmanager
def _one_cpu_thread(device):
    """On the CPU, the surrogate's (samples x features) products are too small to share: torch's
    parallel regions would cost more in synchronisation than they save (on a loaded machine a
    region waits for a descheduled thread: ~100 ms per fit instead of ~1 ms). The thread count
    is the calling thread's own (OpenMP's), restored after."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _numba_device(index):
    from numba import cuda

    return cuda.gpus[index]


class _GraphForward:
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
    with _numba_device(clf.device.index):
        launch_model_ready_cuda(raw_nb, raw_nb, as_cuda_array(segments), as_cuda_array(ones),
                                as_cuda_array(inst), 0, n, as_cuda_array(k), as_cuda_array(b),
                                as_cuda_array(flat), clf.channels_last, stream=stream,
                                device_id=clf.device.index)
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

    from .kernels.segment_means_cuda import segment_means_cuda

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
    with device_guard(device), _numba_device(device.index):
        segments = segments.to(device=device)
        # Checked before the cast to int32 (which could wrap): labels index the kernels' arrays.
        lo, hi = (int(v) for v in torch.aminmax(segments))
        if lo < 0 or hi >= n_segments:
            raise ValueError(f"segment labels must lie in 0..{n_segments - 1}; got {lo}..{hi}")
        segments = segments.to(torch.int32).contiguous()
        stream = cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)
        means = segment_means_cuda(image.contiguous(), segments, int(n_segments), stream=stream,
                                   device_id=device.index)
        return torch.as_tensor(means, device=device)


def _as_torch_cuda(array) -> torch.Tensor:
    """A torch view of a CUDA array: DLPack first (it orders the producer's stream before
    torch's), else ``__cuda_array_interface__``."""
    if torch.is_tensor(array):
        return array
    if hasattr(array, "__dlpack__"):
        return torch.from_dlpack(array)
    return torch.as_tensor(array)  # on the device the interface's pointer belongs to
