"""Explain detectors and segmenters: every box (or region) from one set of forwards.

A detector with its targets becomes a classifier whose outputs are the targets' scores, so
LIME, KernelSHAP, ``num_samples="auto"``, ``time_budget`` and ``dedupe`` run on it as they run
on a classifier; D-RISE weighs random masks by the same scores (``docs/detection.md``).

- ``DetectionExplainer``: ``explain_instance(image, detector_fn, method="lime" | "kernelshap" |
  "drise")``;
- ``TorchDetector``: torchvision's detection models as protocol callables;
- ``TorchSegmenter`` and ``segmentation_targets``: a segmentation model's regions as targets;
- ``drise_masks``: the reference's D-RISE masks for a seed, drawn lazily.

``TorchDetector`` and ``TorchSegmenter`` import torch when first used.
"""

from limefast.detection.explainer import DetectionExplainer, NoTargets
from limefast.detection.explanation import DetectionExplanation
from limefast.detection.protocol import Detections, Detector, Target, affinity, box_iou

__all__ = ["DetectionExplainer", "DetectionExplanation", "Detections", "Detector", "DriseMasks",
           "NoTargets", "Target", "TorchDetector", "TorchSegmenter", "affinity", "box_iou",
           "drise_masks", "segmentation_targets"]

_LAZY = {"TorchDetector": "limefast.detection.torch_detector",
         "TorchSegmenter": "limefast.detection.segmenter",
         "segmentation_targets": "limefast.detection.segmenter",
         "drise_masks": "limefast.detection.drise",
         "DriseMasks": "limefast.detection.drise"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'limefast.detection' has no attribute {name!r}")
