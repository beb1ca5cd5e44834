"""Segmentation models explained region by region: the score of (class c, region R) on an
image is the mean probability of c over R's pixels.

pytorch-grad-cam's ``SemanticSegmentationTarget(category, mask)`` scores
``(output[category] * mask).sum()``: the sum of the class's output over the region. With the
probabilities as the output (its tutorial passes the softmax) that is ``|R|`` times the mean
used here: a constant factor per region, so LIME's and KernelSHAP's weights are the sum's
divided by ``|R|`` (the same ranking and signs) and the D-RISE maps, scaled to [0, 1], are the
same. The mean keeps scores of regions of different sizes on one scale, in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from limefast.detection.protocol import Target, _numpy


class RegionScores:
    """``classifier_fn`` of a segmenter: each image's mean class probability over every
    target region, (N, K) float64 (the ``TargetScores`` of segmentation).

    Args:
        segmenter: (N, H, W, C) images -> (N, n_classes, H, W) class probabilities (an array,
            a tensor, or torchvision's ``{"out": ...}`` dict).
        targets: ``Target``s with their ``region`` and ``label`` (the class).
        n_classes: the class count of earlier answers, which must not change.
    """

    def __init__(self, segmenter, targets: Sequence[Target], n_classes: int | None = None):
        if not callable(segmenter):
            raise TypeError(f"the segmenter must be callable (a batch of images -> class "
                            f"probabilities); got {type(segmenter).__name__}")
        self.segmenter = segmenter
        self.targets = list(targets)
        self.n_classes = n_classes
        self.calls = self.images = 0
        k = len(self.targets)
        if k:
            regions = np.stack([t.region.reshape(-1) for t in self.targets]).astype(np.float64)
            self._weights = regions / regions.sum(axis=1, keepdims=True)  # (K, HW) means
            self._classes = np.array([t.label for t in self.targets], dtype=np.int64)
        self.low = np.full(k, np.inf)
        self.high = np.full(k, -np.inf)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """The segmenter's checked (N, n_classes, H, W) answer for ``images``."""
        n, h, w = images.shape[:3]
        where = f"batch {self.calls} (images {self.images}..{self.images + n - 1})"
        out = self.segmenter(images)
        if isinstance(out, dict):
            if "out" not in out:
                raise ValueError(f"the segmenter returned a dict without 'out' "
                                 f"({sorted(out)}) for {where}")
            out = out["out"]
        probs = _numpy(out)
        if probs.ndim != 4 or probs.shape[0] != n or probs.shape[2:] != (h, w):
            raise ValueError(f"the segmenter must return (N, n_classes, H, W) = "
                             f"({n}, C, {h}, {w}) probabilities; got {probs.shape} for {where}")
        if self.n_classes is not None and probs.shape[1] != self.n_classes:
            raise ValueError(f"the segmenter returned {probs.shape[1]} classes for {where}, "
                             f"{self.n_classes} before: the class count must not change")
        if not np.isfinite(probs).all():
            raise ValueError(f"the segmenter returned NaN or infinite values for {where}")
        self.n_classes = probs.shape[1]
        self.calls += 1
        self.images += n
        return probs

    def scores(self, probs: np.ndarray, track: bool = True) -> np.ndarray:
        """(N, K) mean probability of each target's class over its region."""
        n, k = probs.shape[0], len(self.targets)
        if not k:
            return np.zeros((n, 0))
        flat = probs.reshape(n, probs.shape[1], -1)
        out = np.einsum("nkp,kp->nk", flat[:, self._classes].astype(np.float64),
                        self._weights)
        if track and n:
            np.minimum(self.low, out.min(axis=0), out=self.low)
            np.maximum(self.high, out.max(axis=0), out=self.high)
        return out

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.scores(self.probabilities(np.asarray(images)))

    def flat(self) -> np.ndarray:
        return ~(self.high > self.low)


def _bounding_box(region: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(region)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def segmentation_targets(probs: np.ndarray, *, classes=None,
                         min_pixels: int = 16) -> list[Target]:
    """Each predicted class's connected areas (4-connected) as targets, largest first.

    Args:
        probs: (n_classes, H, W) class probabilities of one image.
        classes: only these classes (default every predicted one).
        min_pixels: areas smaller than this are left out.
    """
    from scipy import ndimage

    predicted = probs.argmax(axis=0)
    wanted = np.unique(predicted) if classes is None else np.asarray(classes).ravel()
    out = []
    for c in wanted:
        areas, count = ndimage.label(predicted == c)
        for a in range(1, count + 1):
            region = areas == a
            if region.sum() >= min_pixels:
                out.append(Target(_bounding_box(region), int(c), 0.0, None, False, region))
    out.sort(key=lambda t: -int(t.region.sum()))
    return out


def given_regions(regions, shape: tuple[int, int], n_classes: int) -> list[Target]:
    """``regions=`` as targets: ``(mask, class)`` pairs, masks (H, W) and not empty."""
    if not isinstance(regions, Sequence) or isinstance(regions, str) or not regions:
        raise ValueError("regions= must be a non-empty sequence of (mask, class) pairs")
    out = []
    for i, item in enumerate(regions):
        if not (isinstance(item, Sequence) and len(item) == 2):
            raise ValueError(f"region {i} must be a (mask, class) pair; got {item!r:.60}")
        mask, c = np.asarray(item[0]), int(item[1])
        if mask.shape != tuple(shape):
            raise ValueError(f"region {i}'s mask must have the image's shape {tuple(shape)}; "
                             f"got {mask.shape}")
        mask = mask.astype(bool)
        if not mask.any():
            raise ValueError(f"region {i}'s mask is empty")
        if not 0 <= c < n_classes:
            raise ValueError(f"region {i}'s class {c} is not one of the segmenter's "
                             f"{n_classes} classes")
        out.append(Target(_bounding_box(mask), c, 0.0, None, True, mask))
    return out


class TorchSegmenter:
    """A torch segmentation model (torchvision's ``{"out": ...}`` models, or one returning
    (N, n_classes, H, W) logits) as a segmenter: (N, H, W, C) -> (N, n_classes, H, W) float32
    softmax probabilities.

    Args:
        model: the module; put in eval mode, in place.
        mean, std: per-channel normalisation after ``scale`` (torchvision's segmentation
            models want ImageNet's; ``limefast.imagenet`` has them).
        scale: factor mapping the image's values to [0, 1]; None means 1/255 for integer
            images and 1 for float ones.
        device: where the model runs; default the device of its first parameter.
        batch_size: images per forward.
    """

    def __init__(self, model, *, mean=None, std=None, scale: float | None = None, device=None,
                 batch_size: int = 8):
        from limefast.optional import require

        torch = require("torch", "limefast.detection.TorchSegmenter")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.model = model.eval()
        if device is None:
            first = next(model.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32,
                                                           device=self.device)[:, None, None]
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32,
                                                         device=self.device)[:, None, None]
        self.scale = scale
        self.batch_size = int(batch_size)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        images = np.asarray(images)
        scale = self.scale
        if scale is None:
            scale = 1.0 / 255 if images.dtype.kind in "iub" else 1.0
        out = []
        with torch.inference_mode():
            for start in range(0, images.shape[0], self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[start:start + self.batch_size]))
                x = x.to(self.device).permute(0, 3, 1, 2).to(torch.float32) * scale
                if self.mean is not None:
                    x = x - self.mean
                if self.std is not None:
                    x = x / self.std
                y = self.model(x)
                if isinstance(y, dict):
                    y = y["out"]
                out.append(torch.softmax(y.float(), dim=1).cpu().numpy())
        return np.concatenate(out)
