"""Deletion and insertion curves: does the model agree with the explanation's ranking?

Superpixels are ranked by the explanation's weight for a label, strongest evidence for first.
The deletion curve switches them off in that order, a few more at each step, and records the
model's probability for the label; the insertion curve starts from the fully hidden image and
switches them on in the same order. A faithful explanation makes the deletion curve fall fast
(small area under it) and the insertion curve rise fast (large area), so two explanations of one
image, or two models, can be compared by a number.

The curves' images are 0/1 rows like the explainer's samples, and they go through the same
machinery: the perturbation kernel and the classifier's executor (a ``TorchClassifier`` runs them
on its device), with the hidden pixels taking the fudged image ``explain_instance`` uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from limefast.core import checks
from limefast.core.executor import executor_for
from limefast.core.instance import Instance, fudged_image
from limefast.viz.render import explanation_label, segment_weights


@dataclass
class Faithfulness:
    """Deletion and insertion curves of one label.

    Attributes:
        label: the explained label whose probability is followed.
        order: (n,) superpixels in the order they are switched, strongest evidence for first.
        fractions: (K,) share of the superpixels switched at each step, from 0 to 1.
        deletion: (K,) probability with the first superpixels of ``order`` switched off.
        insertion: (K,) probability with only the first superpixels of ``order`` switched on.
        deletion_auc, insertion_auc: areas under the curves over ``fractions``.
    """

    label: int
    order: np.ndarray
    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: float
    insertion_auc: float

    @property
    def score(self) -> float:
        """``insertion_auc - deletion_auc``: higher means the ranking agrees with the model."""
        return self.insertion_auc - self.deletion_auc


def faithfulness(explanation, classifier_fn, steps: int | None = None, *, label=None,
                 weights=None, hide_color=None, batch_size: int = 64,
                 progress_bar: bool = False) -> Faithfulness:
    """Deletion and insertion curves of an explanation, and their areas.

    Args:
        explanation: an ``ImageExplanation``.
        classifier_fn: the model, as given to ``explain_instance`` ((N, H, W, C) -> (N, classes)
            probabilities); a ``TorchClassifier`` runs the curves on its device.
        steps: number of steps from nothing to everything switched; None for one superpixel
            per step. More steps than superpixels are cut to one per step.
        label: label to follow; default the explanation's first top label.
        weights: (n_superpixels,) scores to rank the superpixels by instead of the
            explanation's weights (another method's, say ``segment_scores`` of a Grad-CAM map).
        hide_color: the hidden pixels' value; None for per-superpixel mean colours, as
            ``explain_instance`` does by default.
        batch_size: images per ``classifier_fn`` call.
        progress_bar: show a progress bar over the images.

    Returns:
        A Faithfulness.
    """
    label = explanation_label(explanation, label)
    image, segments = explanation.image, explanation.segments
    n = int(segments.max()) + 1
    ranking = (segment_weights(explanation.local_exp[label], n) if weights is None
               else segment_weights(np.asarray(weights, dtype=np.float64), n))
    order = np.argsort(-ranking, kind="stable")
    steps = n if steps is None else min(checks.positive_int("steps", steps), n)
    batch_size = checks.positive_int("batch_size", batch_size)
    counts = np.round(np.arange(steps + 1) * n / steps).astype(np.int64)
    rows = switch_rows(order, counts)
    fudged = fudged_image(image, segments, n, hide_color)
    instance = Instance(image, segments, n, fudged, rows, np.zeros(rows.shape[0]))
    executor = executor_for(classifier_fn)
    (predictions,) = executor.predict([instance], classifier_fn, batch_size, progress_bar)
    probabilities = executor.to_numpy(predictions)
    if not 0 <= int(label) < probabilities.shape[1]:
        raise ValueError(f"label {label} is outside the classifier's {probabilities.shape[1]} "
                         "classes")
    curve = probabilities[:, int(label)].astype(np.float64)
    k = steps + 1
    fractions = counts / n
    deletion, insertion = curve[:k], curve[k:]
    return Faithfulness(int(label), order, fractions, deletion, insertion,
                        area(fractions, deletion), area(fractions, insertion))


def switch_rows(order: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(2K, n) int8 rows: K deletion rows (the first ``counts[i]`` of ``order`` off), then K
    insertion rows (only those on)."""
    n = order.shape[0]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    switched = (rank[None, :] < counts[:, None]).astype(np.int8)
    return np.concatenate([1 - switched, switched])


def area(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoidal area under y(x)."""
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


def segment_scores(saliency: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """(n,) mean of a pixel map (a Grad-CAM map, say) over each superpixel: a ranking that
    ``faithfulness(weights=...)`` can score on the same superpixels as LIME's."""
    saliency = np.asarray(saliency, dtype=np.float64)
    if saliency.shape != segments.shape:
        raise ValueError(f"saliency must have the segments' shape {segments.shape}; "
                         f"got {saliency.shape}")
    flat = segments.ravel()
    n = int(flat.max()) + 1
    return np.bincount(flat, saliency.ravel(), n) / np.maximum(np.bincount(flat, minlength=n), 1)
