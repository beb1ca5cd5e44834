"""The device path for a ``TorchDetector``: LIME's and KernelSHAP's perturbed images written
model-ready on the detector's device by the classifier's kernels (CUDA on a GPU), the detector
run on them there, the targets' scores the outputs a ``TorchExecutor`` stores, and the
surrogate solved on the device.

``DetectorOnDevice`` gives ``TorchExecutor`` what it asks of a ``TorchClassifier``: the batch
(``batch_for``), the model-ready coefficients (the scale alone: torchvision's detectors
normalise their input themselves), ``forward`` and the lock. The images the detector sees are
the host path's to the bit (``pixel * float32(scale)`` either way), so are its detections and the
targets' scores (float64); only the surrogate's float64 sums may differ in the last bits.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from limefast.device._torch import device_guard
from limefast.kernels.model_ready import normalise_coefficients


class DetectorOnDevice:
    """A ``TorchDetector`` and its targets' ``TargetScores`` as the classifier of a
    ``TorchExecutor``: ``forward`` of a model-ready (n, C, H, W) batch on the device returns
    the (n, K) float64 target scores there.

    Args:
        detector: the ``TorchDetector``.
        scores: the ``TargetScores`` of the targets (it checks and counts the detections).
    """

    input_dtype = torch.float32
    channels_last = False
    cuda_graph = False

    def __init__(self, detector, scores=None):
        self.detector = detector
        self.scores = scores  # the explanation's, set by ``BoundExecutor.predict``
        self.device = detector.device
        self.lock = threading.RLock()

    def inference(self):
        return torch.inference_mode()

    def scale_for(self, dtype) -> float:
        """The factor to [0, 1]: the detector's ``scale``, else 1/255 for integer images and 1
        for float ones (``TorchDetector.model_ready``'s rule)."""
        if self.detector.scale is not None:
            return float(self.detector.scale)
        return 1.0 / 255 if np.dtype(dtype).kind in "iub" else 1.0

    def coefficients(self, dtype) -> tuple[np.ndarray, np.ndarray]:
        channels = self.detector.channels
        return normalise_coefficients(self.scale_for(dtype), np.zeros(channels),
                                      np.ones(channels))

    def check_image_shape(self, shape) -> None:
        shape = tuple(shape)
        if len(shape) != 3 or shape[2] != self.detector.channels:
            raise ValueError(f"TorchDetector takes (H, W, {self.detector.channels}) images; "
                             f"got shape {shape}")

    def batch_for(self, image_shape) -> int:
        return self.detector.batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The targets' (n, K) float64 scores on the device, of a model-ready batch."""
        found = self.detector.detect(list(x.unbind(0)))
        sets = self.scores.checked(found, x.shape[0])
        return torch.from_numpy(self.scores.scores(sets)).to(self.device)


class BoundExecutor:
    """The detector's one ``TorchExecutor`` (its workspaces kept from one explanation to the
    next, as a ``TorchClassifier``'s are), bound to one explanation's ``TargetScores``:
    ``predict`` runs under the detector's lock, so explanations in several threads take turns
    on its buffers."""

    def __init__(self, detector, scores):
        if detector._device_path is None:
            adapter = DetectorOnDevice(detector)
            with device_guard(detector.device):
                from limefast.device.executor import TorchExecutor

                detector._device_path = (adapter, TorchExecutor(adapter))
        self.adapter, self.executor = detector._device_path
        self.scores = scores

    def predict(self, instances, classifier_fn, batch_size, progress_bar, stats=None):
        with self.adapter.lock:
            self.adapter.scores = self.scores
            try:
                return self.executor.predict(instances, classifier_fn, batch_size,
                                             progress_bar, stats)
            finally:
                self.adapter.scores = None

    def first_row(self, predictions):
        return self.executor.first_row(predictions)

    def to_numpy(self, predictions, columns=None):
        return self.executor.to_numpy(predictions, columns)

    def concat(self, predictions_list):
        return self.executor.concat(predictions_list)

    def take(self, predictions, index):
        return self.executor.take(predictions, index)

    def fit(self, instance, predictions, weights, labels, num_features, method,
            model_regressor=None):
        return self.executor.fit(instance, predictions, weights, labels, num_features, method,
                                 model_regressor)

    def warmup(self, image_shape, dtype, num_samples: int) -> int:
        with self.adapter.lock:
            return self.executor.warmup(image_shape, dtype, num_samples)
