"""Agreement measures shared by the benchmarks."""

from __future__ import annotations

import numpy as np


def max_relative_difference(ref, ours, score_label=None) -> float:
    """Largest relative difference between two explanations' weights and intercepts, and (for
    lime 0.2.0.1's single score/local_pred) the score and local prediction of ``score_label``."""
    worst = 0.0

    def rel(a, b):
        a, b = np.asarray(a, float), np.asarray(b, float)
        return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-300)))

    for label, exp in ref.local_exp.items():
        ours_w = dict(ours.local_exp[label])
        worst = max(worst, rel([w for _, w in exp], [ours_w[f] for f, _ in exp]))
        worst = max(worst, rel(ref.intercept[label], ours.intercept[label]))
    if score_label is not None:
        score = ref.score if np.isscalar(ref.score) else ref.score[score_label]
        local = ref.local_pred if not isinstance(ref.local_pred, dict) else ref.local_pred[
            score_label]
        worst = max(worst, rel(score, ours.score[score_label]))
        worst = max(worst, rel(local, ours.local_pred[score_label]))
    return worst
