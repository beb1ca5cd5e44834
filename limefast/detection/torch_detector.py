"""``TorchDetector``: torchvision's detection models (Faster R-CNN, RetinaNet, FCOS, SSD,
SSDlite, Mask R-CNN, Keypoint R-CNN) as callables of the detector protocol.

torchvision's detectors take a list of (C, H, W) float images in [0, 1] and normalise and resize
them themselves (``GeneralizedRCNNTransform``, ``SSD``'s transform); they return, in eval mode,
one dict per image with ``boxes`` (x1, y1, x2, y2 in the input's pixels), ``scores`` and
``labels`` (plus ``masks`` or ``keypoints``, which the protocol does not use). The adapter
writes each batch model-ready on the model's device (the uint8 batch is copied once and
scaled there) and brings back only the boxes, scores and labels.

LIME and KernelSHAP explain a ``TorchDetector`` on its device (``limefast.detection.device``):
the perturbed images are written model-ready there by the classifier's kernels (CUDA on a
GPU), the targets' scores stay there and the surrogate is solved there.
"""

from __future__ import annotations

import numpy as np

from limefast.optional import require


class TorchDetector:
    """A torchvision detection model as a detector: (N, H, W, C) images -> N dicts.

    Args:
        model: a torchvision detection model (or any module with its calling convention: a
            list of (C, H, W) float tensors in, a list of dicts with ``boxes``, ``scores`` and
            ``labels`` out). It is put in eval mode, in place.
        device: where the model runs; default the device of its first parameter.
        scale: factor mapping the image's values to [0, 1]; None means 1/255 for integer
            images and 1 for float ones.
        batch_size: images per forward (larger batches are split).
        min_score: detections scoring less are dropped (torchvision's own threshold, e.g.
            ``box_score_thresh``, applies first).
        channels: the channels the model takes (the image's are checked against it).
    """

    def __init__(self, model, *, device=None, scale: float | None = None, batch_size: int = 8,
                 min_score: float = 0.0, channels: int = 3):
        torch = require("torch", "limefast.detection.TorchDetector")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (a torchvision detector); got "
                            f"{type(model).__name__}")
        self.model = model.eval()
        if device is None:
            first = next(model.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.scale = scale
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.min_score = float(min_score)
        self.channels = int(channels)
        self._device_path = None  # (adapter, TorchExecutor) of limefast.detection.device

    def model_ready(self, images: np.ndarray):
        """(N, H, W, C) images as the model's list of (C, H, W) float32 tensors on its
        device."""
        torch = require("torch", "limefast.detection.TorchDetector")
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[3] != self.channels:
            raise ValueError(f"TorchDetector takes (N, H, W, {self.channels}) images; got "
                             f"shape {images.shape}")
        scale = self.scale
        if scale is None:
            scale = 1.0 / 255 if images.dtype.kind in "iub" else 1.0
        batch = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        batch = batch.permute(0, 3, 1, 2).to(torch.float32)
        if scale != 1.0:
            batch = batch * scale
        return list(batch.unbind(0))

    def __call__(self, images: np.ndarray) -> list[dict]:
        torch = require("torch", "limefast.detection.TorchDetector")
        images = np.asarray(images)
        out: list[dict] = []
        with torch.inference_mode():
            for start in range(0, images.shape[0], self.batch_size):
                out += self.detect(self.model_ready(images[start:start + self.batch_size]))
        return out

    def detect(self, batch) -> list[dict]:
        """The model's detections of a model-ready batch (a list of (C, H, W) float tensors on
        its device), as NumPy dicts; call under ``torch.inference_mode()``."""
        found = self.model(batch)
        if not isinstance(found, (list, tuple)) or not all(isinstance(d, dict) for d in found):
            raise ValueError(
                f"the model returned {type(found).__name__}, not a list of dicts: "
                "TorchDetector takes torchvision-style detectors (wrap others in a "
                "function returning dicts, see docs/detection.md)")
        out = []
        for d in found:
            keep = d["scores"] >= self.min_score
            out.append({key: d[key][keep].detach().cpu().numpy()
                        for key in ("boxes", "scores", "labels")})
        return out
