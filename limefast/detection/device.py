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

    def __init__(self, detector, scores):
        self.detector = detector
        self.scores = scores
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


def device_executor(detector, scores):
    """The ``TorchExecutor`` that explains ``scores``' targets on ``detector``'s device."""
    from limefast.device.executor import TorchExecutor

    with device_guard(detector.device):
        return TorchExecutor(DetectorOnDevice(detector, scores))
