"""The device executor: a ``TorchClassifier``'s explanations run on its device.

The stages are the CPU executor's (``limefast.core.executor``), on device arrays:

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
4. The surrogate for every label is solved on the device (``limefast.device.surrogate``); only
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

from limefast.core import sampling
from limefast.core.surrogate import WeightedProblem, resolve_method
from limefast.device._torch import device_guard, torch_threads
from limefast.device.surrogate import DEVICE_METHODS, fit_labels
from limefast.device.workspaces import _CpuWorkspace, _CudaWorkspace


@dataclass
class DevicePrediction:
    """One image's classifier outputs, on the device."""

    probs: torch.Tensor  # (N, n_classes) float32
    rows: torch.Tensor  # (N, F) uint8 0/1 rows, the same device


class TorchExecutor:
    """Executor of a ``TorchClassifier`` (see ``limefast.core.executor`` for the protocol).

    ``timings`` holds the seconds of the last ``predict``: 'upload' (rows and images to the
    device), 'model_ready' (the kernel writing the batches) and 'forward' (model, output
    activation, copy of the probabilities). On CUDA the last two come from CUDA events.
    """


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
            problem = WeightedProblem(instance.data, targets.double().cpu().numpy(), weights,
                                      instance.unit)
            return {label: problem.fit_label(columns.index(int(label)), num_features, method,
                                             model_regressor)
                    for label in labels}
        # On the CPU, the surrogate's (samples x features) products are too small to share:
        # torch's parallel regions would cost more in synchronisation than they save (on a
        # loaded machine a region waits for a descheduled thread: ~100 ms a fit, not ~1 ms).
        with torch_threads(1) if self.device.type == "cpu" else contextlib.nullcontext():
            fits = fit_labels(predictions.rows, targets, weights, resolved, num_features,
                              instance.unit)
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


