"""Detector and segmenter factories for the detection server tests
(``--model tests/serve_detection_models.py:NAME``): NumPy, float64, each image's answer its own
alone (answers compare exactly whatever the batches)."""

from __future__ import annotations

import time

import numpy as np

from tests.detection_models import ChannelBoxDetector, scene


def boxes():
    """Fixed candidate boxes (those of ``scene(0)``, and each shifted) scored by their
    brightest channel: ``tests/detection_models.ChannelBoxDetector``."""
    return ChannelBoxDetector(scene(0)[1])


class Picky:
    """``boxes()``, but it raises on a batch holding a black image, and answers a dark one with
    dicts that lack ``scores``."""

    def __init__(self):
        self.detector = boxes()

    def __call__(self, images):
        flat = np.asarray(images).reshape(len(images), -1)
        if (flat.max(axis=1) == 0).any():
            raise RuntimeError("the detector cannot see in the dark")
        found = self.detector(images)
        if (flat.max(axis=1) < 10).any():
            return [{"boxes": d["boxes"], "labels": d["labels"]} for d in found]
        return found


def picky():
    return Picky()


class Slow:
    """``boxes()`` behind a fixed cost per call."""

    def __init__(self, seconds: float = 0.05):
        self.detector, self.seconds = boxes(), seconds

    def __call__(self, images):
        time.sleep(self.seconds)
        return self.detector(images)


def slow():
    return Slow()


class ChannelSegmenter:
    """(N, H, W, 3) -> (N, 4, H, W): per pixel, the softmax over background (a constant logit
    of 2) and the three channels (value / 40): ``scene``'s squares are classes 1..3."""

    def __call__(self, images):
        x = np.asarray(images, dtype=np.float64) / 40.0
        logits = np.concatenate([np.full(x.shape[:3] + (1,), 2.0), x], axis=3)
        logits -= logits.max(axis=3, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(axis=3, keepdims=True)).transpose(0, 3, 1, 2)


def segmenter():
    return ChannelSegmenter()
