"""Slow, obviously right twins of limefast's kernels, for tests only."""

from __future__ import annotations

import numpy as np


def naive_perturb(image, fudged, segments, rows):
    """lime's per-sample loop (lime_image.LimeImageExplainer.data_labels), without the model."""
    out = np.empty((len(rows),) + image.shape, image.dtype)
    for i, row in enumerate(rows):
        temp = image.copy()
        mask = np.zeros(segments.shape, dtype=bool)
        for z in np.where(row == 0)[0]:
            mask[segments == z] = True
        temp[mask] = fudged[mask]
        out[i] = temp
    return out


def naive_segment_means(image, segments):
    """Per-segment channel means in float64, segment by segment, as lime computes them."""
    labels = np.unique(segments)
    return np.array([[np.mean(image[segments == s][:, c]) for c in range(image.shape[2])]
                     for s in labels])
