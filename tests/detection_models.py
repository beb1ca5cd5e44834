"""Small NumPy detectors and scenes for the detection tests: fast, deterministic, no torch."""

from __future__ import annotations

import numpy as np


def scene(seed: int = 0, size: int = 48) -> tuple[np.ndarray, list[tuple[tuple, int]]]:
    """A (size, size, 3) uint8 image of three coloured squares on a noisy dark background, and
    their (box, class) pairs (class = the bright channel)."""
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 40, (size, size, 3)).astype(np.uint8)
    boxes = [((4, 6, 18, 20), 0), ((26, 4, 42, 16), 1), ((14, 28, 32, 44), 2)]
    for (x1, y1, x2, y2), c in boxes:
        image[y1:y2, x1:x2, c] = 200 + rng.randint(0, 40)
    return image, boxes


def grid_segments(image: np.ndarray, cell: int = 6) -> np.ndarray:
    """Square superpixels of ``cell`` pixels: a quick, fixed segmentation."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    return (yy // cell) * (-(-w // cell)) + xx // cell


class ChannelBoxDetector:
    """Scores fixed candidate boxes by their brightest channel's mean: the detection of a box
    is (its channel's mean / 255, that channel), with class probabilities (the normalised
    channel means) when ``probs``; candidates under ``threshold`` are dropped.

    The candidates are the scene's boxes and, for each, one shifted by ``shift`` pixels, so
    the affinity's IoU and maximum both matter.
    """

    def __init__(self, boxes, shift: int = 3, threshold: float = 0.15, probs: bool = True):
        cands = []
        for (x1, y1, x2, y2), _ in boxes:
            cands += [(x1, y1, x2, y2), (x1 + shift, y1 + shift, x2 + shift, y2 + shift)]
        self.candidates = np.array(cands, dtype=np.float64)
        self.threshold = threshold
        self.probs = probs
        self.calls = 0

    def __call__(self, images: np.ndarray) -> list[dict]:
        self.calls += 1
        out = []
        for image in np.asarray(images, dtype=np.float64):
            means = np.array([image[int(y1):int(y2), int(x1):int(x2)].reshape(-1, 3).mean(0)
                              for x1, y1, x2, y2 in self.candidates]) / 255.0
            labels = means.argmax(1)
            scores = means.max(1)
            keep = scores >= self.threshold
            d = {"boxes": self.candidates[keep], "scores": scores[keep],
                 "labels": labels[keep]}
            if self.probs:
                d["class_probs"] = means[keep] / np.maximum(means[keep].sum(1, keepdims=True),
                                                            1e-12)
            out.append(d)
        return out
